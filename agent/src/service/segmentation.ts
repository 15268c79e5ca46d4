import { setTimeout as sleep } from "node:timers/promises";
import { Counter, Histogram, type Registry } from "prom-client";
import { SamApiError, type SamClient } from "../client/client.ts";
import type { ApiMask, ApiRle } from "../client/types.ts";
import { everythingSettings } from "../config/everything.ts";
import type { CameraPrompt, EverythingSettings, RouteMode } from "../config/schema.ts";
import { isSamEdgeError, SamEdgeError } from "../core/errors.ts";
import type { SegmentResult, Timings } from "../segment/engine.ts";
import type { EverythingOptions } from "../segment/everything.ts";
import { decodeRle, maskFromPng } from "../segment/formats/index.ts";
import { maskArea, maskBBox, type BBox, type BinaryMask } from "../segment/mask.ts";
import { inspectImage } from "../segment/preprocess.ts";
import type { Prompt } from "../segment/prompts.ts";
import type { CircuitBreaker } from "./breaker.ts";
import type { CloudBudget } from "./budget.ts";
import { CloudError } from "./cloud-errors.ts";
import type { Engine, ModelInfo } from "./engine.ts";
import { EngineSlot, type EngineSource } from "./engine-slot.ts";
import { DEFAULT_QUEUE_LIMITS, FairQueue, SOURCES, type QueueLimit, type QueueStats, type Source } from "./queue.ts";

export type { Source } from "./queue.ts";

/** What to segment in one image, whoever asks: a camera, an HTTP or MQTT request, the CLI. */
export interface SegmentJob {
  source: Source;
  bytes: Uint8Array;
  mode: "prompts" | "everything";
  /** One mask (or, with `multimask`, every candidate) per prompt, in `coordinates`. */
  prompts: CameraPrompt[];
  coordinates: "pixels" | "normalized";
  /**
   * SAM's three candidates per prompt instead of one. Unset: SAM's rule (a lone click is
   * ambiguous, so its best of three answers; anything more, the single-mask output).
   */
  multimask?: boolean;
  /** Everything mode's settings; what is left out comes from the model's defaults. */
  everything?: Partial<EverythingSettings>;
  route: RouteMode;
  /** Aborted when the client is gone: a job still waiting is dropped, never run. */
  signal?: AbortSignal;
  /** Epoch ms after which the answer is of no use (MQTT 5 message expiry). */
  expiresAt?: number;
  /**
   * While the first model loads, wait for it (cameras, MQTT) or fail at once with MODEL_LOADING
   * (HTTP: a client is better told to retry). Default true.
   */
  waitForModel?: boolean;
}

/** One mask of a result, whichever way it was made. */
export interface ResultMask {
  /** Index of the prompt it answers (prompts mode). */
  prompt?: number;
  /** The grid point that produced it (Everything mode, local route). */
  point?: [number, number];
  mask: BinaryMask;
  bbox: BBox;
  area: number;
  confidence: number;
  stability?: number;
  /** The COCO RLE the hosted API sent with it (cloud route): written out again as it came, not re-encoded. */
  rle?: ApiRle;
}

/** The one result type: what every caller gets, and what the one encoder (result.ts) writes. */
export interface SegmentationResult {
  route: "local" | "cloud";
  /** Why a cloud or auto job ran locally after all. */
  fallback?: { code: string; message: string };
  /** The model that answered (local route). */
  model?: string;
  width: number;
  height: number;
  masks: ResultMask[];
  /** Milliseconds per stage: queue, preprocess, encode, decode, postprocess locally; cloud for the hosted call. */
  timings: Record<string, number>;
}

export interface CloudRoute {
  client: SamClient;
  budget: CloudBudget;
  breaker: CircuitBreaker;
  retries: number;
  retryBaseMs: number;
}

export interface ServiceOptions {
  /** A slot lets a model update swap the engine under the service; queued jobs run on the engine current when they start. */
  engine: EngineSource | EngineSlot;
  /** Unset when no token is configured: cloud jobs then run locally. */
  cloud?: CloudRoute;
  /** `auto` sends a job to the cloud when the local queue would make it wait longer than this. */
  latencyBudgetMs: number;
  queueLimits?: Partial<Record<Source, QueueLimit>>;
  /** Where the stage histograms and job counters go (/metrics). */
  registry?: Registry;
}

export interface ServiceStats {
  local: number;
  cloud: number;
  fallbacks: number;
  cloudFailures: number;
  cloudCallsLeft: number | null;
  breaker: string | null;
  localQueue: number;
  localMsAvg: number;
  queue: QueueStats;
}

const now = (): number => performance.now();

/** Prompts in the job's coordinates, as pixel prompts for an image of this size. */
export function toPixelPrompts(prompts: CameraPrompt[], coordinates: SegmentJob["coordinates"], width: number, height: number): Prompt[] {
  const sx = coordinates === "normalized" ? width : 1;
  const sy = coordinates === "normalized" ? height : 1;
  return prompts.map((p) => ({
    ...(p.points ? { points: p.points.map((pt) => ({ x: pt.x * sx, y: pt.y * sy, label: pt.label ?? 1 })) } : {}),
    ...(p.box ? { box: [p.box[0] * sx, p.box[1] * sy, p.box[2] * sx, p.box[3] * sy] as [number, number, number, number] } : {}),
  }));
}

/** The engine's options for a job: its settings over the model's calibrated ones over the defaults. */
function everythingOptions(model: ModelInfo, job: Partial<EverythingSettings> | undefined): Partial<EverythingOptions> {
  const e = everythingSettings(model.manifest.everything, job);
  return {
    pointsPerSide: e.points_per_side,
    pointsPerBatch: e.points_per_batch,
    predIouThresh: e.pred_iou_thresh,
    stabilityScoreThresh: e.stability_score_thresh,
    boxNmsThresh: e.box_nms_thresh,
    minMaskRegionArea: e.min_mask_region_area,
  };
}

const STAGES: Record<keyof Timings, string> = { preprocessMs: "preprocess", encodeMs: "encode", decodeMs: "decode", postprocessMs: "postprocess" };

/**
 * The one way to segment an image: cameras, HTTP and MQTT requests and the CLI all come here.
 * Local jobs go through one fair, bounded queue to the model (queue.ts); `cloud` jobs call the
 * hosted API, and `cloud` and `auto` fall back to the local model when the cloud fails, is out
 * of budget or its breaker is open. Every job, whoever sent it, is timed per stage in one
 * histogram and counted by source, so routing sees all the load.
 */
export class SegmentationService {
  readonly slot: EngineSlot;
  private readonly queue: FairQueue;
  private readonly counts = { local: 0, cloud: 0, fallbacks: 0, cloudFailures: 0 };
  private readonly stage: Histogram<"stage"> | undefined;
  private readonly jobs: Counter<"source" | "route" | "result"> | undefined;

  constructor(private readonly options: ServiceOptions) {
    this.slot = EngineSlot.from(options.engine);
    const registers = options.registry ? [options.registry] : [];
    const dropped = options.registry
      ? new Counter({ name: "sam_edge_jobs_dropped_total", help: "Jobs dropped before they ran: their client had gone, or their request had expired", labelNames: ["source", "reason"], registers })
      : undefined;
    this.queue = new FairQueue({ ...DEFAULT_QUEUE_LIMITS, ...options.queueLimits }, (source, reason) => dropped?.inc({ source, reason }));
    if (options.registry) {
      this.stage = new Histogram({
        name: "sam_edge_stage_duration_seconds",
        help: "Time per image in each stage of segmentation, whoever asked",
        labelNames: ["stage"],
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
        registers,
      });
      this.jobs = new Counter({ name: "sam_edge_jobs_total", help: "Segmentation jobs by source, route taken and result", labelNames: ["source", "route", "result"], registers });
      const queue = this.queue;
      new Counter({
        name: "sam_edge_jobs_refused_total",
        help: "Jobs refused with BUSY because their source's queue was full",
        labelNames: ["source"],
        registers,
        collect() {
          const refused = queue.stats.refused;
          this.reset();
          for (const source of SOURCES) this.inc({ source }, refused[source]);
        },
      });
    }
  }

  get stats(): ServiceStats {
    const cloud = this.options.cloud;
    return {
      ...this.counts,
      cloudCallsLeft: cloud ? cloud.budget.remaining : null,
      breaker: cloud ? cloud.breaker.state : null,
      localQueue: this.queue.depth,
      localMsAvg: Math.round(this.queue.averageRunMs),
      queue: this.queue.stats,
    };
  }

  /** The engine new jobs run on; undefined while the first model loads or after it failed. */
  get engine(): Engine | undefined {
    return this.slot.engine;
  }

  /** Records a stage timed outside the service (the answer's encoding, by the transports). */
  observeStage(stage: string, ms: number): void {
    this.stage?.observe({ stage }, ms / 1000);
  }

  async segment(job: SegmentJob): Promise<SegmentationResult> {
    const localUsable = this.slot.error === undefined;
    const wait = this.queue.expectedWaitMs() + this.queue.averageRunMs;
    const toCloud = job.route === "cloud" || (job.route === "auto" && (!this.slot.engine || wait > this.options.latencyBudgetMs));
    let result: SegmentationResult;
    try {
      if (!toCloud) result = await this.local(job);
      else {
        try {
          result = await this.cloud(job);
        } catch (err) {
          if (!localUsable || !(err instanceof CloudError)) throw err;
          this.counts.fallbacks++;
          result = { ...(await this.local(job)), fallback: { code: err.code, message: err.message } };
        }
      }
    } catch (err) {
      this.jobs?.inc({ source: job.source, route: toCloud ? "cloud" : "local", result: isSamEdgeError(err) ? err.code : err instanceof CloudError ? err.code : "error" });
      throw err;
    }
    this.jobs?.inc({ source: job.source, route: result.route, result: "ok" });
    for (const [key, ms] of Object.entries(result.timings)) {
      // A cached image skips preprocessing and the encoder: zeros would only drag the histogram down.
      if (ms > 0) this.stage?.observe({ stage: key.replace(/Ms$/, "") }, ms / 1000);
    }
    return result;
  }

  private local(job: SegmentJob): Promise<SegmentationResult> {
    if (job.waitForModel === false && !this.slot.engine) {
      if (this.slot.error !== undefined) throw this.slot.error;
      throw new SamEdgeError("MODEL_LOADING", "the model is still loading; retry in a few seconds (GET /readyz answers 200 once it is ready)");
    }
    const queued = now();
    return this.queue.add({
      source: job.source,
      bytes: job.bytes.length,
      ...(job.signal ? { signal: job.signal } : {}),
      ...(job.expiresAt !== undefined ? { expiresAt: job.expiresAt } : {}),
      run: () => {
        this.counts.local++;
        const queueMs = now() - queued;
        return this.slot.use(async (engine) => ({ ...(await this.runLocally(engine, job)), model: engine.model.manifest.name })).then((r) => ({ ...r, timings: { queueMs, ...r.timings } }));
      },
    });
  }

  private async runLocally(engine: Engine, job: SegmentJob): Promise<SegmentationResult> {
    if (job.mode === "everything") {
      const r = await engine.everything(job.bytes, everythingOptions(engine.model, job.everything));
      return {
        route: "local",
        width: r.width,
        height: r.height,
        masks: r.masks.map((m) => ({ point: m.point, mask: m.mask, bbox: m.bbox, area: m.area, confidence: m.confidence, stability: m.stability })),
        timings: { ...r.timings },
      };
    }
    // Normalised prompts need the image's size, which its header gives without decoding it.
    const size = job.coordinates === "normalized" ? await inspectImage(job.bytes) : undefined;
    const total: Timings = { preprocessMs: 0, encodeMs: 0, decodeMs: 0, postprocessMs: 0 };
    const masks: ResultMask[] = [];
    let first: SegmentResult | undefined;
    const prompts = toPixelPrompts(job.prompts, job.coordinates, size?.width ?? 1, size?.height ?? 1);
    for (const [i, prompt] of prompts.entries()) {
      // The answer keeps the best candidate only, unless every candidate was asked for.
      const r = await engine.segment(job.bytes, prompt, { ...(job.multimask === undefined ? {} : { multimask: job.multimask }), bestOnly: job.multimask !== true });
      first ??= r;
      for (const key of Object.keys(STAGES) as (keyof Timings)[]) total[key] += r.timings[key];
      for (const m of r.masks) masks.push({ prompt: i, mask: m.mask, bbox: m.bbox, area: m.area, confidence: m.confidence, stability: m.stability });
    }
    if (!first) throw new SamEdgeError("PROMPT_INVALID", "no prompts: give at least one {points, box}, or Everything mode");
    return { route: "local", width: first.width, height: first.height, masks, timings: { ...total } };
  }

  private async cloud(job: SegmentJob): Promise<SegmentationResult> {
    const cloud = this.options.cloud;
    if (!cloud) throw new CloudError("CLOUD_NOT_CONFIGURED", "no cloud token is configured (cloud.token or MSF_API_KEY)");
    const calls = job.mode === "everything" ? 1 : job.prompts.length;
    if (cloud.budget.remaining < calls) {
      throw new CloudError("CLOUD_BUDGET_EXHAUSTED", `the month's cloud budget is spent (${cloud.budget.used} of ${cloud.budget.limit} calls)`);
    }
    const size = await inspectImage(job.bytes);
    if (!cloud.breaker.allow()) throw new CloudError("CLOUD_UNAVAILABLE", "the cloud failed repeatedly; its circuit breaker is open");
    const start = now();
    this.counts.cloud++;
    try {
      const masks: ResultMask[] = [];
      if (job.mode === "everything") {
        // The hosted API takes 4 points per side at the least.
        const pointsPerSide = Math.max(4, everythingSettings(job.everything).points_per_side);
        const r = await this.call(cloud, () => cloud.client.everything(job.bytes, { pointsPerSide }));
        for (const m of r.masks) masks.push({ ...(await fromApi(m)), ...(m.point ? { point: m.point } : {}) });
      } else {
        for (const [i, prompt] of toPixelPrompts(job.prompts, job.coordinates, size.width, size.height).entries()) {
          const r = await this.call(cloud, () => cloud.client.interactive(job.bytes, prompt as InteractivePrompt, { multimask: job.multimask === true }));
          const answers = job.multimask && r.masks ? r.masks.map((m) => fromApi(m)) : [fromApi(r, r.rle)];
          for (const m of await Promise.all(answers)) masks.push({ prompt: i, ...m });
        }
      }
      cloud.breaker.success();
      return { route: "cloud", width: size.width, height: size.height, masks, timings: { cloudMs: now() - start } };
    } catch (err) {
      this.counts.cloud--;
      // Only an unreachable or failing service opens the breaker: a rejected request proves it answers.
      if (err instanceof CloudError && err.code === "CLOUD_UNAVAILABLE") {
        cloud.breaker.failure();
        this.counts.cloudFailures++;
      } else cloud.breaker.success();
      throw err;
    }
  }

  /** One API call with retries (network errors, 429, 5xx), each attempt taken from the budget. */
  private async call<T>(cloud: CloudRoute, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (!cloud.budget.tryReserve()) throw new CloudError("CLOUD_BUDGET_EXHAUSTED", `the month's cloud budget is spent (${cloud.budget.limit} calls)`);
      try {
        return await fn();
      } catch (err) {
        if (NOT_SENT.has(((err as Error).cause as { code?: string } | undefined)?.code ?? "")) cloud.budget.refund();
        const status = err instanceof SamApiError ? err.status : undefined;
        const retryable = status === undefined || status === 429 || status >= 500;
        const message = err instanceof Error ? err.message : String(err);
        if (status !== undefined && !retryable) {
          // The hosted API judged the request itself: a bad image fails the same way locally.
          throw new CloudError("CLOUD_REJECTED", `the cloud answered ${status} ${(err as SamApiError).code}: ${message}`, { cause: err });
        }
        if (attempt >= cloud.retries) throw new CloudError("CLOUD_UNAVAILABLE", `the cloud failed ${attempt + 1} times: ${message}`, { cause: err });
        // Full jitter: retries of several boxes after one outage spread out instead of arriving together.
        await sleep(Math.random() * cloud.retryBaseMs * 2 ** attempt);
      }
    }
  }

  /** Waits for the jobs queued to end and releases every engine. */
  close(): Promise<void> {
    return this.slot.close();
  }
}

/** Connection errors that mean the request never left this box: no call was spent. */
const NOT_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH"]);

type InteractivePrompt = Parameters<SamClient["interactive"]>[1];

/** A mask of the hosted API's answer: COCO RLE when the server sent it (the box does), else the PNG. */
async function fromApi(m: ApiMask, rle?: ApiRle): Promise<Omit<ResultMask, "prompt" | "point">> {
  const mask = rle ? decodeRle(rle) : await maskFromPng(Buffer.from(m.mask, "base64"));
  return { mask, bbox: maskBBox(mask), area: maskArea(mask), confidence: m.confidence, ...(m.stability !== undefined ? { stability: m.stability } : {}), ...(rle ? { rle } : {}) };
}

/** Whether an error is about the image itself (counted as a corrupt frame) rather than the agent. */
export function isImageError(err: unknown): boolean {
  return isSamEdgeError(err) && err.code.startsWith("IMAGE_");
}
