import { setTimeout as sleep } from "node:timers/promises";
import { SamApiError, type SamClient } from "../client/client.ts";
import type { ApiMask, ApiRle } from "../client/types.ts";
import { everythingSettings } from "../config/everything.ts";
import { decodeRle, maskFromPng } from "../segment/formats/index.ts";
import { maskArea, maskBBox } from "../segment/mask.ts";
import { inspectImage } from "../segment/preprocess.ts";
import type { CircuitBreaker } from "./breaker.ts";
import type { CloudBudget } from "./budget.ts";
import { CloudError } from "./cloud-errors.ts";
import { toPixelPrompts, type ResultMask, type SegmentationResult, type SegmentJob } from "./job.ts";

const now = (): number => performance.now();

export interface CloudRoute {
  client: SamClient;
  budget: CloudBudget;
  breaker: CircuitBreaker;
  retries: number;
  retryBaseMs: number;
}

/**
 * A job on the hosted API: one call per prompt (Everything: one), each taken from the month's
 * budget before it is made, retried with jittered backoff on network errors, 429 and 5xx, behind
 * a circuit breaker. Failures are CloudErrors, which the service answers by running the job
 * locally.
 */
export class CloudSegmenter {
  constructor(
    private readonly route: CloudRoute | undefined,
    private readonly counts: { cloud: number; cloudFailures: number },
  ) {}

  async segment(job: SegmentJob): Promise<SegmentationResult> {
    const cloud = this.route;
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

}

/** Connection errors that mean the request never left this box: no call was spent. */
const NOT_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH"]);

type InteractivePrompt = Parameters<SamClient["interactive"]>[1];

/** A mask of the hosted API's answer: COCO RLE when the server sent it (the box does), else the PNG. */
async function fromApi(m: ApiMask, rle?: ApiRle): Promise<Omit<ResultMask, "prompt" | "point">> {
  const mask = rle ? decodeRle(rle) : await maskFromPng(Buffer.from(m.mask, "base64"));
  return { mask, bbox: maskBBox(mask), area: maskArea(mask), confidence: m.confidence, ...(m.stability !== undefined ? { stability: m.stability } : {}), ...(rle ? { rle } : {}) };
}

