import { Worker } from "node:worker_threads";
import { SamEdgeError, type ErrorCode } from "../core/errors.ts";
import type { SessionConfig } from "../model/sam-model.ts";
import type { SegmentOptions, SegmentResult } from "../segment/engine.ts";
import type { EverythingOptions, EverythingResult } from "../segment/everything.ts";
import type { Prompt } from "../segment/prompts.ts";
import type { CacheStats, Engine, ModelInfo } from "./engine.ts";
import type { WorkerData, WorkerReply, WorkerRequest } from "./worker-protocol.ts";

const ENTRY = new URL("./engine-worker.js", import.meta.url);

type Pending = { resolve: (value: unknown) => void; reject: (err: Error) => void };

function rebuild(error: NonNullable<WorkerReply["error"]>): Error {
  if (error.code) return new SamEdgeError(error.code as ErrorCode, error.message, error.detail ? { detail: error.detail } : undefined);
  const err = new Error(error.message);
  err.name = error.name;
  return err;
}

/**
 * A model in a worker thread of its own: the event loop that serves HTTP and MQTT never runs
 * onnxruntime, so it answers (and the systemd watchdog is fed) while a model run takes seconds.
 * Requests go to the worker one after another; images travel as copies handed over, masks come
 * back handed over, never copied twice. A worker that dies (out of memory, a crash in native
 * code) fails what it was running and is started again for the next request.
 */
export class WorkerEngine implements Engine {
  /** The live worker, or its restart under way (rejected when that failed: the next call tries again). */
  private current: Promise<Worker>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private released = false;
  private cache: CacheStats = { entries: 0, bytes: 0, hits: 0, misses: 0 };

  private constructor(
    readonly model: ModelInfo,
    private readonly data: WorkerData,
    worker: Worker,
  ) {
    this.attach(worker);
    this.current = Promise.resolve(worker);
  }

  static async load(dir: string, session: SessionConfig): Promise<WorkerEngine> {
    const data: WorkerData = { dir, session };
    const { worker, model } = await WorkerEngine.start(data);
    return new WorkerEngine(model, data, worker);
  }

  /** A worker with the model loaded, or the load's error. */
  private static start(data: WorkerData): Promise<{ worker: Worker; model: ModelInfo }> {
    const worker = new Worker(ENTRY, { workerData: data });
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        void worker.terminate();
        reject(err);
      };
      worker.once("message", (reply: WorkerReply) => {
        worker.removeAllListeners("error");
        worker.removeAllListeners("exit");
        if (reply.ok) resolve({ worker, model: reply.value as ModelInfo });
        else fail(rebuild(reply.error!));
      });
      worker.once("error", fail);
      worker.once("exit", (code) => reject(new SamEdgeError("MODEL_FAILED", `the model's worker thread exited (${code}) while loading ${data.dir}`)));
    });
  }

  get cacheStats(): CacheStats {
    return this.cache;
  }

  segment(image: Uint8Array, prompt: Prompt, options?: SegmentOptions): Promise<SegmentResult> {
    const copy = new Uint8Array(image);
    return this.call({ id: 0, op: "segment", image: copy, prompt, ...(options ? { options } : {}) }, [copy.buffer]) as Promise<SegmentResult>;
  }

  everything(image: Uint8Array, options?: Partial<EverythingOptions>): Promise<EverythingResult> {
    const copy = new Uint8Array(image);
    return this.call({ id: 0, op: "everything", image: copy, ...(options ? { options } : {}) }, [copy.buffer]) as Promise<EverythingResult>;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const worker = await this.current.catch(() => undefined);
    if (!worker) return;
    await this.send(worker, { id: 0, op: "release" }, []).catch(() => undefined);
    await worker.terminate();
  }

  private async call(request: WorkerRequest, transfer: ArrayBuffer[]): Promise<unknown> {
    if (this.released) throw new SamEdgeError("MODEL_FAILED", `${this.model.manifest.name} has been released (a model update replaced it)`);
    let worker: Worker;
    try {
      worker = await this.current;
    } catch {
      this.current = this.restart();
      worker = await this.current;
    }
    return this.send(worker, request, transfer);
  }

  private send(worker: Worker, request: WorkerRequest, transfer: ArrayBuffer[]): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...request, id }, transfer);
    });
  }

  private async restart(): Promise<Worker> {
    const { worker } = await WorkerEngine.start(this.data);
    this.attach(worker);
    return worker;
  }

  private attach(worker: Worker): void {
    worker.on("message", (reply: WorkerReply) => {
      const pending = this.pending.get(reply.id);
      if (!pending) return;
      this.pending.delete(reply.id);
      if (reply.cache) this.cache = reply.cache;
      if (reply.ok) pending.resolve(reply.value);
      else pending.reject(rebuild(reply.error!));
    });
    worker.on("error", (err) => this.lost(worker, `failed: ${err.message}`));
    worker.on("exit", (code) => {
      if (!this.released) this.lost(worker, `exited (${code})`);
    });
  }

  /** Fails what the dead worker held and starts another for what comes next. */
  private lost(worker: Worker, why: string): void {
    worker.removeAllListeners();
    const error = new SamEdgeError("MODEL_FAILED", `the model's worker thread ${why}; the request is lost, the model is being loaded again`);
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    if (this.released) return;
    this.current = this.restart();
    this.current.catch(() => undefined);
  }
}
