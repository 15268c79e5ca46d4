import { everythingProblem, type EverythingSettings } from "../config/everything.ts";
import { SamEdgeError } from "../core/errors.ts";

/**
 * What a model folder says about itself (`manifest.json`). Only the files are required. A
 * folder without one is read by the graphs' signatures (model/folder.ts), and `sam-edge model
 * add` writes one.
 */
export interface ModelManifest {
  name: string;
  /** Longest side of the encoder input (the side of its square for SAM 2), 1024 for every SAM variant. */
  inputSize: number;
  pixelMean: [number, number, number];
  pixelStd: [number, number, number];
  /** Paths relative to the model folder, `/`-separated: `onnx/vision_encoder.onnx` is one. */
  encoder: string;
  decoder: string;
  /** A decoder whose prompt-batch dimension is dynamic (Everything mode batches its grid). */
  decoderBatch?: string;
  /** Files the graphs read their weights from (ONNX external data), checked and copied with them. */
  data?: string[];
  /** The layout found when the manifest was written, in words (informational). */
  layout?: string;
  /** Where the weights came from, in words. */
  source?: string;
  /** sha256 of each file, by path; checked at load when present. */
  sha256?: Record<string, string>;
  /**
   * Everything mode's settings calibrated for this model (one whose predicted IoUs run lower
   * than SAM's needs a lower pred_iou_thresh than SAM's 0.88), as config/everything.ts names them.
   */
  everything?: Partial<EverythingSettings>;
}

export const SAM_PIXEL_MEAN: [number, number, number] = [123.675, 116.28, 103.53];
export const SAM_PIXEL_STD: [number, number, number] = [58.395, 57.12, 57.375];

const MAX_PATH = 255;

function triple(v: unknown): v is [number, number, number] {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && Number.isFinite(x));
}

function invalid(where: string, what: string): SamEdgeError {
  return new SamEdgeError("MODEL_INVALID", `${where}: ${what}`);
}

/**
 * A path inside the model folder, as a manifest may name it: relative, `/`-separated, no `.` or
 * `..` segment, no backslash or NUL. An update writes these paths under its staging folder, so
 * none may lead out of it.
 */
export function isModelPath(path: unknown): path is string {
  if (typeof path !== "string" || path.length === 0 || path.length > MAX_PATH || /[\\\0]/.test(path) || path.startsWith("/")) return false;
  return path.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

function parseEverything(where: string, raw: unknown): Partial<EverythingSettings> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid(where, `"everything" must be an object of Everything-mode settings`);
  for (const [key, value] of Object.entries(raw)) {
    const problem = everythingProblem(key, value);
    if (problem) throw invalid(where, `"everything": ${problem}`);
  }
  return raw as Partial<EverythingSettings>;
}

/** Checks a parsed manifest; `where` names it (a path or a URL) in the errors. */
export function parseManifest(where: string, raw: unknown): ModelManifest {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid(where, "must be a JSON object");
  const m = raw as Record<string, unknown>;
  for (const key of ["encoder", "decoder", "decoderBatch"] as const) {
    if (key === "decoderBatch" && m[key] === undefined) continue;
    if (!isModelPath(m[key]) || !(m[key] as string).endsWith(".onnx")) {
      throw invalid(where, `"${key}" must name an .onnx file inside the model folder (a relative path such as "onnx/vision_encoder.onnx", without "..")`);
    }
  }
  if (m.data !== undefined && !(Array.isArray(m.data) && m.data.every(isModelPath))) {
    throw invalid(where, `"data" must list files inside the model folder (relative paths without "..")`);
  }
  if (m.inputSize !== undefined && !(Number.isInteger(m.inputSize) && (m.inputSize as number) >= 64 && (m.inputSize as number) <= 4096)) {
    throw invalid(where, `"inputSize" must be an integer between 64 and 4096`);
  }
  for (const key of ["pixelMean", "pixelStd"] as const) {
    if (m[key] !== undefined && !triple(m[key])) throw invalid(where, `"${key}" must be three numbers (R, G, B)`);
  }
  if (m.sha256 !== undefined) {
    const ok =
      typeof m.sha256 === "object" &&
      m.sha256 !== null &&
      Object.values(m.sha256).every((h) => typeof h === "string" && /^[0-9a-f]{64}$/.test(h));
    if (!ok) throw invalid(where, `"sha256" must map file names to 64 hex digits`);
  }
  const encoder = m.encoder as string;
  return {
    name: typeof m.name === "string" ? m.name : encoder.replace(/^.*\//, "").replace(/\.encoder\.onnx$|\.onnx$/, ""),
    inputSize: (m.inputSize as number | undefined) ?? 1024,
    pixelMean: (m.pixelMean as [number, number, number] | undefined) ?? SAM_PIXEL_MEAN,
    pixelStd: (m.pixelStd as [number, number, number] | undefined) ?? SAM_PIXEL_STD,
    encoder,
    decoder: m.decoder as string,
    ...(typeof m.decoderBatch === "string" ? { decoderBatch: m.decoderBatch } : {}),
    ...(Array.isArray(m.data) && m.data.length ? { data: m.data as string[] } : {}),
    ...(typeof m.layout === "string" ? { layout: m.layout } : {}),
    ...(typeof m.source === "string" ? { source: m.source } : {}),
    ...(m.sha256 ? { sha256: m.sha256 as Record<string, string> } : {}),
    ...(m.everything !== undefined ? { everything: parseEverything(where, m.everything) } : {}),
  };
}

/** Every file a manifest names: the graphs, then their external data. */
export function manifestFiles(m: ModelManifest): string[] {
  return [...new Set([m.encoder, m.decoder, ...(m.decoderBatch ? [m.decoderBatch] : []), ...(m.data ?? [])])];
}
