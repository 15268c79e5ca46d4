import type { Dirent } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, join, posix } from "node:path";
import { SamEdgeError } from "../core/errors.ts";
import { jsonSyntaxProblem } from "../core/json.ts";
import { classifyGraph, mismatch, type DecoderSpec, type EncoderSpec, type GraphRole } from "./layouts.ts";
import { parseManifest, SAM_PIXEL_MEAN, SAM_PIXEL_STD, type ModelManifest } from "./manifest.ts";
import { readGraphSignature } from "./onnx-io.ts";

/** A model folder resolved to its files and what each graph is. */
export interface ModelFiles {
  dir: string;
  manifest: ModelManifest;
  encoder: EncoderSpec;
  decoder: DecoderSpec;
  decoderBatch?: DecoderSpec;
}

/** One encoder + decoder pair found in a folder without a manifest. */
export interface Candidate {
  name: string;
  encoder: string;
  decoder: string;
  decoderBatch?: string;
  data: string[];
  encoderSpec: EncoderSpec;
  decoderSpec: DecoderSpec;
  batchSpec?: DecoderSpec;
  /** Why this pair cannot run together, when it cannot. */
  problem?: string;
}

export interface FolderScan {
  candidates: Candidate[];
  /** .onnx files that are in no candidate, and what they are. */
  others: { file: string; what: string }[];
}

/**
 * Where publishers put the graphs: the folder itself, transformers.js's `onnx/`, EfficientSAM's
 * and EdgeSAM's `weights/`, samexporter's `output_models/`.
 */
const GRAPH_FOLDERS = ["", "onnx", "weights", "output_models"];
/** The words that say which half of a model a file is; what is left of the name is the model's. */
const ROLE_WORDS = /(^|[._-])(vision_encoder|prompt_encoder_mask_decoder|image_encoder|mask_decoder|decoder-batch|encoder|decoder)(?=$|[._-])/;

interface Graph {
  file: string;
  spec: GraphRole;
  key: string;
  batch: boolean;
  data: string[];
}

function modelKey(file: string): { key: string; batch: boolean } {
  const stem = posix.basename(file).replace(/\.onnx$/, "");
  const m = ROLE_WORDS.exec(stem);
  const key = (m ? stem.slice(0, m.index) + stem.slice(m.index + m[0].length) : stem).replace(/^[._-]+|[._-]+$/g, "").replace(/([._-])[._-]+/g, "$1");
  return { key, batch: m?.[2] === "decoder-batch" };
}

async function listGraphs(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const sub of GRAPH_FOLDERS) {
    let entries: Dirent[];
    try {
      entries = await readdir(join(dir, sub), { withFileTypes: true });
    } catch (err) {
      if (sub === "") throw new SamEdgeError("MODEL_NOT_FOUND", `model folder ${dir} cannot be read: ${(err as Error).message}`, { cause: err });
      continue;
    }
    for (const e of entries) if (e.isFile() && e.name.endsWith(".onnx")) files.push(sub ? `${sub}/${e.name}` : e.name);
  }
  return files.sort();
}

async function readGraph(dir: string, file: string): Promise<Graph> {
  let spec: GraphRole;
  let data: string[] = [];
  try {
    const sig = await readGraphSignature(join(dir, file));
    spec = classifyGraph(sig);
    data = sig.externalData.map((loc) => posix.join(posix.dirname(file), loc));
  } catch (err) {
    spec = { role: "unknown", label: (err as Error).message.replace(`${join(dir, file)} `, "") };
  }
  return { file, spec, data, ...modelKey(file) };
}

/**
 * The models in a folder, told apart by their graphs' signatures: encoders and decoders pair by
 * the name left once the role word is taken out (`X.encoder.quant.onnx` with
 * `X.decoder.quant.onnx`, `onnx/vision_encoder_quantized.onnx` with
 * `onnx/prompt_encoder_mask_decoder_quantized.onnx`); an encoder with no namesake takes the one
 * decoder of the folder that fits it (SAM's `sam_onnx_example.onnx` beside a samexporter encoder).
 */
export async function scanFolder(dir: string): Promise<FolderScan> {
  const graphs = await Promise.all((await listGraphs(dir)).map((f) => readGraph(dir, f)));
  const encoders = graphs.filter((g): g is Graph & { spec: EncoderSpec } => g.spec.role === "encoder");
  const decoders = graphs.filter((g): g is Graph & { spec: DecoderSpec } => g.spec.role === "decoder");
  const used = new Set<string>();
  const candidates: Candidate[] = [];
  const folderName = basename(dir.replace(/[/\\]+$/, "")) || "model";
  for (const enc of encoders) {
    let dec = decoders.find((d) => !d.batch && d.key === enc.key);
    if (!dec) {
      const fitting = decoders.filter((d) => !d.batch && !mismatch(enc.spec, d.spec));
      if (fitting.length === 1) dec = fitting[0];
    }
    if (!dec) continue;
    const batch = decoders.find((d) => d.batch && d.key === enc.key);
    for (const g of [enc, dec, ...(batch ? [batch] : [])]) used.add(g.file);
    // transformers.js names its variants by suffix; the unsuffixed files are its fp32 default.
    let name = enc.key || (enc.file.startsWith("onnx/") ? "fp32" : folderName);
    if (candidates.some((c) => c.name === name)) name = enc.file.replace(/\.onnx$/, "");
    const problem = mismatch(enc.spec, dec.spec);
    candidates.push({
      name,
      encoder: enc.file,
      decoder: dec.file,
      ...(batch ? { decoderBatch: batch.file, batchSpec: batch.spec } : {}),
      data: [...new Set([enc, dec, ...(batch ? [batch] : [])].flatMap((g) => g.data))],
      encoderSpec: enc.spec,
      decoderSpec: dec.spec,
      ...(problem ? { problem } : {}),
    });
  }
  const others = graphs
    .filter((g) => !used.has(g.file))
    .map((g) => ({ file: g.file, what: g.spec.role === "encoder" || g.spec.role === "decoder" ? `${g.spec.label}, with no ${g.spec.role === "encoder" ? "decoder" : "encoder"} to pair with` : g.spec.label }));
  return { candidates, others };
}

function describeCandidates(scan: FolderScan): string {
  return scan.candidates.map((c) => `${c.name} (${c.encoder} + ${c.decoder})`).join(", ");
}

/** `DIR` or `DIR#NAME`: a folder, and optionally which of its models. */
export async function splitModelSpec(spec: string): Promise<{ dir: string; name?: string }> {
  const hash = spec.lastIndexOf("#");
  if (hash <= 0) return { dir: spec };
  // A folder whose own name holds '#' is still a folder.
  const whole = await stat(spec).catch(() => undefined);
  if (whole?.isDirectory()) return { dir: spec };
  return { dir: spec.slice(0, hash), name: spec.slice(hash + 1) };
}

async function specOf(dir: string, file: string, what: string): Promise<{ spec: GraphRole; data: string[] }> {
  const path = join(dir, file);
  try {
    await stat(path);
  } catch {
    throw new SamEdgeError("MODEL_NOT_FOUND", `model file ${path} does not exist (named as the ${what} in the manifest of ${dir})`);
  }
  const sig = await readGraphSignature(path);
  return { spec: classifyGraph(sig), data: sig.externalData.map((loc) => posix.join(posix.dirname(file), loc)) };
}

function notRole(dir: string, file: string, want: string, spec: GraphRole): SamEdgeError {
  return new SamEdgeError("MODEL_INVALID", `${join(dir, file)} is named as the ${want} but is ${spec.role === "unknown" || spec.role === "combined" ? spec.label : `a ${spec.label}`}`);
}

async function fromManifest(dir: string, manifest: ModelManifest): Promise<ModelFiles> {
  const enc = await specOf(dir, manifest.encoder, "encoder");
  const dec = await specOf(dir, manifest.decoder, "decoder");
  const batch = manifest.decoderBatch ? await specOf(dir, manifest.decoderBatch, "batch decoder") : undefined;
  if (enc.spec.role !== "encoder") throw notRole(dir, manifest.encoder, "encoder", enc.spec);
  if (dec.spec.role !== "decoder") throw notRole(dir, manifest.decoder, "decoder", dec.spec);
  if (batch && batch.spec.role !== "decoder") throw notRole(dir, manifest.decoderBatch!, "batch decoder", batch.spec);
  const data = [...new Set([...enc.data, ...dec.data, ...(batch?.data ?? [])])];
  return check({
    dir,
    manifest: data.length && !manifest.data ? { ...manifest, data } : manifest,
    encoder: enc.spec,
    decoder: dec.spec,
    ...(batch ? { decoderBatch: batch.spec as DecoderSpec } : {}),
  });
}

async function check(files: ModelFiles): Promise<ModelFiles> {
  const problem = mismatch(files.encoder, files.decoder) ?? (files.decoderBatch ? mismatch(files.encoder, files.decoderBatch) : undefined);
  if (problem) throw new SamEdgeError("MODEL_INVALID", `${files.dir}: ${problem}`);
  for (const file of files.manifest.data ?? []) {
    try {
      await stat(join(files.dir, file));
    } catch {
      throw new SamEdgeError("MODEL_NOT_FOUND", `${join(files.dir, file)} is missing: the model's graphs read their weights from it (ONNX external data)`);
    }
  }
  return files;
}

/** The manifest a folder without one gets: SAM's input size and normalisation, the files found. */
export function candidateManifest(c: Candidate): ModelManifest {
  return {
    name: c.name,
    inputSize: 1024,
    pixelMean: SAM_PIXEL_MEAN,
    pixelStd: SAM_PIXEL_STD,
    encoder: c.encoder,
    decoder: c.decoder,
    ...(c.decoderBatch ? { decoderBatch: c.decoderBatch } : {}),
    ...(c.data.length ? { data: c.data } : {}),
    layout: `${c.encoderSpec.label} + ${c.decoderSpec.label}`,
  };
}

/**
 * A model folder (`DIR`, or `DIR#NAME` for one of several) resolved to its files: its
 * manifest.json when it has one, else what its graphs' signatures say, whatever the files are
 * called. A folder with several models lists them and asks which.
 */
export async function resolveModel(spec: string): Promise<ModelFiles> {
  const { dir, name } = await splitModelSpec(spec);
  const manifestPath = join(dir, "manifest.json");
  let text: string | undefined;
  try {
    text = await readFile(manifestPath, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") {
      const why = code === "ENOTDIR" ? "is not a folder" : `cannot be read: ${(err as Error).message}`;
      throw new SamEdgeError("MODEL_NOT_FOUND", `model folder ${dir} ${why}`, { cause: err });
    }
  }
  if (text !== undefined && name === undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new SamEdgeError("MODEL_INVALID", `${manifestPath}: is ${jsonSyntaxProblem(err)}`);
    }
    return fromManifest(dir, parseManifest(manifestPath, raw));
  }
  const scan = await scanFolder(dir);
  let chosen: Candidate | undefined;
  if (name !== undefined) {
    chosen = scan.candidates.find((c) => c.name === name || c.encoder === name || c.encoder === `${name}.onnx`);
    if (!chosen) {
      throw new SamEdgeError(
        "MODEL_NOT_FOUND",
        `model folder ${dir} has no model "${name}"${scan.candidates.length ? `; it holds ${describeCandidates(scan)}` : ""}`,
      );
    }
  } else if (scan.candidates.length === 1) {
    chosen = scan.candidates[0];
  } else if (scan.candidates.length > 1) {
    throw new SamEdgeError(
      "MODEL_NOT_FOUND",
      `model folder ${dir} holds ${scan.candidates.length} models: ${describeCandidates(scan)}; choose one as ${dir}#NAME (e.g. ${dir}#${scan.candidates[0]!.name}), or write a manifest.json (sam-edge model add)`,
    );
  } else {
    // Files that are there but are no model are invalid; a folder without any holds none.
    const found = scan.others.map((o) => `${o.file}: ${o.what}`).join("; ");
    throw new SamEdgeError(found ? "MODEL_INVALID" : "MODEL_NOT_FOUND", `model folder ${dir} holds no SAM-family encoder and decoder that pair${found ? ` (found ${found})` : " (no .onnx files)"}`);
  }
  return check({
    dir,
    manifest: candidateManifest(chosen!),
    encoder: chosen!.encoderSpec,
    decoder: chosen!.decoderSpec,
    ...(chosen!.batchSpec ? { decoderBatch: chosen!.batchSpec } : {}),
  });
}

/** The manifest of a model folder (`DIR` or `DIR#NAME`), written or found. */
export async function readManifest(spec: string): Promise<ModelManifest> {
  return (await resolveModel(spec)).manifest;
}
