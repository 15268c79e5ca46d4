import type { CameraConfig } from "../config/schema.ts";
import { SamEdgeError } from "../core/errors.ts";
import type { Frame } from "./source.ts";
import type { BinaryMask } from "../segment/mask.ts";

/** A camera's most recent segmented frame and the masks found in it. */
export interface CameraResult {
  frame: Frame;
  masks: readonly BinaryMask[];
  /**
   * The JPEG of the masks over the frame, drawn the first time someone asks (the MQTT overlay,
   * the HTTP overlay route) and shared after that: the frame is decoded for it once.
   */
  overlay(): Promise<Buffer>;
}

export interface CameraStatus {
  id: string;
  /** False when the source has stopped delivering frames (readiness reports it). */
  healthy: boolean;
  lastFrameAt?: Date;
}

/**
 * What the API needs from the cameras: the daemon implements it over its frame sources. The
 * API never captures anything itself.
 */
export interface CameraProvider {
  list(): CameraStatus[];
  /** The most recent frame of a listed camera; undefined until it has delivered one. */
  latestFrame(id: string): Frame | undefined;
  /** The last frame of a listed camera that went through the model; undefined until one has. */
  latestResult(id: string): CameraResult | undefined;
  /** A camera's settings (an MQTT request for a camera takes what it leaves out from them). */
  settingsOf(id: string): CameraConfig | undefined;
}

/** A camera's latest frame, for a request that names the camera: CAMERA_NOT_FOUND or CAMERA_NO_FRAME otherwise. */
export function latestFrameOf(cameras: CameraProvider | undefined, id: string): Frame {
  if (!cameras?.list().some((c) => c.id === id)) throw new SamEdgeError("CAMERA_NOT_FOUND", `there is no camera "${id}"; GET /v1/cameras lists them`);
  const frame = cameras.latestFrame(id);
  if (!frame) throw new SamEdgeError("CAMERA_NO_FRAME", `camera "${id}" has not delivered a frame yet; retry shortly`);
  return frame;
}
