import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import * as ort from "onnxruntime-node";
import { SamEdgeError } from "../core/errors.ts";
import { resolveModel } from "./folder.ts";
import type { DecoderSpec, EncoderSpec, FeatureRole } from "./layouts.ts";
import type { ModelManifest } from "./manifest.ts";
import { describeTensor, type TensorInfo } from "./onnx-io.ts";

export interface SessionConfig {
  /** Threads for one operator; 0 lets onnxruntime choose (all cores). */
  intraOpThreads: number;
  graphOptimizationLevel: "disabled" | "basic" | "extended" | "all";
  /** In order of preference; "cpu" is always appended as the last resort. */
  executionProviders: string[];
  /**
   * Whether onnxruntime's pool threads busy-wait for the next operator. Off by default: on a
   * 2-4 core box the spinning takes CPU from capture, HTTP and MQTT work in the same process.
   */
  spinWait: boolean;
}

export const DEFAULT_SESSION_CONFIG: SessionConfig = {
  intraOpThreads: 0,
  graphOptimizationLevel: "all",
  executionProviders: ["cpu"],
  spinWait: false,
};

/** onnxruntime's session config entries for these options. */
export function sessionOptions(config: SessionConfig, executionProviders: string[]): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: config.intraOpThreads,
    graphOptimizationLevel: config.graphOptimizationLevel,
    executionProviders,
    // Flattened by the binding into "session.intra_op.allow_spinning" (onnxruntime_session_options_config_keys.h).
    extra: { session: { intra_op: { allow_spinning: config.spinWait ? "1" : "0" } } },
  };
}

/**
 * An encoded image: whatever tensors the model's decoder needs (one embedding for SAM, three
 * feature maps for SAM 2, the embedding and its positional encoding for transformers' SAM).
 * Opaque outside the model: callers keep it, cache it, and pass it back to decode.
 */
export class ImageFeatures {
  /** @internal */
  constructor(
    readonly tensors: Partial<Record<FeatureRole, ort.Tensor>>,
    /**
     * The frame prompts and low-res masks are expressed in: the resized image for SAM (its padded
     * square holding it), the whole square for SAM 2 and EfficientSAM, whose graphs stretch.
     */
    readonly frame: { width: number; height: number },
  ) {}

  /** What holding it costs, for caches bounded in bytes. */
  get bytes(): number {
    return Object.values(this.tensors).reduce((sum, t) => sum + t.data.length * 4, 0);
  }
}

/** An image decoded and resized for the encoder (segment/preprocess.ts makes it). */
export interface EncoderImage {
  width: number;
  height: number;
  resizedWidth: number;
  resizedHeight: number;
  /** RGB bytes, row-major, at the resized size. */
  rgb: Uint8Array;
}

/** How the image must be resized for this model: SAM's longest side, SAM 2's square, or not at all. */
export interface ModelInput {
  fit: "longest-side" | "stretch" | "none";
  size: number;
}

export interface DecoderInputs {
  embedding: ImageFeatures;
  /**
   * [B, N, 2] in the encoder's resized frame, as SAM's reference decoder takes them: clicks, then
   * a box's two corners or the padding point. Each layout gets them in its own form.
   */
  coords: Float32Array;
  /** [B, N]: 1 foreground, 0 background, 2/3 box corners, -1 padding. */
  labels: Float32Array;
  batch: number;
  points: number;
  /** Previous low-res logits [1 or B, 1, h, w], or undefined. */
  maskInput?: Float32Array;
  maskBatch?: number;
}

export interface DecoderOutputs {
  scores: Float32Array; // [B, M]
  masksPerPrompt: number; // M
  /**
   * Index of the first multimask answer: 1 when the decoder returns SAM's four masks (index 0 is
   * the single-mask answer), 0 when it returns only the three multimask answers (SAM 2's and
   * transformers' exports, EfficientSAM) or only one mask.
   */
  multimaskFrom: number;
  lowRes: ort.Tensor; // [B, M, h, w]
  /**
   * How the reference predictor brings the low-res logits to the original size (see
   * segment/postprocess.ts): the engine does it, for the answered masks only, a row at a time.
   */
  upsample: "sam" | "direct" | "bicubic";
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

async function openSession(dir: string, file: string, config: SessionConfig, manifest: ModelManifest): Promise<ort.InferenceSession> {
  const path = join(dir, file);
  const expected = manifest.sha256?.[file];
  if (expected) {
    const actual = await sha256File(path);
    if (actual !== expected) {
      throw new SamEdgeError("MODEL_INVALID", `${path}: sha256 is ${actual}, but the manifest says ${expected}; the file is corrupt or not the one the manifest describes`);
    }
  }
  // In order of preference: a provider this build or machine lacks (CUDA on a Pi) gives way to
  // the next, down to the CPU, which runs every model that is valid at all.
  const preferred = [...config.executionProviders.filter((p) => p !== "cpu"), "cpu"];
  let lastError: unknown;
  for (let i = 0; i < preferred.length; i++) {
    try {
      return await ort.InferenceSession.create(path, sessionOptions(config, preferred.slice(i)));
    } catch (err) {
      lastError = err;
    }
  }
  throw new SamEdgeError("MODEL_INVALID", `${path} cannot be loaded by onnxruntime: ${(lastError as Error).message}`, { cause: lastError });
}

const MASK_INPUT_SIDE = 256;
/**
 * The decoder's mask_input when there is none: zeros, shared by every call rather than 256 KB
 * allocated per click (onnxruntime only reads its inputs).
 */
const NO_MASK_INPUT = new Float32Array(MASK_INPUT_SIDE * MASK_INPUT_SIDE);

/** RGB bytes -> [1,3,S,S] float32, normalised per channel, zero-padded bottom and right. */
export function normaliseAndPad(image: EncoderImage, size: number, mean: readonly number[], std: readonly number[]): Float32Array {
  const out = new Float32Array(3 * size * size);
  const { rgb, resizedWidth: w, resizedHeight: h } = image;
  const plane = size * size;
  for (let c = 0; c < 3; c++) {
    const m = mean[c]!;
    const inv = 1 / std[c]!;
    const base = c * plane;
    for (let y = 0; y < h; y++) {
      let src = y * w * 3 + c;
      let dst = base + y * size;
      for (let x = 0; x < w; x++, src += 3, dst++) out[dst] = (rgb[src]! - m) * inv;
    }
  }
  return out;
}

/** RGB bytes -> [1,3,h,w] float32 in 0..1 (EfficientSAM normalises in its graph). */
function unitChw(image: EncoderImage): Float32Array {
  const { rgb, resizedWidth: w, resizedHeight: h } = image;
  const out = new Float32Array(3 * w * h);
  for (let i = 0, p = 0; p < w * h; p++) for (let c = 0; c < 3; c++, i++) out[c * w * h + p] = rgb[i]! / 255;
  return out;
}

function badPrompt(message: string): SamEdgeError {
  return new SamEdgeError("PROMPT_INVALID", message);
}

/**
 * SAM-convention prompt rows rewritten for a decoder: the padding point dropped where the graph
 * adds its own, box corners moved to a box tensor where the graph takes one. Every row has the
 * same make-up (clicks, then corners or padding), as the engine and Everything mode write them.
 */
function rewritePrompts(inputs: DecoderInputs, layout: DecoderSpec, label: string) {
  const { batch, points: n, coords, labels } = inputs;
  const first = Array.from(labels.subarray(0, n));
  const corners = first.filter((l) => l === 2 || l === 3).length;
  const pads = first.filter((l) => l === -1).length;
  const boxIn = corners > 0 && layout.boxes !== undefined;
  if (corners > 0 && !layout.boxes && layout.family === "hf-sam") {
    throw badPrompt(`this model's decoder (${label}) takes no box: its export has no input_boxes; prompt it with points`);
  }
  const keep = (l: number) => !(l === -1 && (layout.padsInGraph || boxIn)) && !((l === 2 || l === 3) && boxIn);
  const kept = first.filter(keep).length;
  if (layout.maxPoints !== undefined && kept > layout.maxPoints) {
    throw badPrompt(`this model's decoder (${label}) reads at most ${layout.maxPoints} points, a box counting as two; got ${kept}`);
  }
  const outCoords = new Float32Array(batch * kept * 2);
  const outLabels = new Float32Array(batch * kept);
  const boxes = new Float32Array(boxIn ? batch * 4 : 0);
  for (let b = 0; b < batch; b++) {
    let k = 0;
    for (let i = 0; i < n; i++) {
      const l = labels[b * n + i]!;
      const x = coords[(b * n + i) * 2]!;
      const y = coords[(b * n + i) * 2 + 1]!;
      if (boxIn && (l === 2 || l === 3)) boxes.set([x, y], b * 4 + (l - 2) * 2);
      if (!keep(l)) continue;
      outCoords.set([x, y], (b * kept + k) * 2);
      outLabels[b * kept + k] = l;
      k++;
    }
    if (k !== kept) throw new RangeError("decode: every prompt set of a batch must have the same make-up");
  }
  return { coords: outCoords, labels: outLabels, points: kept, boxes: boxIn ? boxes : undefined, hadPad: pads > 0 };
}

/** An encoder + decoder pair, ready to run. Nothing else in the agent talks to onnxruntime. */
export class SamModel {
  /** Milliseconds spent inside onnxruntime's session.run: benchmarks separate model time from ours. */
  sessionMs = 0;
  private lastRun: Promise<void> = Promise.resolve();

  private constructor(
    readonly dir: string,
    readonly manifest: ModelManifest,
    /** Identifies the weights (embedding caches key on it). */
    readonly id: string,
    private readonly encoder: ort.InferenceSession,
    private readonly decoder: ort.InferenceSession,
    private readonly decoderBatch: ort.InferenceSession | undefined,
    private readonly encoderSpec: EncoderSpec,
    private readonly decoderSpec: DecoderSpec,
    private readonly batchSpec: DecoderSpec | undefined,
  ) {}

  /** Loads `DIR` (its manifest, or the one model its graphs make) or `DIR#NAME` (one of several). */
  static async load(spec: string, config: SessionConfig = DEFAULT_SESSION_CONFIG): Promise<SamModel> {
    const files = await resolveModel(spec);
    const { dir, manifest } = files;
    const encoder = await openSession(dir, manifest.encoder, config, manifest);
    const decoder = await openSession(dir, manifest.decoder, config, manifest);
    const decoderBatch = manifest.decoderBatch ? await openSession(dir, manifest.decoderBatch, config, manifest) : undefined;
    if (files.decoderBatch && files.decoderBatch.batch === "one") {
      throw new SamEdgeError("MODEL_INVALID", `${manifest.decoderBatch}: named as the batch decoder, but its point batch dimension is fixed`);
    }
    const id = manifest.sha256?.[manifest.encoder] ?? `${manifest.name}:${(await sha256File(join(dir, manifest.encoder))).slice(0, 16)}`;
    return new SamModel(dir, manifest, id, encoder, decoder, decoderBatch, files.encoder, files.decoder, files.decoderBatch);
  }

  /** The graphs found, in words (listings, logs, `sam-edge model info`). */
  get layout(): { encoder: string; decoder: string; family: string } {
    return { encoder: this.encoderSpec.label, decoder: this.decoderSpec.label, family: this.decoderSpec.family };
  }

  /** How images must be resized for this model. */
  get input(): ModelInput {
    return { fit: this.encoderSpec.fit, size: this.manifest.inputSize };
  }

  /** True when many prompt sets can go through the decoder in one call. */
  get canBatch(): boolean {
    return this.batchSpec !== undefined || this.decoderSpec.batch !== "one";
  }

  async encode(image: EncoderImage): Promise<ImageFeatures> {
    const spec = this.encoderSpec;
    const size = this.manifest.inputSize;
    let tensor: ort.Tensor;
    if (spec.pixels === "normalized-chw") {
      tensor = new ort.Tensor("float32", normaliseAndPad(image, size, this.manifest.pixelMean, this.manifest.pixelStd), [1, 3, size, size]);
    } else if (spec.pixels === "unit-chw") {
      tensor = new ort.Tensor("float32", unitChw(image), [1, 3, image.resizedHeight, image.resizedWidth]);
    } else {
      const dims = [image.resizedHeight, image.resizedWidth, 3];
      tensor = spec.input.type === "uint8" ? new ort.Tensor("uint8", Uint8Array.from(image.rgb), dims) : new ort.Tensor("float32", Float32Array.from(image.rgb), dims);
    }
    const out = await this.run(this.encoder, { [spec.input.name]: tensor }, this.manifest.encoder);
    const tensors: Partial<Record<FeatureRole, ort.Tensor>> = {};
    for (const [role, info] of Object.entries(spec.outputs) as [FeatureRole, TensorInfo][]) {
      const t = out[info.name]!;
      const wanted = this.decoderSpec.features[role];
      // The shapes a graph declares can be symbolic; the first real output settles them.
      if (wanted && t.dims.some((d, i) => i > 0 && typeof wanted.shape[i] === "number" && wanted.shape[i] !== d)) {
        throw new SamEdgeError(
          "MODEL_INVALID",
          `${this.manifest.encoder} (${spec.label}) gives ${info.name} [${t.dims.join(",")}], but ${this.manifest.decoder} (${this.decoderSpec.label}) takes ${describeTensor(wanted)}: they are not two halves of one model`,
        );
      }
      tensors[role] = t;
    }
    return new ImageFeatures(tensors, spec.fit === "longest-side" ? { width: image.resizedWidth, height: image.resizedHeight } : { width: size, height: size });
  }

  async decode(inputs: DecoderInputs): Promise<DecoderOutputs> {
    const useBatch = inputs.batch > 1 && this.batchSpec !== undefined;
    const session = useBatch ? this.decoderBatch! : this.decoder;
    const layout = useBatch ? this.batchSpec! : this.decoderSpec;
    const file = useBatch ? this.manifest.decoderBatch! : this.manifest.decoder;
    if (inputs.batch > 1 && layout.batch === "one") {
      throw new RangeError("decode: this decoder takes one prompt set per call");
    }
    if (inputs.maskInput && !layout.maskInput) {
      throw badPrompt(`this model's decoder (${layout.label}) takes no mask input; refine with points instead`);
    }
    const feeds: Record<string, ort.Tensor> = {};
    for (const [role, info] of Object.entries(layout.features) as [FeatureRole, TensorInfo][]) feeds[info.name] = inputs.embedding.tensors[role]!;
    const p = rewritePrompts(inputs, layout, layout.label);
    const b = inputs.batch;
    const pointDims = layout.batch === "point-batch" || layout.points.shape.length === 4 ? [1, b, p.points] : [b, p.points];
    feeds[layout.points.name] = new ort.Tensor("float32", p.coords, [...pointDims, 2]);
    feeds[layout.labels.name] =
      layout.labels.type === "int64" ? new ort.Tensor("int64", BigInt64Array.from(p.labels, (l) => BigInt(l)), pointDims) : new ort.Tensor("float32", p.labels, pointDims);
    if (layout.boxes) feeds[layout.boxes.name] = new ort.Tensor("float32", p.boxes ?? new Float32Array(0), [1, p.boxes ? b : 0, 4]);
    if (layout.maskInput && layout.hasMaskInput) {
      const mb = inputs.maskInput ? (inputs.maskBatch ?? 1) : 1;
      feeds[layout.maskInput.name] = new ort.Tensor("float32", inputs.maskInput ?? NO_MASK_INPUT, [mb, 1, MASK_INPUT_SIDE, MASK_INPUT_SIDE]);
      feeds[layout.hasMaskInput.name] = new ort.Tensor("float32", new Float32Array(mb).fill(inputs.maskInput ? 1 : 0), [mb]);
    }
    if (layout.origSize) {
      // Only the full-size `masks` output depends on orig_im_size, and it is never fetched (an
      // 8000x8000 image would make it a GB): the frame's own size keeps it small. EfficientSAM's
      // orig_im_size also scales its points from the image to its square: given the square,
      // the engine's frame coordinates pass as they are.
      const { width, height } = inputs.embedding.frame;
      feeds[layout.origSize.name] =
        layout.origSize.type === "int64" ? new ort.Tensor("int64", BigInt64Array.of(BigInt(height), BigInt(width)), [2]) : new ort.Tensor("float32", Float32Array.of(height, width), [2]);
    }
    const out = await this.run(session, feeds, file, [layout.scores, layout.lowRes]);
    const scores = out[layout.scores]!;
    const m = scores.dims[scores.dims.length - 1] ?? 1;
    const low = out[layout.lowRes]!;
    const [h, w] = low.dims.slice(-2) as [number, number];
    // EfficientSAM's export upsamples bilinearly, its model bicubically: the engine does the latter.
    const upsample = layout.family === "efficient-sam" ? "bicubic" : this.encoderSpec.fit === "longest-side" ? "sam" : "direct";
    return {
      scores: scores.data as Float32Array,
      masksPerPrompt: m,
      multimaskFrom: m === 4 ? 1 : 0,
      lowRes: new ort.Tensor("float32", low.data as Float32Array, [low.data.length / (m * h * w), m, h, w]),
      upsample,
    };
  }

  /**
   * One run at a time, in the order asked. onnxruntime-node runs a session on the event loop's
   * thread from a setImmediate callback, so runs requested together would all execute in one
   * check phase, back to back, with no socket read or write in between: under load every
   * request then waits for a whole batch of runs, twice. Chained, each run starts from the
   * previous one's completion, which Node defers to the next loop iteration, after the I/O.
   */
  private async run(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, file: string, fetches?: string[]): Promise<ort.InferenceSession.ReturnType> {
    const previous = this.lastRun;
    let done!: () => void;
    this.lastRun = new Promise<void>((resolve) => (done = resolve));
    await previous;
    const start = performance.now();
    try {
      // Outputs not fetched are not computed: onnxruntime prunes the nodes only they need.
      return await (fetches ? session.run(feeds, fetches) : session.run(feeds));
    } catch (err) {
      throw new SamEdgeError("MODEL_FAILED", `${file} failed to run: ${(err as Error).message}`, { cause: err });
    } finally {
      this.sessionMs += performance.now() - start;
      done();
    }
  }

  async release(): Promise<void> {
    await Promise.all([this.encoder.release(), this.decoder.release(), this.decoderBatch?.release()]);
  }
}
