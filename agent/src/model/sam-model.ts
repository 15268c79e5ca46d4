import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { SamEdgeError } from "../core/errors.ts";
import { readManifest, type ModelManifest } from "./manifest.ts";

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
 * How the encoder wants its image: SAM's reference export takes `[1,3,S,S]` already
 * normalised and padded; some exports take the resized image as `[H,W,3]` pixels and do the
 * normalisation and padding inside the graph.
 */
export type EncoderLayout = { kind: "normalized-chw" | "raw-hwc"; input: string; output: string; pixelType: "float32" | "uint8" };

export interface DecoderLayout {
  /** Inputs beyond the three every SAM decoder has. */
  hasMaskInput: boolean;
  hasOrigImSize: boolean;
  scores: string;
  /** Mask logits at the original size (only when the decoder takes `orig_im_size`). */
  fullMasks?: string;
  /** Mask logits at the decoder's own low resolution (256x256 for SAM). */
  lowResMasks: string;
  /** Whether the prompt-batch (first) dimension of the point inputs is dynamic. */
  batched: boolean;
}

export interface DecoderInputs {
  embedding: ort.Tensor;
  /** [B, N, 2] in the encoder's resized frame. */
  coords: Float32Array;
  /** [B, N]: 1 foreground, 0 background, 2/3 box corners, -1 padding. */
  labels: Float32Array;
  batch: number;
  points: number;
  /** Previous low-res logits [1 or B, 1, h, w], or undefined. */
  maskInput?: Float32Array;
  maskBatch?: number;
  origSize: { width: number; height: number };
}

export interface DecoderOutputs {
  scores: Float32Array; // [B, M]
  masksPerPrompt: number; // M
  lowRes: ort.Tensor; // [B, M, h, w]
  full?: ort.Tensor; // [B, M, H, W]
}

const DECODER_REQUIRED = ["image_embeddings", "point_coords", "point_labels"];
const DECODER_OPTIONAL = ["mask_input", "has_mask_input", "orig_im_size"];

function describeIO(session: ort.InferenceSession): string {
  return `inputs [${session.inputNames.join(", ")}], outputs [${session.outputNames.join(", ")}]`;
}

function encoderLayout(session: ort.InferenceSession, file: string): EncoderLayout {
  const meta = session.inputMetadata;
  const input = meta[0];
  if (meta.length !== 1 || !input?.isTensor || session.outputNames.length < 1) {
    throw new SamEdgeError(
      "MODEL_INVALID",
      `${file} is not a SAM image encoder: expected one image input (e.g. "images" [1,3,1024,1024]) and an "image_embeddings" output; found ${describeIO(session)}`,
    );
  }
  const output = session.outputNames.includes("image_embeddings") ? "image_embeddings" : session.outputNames[0]!;
  const shape = input.shape;
  if (shape.length === 4 && shape[1] === 3) {
    return { kind: "normalized-chw", input: input.name, output, pixelType: "float32" };
  }
  if (shape.length === 3 && shape[2] === 3) {
    return { kind: "raw-hwc", input: input.name, output, pixelType: input.type === "uint8" ? "uint8" : "float32" };
  }
  throw new SamEdgeError(
    "MODEL_INVALID",
    `${file}: encoder input "${input.name}" has shape [${shape.join(",")}]; expected [1,3,S,S] (normalised) or [H,W,3] (raw pixels)`,
  );
}

function decoderLayout(session: ort.InferenceSession, file: string): DecoderLayout {
  const inputs = session.inputNames;
  const missing = DECODER_REQUIRED.filter((n) => !inputs.includes(n));
  const unknown = inputs.filter((n) => !DECODER_REQUIRED.includes(n) && !DECODER_OPTIONAL.includes(n));
  const outputs = session.outputNames;
  const scores = ["iou_predictions", "scores"].find((n) => outputs.includes(n));
  const hasOrigImSize = inputs.includes("orig_im_size");
  const lowRes = outputs.includes("low_res_masks") ? "low_res_masks" : !hasOrigImSize && outputs.includes("masks") ? "masks" : undefined;
  if (missing.length || unknown.length || !scores || !lowRes) {
    const problems = [
      missing.length ? `missing inputs ${missing.join(", ")}` : "",
      unknown.length ? `unexpected inputs ${unknown.join(", ")}` : "",
      !scores ? `no "iou_predictions" or "scores" output` : "",
      !lowRes ? `no "low_res_masks" output` : "",
    ].filter(Boolean);
    throw new SamEdgeError(
      "MODEL_INVALID",
      `${file} is not a SAM mask decoder (${problems.join("; ")}): found ${describeIO(session)}; expected inputs ${[...DECODER_REQUIRED, ...DECODER_OPTIONAL].join(", ")} (the last three optional) and outputs masks, iou_predictions, low_res_masks`,
    );
  }
  const hasMaskInput = inputs.includes("mask_input");
  if (hasMaskInput !== inputs.includes("has_mask_input")) {
    throw new SamEdgeError("MODEL_INVALID", `${file}: "mask_input" and "has_mask_input" come together; found ${describeIO(session)}`);
  }
  const coordsShape = session.inputMetadata.find((m) => m.name === "point_coords");
  const first = coordsShape?.isTensor ? coordsShape.shape[0] : 1;
  return {
    hasMaskInput,
    hasOrigImSize,
    scores,
    ...(hasOrigImSize && outputs.includes("masks") ? { fullMasks: "masks" } : {}),
    lowResMasks: lowRes,
    batched: typeof first === "string" || (typeof first === "number" && first < 0),
  };
}

async function sha256File(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

async function openSession(dir: string, file: string, config: SessionConfig, manifest: ModelManifest): Promise<ort.InferenceSession> {
  const path = join(dir, file);
  try {
    await stat(path);
  } catch {
    throw new SamEdgeError("MODEL_NOT_FOUND", `model file ${path} does not exist (named in the manifest of ${dir})`);
  }
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
    readonly encoderLayout: EncoderLayout,
    readonly decoderLayout: DecoderLayout,
    private readonly batchLayout: DecoderLayout | undefined,
  ) {}

  static async load(dir: string, config: SessionConfig = DEFAULT_SESSION_CONFIG): Promise<SamModel> {
    const manifest = await readManifest(dir);
    const encoder = await openSession(dir, manifest.encoder, config, manifest);
    const decoder = await openSession(dir, manifest.decoder, config, manifest);
    const decoderBatch = manifest.decoderBatch ? await openSession(dir, manifest.decoderBatch, config, manifest) : undefined;
    const encLayout = encoderLayout(encoder, manifest.encoder);
    const decLayout = decoderLayout(decoder, manifest.decoder);
    const batchLayout = decoderBatch ? decoderLayout(decoderBatch, manifest.decoderBatch!) : undefined;
    if (batchLayout && !batchLayout.batched) {
      throw new SamEdgeError("MODEL_INVALID", `${manifest.decoderBatch}: named as the batch decoder, but its point_coords batch dimension is fixed`);
    }
    const id = manifest.sha256?.[manifest.encoder] ?? `${manifest.name}:${(await sha256File(join(dir, manifest.encoder))).slice(0, 16)}`;
    return new SamModel(dir, manifest, id, encoder, decoder, decoderBatch, encLayout, decLayout, batchLayout);
  }

  /** True when many prompt sets can go through the decoder in one call. */
  get canBatch(): boolean {
    return this.batchLayout !== undefined || this.decoderLayout.batched;
  }

  async encode(pixels: Float32Array | Uint8Array, dims: readonly number[]): Promise<ort.Tensor> {
    const tensor = new ort.Tensor(this.encoderLayout.pixelType, pixels, dims);
    const out = await this.run(this.encoder, { [this.encoderLayout.input]: tensor }, this.manifest.encoder);
    return out[this.encoderLayout.output]!;
  }

  async decode(inputs: DecoderInputs): Promise<DecoderOutputs> {
    const useBatch = inputs.batch > 1 && this.batchLayout !== undefined;
    const session = useBatch ? this.decoderBatch! : this.decoder;
    const layout = useBatch ? this.batchLayout! : this.decoderLayout;
    if (inputs.batch > 1 && !layout.batched) {
      throw new RangeError("decode: this decoder takes one prompt set per call");
    }
    const feeds: Record<string, ort.Tensor> = {
      image_embeddings: inputs.embedding,
      point_coords: new ort.Tensor("float32", inputs.coords, [inputs.batch, inputs.points, 2]),
      point_labels: new ort.Tensor("float32", inputs.labels, [inputs.batch, inputs.points]),
    };
    if (layout.hasMaskInput) {
      const mb = inputs.maskInput ? (inputs.maskBatch ?? 1) : 1;
      feeds.mask_input = new ort.Tensor("float32", inputs.maskInput ?? NO_MASK_INPUT, [mb, 1, MASK_INPUT_SIDE, MASK_INPUT_SIDE]);
      feeds.has_mask_input = new ort.Tensor("float32", new Float32Array(mb).fill(inputs.maskInput ? 1 : 0), [mb]);
    }
    if (layout.hasOrigImSize) {
      feeds.orig_im_size = new ort.Tensor("float32", Float32Array.of(inputs.origSize.height, inputs.origSize.width), [2]);
    }
    const out = await this.run(session, feeds, useBatch ? this.manifest.decoderBatch! : this.manifest.decoder);
    const scores = out[layout.scores]!;
    const lowRes = out[layout.lowResMasks]!;
    return {
      scores: scores.data as Float32Array,
      masksPerPrompt: scores.dims[1] ?? 1,
      lowRes,
      ...(layout.fullMasks ? { full: out[layout.fullMasks]! } : {}),
    };
  }

  /**
   * One run at a time, in the order asked. onnxruntime-node runs a session on the event loop's
   * thread from a setImmediate callback, so runs requested together would all execute in one
   * check phase, back to back, with no socket read or write in between: under load every
   * request then waits for a whole batch of runs, twice. Chained, each run starts from the
   * previous one's completion, which Node defers to the next loop iteration, after the I/O.
   */
  private async run(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, file: string): Promise<ort.InferenceSession.ReturnType> {
    const previous = this.lastRun;
    let done!: () => void;
    this.lastRun = new Promise<void>((resolve) => (done = resolve));
    await previous;
    const start = performance.now();
    try {
      return await session.run(feeds);
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
