/**
 * The wire format of the SAM API, as the hosted service speaks it and the box's local API
 * answers it. Fields past the hosted ones (`stability`, `rle`, `route`, ...) are extras that
 * the hosted service may leave out, so they are optional here.
 */

/** A click in image pixels: label 1 includes (foreground), 0 excludes (background). */
export interface ApiPoint {
  x: number;
  y: number;
  label: 0 | 1;
}

/** [x, y, width, height] in pixels. */
export type ApiBBox = [number, number, number, number];

/** COCO compressed RLE, as pycocotools writes it. */
export interface ApiRle {
  size: [height: number, width: number];
  counts: string;
}

export interface ApiMask {
  /** Base64 PNG, 255 inside the mask. */
  mask: string;
  bbox: ApiBBox;
  /** The model's predicted IoU of the mask. */
  confidence: number;
  stability?: number;
  area?: number;
}

/** Where an answer was computed: on the box or by the hosted service. */
export type ApiRoute = "local" | "cloud";

export interface InteractiveResult extends ApiMask {
  /** Base64 JPEG of the mask over the image, when `return_overlay` was asked. */
  overlay?: string;
  /** Every candidate mask best first, when `multimask` was asked. */
  masks?: ApiMask[];
  rle?: ApiRle;
  width?: number;
  height?: number;
  latency_ms?: number;
  route?: ApiRoute;
}

export interface EverythingMaskResult extends ApiMask {
  /** The grid point that produced the mask. */
  point?: [number, number];
}

export interface EverythingResult {
  masks: EverythingMaskResult[];
  overlay?: string;
  width?: number;
  height?: number;
  latency_ms?: number;
  route?: ApiRoute;
}

export interface ApiErrorBody {
  error: { code: string; message: string };
}

/** A batch answers each image in request order, with its own result or its own error. */
export interface BatchResult<T> {
  results: (T | ApiErrorBody)[];
  latency_ms?: number;
  route?: ApiRoute;
}

export interface ApiPolygon {
  /** [x, y] corners in pixel-corner coordinates; the ring closes implicitly. */
  exterior: [number, number][];
  holes: [number, number][][];
}

/**
 * One mask of a result as the agent writes it everywhere (one encoder: agent/src/service/result.ts):
 * in MQTT results and answers, the CLI's JSON, and, with `mask`, the HTTP answers.
 */
export interface ResultMask {
  /** Index of the prompt it answers (prompts mode). */
  prompt?: number;
  /** The grid point that produced it (Everything mode). */
  point?: [number, number];
  bbox: ApiBBox;
  area: number;
  confidence: number;
  stability?: number;
  /** Base64 PNG, 255 inside the mask. */
  mask?: string;
  rle?: ApiRle;
  polygons?: ApiPolygon[];
}

/**
 * A result over MQTT: a camera's frame on `cameras/<camera>/result` (with device, camera, frame,
 * frame_id, captured_at), or the answer to an MQTT request (with its id).
 */
export interface ResultMessage {
  device?: string;
  camera?: string;
  frame?: number;
  frame_id?: string;
  captured_at?: string;
  id?: string;
  route: ApiRoute;
  /** Why a cloud or auto job ran on the box after all. */
  fallback?: { code: string; message: string };
  /** The model that answered, on the box. */
  model?: string;
  width: number;
  height: number;
  /** Per stage (queue, preprocess, encode, decode, postprocess or cloud, format, total). */
  latency_ms: Record<string, number>;
  masks: ResultMask[];
}

export interface MaskToPolygonResult {
  width: number;
  height: number;
  polygons: ApiPolygon[];
  /** COCO polygon `segmentation`: one flat [x1, y1, x2, y2, ...] list per exterior (no holes). */
  segmentation: number[][];
  /** True when some polygon has holes, which COCO polygons cannot carry: store `rle` then. */
  has_holes: boolean;
  rle: ApiRle;
  bbox: ApiBBox;
  area: number;
}
