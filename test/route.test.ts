import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamClient } from "../agent/src/client/client.ts";
import type { EverythingSettings } from "../agent/src/config/schema.ts";
import { SamEdgeError } from "../agent/src/core/errors.ts";
import { createServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { CircuitBreaker } from "../agent/src/service/breaker.ts";
import { CloudBudget } from "../agent/src/service/budget.ts";
import { SegmentationService, type CloudRoute, type SegmentJob } from "../agent/src/service/segmentation.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { freePort } from "./helpers/mosquitto.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

// No score filters: the test is about routing, not about which masks the tiny model is sure of.
const EVERYTHING: Partial<EverythingSettings> = { points_per_side: 4, pred_iou_thresh: 0, stability_score_thresh: 0, box_nms_thresh: 0.7, min_mask_region_area: 0 };

describe("circuit breaker and budget", () => {
  it("the breaker opens after N failures in a row, lets one trial through after the reset time, closes on success", () => {
    let t = 0;
    const breaker = new CircuitBreaker(2, 1000, () => t);
    breaker.failure();
    expect([breaker.state, breaker.allow()]).toEqual(["closed", true]);
    breaker.failure();
    expect([breaker.state, breaker.allow()]).toEqual(["open", false]);
    t = 1000;
    expect(breaker.state).toBe("half-open");
    expect([breaker.allow(), breaker.allow()]).toEqual([true, false]);
    breaker.failure();
    expect(breaker.state).toBe("open");
    t = 2000;
    expect(breaker.allow()).toBe(true);
    breaker.success();
    expect([breaker.state, breaker.allow()]).toEqual(["closed", true]);
  });

  it("the monthly budget is persisted, never exceeded, and starts over with the month", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sam-edge-budget-"));
    try {
      let now = new Date("2026-03-30T12:00:00Z");
      const a = new CloudBudget(dir, 3, () => now);
      expect([a.tryReserve(), a.tryReserve()]).toEqual([true, true]);
      // A restarted agent reads the count from disk.
      const b = new CloudBudget(dir, 3, () => now);
      expect([b.used, b.remaining]).toEqual([2, 1]);
      expect([b.tryReserve(), b.tryReserve(), b.used]).toEqual([true, false, 3]);
      expect(JSON.parse(await readFile(join(dir, "cloud-budget.json"), "utf8"))).toEqual({ month: "2026-03", used: 3 });
      now = new Date("2026-04-01T00:00:01Z");
      expect([b.used, b.remaining, b.tryReserve()]).toEqual([0, 3, true]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a torn or hand-edited budget file is kept aside with a warning, and the count starts clean", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sam-edge-budget-"));
    try {
      const now = new Date("2026-03-30T12:00:00Z");
      for (const [content, reason] of [
        ["\u0000".repeat(64), /not valid JSON/],
        ['{"month":"2026-03","used":-4}', /lacks/],
      ] as const) {
        await writeFile(join(dir, "cloud-budget.json"), content);
        const warnings: string[] = [];
        const budget = new CloudBudget(dir, 3, () => now, (m) => warnings.push(m));
        expect([budget.used, budget.tryReserve()]).toEqual([0, true]);
        expect(warnings).toHaveLength(1);
        expect(warnings[0]).toMatch(reason);
        const kept = (await readdir(dir)).filter((f) => f.startsWith("cloud-budget.json.corrupt-"));
        expect(kept.length).toBeGreaterThan(0);
        expect(await readFile(join(dir, kept.at(-1)!), "utf8")).toBe(content);
        for (const f of kept) await rm(join(dir, f));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// The "cloud" is the same SAM API a second box serves (agent/src/http), over real HTTP on
// loopback, counting the calls it gets: the hosted service speaks the same API.
describe("routing local / cloud / auto", () => {
  let model: SamModel;
  let engine: SegmentEngine;
  let cloudApp: FastifyInstance;
  let cloudUrl: string;
  let cloudCalls = 0;
  let scene: Scene;
  let dir: string;
  const TOKEN = "cloud-token";

  const job = (route: SegmentJob["route"], over: Partial<SegmentJob> = {}): SegmentJob => {
    const obj = scene.objects[0]!;
    return {
      source: "mqtt",
      bytes: scene.bytes,
      mode: "prompts",
      prompts: [{ points: [{ x: obj.click[0], y: obj.click[1], label: 1 }] }],
      coordinates: "pixels",
      multimask: false,
      everything: EVERYTHING,
      route,
      ...over,
    };
  };
  const cloudRoute = (name: string, over: Partial<CloudRoute> & { baseUrl?: string; limit?: number } = {}): CloudRoute => ({
    client: new SamClient({ baseUrl: over.baseUrl ?? cloudUrl, token: TOKEN, timeoutMs: 5000 }),
    budget: new CloudBudget(join(dir, name), over.limit ?? 300),
    breaker: over.breaker ?? new CircuitBreaker(3, 60_000),
    retries: over.retries ?? 2,
    retryBaseMs: 10,
  });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sam-edge-route-"));
    model = await SamModel.load(TINY_SAM_DIR);
    engine = new SegmentEngine(model);
    scene = await loadScene("landscape");
    cloudApp = await createServer({ engine: new SegmentEngine(model), token: TOKEN });
    cloudApp.addHook("onRequest", async (request) => {
      if (request.url.startsWith("/v1/segment")) cloudCalls++;
    });
    await cloudApp.listen({ host: "127.0.0.1", port: 0 });
    cloudUrl = `http://127.0.0.1:${(cloudApp.server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await cloudApp.close();
    await model.release();
    await rm(dir, { recursive: true, force: true });
  });

  it("local and cloud give the same mask for the same click; a cloud call per prompt, taken from the budget", async () => {
    const cloud = cloudRoute("same");
    const service = new SegmentationService({ engine: Promise.resolve(engine), cloud, latencyBudgetMs: 10_000 });
    const local = await service.segment(job("local"));
    const before = cloudCalls;
    const twoPrompts = job("cloud", { prompts: [job("cloud").prompts[0]!, { box: [scene.objects[1]!.bbox[0], scene.objects[1]!.bbox[1], scene.objects[1]!.bbox[0] + scene.objects[1]!.bbox[2], scene.objects[1]!.bbox[1] + scene.objects[1]!.bbox[3]] }] });
    const remote = await service.segment(twoPrompts);
    expect([local.route, remote.route, remote.fallback]).toEqual(["local", "cloud", undefined]);
    expect([remote.width, remote.height]).toEqual([scene.width, scene.height]);
    expect(remote.masks.map((m) => m.prompt)).toEqual([0, 1]);
    expect(maskIoU(remote.masks[0]!.mask, local.masks[0]!.mask)).toBeGreaterThan(0.99);
    expect(remote.timings.cloudMs).toBeGreaterThan(0);
    expect(cloudCalls - before).toBe(2);
    expect(cloud.budget.used).toBe(2);

    const localEverything = await service.segment(job("local", { mode: "everything" }));
    expect(localEverything.masks.length).toBeGreaterThan(0);
    for (const m of localEverything.masks) expect([m.point?.length, m.mask.width, m.prompt]).toEqual([2, scene.width, undefined]);
    const everything = await service.segment(job("cloud", { mode: "everything" }));
    expect([everything.route, everything.width, everything.height]).toEqual(["cloud", scene.width, scene.height]);
    for (const m of everything.masks) expect([m.mask.width, m.mask.height]).toEqual([scene.width, scene.height]);
    expect(cloud.budget.used).toBe(3);
    expect(service.stats).toMatchObject({ local: 2, cloud: 2, fallbacks: 0, cloudCallsLeft: 297, breaker: "closed" });
  });

  it("cloud route with the cloud agent down: retried, then falls back to local; refused connections cost no budget; the breaker opens", async () => {
    const downUrl = `http://127.0.0.1:${await freePort()}`;
    const cloud = cloudRoute("down", { baseUrl: downUrl, breaker: new CircuitBreaker(2, 60_000) });
    const service = new SegmentationService({ engine: Promise.resolve(engine), cloud, latencyBudgetMs: 10_000 });
    const first = await service.segment(job("cloud"));
    expect(first.route).toBe("local");
    expect(first.fallback).toMatchObject({ code: "CLOUD_UNAVAILABLE", message: expect.stringMatching(/failed 3 times/) });
    expect(first.masks).toHaveLength(1);
    expect(cloud.budget.used).toBe(0);
    await service.segment(job("auto", { route: "cloud" }));
    expect(cloud.breaker.state).toBe("open");
    const third = await service.segment(job("cloud"));
    expect(third.fallback?.message).toMatch(/circuit breaker is open/);
    expect(service.stats).toMatchObject({ fallbacks: 3, cloudFailures: 2, breaker: "open" });
  });

  it("with the budget at its limit no cloud call is made: the job runs locally", async () => {
    const cloud = cloudRoute("spent", { limit: 1 });
    const service = new SegmentationService({ engine: Promise.resolve(engine), cloud, latencyBudgetMs: 10_000 });
    expect((await service.segment(job("cloud"))).route).toBe("cloud");
    const before = cloudCalls;
    const next = await service.segment(job("cloud"));
    expect(next).toMatchObject({ route: "local", fallback: { code: "CLOUD_BUDGET_EXHAUSTED" } });
    // A two-prompt job needs two calls: with one left, none is made.
    const roomy = cloudRoute("one-left", { limit: 1 });
    const service2 = new SegmentationService({ engine: Promise.resolve(engine), cloud: roomy, latencyBudgetMs: 10_000 });
    const two = await service2.segment(job("cloud", { prompts: [...job("cloud").prompts, ...job("cloud").prompts] }));
    expect(two.fallback?.code).toBe("CLOUD_BUDGET_EXHAUSTED");
    expect(cloudCalls).toBe(before);
    expect(cloud.budget.used).toBe(1);
  });

  it("auto: local while the local queue is within the latency budget, cloud when it is not, cloud when the model is missing", async () => {
    const cloud = cloudRoute("auto");
    const quick = new SegmentationService({ engine: Promise.resolve(engine), cloud, latencyBudgetMs: 60_000 });
    // While the model loads, auto sends everything to the cloud; here it has loaded a tick later.
    await new Promise((r) => setTimeout(r, 0));
    expect((await quick.segment(job("auto"))).route).toBe("local");
    // A budget shorter than one local job: once the router has timed one, auto goes to the cloud.
    const strict = new SegmentationService({ engine: Promise.resolve(engine), cloud, latencyBudgetMs: 0.001 });
    await strict.segment(job("local"));
    expect((await strict.segment(job("auto"))).route).toBe("cloud");

    const missing = Promise.reject(new SamEdgeError("MODEL_NOT_FOUND", "no model here"));
    missing.catch(() => undefined);
    const modelless = new SegmentationService({ engine: missing, cloud, latencyBudgetMs: 60_000 });
    await new Promise((r) => setTimeout(r, 10));
    expect((await modelless.segment(job("auto"))).route).toBe("cloud");
    await expect(modelless.segment(job("local"))).rejects.toMatchObject({ code: "MODEL_NOT_FOUND" });
  });

  it("a frame the cloud rejects as an image fails locally too, as an image error (counted corrupt, not a cloud failure)", async () => {
    const cloud = cloudRoute("rejected");
    const service = new SegmentationService({ engine: Promise.resolve(engine), cloud, latencyBudgetMs: 10_000 });
    // The PNG's header is whole (its size can be read) but its pixels are cut off.
    const broken = Buffer.concat([scene.bytes.subarray(0, 100), Buffer.alloc(100)]);
    const before = cloudCalls;
    await expect(service.segment(job("cloud", { bytes: broken }))).rejects.toMatchObject({ code: expect.stringMatching(/^IMAGE_/) });
    expect(cloudCalls - before).toBe(1);
    expect(service.stats).toMatchObject({ fallbacks: 1, cloudFailures: 0, breaker: "closed" });
  });
});
