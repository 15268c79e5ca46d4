import { setTimeout as sleep } from "node:timers/promises";
import { SamApiError, type SamClient } from "../client/client.ts";
import type { ApiMask, ApiRle } from "../client/types.ts";
import type { CameraPrompt, EverythingSettings, RouteMode } from "../config/schema.ts";
import { isSamEdgeError } from "../core/errors.ts";
import type { SegmentEngine } from "../segment/engine.ts";
import { EngineSlot } from "./engine-slot.ts";
import { segmentEverything } from "../segment/everything.ts";
import { decodeRle, maskFromPng } from "../segment/formats/index.ts";
import { maskBBox, type BBox, type BinaryMask } from "../segment/mask.ts";
import { inspectImage } from "../segment/preprocess.ts";
import type { Prompt } from "../segment/prompts.ts";
import type { CircuitBreaker } from "./breaker.ts";
import type { CloudBudget } from "./budget.ts";
import { CloudError } from "./cloud-errors.ts";

/** What to segment in one image, as a camera (or an MQTT request) describes it. */
export interface SegmentJob {
  bytes: Buffer;
  mode: "prompts" | "everything";
  prompts: CameraPrompt[];
  coordinates: "pixels" | "normalized";
  multimask: boolean;
  everything: EverythingSettings;
  route: RouteMode;
}

export interface RoutedMask {
  /** Index of the prompt this mask answers (prompts mode). */
  prompt?: number;
  /** The grid point that produced it (everything mode, local route). */
  point?: [number, number];
  mask: BinaryMask;
  bbox: BBox;
  area: number;
  confidence: number;
  stability?: number;
}

export interface RoutedResult {
  route: "local" | "cloud";
  /** Why a cloud or auto job ran locally after all. */
  fallback?: { code: string; message: string };
  width: number;
  height: number;
  masks: RoutedMask[];
  /** Milliseconds per stage: preprocess/encode/decode/postprocess locally, cloud for the hosted call. */
  timings: Record<string, number>;
}

export interface CloudRoute {
  client: SamClient;
  budget: CloudBudget;
  breaker: CircuitBreaker;
  retries: number;
  retryBaseMs: number;
}

export interface RouterOptions {
  /** A slot lets a model update swap the engine under the router; queued jobs run on the engine current when they start. */
  engine: SegmentEngine | Promise<SegmentEngine> | EngineSlot;
  /** Unset when no token is configured: cloud jobs then run locally. */
  cloud?: CloudRoute;
  /** `auto` sends a job to the cloud when the local queue would make it wait longer than this. */
  latencyBudgetMs: number;
}

export interface RouterStats {
  local: number;
  cloud: number;
  fallbacks: number;
  cloudFailures: number;
  cloudCallsLeft: number | null;
  breaker: string | null;
  localQueue: number;
  localMsAvg: number;
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

/**
 * Runs a job on the local model or the hosted API. Local jobs go through one queue (the
 * engine is shared by every camera and onnxruntime already uses every core). `cloud` and
 * `auto` fall back to the local model when the cloud fails, is out of budget or its breaker
 * is open.
 */
export class Router {
  private readonly slot: EngineSlot;
  private queue: Promise<unknown> = Promise.resolve();
  private queued = 0;
  private localMsAvg = 0;
  private readonly counts = { local: 0, cloud: 0, fallbacks: 0, cloudFailures: 0 };

  constructor(private readonly options: RouterOptions) {
    this.slot = EngineSlot.from(options.engine);
  }

  get stats(): RouterStats {
    const cloud = this.options.cloud;
    return {
      ...this.counts,
      cloudCallsLeft: cloud ? cloud.budget.remaining : null,
      breaker: cloud ? cloud.breaker.state : null,
      localQueue: this.queued,
      localMsAvg: Math.round(this.localMsAvg),
    };
  }

  /** How long a local job queued now would wait before it starts, from the recent average. */
  expectedLocalWaitMs(): number {
    return this.queued * this.localMsAvg;
  }

  async run(job: SegmentJob): Promise<RoutedResult> {
    const localUsable = this.slot.error === undefined;
    const toCloud =
      job.route === "cloud" || (job.route === "auto" && (!this.slot.engine || this.expectedLocalWaitMs() + this.localMsAvg > this.options.latencyBudgetMs));
    if (!toCloud) return this.local(job);
    try {
      return await this.cloud(job);
    } catch (err) {
      if (!localUsable || !(err instanceof CloudError)) throw err;
      this.counts.fallbacks++;
      const result = await this.local(job);
      return { ...result, fallback: { code: err.code, message: err.message } };
    }
  }

  private local(job: SegmentJob): Promise<RoutedResult> {
    this.queued++;
    const run = this.queue.then(async () => {
      const start = now();
      try {
        return await this.slot.use((engine) => this.segmentLocally(engine, job));
      } finally {
        const ms = now() - start;
        this.localMsAvg = this.localMsAvg === 0 ? ms : this.localMsAvg * 0.8 + ms * 0.2;
        this.queued--;
      }
    });
    this.queue = run.catch(() => undefined);
    this.counts.local++;
    return run;
  }

  private async segmentLocally(engine: SegmentEngine, job: SegmentJob): Promise<RoutedResult> {
    if (job.mode === "everything") {
      const e = job.everything;
      const r = await segmentEverything(engine, job.bytes, {
        pointsPerSide: e.points_per_side,
        predIouThresh: e.pred_iou_thresh,
        stabilityScoreThresh: e.stability_score_thresh,
        boxNmsThresh: e.box_nms_thresh,
        minMaskRegionArea: e.min_mask_region_area,
      });
      return {
        route: "local",
        width: r.width,
        height: r.height,
        masks: r.masks.map((m) => ({ point: m.point, mask: m.mask, bbox: m.bbox, area: m.area, confidence: m.confidence, stability: m.stability })),
        timings: { ...r.timings },
      };
    }
    const { embedding, timings } = await engine.embed(job.bytes);
    const total = { preprocessMs: timings.preprocessMs, encodeMs: timings.encodeMs, decodeMs: 0, postprocessMs: 0 };
    const masks: RoutedMask[] = [];
    const prompts = toPixelPrompts(job.prompts, job.coordinates, embedding.width, embedding.height);
    for (const [i, prompt] of prompts.entries()) {
      const r = await engine.segment(embedding, prompt, { multimask: job.multimask });
      total.decodeMs += r.timings.decodeMs;
      total.postprocessMs += r.timings.postprocessMs;
      for (const m of job.multimask ? r.masks : r.masks.slice(0, 1)) {
        masks.push({ prompt: i, mask: m.mask, bbox: m.bbox, area: m.area, confidence: m.confidence, stability: m.stability });
      }
    }
    return { route: "local", width: embedding.width, height: embedding.height, masks, timings: total };
  }

  private async cloud(job: SegmentJob): Promise<RoutedResult> {
    const cloud = this.options.cloud;
    if (!cloud) throw new CloudError("CLOUD_NOT_CONFIGURED", "no cloud token is configured (cloud.token or MSF_API_KEY)");
    const calls = job.mode === "everything" ? 1 : job.prompts.length;
    if (cloud.budget.remaining < calls) {
      throw new CloudError("CLOUD_BUDGET_EXHAUSTED", `the month's cloud budget is spent (${cloud.budget.used} of ${cloud.budget.limit} calls)`);
    }
    const size = await inspectImage(job.bytes);
    if (!cloud.breaker.allow()) throw new CloudError("CLOUD_UNAVAILABLE", "the cloud failed repeatedly; its circuit breaker is open");
    const start = now();
    try {
      const masks: RoutedMask[] = [];
      if (job.mode === "everything") {
        const r = await this.call(cloud, () => cloud.client.everything(job.bytes, { pointsPerSide: Math.max(4, job.everything.points_per_side) }));
        for (const m of r.masks) masks.push({ ...(await fromApi(m)), ...(m.point ? { point: m.point } : {}) });
      } else {
        for (const [i, prompt] of toPixelPrompts(job.prompts, job.coordinates, size.width, size.height).entries()) {
          const r = await this.call(cloud, () => cloud.client.interactive(job.bytes, prompt as InteractivePrompt, { multimask: job.multimask }));
          const answers = job.multimask && r.masks ? r.masks.map((m) => fromApi(m)) : [fromApi(r, r.rle)];
          for (const m of await Promise.all(answers)) masks.push({ prompt: i, ...m });
        }
      }
      cloud.breaker.success();
      this.counts.cloud++;
      return { route: "cloud", width: size.width, height: size.height, masks, timings: { cloudMs: now() - start } };
    } catch (err) {
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
}

/** Connection errors that mean the request never left this box: no call was spent. */
const NOT_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH"]);

type InteractivePrompt = Parameters<SamClient["interactive"]>[1];

/** A mask of the hosted API's answer: COCO RLE when the server sent it (the box does), else the PNG. */
async function fromApi(m: ApiMask, rle?: ApiRle): Promise<Omit<RoutedMask, "prompt" | "point">> {
  const mask = rle ? decodeRle(rle) : await maskFromPng(Buffer.from(m.mask, "base64"));
  let area = 0;
  for (const v of mask.data) area += v;
  return { mask, bbox: maskBBox(mask), area, confidence: m.confidence, ...(m.stability !== undefined ? { stability: m.stability } : {}) };
}

/** Whether an error is about the image itself (counted as a corrupt frame) rather than the agent. */
export function isImageError(err: unknown): boolean {
  return isSamEdgeError(err) && err.code.startsWith("IMAGE_");
}
