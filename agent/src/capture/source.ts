/** One captured frame: encoded image bytes (JPEG, PNG or WebP) as the camera delivered them. */
export interface Frame {
  cameraId: string;
  /** Increases by one per frame of this source. */
  seq: number;
  capturedAt: Date;
  bytes: Buffer;
}

/**
 * Every camera kind (webcam, MJPEG, HTTP snapshot, MQTT relay, ffmpeg, files) is one of
 * these: the pipeline pulls frames and never knows where they come from.
 */
export interface FrameSource {
  readonly cameraId: string;
  /** Frames until the source is closed or the signal aborts. */
  frames(signal: AbortSignal): AsyncIterable<Frame>;
}
