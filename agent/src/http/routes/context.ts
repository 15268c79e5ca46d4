import type { FastifyReply } from "fastify";
import type { Frame } from "../../capture/source.ts";
import type { SegmentEngine } from "../../segment/engine.ts";
import type { CameraProvider } from "../../capture/cameras.ts";
import type { ApiMetrics } from "../metrics.ts";

/** What the routes share, built once per server. */
export interface RouteContext {
  /**
   * Runs `fn` on the current engine, held until it ends so a model update cannot release it
   * mid-request; the answer names the model (x-sam-edge-model). Throws MODEL_LOADING, or the
   * load's error, when there is no engine.
   */
  withEngine<T>(reply: FastifyReply, fn: (engine: SegmentEngine) => Promise<T>): Promise<T>;
  /** The model's state for /readyz. */
  model(): { loaded: boolean; name?: string; error?: { code: string; message: string } };
  cameras: CameraProvider | undefined;
  /** A camera's latest frame; throws CAMERA_NOT_FOUND or CAMERA_NO_FRAME. */
  frameOf(id: string): Frame;
  metrics: ApiMetrics;
}
