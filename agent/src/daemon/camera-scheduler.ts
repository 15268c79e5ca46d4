import type { Frame, FrameSource } from "../capture/source.ts";
import type { CameraConfig, RouteMode } from "../config/schema.ts";
import { SamEdgeError, isSamEdgeError } from "../core/errors.ts";
import type { CameraProvider, CameraResult, CameraStatus } from "../capture/cameras.ts";
import { isImageError, type SegmentationResult, type SegmentationService } from "../service/segmentation.ts";
import { sniffFormat } from "../segment/preprocess.ts";
import type { Logger } from "../core/log.ts";
import { RateMeter } from "./rate.ts";
import { overlayImage } from "../segment/formats/index.ts";

export interface SourceEntry {
  source: FrameSource;
  settings: CameraConfig;
}

export interface ProcessedFrame {
  frame: Frame;
  settings: CameraConfig;
  result: SegmentationResult;
  /** From the frame's arrival to the start of its segmentation. */
  queueMs: number;
  /** The masks over the frame as a JPEG, drawn once for whoever asks first (see CameraResult). */
  overlay: () => Promise<Buffer>;
}

export interface CameraStats {
  frames: number;
  processed: number;
  /** Replaced by a newer frame before the engine got to them (latest-frame-wins). */
  dropped: number;
  /** Not an image, truncated, too large, or refused by the decoder. */
  corrupt: number;
  failed: number;
  fps_in: number;
  fps_out: number;
  connected: boolean;
  reconnects: number;
  last_error?: string;
}

interface Slot {
  id: string;
  entry: SourceEntry;
  pending: { frame: Frame; at: number } | undefined;
  /** Resolves a non-live source's wait for its frame to be taken. */
  taken: (() => void) | undefined;
  busy: boolean;
  nextAt: number;
  latest: Frame | undefined;
  result: CameraResult | undefined;
  counts: { frames: number; processed: number; dropped: number; corrupt: number; failed: number };
  fpsIn: RateMeter;
  fpsOut: RateMeter;
  lastError: string | undefined;
}

export interface CameraSchedulerOptions {
  service: SegmentationService;
  defaultRoute: RouteMode;
  onResult: (processed: ProcessedFrame) => Promise<void>;
  log: Logger;
  /** Frames being segmented at once across cameras; local ones still queue for the one engine. */
  maxInFlight?: number;
}

/** Cheap checks before any decoder sees the bytes: a frame that fails one is counted and skipped. */
export function frameProblem(bytes: Buffer, maxBytes: number): SamEdgeError | undefined {
  if (bytes.length === 0) return new SamEdgeError("IMAGE_EMPTY", "the frame is empty");
  if (bytes.length > maxBytes) return new SamEdgeError("IMAGE_TOO_LARGE", `the frame is ${bytes.length} bytes; max_frame_bytes is ${maxBytes}`);
  const format = sniffFormat(bytes);
  if (!format) return new SamEdgeError("IMAGE_UNSUPPORTED", `the frame is not a JPEG, PNG or WebP image (it starts with 0x${bytes.subarray(0, 8).toString("hex")})`);
  if (format === "jpeg") {
    let end = bytes.length;
    // Some cameras pad frames; only the end-of-image marker before the padding counts.
    while (end > 2 && (bytes[end - 1] === 0x00 || bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
    if (bytes[end - 2] !== 0xff || bytes[end - 1] !== 0xd9) return new SamEdgeError("IMAGE_CORRUPT", "the JPEG is truncated (no end-of-image marker)");
  }
  return undefined;
}

/**
 * Sources in, results out. Each camera has one slot for its newest frame: a live camera's
 * frame that is still waiting when the next arrives is replaced and counted as dropped, so a
 * slow model never builds a queue. A camera's frames are segmented one at a time and in
 * order, at most `max_fps` a second; cameras take turns by the age of their waiting frame.
 */
export class CameraScheduler implements CameraProvider {
  private readonly slots = new Map<string, Slot>();
  private readonly controller = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly maxInFlight: number;
  private consuming: Promise<void>[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly entries: SourceEntry[],
    private readonly options: CameraSchedulerOptions,
  ) {
    this.maxInFlight = options.maxInFlight ?? 4;
    // Configured cameras are listed before their first frame; relayed ones appear with theirs.
    for (const entry of entries) if (entry.source.cameraId === entry.settings.id && entry.settings.type !== "mqtt") this.slot(entry.settings.id, entry);
  }

  start(): void {
    this.consuming = this.entries.map((entry) => this.consume(entry));
  }

  /** Resolves once every source has ended and every frame taken is done (finite sources: --once). */
  async finished(): Promise<void> {
    await Promise.all(this.consuming);
    while (this.inFlight.size > 0 || [...this.slots.values()].some((s) => s.pending)) {
      await Promise.race([...this.inFlight, new Promise((r) => setTimeout(r, 20))]);
    }
  }

  /** Stops the sources and lets the frames being segmented finish; waiting frames are let go. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.controller.abort();
    clearTimeout(this.timer);
    for (const slot of this.slots.values()) {
      slot.pending = undefined;
      slot.taken?.();
    }
    await Promise.all([...this.inFlight, ...this.consuming]);
  }

  list(): CameraStatus[] {
    return [...this.slots.values()].map((s) => ({
      id: s.id,
      healthy: s.entry.source.health().connected,
      ...(s.latest ? { lastFrameAt: s.latest.capturedAt } : {}),
    }));
  }

  latestFrame(id: string): Frame | undefined {
    return this.slots.get(id)?.latest;
  }

  latestResult(id: string): CameraResult | undefined {
    return this.slots.get(id)?.result;
  }

  settingsOf(id: string): CameraConfig | undefined {
    return this.slots.get(id)?.entry.settings;
  }

  stats(): Record<string, CameraStats> {
    return Object.fromEntries(
      [...this.slots.values()].map((s) => {
        const health = s.entry.source.health();
        const lastError = s.lastError ?? health.lastError;
        return [
          s.id,
          {
            ...s.counts,
            corrupt: s.counts.corrupt + health.badFrames,
            fps_in: s.fpsIn.perSecond,
            fps_out: s.fpsOut.perSecond,
            connected: health.connected,
            reconnects: health.reconnects,
            ...(lastError ? { last_error: lastError } : {}),
          },
        ];
      }),
    );
  }

  private slot(id: string, entry: SourceEntry): Slot {
    let slot = this.slots.get(id);
    if (!slot) {
      slot = {
        id,
        entry,
        pending: undefined,
        taken: undefined,
        busy: false,
        nextAt: 0,
        latest: undefined,
        result: undefined,
        counts: { frames: 0, processed: 0, dropped: 0, corrupt: 0, failed: 0 },
        fpsIn: new RateMeter(),
        fpsOut: new RateMeter(),
        lastError: undefined,
      };
      this.slots.set(id, slot);
    }
    return slot;
  }

  private async consume(entry: SourceEntry): Promise<void> {
    const { log } = this.options;
    try {
      for await (const frame of entry.source.frames(this.controller.signal)) {
        // A frame read as the stop began: nothing would ever take it.
        if (this.stopped) break;
        const slot = this.slot(frame.cameraId, entry);
        slot.counts.frames++;
        slot.fpsIn.mark();
        slot.latest = frame;
        if (slot.pending) slot.counts.dropped++;
        slot.pending = { frame, at: Date.now() };
        this.schedule();
        // A file waits until its frame is taken (which may already have happened in schedule()).
        if (!entry.source.live && slot.pending?.frame === frame) await new Promise<void>((resolve) => (slot.taken = resolve));
      }
    } catch (err) {
      if (!this.stopped) log.error(`camera ${entry.settings.id}: ${(err as Error).message}`);
    }
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped) return;
    while (this.inFlight.size < this.maxInFlight) {
      const now = Date.now();
      let next: Slot | undefined;
      let wakeAt = Infinity;
      for (const s of this.slots.values()) {
        if (!s.pending || s.busy) continue;
        if (s.nextAt > now) wakeAt = Math.min(wakeAt, s.nextAt);
        else if (!next || s.pending.at < next.pending!.at) next = s;
      }
      if (!next) {
        if (wakeAt < Infinity) this.timer = setTimeout(() => this.schedule(), wakeAt - now);
        return;
      }
      const slot = next;
      const pending = slot.pending!;
      slot.pending = undefined;
      slot.busy = true;
      slot.nextAt = now + 1000 / slot.entry.settings.max_fps;
      slot.taken?.();
      slot.taken = undefined;
      const job: Promise<void> = this.process(slot, pending.frame, now - pending.at).finally(() => {
        slot.busy = false;
        this.inFlight.delete(job);
        this.schedule();
      });
      this.inFlight.add(job);
    }
  }

  private async process(slot: Slot, frame: Frame, queueMs: number): Promise<void> {
    const { log } = this.options;
    const settings = slot.entry.settings;
    const skip = (err: SamEdgeError | Error, counter: "corrupt" | "failed") => {
      const n = ++slot.counts[counter];
      const code = isSamEdgeError(err) ? `${err.code}: ` : "";
      slot.lastError = `${code}${err.message}`;
      // The first few, then one in a hundred: a camera sending garbage must not flood the log.
      if (n <= 5 || n % 100 === 0) log.warn(`camera ${slot.id} frame ${frame.seq} skipped: ${code}${err.message}${n > 5 ? ` (${n} so far)` : ""}`);
    };
    const problem = frameProblem(frame.bytes, settings.max_frame_bytes);
    if (problem) return skip(problem, "corrupt");
    let result: SegmentationResult;
    try {
      result = await this.options.service.segment({
        source: "camera",
        bytes: frame.bytes,
        mode: settings.mode,
        prompts: settings.prompts,
        coordinates: settings.coordinates,
        multimask: settings.multimask,
        everything: settings.everything,
        route: settings.route ?? this.options.defaultRoute,
      });
    } catch (err) {
      return skip(err as Error, isImageError(err) ? "corrupt" : "failed");
    }
    slot.counts.processed++;
    slot.fpsOut.mark();
    slot.lastError = undefined;
    const masks = result.masks.map((m) => m.mask);
    let overlay: Promise<Buffer> | undefined;
    const cameraResult: CameraResult = { frame, masks, overlay: () => (overlay ??= overlayImage(frame.bytes, masks)) };
    slot.result = cameraResult;
    try {
      await this.options.onResult({ frame, settings, result, queueMs, overlay: cameraResult.overlay });
    } catch (err) {
      log.error(`camera ${slot.id} frame ${frame.seq}: the result could not be published: ${(err as Error).message}`);
    }
  }
}
