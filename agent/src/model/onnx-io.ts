import { open, type FileHandle } from "node:fs/promises";
import { SamEdgeError } from "../core/errors.ts";

/** One graph input or output: its name, element type and shape (a string for a named dynamic dimension). */
export interface TensorInfo {
  name: string;
  type: string;
  shape: (number | string)[];
}

/** What a model file takes and gives, read from its graph without loading its weights. */
export interface GraphSignature {
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  /** Files beside the model that hold its weights (ONNX external data, for graphs over 2 GB). */
  externalData: string[];
}

/** onnx.TensorProto.DataType, for the types a SAM graph uses. */
const ELEMENT_TYPES: Record<number, string> = {
  1: "float32",
  2: "uint8",
  3: "int8",
  5: "int16",
  6: "int32",
  7: "int64",
  9: "bool",
  10: "float16",
  11: "float64",
};

// Field numbers of onnx.proto3 (ModelProto.graph, GraphProto.initializer/input/output, ...).
const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_OUTPUT = 12;
const TENSOR_NAME = 8;
const TENSOR_EXTERNAL_DATA = 13;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
const VALUE_NAME = 1;
const VALUE_TYPE = 2;
const TYPE_TENSOR = 1;
const TENSOR_TYPE_ELEM = 1;
const TENSOR_TYPE_SHAPE = 2;
const SHAPE_DIM = 1;
const DIM_VALUE = 1;
const DIM_PARAM = 2;

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** A ValueInfoProto is a name and a type: a few hundred bytes. More is not a graph input. */
const MAX_VALUE_INFO_BYTES = 64 * 1024;
const CHUNK = 64 * 1024;

class Truncated extends Error {}

/** Reads protobuf fields from a file front to back, in chunks, skipping what it is not asked for. */
class FileReader {
  private buffer = Buffer.alloc(0);
  private bufferStart = 0;
  pos = 0;

  constructor(
    private readonly file: FileHandle,
    readonly size: number,
  ) {}

  private async byteAt(pos: number): Promise<number> {
    if (pos < this.bufferStart || pos >= this.bufferStart + this.buffer.length) {
      if (pos >= this.size) throw new Truncated();
      const buf = Buffer.alloc(Math.min(CHUNK, this.size - pos));
      const { bytesRead } = await this.file.read(buf, 0, buf.length, pos);
      this.buffer = buf.subarray(0, bytesRead);
      this.bufferStart = pos;
      if (bytesRead === 0) throw new Truncated();
    }
    return this.buffer[pos - this.bufferStart]!;
  }

  async varint(): Promise<number> {
    let value = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      const b = await this.byteAt(this.pos++);
      // Past 2^53 a length or a field number is nonsense anyway: the bytes are not protobuf.
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    throw new Truncated();
  }

  async bytes(length: number): Promise<Buffer> {
    if (this.pos + length > this.size) throw new Truncated();
    const buf = Buffer.alloc(length);
    if (length > 0) await this.file.read(buf, 0, length, this.pos);
    this.pos += length;
    return buf;
  }

  /** Skips the value of a field of this wire type; false for a wire type protobuf does not have. */
  async skip(wire: number): Promise<boolean> {
    if (wire === WIRE_VARINT) await this.varint();
    else if (wire === WIRE_I64) this.pos += 8;
    else if (wire === WIRE_I32) this.pos += 4;
    else if (wire === WIRE_LEN) {
      const length = await this.varint();
      this.pos += length;
    }
    else return false;
    if (this.pos > this.size) throw new Truncated();
    return true;
  }
}

/** The fields of a message held in memory (a small one: a ValueInfoProto). */
function* fields(buf: Buffer): Generator<{ field: number; wire: number; value: number | Buffer }> {
  let pos = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (pos >= buf.length) throw new Truncated();
      const b = buf[pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    throw new Truncated();
  };
  while (pos < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === WIRE_VARINT) yield { field, wire, value: varint() };
    else if (wire === WIRE_LEN) {
      const length = varint();
      if (pos + length > buf.length) throw new Truncated();
      yield { field, wire, value: buf.subarray(pos, pos + length) };
      pos += length;
    } else if (wire === WIRE_I64 || wire === WIRE_I32) pos += wire === WIRE_I64 ? 8 : 4;
    else throw new Truncated();
  }
}

function valueInfo(buf: Buffer): TensorInfo {
  let name = "";
  let type = "unknown";
  const shape: (number | string)[] = [];
  for (const f of fields(buf)) {
    if (f.field === VALUE_NAME && f.value instanceof Buffer) name = f.value.toString("utf8");
    if (f.field !== VALUE_TYPE || !(f.value instanceof Buffer)) continue;
    for (const t of fields(f.value)) {
      if (t.field !== TYPE_TENSOR || !(t.value instanceof Buffer)) continue;
      for (const tt of fields(t.value)) {
        if (tt.field === TENSOR_TYPE_ELEM && typeof tt.value === "number") type = ELEMENT_TYPES[tt.value] ?? `type ${tt.value}`;
        if (tt.field !== TENSOR_TYPE_SHAPE || !(tt.value instanceof Buffer)) continue;
        for (const d of fields(tt.value)) {
          if (d.field !== SHAPE_DIM || !(d.value instanceof Buffer)) continue;
          let dim: number | string = "?";
          for (const v of fields(d.value)) {
            if (v.field === DIM_VALUE && typeof v.value === "number") dim = v.value;
            if (v.field === DIM_PARAM && v.value instanceof Buffer) dim = v.value.toString("utf8") || "?";
          }
          shape.push(dim);
        }
      }
    }
  }
  return { name, type, shape };
}

/**
 * A TensorProto's name and, for weights stored outside the model file, that file's location:
 * every field is read or skipped by its length, so a tensor's data is never read.
 */
async function initializer(reader: FileReader, end: number): Promise<{ name?: string; location?: string }> {
  const found: { name?: string; location?: string } = {};
  while (reader.pos < end) {
    const tag = await reader.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if ((field === TENSOR_NAME || field === TENSOR_EXTERNAL_DATA) && wire === WIRE_LEN) {
      const length = await reader.varint();
      if (length > MAX_VALUE_INFO_BYTES) throw new Truncated();
      const bytes = await reader.bytes(length);
      if (field === TENSOR_NAME) found.name = bytes.toString("utf8");
      else {
        let key = "";
        let value = "";
        for (const f of fields(bytes)) {
          if (f.field === ENTRY_KEY && f.value instanceof Buffer) key = f.value.toString("utf8");
          if (f.field === ENTRY_VALUE && f.value instanceof Buffer) value = f.value.toString("utf8");
        }
        if (key === "location") found.location = value;
      }
    } else if (!(await reader.skip(wire))) throw new Truncated();
  }
  if (reader.pos !== end) throw new Truncated();
  return found;
}

function notOnnx(path: string, why: string): SamEdgeError {
  return new SamEdgeError("MODEL_INVALID", `${path} is not an ONNX model: ${why}`);
}

/**
 * The graph inputs and outputs of an ONNX file, read from its protobuf without loading it:
 * a folder of big models (SAM ViT-H is 2.5 GB) is sorted by signature in milliseconds.
 * Inputs that are initializers (older exporters list weights as inputs too) are left out.
 */
export async function readGraphSignature(path: string): Promise<GraphSignature> {
  let file: FileHandle;
  try {
    file = await open(path, "r");
  } catch (err) {
    throw new SamEdgeError("MODEL_NOT_FOUND", `${path} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  try {
    const size = (await file.stat()).size;
    if (size === 0) throw notOnnx(path, "the file is empty");
    const reader = new FileReader(file, size);
    let graphStart = -1;
    let graphEnd = -1;
    try {
      while (reader.pos < size) {
        const tag = await reader.varint();
        const field = Math.floor(tag / 8);
        const wire = tag % 8;
        if (field === 0) throw new Truncated();
        if (field === MODEL_GRAPH && wire === WIRE_LEN) {
          const length = await reader.varint();
          graphStart = reader.pos;
          graphEnd = reader.pos + length;
          if (graphEnd > size) throw new Truncated();
          break;
        }
        if (!(await reader.skip(wire))) throw new Truncated();
      }
      if (graphStart < 0) throw notOnnx(path, "it holds no graph");
      const inputs: TensorInfo[] = [];
      const outputs: TensorInfo[] = [];
      const initializers = new Set<string>();
      const externalData = new Set<string>();
      reader.pos = graphStart;
      while (reader.pos < graphEnd) {
        const tag = await reader.varint();
        const field = Math.floor(tag / 8);
        const wire = tag % 8;
        if (field === 0) throw new Truncated();
        if ((field === GRAPH_INPUT || field === GRAPH_OUTPUT) && wire === WIRE_LEN) {
          const length = await reader.varint();
          if (length > MAX_VALUE_INFO_BYTES) throw new Truncated();
          (field === GRAPH_INPUT ? inputs : outputs).push(valueInfo(await reader.bytes(length)));
        } else if (field === GRAPH_INITIALIZER && wire === WIRE_LEN) {
          const length = await reader.varint();
          const end = reader.pos + length;
          const found = await initializer(reader, end);
          if (found.name !== undefined) initializers.add(found.name);
          if (found.location) externalData.add(found.location);
        } else if (!(await reader.skip(wire))) throw new Truncated();
      }
      const graphInputs = inputs.filter((i) => !initializers.has(i.name));
      if (graphInputs.length === 0 || outputs.length === 0) throw notOnnx(path, "its graph has no inputs or no outputs");
      return { inputs: graphInputs, outputs, externalData: [...externalData] };
    } catch (err) {
      if (err instanceof Truncated) throw notOnnx(path, "it is not a complete ONNX protobuf (truncated, or another kind of file)");
      throw err;
    }
  } finally {
    await file.close();
  }
}

/** `name [1,3,1024,1024]`, for messages. */
export function describeTensor(t: TensorInfo): string {
  return `${t.name} [${t.shape.join(",")}]`;
}
