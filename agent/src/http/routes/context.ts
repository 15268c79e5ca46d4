import type { Frame } from "../../capture/source.ts";
import type { SegmentEngine } from "../../segment/engine.ts";
import type { CameraProvider } from "../cameras.ts";
import type { ApiMetrics } from "../metrics.ts";

/** What the routes share, built once per server. */
export interface RouteContext {
  /** The engine once the model has loaded; otherwise throws MODEL_LOADING or the load's error. */
  engine(): SegmentEngine;
  /** The model's state for /readyz. */
  model(): { loaded: boolean; name?: string; error?: { code: string; message: string } };
  cameras: CameraProvider | undefined;
  /** A camera's latest frame; throws CAMERA_NOT_FOUND or CAMERA_NO_FRAME. */
  frameOf(id: string): Frame;
  metrics: ApiMetrics;
}
