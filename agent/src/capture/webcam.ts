import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import NodeWebcam from "node-webcam";
import { reconnecting, SourceState } from "./health.ts";
import type { Frame, FrameSource, SourceHealth } from "./source.ts";

export interface WebcamOptions {
  cameraId: string;
  /** A V4L2 device, /dev/video0 by default. */
  device: string;
  width: number;
  height: number;
  /** From the start of one snapshot to the start of the next. */
  intervalMs: number;
  maxFrameBytes: number;
}

/**
 * Periodic snapshots of a USB/V4L2 camera through node-webcam, which runs `fswebcam` on Linux
 * (Debian's fswebcam package). Each shot goes through a file: node-webcam's in-memory capture
 * reads the image from fswebcam's stderr as text, which mangles binary JPEG data.
 */
export class WebcamSource implements FrameSource {
  readonly cameraId: string;
  readonly live = true;
  private readonly state = new SourceState();
  private seq = 0;

  constructor(private readonly options: WebcamOptions) {
    this.cameraId = options.cameraId;
  }

  health(): SourceHealth {
    return this.state.snapshot();
  }

  frames(signal: AbortSignal): AsyncIterable<Frame> {
    return reconnecting(this.state, signal, (s) => this.shoot(s));
  }

  private async *shoot(signal: AbortSignal): AsyncIterable<Frame> {
    const o = this.options;
    const cam = NodeWebcam.create({ width: o.width, height: o.height, quality: 90, delay: 0, saveShots: false, output: "jpeg", device: o.device, callbackReturn: "buffer", verbose: false });
    // node-webcam runs its command through a shell: the path holds only safe characters.
    const file = join(tmpdir(), `sam-edge-webcam-${o.cameraId}-${process.pid}.jpg`);
    try {
      while (!signal.aborted) {
        const started = Date.now();
        const bytes = await new Promise<Buffer>((resolve, reject) => {
          cam.capture(file, (err, data) => (err ? reject(new Error(`fswebcam on ${o.device}: ${err.message.trim().split("\n").pop()}`)) : resolve(data)));
        });
        if (bytes.length === 0 || bytes.length > o.maxFrameBytes) this.state.badFrames++;
        else yield { cameraId: this.cameraId, seq: this.seq++, capturedAt: new Date(started), bytes };
        await sleep(Math.max(0, o.intervalMs - (Date.now() - started)), undefined, { signal }).catch(() => undefined);
      }
    } finally {
      await rm(file, { force: true });
    }
  }
}
