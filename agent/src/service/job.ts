import type { ApiRle } from "../client/types.ts";
import type { CameraPrompt, EverythingSettings, RouteMode } from "../config/schema.ts";
import type { BBox, BinaryMask } from "../segment/mask.ts";
import type { Prompt } from "../segment/prompts.ts";
import type { Source } from "./queue.ts";

/** What to segment in one image, whoever asks: a camera, an HTTP or MQTT request, the CLI. */
export interface SegmentJob {
  source: Source;
  bytes: Uint8Array;
  mode: "prompts" | "everything";
  /** One mask (or, with `multimask`, every candidate) per prompt, in `coordinates`. */
  prompts: CameraPrompt[];
  coordinates: "pixels" | "normalized";
  /**
   * SAM's three candidates per prompt instead of one. Unset: SAM's rule (a lone click is
   * ambiguous, so its best of three answers; anything more, the single-mask output).
   */
  multimask?: boolean;
  /** Everything mode's settings; what is left out comes from the model's defaults. */
  everything?: Partial<EverythingSettings>;
  route: RouteMode;
  /** Aborted when the client is gone: a job still waiting is dropped, never run. */
  signal?: AbortSignal;
  /** Epoch ms after which the answer is of no use (MQTT 5 message expiry). */
  expiresAt?: number;
  /**
   * While the first model loads, wait for it (cameras, MQTT) or fail at once with MODEL_LOADING
   * (HTTP: a client is better told to retry). Default true.
   */
  waitForModel?: boolean;
}

/** One mask of a result, whichever way it was made. */
export interface ResultMask {
  /** Index of the prompt it answers (prompts mode). */
  prompt?: number;
  /** The grid point that produced it (Everything mode, local route). */
  point?: [number, number];
  mask: BinaryMask;
  bbox: BBox;
  area: number;
  confidence: number;
  stability?: number;
  /** The COCO RLE the hosted API sent with it (cloud route): written out again as it came, not re-encoded. */
  rle?: ApiRle;
}

/** The one result type: what every caller gets, and what the one encoder (result.ts) writes. */
export interface SegmentationResult {
  route: "local" | "cloud";
  /** Why a cloud or auto job ran locally after all. */
  fallback?: { code: string; message: string };
  /** The model that answered (local route). */
  model?: string;
  width: number;
  height: number;
  masks: ResultMask[];
  /** Milliseconds per stage: queue, preprocess, encode, decode, postprocess locally; cloud for the hosted call. */
  timings: Record<string, number>;
}

/** Prompts in the job's coordinates, as pixel prompts for an image of this size. */
export function toPixelPrompts(prompts: CameraPrompt[], coordinates: SegmentJob["coordinates"], width: number, height: number): Prompt[] {
  const sx = coordinates === "normalized" ? width : 1;
  const sy = coordinates === "normalized" ? height : 1;
  return prompts.map((p) => ({
    ...(p.points ? { points: p.points.map((pt) => ({ x: pt.x * sx, y: pt.y * sy, label: pt.label ?? 1 })) } : {}),
    ...(p.box ? { box: [p.box[0] * sx, p.box[1] * sy, p.box[2] * sx, p.box[3] * sy] as [number, number, number, number] } : {}),
  }));
}

