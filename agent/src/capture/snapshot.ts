import { setTimeout as sleep } from "node:timers/promises";
import { authHeaders, reconnecting, SourceState } from "./health.ts";
import type { HttpCameraOptions } from "./mjpeg.ts";
import type { Frame, FrameSource, SourceHealth } from "./source.ts";

export interface SnapshotOptions extends HttpCameraOptions {
  /** From the start of one request to the start of the next. */
  intervalMs: number;
}

/** Polls a still-image URL, e.g. an ESP32-CAM's `http://CAM/capture`. */
export class SnapshotSource implements FrameSource {
  readonly cameraId: string;
  readonly live = true;
  private readonly state = new SourceState();
  private seq = 0;

  constructor(private readonly options: SnapshotOptions) {
    this.cameraId = options.cameraId;
  }

  health(): SourceHealth {
    return this.state.snapshot();
  }

  frames(signal: AbortSignal): AsyncIterable<Frame> {
    return reconnecting(this.state, signal, (s) => this.poll(s));
  }

  private async *poll(signal: AbortSignal): AsyncIterable<Frame> {
    const o = this.options;
    const headers = authHeaders(o.headers, o.username, o.password);
    while (!signal.aborted) {
      const started = Date.now();
      const res = await fetch(o.url, { headers, signal: AbortSignal.any([signal, AbortSignal.timeout(o.timeoutMs)]) }).catch((err: Error) => {
        throw new Error(`GET ${o.url}: ${(err.cause as Error | undefined)?.message ?? err.message}`);
      });
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`GET ${o.url} answered ${res.status} ${res.statusText}`);
      }
      const declared = Number(res.headers.get("content-length") ?? 0);
      if (declared > o.maxFrameBytes) {
        await res.body?.cancel();
        this.state.badFrames++;
      } else {
        const bytes = Buffer.from(await res.arrayBuffer());
        if (bytes.length > o.maxFrameBytes) this.state.badFrames++;
        else yield { cameraId: this.cameraId, seq: this.seq++, capturedAt: new Date(started), bytes };
      }
      await sleep(Math.max(0, o.intervalMs - (Date.now() - started)), undefined, { signal }).catch(() => undefined);
    }
  }
}
