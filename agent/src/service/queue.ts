import { BusyError, SamEdgeError } from "../core/errors.ts";

/** Who asked: each has a queue of its own, and the model takes turns between them. */
export const SOURCES = ["camera", "http", "mqtt", "cli"] as const;
export type Source = (typeof SOURCES)[number];

export interface QueueLimit {
  /** Jobs waiting (not counting the one running). */
  jobs: number;
  /** Image bytes they hold. */
  bytes: number;
}

/**
 * Per source. Cameras queue little (each camera already keeps only its newest frame); requests
 * queue enough for a burst of clicks, not a flood of Everything runs.
 */
export const DEFAULT_QUEUE_LIMITS: Record<Source, QueueLimit> = {
  camera: { jobs: 8, bytes: 64 * 1024 * 1024 },
  http: { jobs: 16, bytes: 128 * 1024 * 1024 },
  mqtt: { jobs: 16, bytes: 64 * 1024 * 1024 },
  cli: { jobs: 4, bytes: 128 * 1024 * 1024 },
};

export interface QueuedWork<T> {
  source: Source;
  bytes: number;
  run: () => Promise<T>;
  /** Aborted when the client has gone: the job is dropped before it runs. */
  signal?: AbortSignal;
  /** Epoch ms after which nobody waits for the answer (MQTT 5 message expiry). */
  expiresAt?: number;
}

interface Entry {
  work: QueuedWork<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export interface QueueStats {
  running: boolean;
  waiting: Record<Source, number>;
  bytes: Record<Source, number>;
  refused: Record<Source, number>;
  dropped: { cancelled: number; expired: number };
}

/**
 * The one queue in front of the model: one job runs at a time (onnxruntime already uses every
 * core for one run), each source waits in its own bounded line, and the next job is taken from
 * the sources in turn. A flood of requests therefore slows the cameras down to their share,
 * never stops them; a full line answers BUSY at once instead of growing memory. Jobs whose
 * client has gone are dropped when their turn comes, before the model sees them.
 */
export class FairQueue {
  private readonly lines = new Map<Source, Entry[]>(SOURCES.map((s) => [s, []]));
  private readonly queuedBytes = new Map<Source, number>(SOURCES.map((s) => [s, 0]));
  private readonly refusedCount = new Map<Source, number>(SOURCES.map((s) => [s, 0]));
  private readonly droppedCount = { cancelled: 0, expired: 0 };
  private turn = 0;
  private running = false;
  /** Recent run time, for Retry-After and for `auto` routing's wait estimate. */
  private avgMs = 0;

  constructor(
    private readonly limits: Record<Source, QueueLimit> = DEFAULT_QUEUE_LIMITS,
    private readonly onDrop: (source: Source, reason: "cancelled" | "expired") => void = () => {},
  ) {}

  get stats(): QueueStats {
    const per = <T>(f: (s: Source) => T) => Object.fromEntries(SOURCES.map((s) => [s, f(s)])) as Record<Source, T>;
    return {
      running: this.running,
      waiting: per((s) => this.lines.get(s)!.length),
      bytes: per((s) => this.queuedBytes.get(s)!),
      refused: per((s) => this.refusedCount.get(s)!),
      dropped: { ...this.droppedCount },
    };
  }

  /** Jobs waiting or running, all sources together. */
  get depth(): number {
    let n = this.running ? 1 : 0;
    for (const line of this.lines.values()) n += line.length;
    return n;
  }

  /** How long a job queued now would wait, from the recent average run time. */
  expectedWaitMs(): number {
    return this.depth * this.avgMs;
  }

  get averageRunMs(): number {
    return this.avgMs;
  }

  add<T>(work: QueuedWork<T>): Promise<T> {
    const line = this.lines.get(work.source)!;
    const limit = this.limits[work.source];
    const bytes = this.queuedBytes.get(work.source)!;
    if (line.length >= limit.jobs || (line.length > 0 && bytes + work.bytes > limit.bytes)) {
      this.refusedCount.set(work.source, this.refusedCount.get(work.source)! + 1);
      const retryAfterS = Math.max(1, Math.ceil(((line.length + 1) * Math.max(this.avgMs, 100)) / 1000));
      return Promise.reject(new BusyError(
        `the agent is busy: ${line.length} ${work.source} jobs (${Math.round((bytes / 1048576) * 10) / 10} MB of images) already wait for the model; retry in ${retryAfterS} s`,
        retryAfterS,
      ));
    }
    return new Promise<T>((resolve, reject) => {
      line.push({ work, resolve: resolve as (value: unknown) => void, reject });
      this.queuedBytes.set(work.source, bytes + work.bytes);
      this.pump();
    });
  }

  private pump(): void {
    if (this.running) return;
    const next = this.take();
    if (!next) return;
    this.running = true;
    const start = performance.now();
    next.work.run().then(next.resolve, next.reject).finally(() => {
      const ms = performance.now() - start;
      this.avgMs = this.avgMs === 0 ? ms : this.avgMs * 0.8 + ms * 0.2;
      this.running = false;
      this.pump();
    });
  }

  /** The next job to run, in turn over the sources; jobs nobody waits for any more are dropped on the way. */
  private take(): Entry | undefined {
    for (let tries = 0; tries < SOURCES.length; ) {
      const source = SOURCES[this.turn % SOURCES.length]!;
      const line = this.lines.get(source)!;
      const entry = line.shift();
      if (!entry) {
        this.turn++;
        tries++;
        continue;
      }
      this.queuedBytes.set(source, this.queuedBytes.get(source)! - entry.work.bytes);
      const gone = entry.work.signal?.aborted ? "cancelled" : entry.work.expiresAt !== undefined && Date.now() > entry.work.expiresAt ? "expired" : undefined;
      if (gone) {
        this.droppedCount[gone]++;
        this.onDrop(source, gone);
        entry.reject(
          gone === "cancelled"
            ? new SamEdgeError("REQUEST_CANCELLED", "the client went away before its turn: the request was dropped without running")
            : new SamEdgeError("REQUEST_EXPIRED", "the request expired (its message expiry) before its turn: dropped without running"),
        );
        continue;
      }
      this.turn++;
      return entry;
    }
    return undefined;
  }
}
