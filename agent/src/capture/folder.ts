import { readdir, readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { realPathInside } from "../core/files.ts";
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
    const { dir } = this.options;
    const named = (await readdir(dir)).filter((f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase())).sort();
    // A link that leads out of the folder is not a frame of this camera: it is never read.
    const files: string[] = [];
    const outside: string[] = [];
    for (const f of named) {
      const real = await realPathInside(dir, f).catch(() => undefined);
      (real ? files : outside).push(f);
    }
    if (outside.length > 0) {
      this.state.badFrames += outside.length;
      this.state.lastError = `skipped ${outside.length} file(s) that are links out of ${dir} or unreadable: ${outside.slice(0, 5).join(", ")}`;
    }
    if (files.length === 0) throw new Error(`camera ${this.cameraId}: no .jpg, .png or .webp files in ${dir}${outside.length ? " (links out of the folder are skipped)" : ""}`);
    this.state.connected = true;
    let seq = 0;
    do {
      for (const file of files) {
        if (signal.aborted) return;
        yield { cameraId: this.cameraId, seq: seq++, capturedAt: new Date(), bytes: await readFile(join(dir, file)) };
        await sleep(this.options.intervalMs, undefined, { signal }).catch(() => undefined);
      }
    } while (this.options.loop && !signal.aborted);
    this.state.connected = false;
  }
}
