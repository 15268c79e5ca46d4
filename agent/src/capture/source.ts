/** One captured frame: encoded image bytes (JPEG, PNG or WebP) as the camera delivered them. */
export interface Frame {
  cameraId: string;
  /** Increases by one per frame of this source. */
  seq: number;
  capturedAt: Date;
  bytes: Buffer;
}

/** A source's connection as the scheduler, /readyz and the stats report it. */
export interface SourceHealth {
  connected: boolean;
  /** Connections lost (or failed) and tried again. */
  reconnects: number;
  /** Frames the source itself refused (too large, not a frame of its stream). */
  badFrames: number;
  lastError?: string;
}

/**
 * Every camera kind (webcam, MJPEG, HTTP snapshot, MQTT relay, ffmpeg, files) is one of
 * these: the camera scheduler pulls frames and never knows where they come from. One source may
 * deliver several cameras (an MQTT topic pattern): each frame names its camera.
 */
export interface FrameSource {
  readonly cameraId: string;
  /**
   * True for cameras (a frame not taken in time is replaced by a newer one: latest-frame-wins);
   * false for files, which wait their turn instead of being dropped.
   */
  readonly live: boolean;
  /** Frames until the source is closed or the signal aborts; connection errors are retried inside. */
  frames(signal: AbortSignal): AsyncIterable<Frame>;
  health(): SourceHealth;
}
