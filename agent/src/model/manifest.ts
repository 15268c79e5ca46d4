import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { SamEdgeError } from "../core/errors.ts";
import { jsonSyntaxProblem } from "../core/json.ts";

/**
 * What a model folder says about itself (`manifest.json`). Only the files are required: a
 * folder with one `*.encoder.onnx` and one `*.decoder.onnx` and no manifest gets SAM's
 * defaults, so a SAM / MobileSAM / EdgeSAM export made elsewhere loads as it is.
 */
export interface ModelManifest {
  name: string;
  /** Longest side of the encoder input, 1024 for every SAM variant. */
  inputSize: number;
  pixelMean: [number, number, number];
  pixelStd: [number, number, number];
  encoder: string;
  decoder: string;
  /** A decoder whose prompt-batch dimension is dynamic (Everything mode batches its grid). */
  decoderBatch?: string;
  /** Where the weights came from, in words. */
  source?: string;
  /** sha256 of each file, by file name; checked at load when present. */
  sha256?: Record<string, string>;
}

export const SAM_PIXEL_MEAN: [number, number, number] = [123.675, 116.28, 103.53];
export const SAM_PIXEL_STD: [number, number, number] = [58.395, 57.12, 57.375];

function triple(v: unknown): v is [number, number, number] {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && Number.isFinite(x));
}

function invalid(where: string, what: string): SamEdgeError {
  return new SamEdgeError("MODEL_INVALID", `${where}: ${what}`);
}

/** Checks a parsed manifest; `where` names it (a path or a URL) in the errors. */
export function parseManifest(where: string, raw: unknown): ModelManifest {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid(where, "must be a JSON object");
  const m = raw as Record<string, unknown>;
  for (const key of ["encoder", "decoder", "decoderBatch"] as const) {
    if (key === "decoderBatch" && m[key] === undefined) continue;
    // A bare file name: an update writes these names into its staging folder.
    if (typeof m[key] !== "string" || !(m[key] as string).endsWith(".onnx") || /[/\\\0]/.test(m[key] as string)) {
      throw invalid(where, `"${key}" must name an .onnx file inside the model folder`);
    }
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
  return {
    name: typeof m.name === "string" ? m.name : (m.encoder as string).replace(/\.encoder\.onnx$|\.onnx$/, ""),
    inputSize: (m.inputSize as number | undefined) ?? 1024,
    pixelMean: (m.pixelMean as [number, number, number] | undefined) ?? SAM_PIXEL_MEAN,
    pixelStd: (m.pixelStd as [number, number, number] | undefined) ?? SAM_PIXEL_STD,
    encoder: m.encoder as string,
    decoder: m.decoder as string,
    ...(typeof m.decoderBatch === "string" ? { decoderBatch: m.decoderBatch } : {}),
    ...(typeof m.source === "string" ? { source: m.source } : {}),
    ...(m.sha256 ? { sha256: m.sha256 as Record<string, string> } : {}),
  };
}

/** Reads `dir/manifest.json`, or infers a manifest from the file names in `dir`. */
export async function readManifest(dir: string): Promise<ModelManifest> {
  let files: string[];
  try {
    files = await readdir(dir);
  } catch (err) {
    throw new SamEdgeError("MODEL_NOT_FOUND", `model folder ${dir} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (files.includes("manifest.json")) {
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
    } catch (err) {
      throw invalid(join(dir, "manifest.json"), `is ${jsonSyntaxProblem(err)}`);
    }
    return parseManifest(join(dir, "manifest.json"), raw);
  }
  const pick = (re: RegExp, what: string): string => {
    const found = files.filter((f) => re.test(f));
    if (found.length !== 1) {
      throw new SamEdgeError(
        "MODEL_NOT_FOUND",
        `model folder ${dir} has no manifest.json and ${found.length === 0 ? "no" : "more than one"} ${what} (found: ${files.join(", ") || "nothing"})`,
      );
    }
    return found[0]!;
  };
  const encoder = pick(/\.encoder\.onnx$/, "*.encoder.onnx");
  const decoder = pick(/\.decoder\.onnx$/, "*.decoder.onnx");
  const batch = files.find((f) => f.endsWith(".decoder-batch.onnx"));
  return parseManifest(join(dir, "manifest.json"), { encoder, decoder, ...(batch ? { decoderBatch: batch } : {}) });
}
