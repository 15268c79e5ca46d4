import { readdir, readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SourceState } from "./health.ts";
import type { Frame, FrameSource, SourceHealth } from "./source.ts";

const IMAGE_EXTENSIONS = new Set([".jpg", ".jpeg", ".png", ".webp"]);

export interface FolderSourceOptions {
  cameraId: string;
  dir: string;
  /** Pause between frames, as a camera's frame interval. */
  intervalMs: number;
  /** Start again at the first file after the last (demos); otherwise stop. */
  loop: boolean;
}

/** Image files of a folder in name order: the demo camera, and a test double for real ones. */
export class FolderSource implements FrameSource {
  readonly cameraId: string;
  readonly live = false;
  private readonly state = new SourceState();

  constructor(private readonly options: FolderSourceOptions) {
    this.cameraId = options.cameraId;
  }

  health(): SourceHealth {
    return this.state.snapshot();
  }

  async *frames(signal: AbortSignal): AsyncIterable<Frame> {
    const files = (await readdir(this.options.dir)).filter((f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase())).sort();
    if (files.length === 0) throw new Error(`camera ${this.cameraId}: no .jpg, .png or .webp files in ${this.options.dir}`);
    this.state.connected = true;
    let seq = 0;
    do {
      for (const file of files) {
        if (signal.aborted) return;
        yield { cameraId: this.cameraId, seq: seq++, capturedAt: new Date(), bytes: await readFile(join(this.options.dir, file)) };
        await sleep(this.options.intervalMs, undefined, { signal }).catch(() => undefined);
      }
    } while (this.options.loop && !signal.aborted);
    this.state.connected = false;
  }
}
