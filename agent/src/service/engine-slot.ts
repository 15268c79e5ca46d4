import { SamEdgeError } from "../core/errors.ts";
import { SegmentEngine } from "../segment/engine.ts";
import { type Engine, InProcessEngine } from "./engine.ts";

/** What a slot takes: an engine (a bare SegmentEngine runs in this thread), or its pending load. */
export type EngineSource = Engine | SegmentEngine | Promise<Engine | SegmentEngine>;

const asEngine = (e: Engine | SegmentEngine): Engine => (e instanceof SegmentEngine ? new InProcessEngine(e) : e);

/** The engine one request runs on, held until `release()`: a swap never pulls it from under the request. */
export interface EngineLease {
  readonly engine: Engine;
  release(): void;
}

interface Held {
  engine: Engine;
  users: number;
  retired: boolean;
  releasing: boolean;
  settle?: (err?: unknown) => void;
}

/**
 * Where the segmentation service finds the engine, per job. A model update swaps in
 * a new engine at once for the requests that start afterwards; the requests still running
 * finish on the old one, whose onnxruntime sessions are released when the last of them ends.
 */
export class EngineSlot {
  private held: Held | undefined;
  private failure: unknown;
  private closed = false;
  private readonly first: Promise<unknown>;
  /** Swapped-out engines not released yet, with the promise of their release. */
  private readonly retiring = new Map<Held, Promise<void>>();

  /** Routers and servers take an engine, its pending load, or a slot shared with others. */
  static from(engine: EngineSource | EngineSlot): EngineSlot {
    return engine instanceof EngineSlot ? engine : new EngineSlot(engine);
  }

  constructor(initial: EngineSource) {
    if (!(initial instanceof Promise)) {
      this.held = entry(asEngine(initial));
      this.first = Promise.resolve();
      return;
    }
    this.first = initial.then(
      (loaded) => {
        const engine = asEngine(loaded);
        // An update (or a stop) that came first wins: the late initial model is not needed.
        // close() awaits its release (and raises its error) when it is still pending.
        if (this.held || this.closed) this.retire(entry(engine)).catch(() => undefined);
        else this.held = entry(engine);
      },
      (err: unknown) => {
        if (!this.held) this.failure = err;
      },
    );
  }

  /** The engine new requests get; undefined while the first model loads, or when it failed and no update replaced it. */
  get engine(): Engine | undefined {
    return this.held?.engine;
  }

  /** Why there is no engine: the first model's load error. */
  get error(): unknown {
    return this.held ? undefined : this.failure;
  }

  /** Requests running on the current engine. */
  get inUse(): number {
    return this.held?.users ?? 0;
  }

  /** Engines swapped out whose requests are still running. */
  get draining(): number {
    return this.retiring.size;
  }

  /** Holds the current engine until the lease is released; undefined when there is none. */
  hold(): EngineLease | undefined {
    const held = this.held;
    if (!held) return undefined;
    held.users++;
    let released = false;
    return {
      engine: held.engine,
      release: () => {
        if (released) return;
        released = true;
        held.users--;
        if (held.retired && held.users === 0) this.release(held);
      },
    };
  }

  /** Runs `fn` on the current engine, waiting for the first load; rejects with its error when it failed. */
  async use<T>(fn: (engine: Engine) => Promise<T>): Promise<T> {
    if (!this.held && this.failure === undefined) await this.first;
    const lease = this.hold();
    if (!lease) throw this.failure ?? new SamEdgeError("MODEL_FAILED", "the agent is stopping: its model is released");
    try {
      return await fn(lease.engine);
    } finally {
      lease.release();
    }
  }

  /**
   * Makes `engine` the one new requests get. Resolves once the engine it replaced has been
   * released, which waits for that engine's running requests to end.
   */
  swap(next: Engine | SegmentEngine): Promise<void> {
    const engine = asEngine(next);
    if (this.closed) return this.retire(entry(engine));
    const old = this.held;
    this.held = entry(engine);
    this.failure = undefined;
    return old ? this.retire(old) : Promise.resolve();
  }

  /** Releases every engine once its requests end, including a first load still running; rejects when one of those releases failed. */
  async close(): Promise<void> {
    this.closed = true;
    const current = this.held;
    this.held = undefined;
    const released = Promise.all([...this.retiring.values(), ...(current ? [this.retire(current)] : [])]);
    // Awaited below: this only keeps a failure meanwhile from counting as unhandled.
    released.catch(() => undefined);
    await this.first;
    await Promise.all([released, ...this.retiring.values()]);
  }

  private retire(h: Held): Promise<void> {
    h.retired = true;
    const done = new Promise<void>((resolve, reject) => (h.settle = (err) => (err === undefined ? resolve() : reject(err))));
    this.retiring.set(h, done);
    if (h.users === 0) this.release(h);
    return done;
  }

  private release(h: Held): void {
    if (h.releasing) return;
    h.releasing = true;
    const settle = (err?: unknown) => {
      this.retiring.delete(h);
      h.settle!(err);
    };
    h.engine.release().then(
      () => settle(),
      (err: unknown) => settle(err ?? new Error("releasing the model failed")),
    );
  }
}

function entry(engine: Engine): Held {
  return { engine, users: 0, retired: false, releasing: false };
}
