import { Counter, Histogram, type Registry } from "prom-client";
import { everythingSettings } from "../config/everything.ts";
import type { EverythingSettings } from "../config/schema.ts";
import { isSamEdgeError, SamEdgeError } from "../core/errors.ts";
import type { SegmentResult, Timings } from "../segment/engine.ts";
import type { EverythingOptions } from "../segment/everything.ts";
import { inspectImage } from "../segment/preprocess.ts";
import { CloudSegmenter, type CloudRoute } from "./cloud.ts";
import { CloudError } from "./cloud-errors.ts";
import type { Engine, ModelInfo } from "./engine.ts";
import { EngineSlot, type EngineSource } from "./engine-slot.ts";
import { toPixelPrompts, type ResultMask, type SegmentationResult, type SegmentJob } from "./job.ts";
import { DEFAULT_QUEUE_LIMITS, FairQueue, SOURCES, type QueueLimit, type QueueStats, type Source } from "./queue.ts";

export type { Source } from "./queue.ts";
export { toPixelPrompts, type ResultMask, type SegmentationResult, type SegmentJob } from "./job.ts";
export type { CloudRoute } from "./cloud.ts";

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
  private readonly cloud: CloudSegmenter;
  private readonly counts = { local: 0, cloud: 0, fallbacks: 0, cloudFailures: 0 };
  private readonly stage: Histogram<"stage"> | undefined;
  private readonly jobs: Counter<"source" | "route" | "result"> | undefined;

  constructor(private readonly options: ServiceOptions) {
    this.slot = EngineSlot.from(options.engine);
    this.cloud = new CloudSegmenter(options.cloud, this.counts);
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
          result = await this.cloud.segment(job);
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

  /** Waits for the jobs queued to end and releases every engine. */
  close(): Promise<void> {
    return this.slot.close();
  }
}

/** Whether an error is about the image itself (counted as a corrupt frame) rather than the agent. */
export function isImageError(err: unknown): boolean {
  return isSamEdgeError(err) && err.code.startsWith("IMAGE_");
}
