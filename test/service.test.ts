import type { FastifyInstance } from "fastify";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamClient } from "../agent/src/client/client.ts";
import { BusyError } from "../agent/src/core/errors.ts";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { CircuitBreaker } from "../agent/src/service/breaker.ts";
import { CloudBudget } from "../agent/src/service/budget.ts";
import { FairQueue, type Source } from "../agent/src/service/queue.ts";
import { SegmentationService } from "../agent/src/service/segmentation.ts";
import { form, request } from "./helpers/http.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A job that runs until told to finish, recording that it ran. */
function gate(log: string[], name: string): { run: () => Promise<string>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return {
    run: async () => {
      log.push(name);
      await opened;
      return name;
    },
    open,
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("the model's queue", () => {
  it("takes the sources in turn: a flood of requests slows the cameras to their share, never starves them", async () => {
    const log: string[] = [];
    const queue = new FairQueue();
    const running = gate(log, "first");
    const first = queue.add({ source: "http", bytes: 1, run: running.run });
    const all: Promise<unknown>[] = [first];
    for (let i = 0; i < 10; i++) all.push(queue.add({ source: "http", bytes: 1, run: async () => log.push(`http${i}`) }));
    for (let i = 0; i < 3; i++) all.push(queue.add({ source: "camera", bytes: 1, run: async () => log.push(`camera${i}`) }));
    await tick();
    running.open();
    await Promise.all(all);
    // After the job that was running, cameras and requests alternate until the cameras have had their frames.
    expect(log.slice(0, 7)).toEqual(["first", "camera0", "http0", "camera1", "http1", "camera2", "http2"]);
  });

  it("a full line answers BUSY at once, with a time to retry, and takes jobs again once it drains", async () => {
    const log: string[] = [];
    const queue = new FairQueue({ camera: { jobs: 8, bytes: 1e9 }, http: { jobs: 2, bytes: 1e9 }, mqtt: { jobs: 1, bytes: 100 }, cli: { jobs: 1, bytes: 1e9 } });
    const running = gate(log, "running");
    const jobs = [queue.add({ source: "http", bytes: 1, run: running.run })];
    await tick();
    jobs.push(queue.add({ source: "http", bytes: 1, run: async () => "a" }), queue.add({ source: "http", bytes: 1, run: async () => "b" }));
    let busy: unknown;
    try {
      await queue.add({ source: "http", bytes: 1, run: async () => "c" });
    } catch (err) {
      busy = err;
    }
    expect(busy).toBeInstanceOf(BusyError);
    expect((busy as BusyError).code).toBe("BUSY");
    expect((busy as BusyError).retryAfterS).toBeGreaterThanOrEqual(1);
    // Bytes count too: one MQTT job of 60 bytes fits, a second one does not.
    jobs.push(queue.add({ source: "mqtt", bytes: 60, run: async () => "m" }));
    await expect(queue.add({ source: "mqtt", bytes: 60, run: async () => "n" })).rejects.toBeInstanceOf(BusyError);
    expect(queue.stats.refused).toMatchObject({ http: 1, mqtt: 1 });
    running.open();
    expect(await Promise.all(jobs)).toEqual(["running", "a", "b", "m"]);
    expect(await queue.add({ source: "http", bytes: 1, run: async () => "again" })).toBe("again");
  });

  it("a job whose client has gone, or whose request expired, is dropped when its turn comes and never runs", async () => {
    const log: string[] = [];
    const drops: string[] = [];
    const queue = new FairQueue(undefined, (source: Source, reason) => drops.push(`${source}:${reason}`));
    const running = gate(log, "running");
    const first = queue.add({ source: "camera", bytes: 1, run: running.run });
    await tick();
    const gone = new AbortController();
    const cancelled = queue.add({ source: "http", bytes: 1, signal: gone.signal, run: async () => log.push("cancelled ran") });
    const expired = queue.add({ source: "mqtt", bytes: 1, expiresAt: Date.now() - 1, run: async () => log.push("expired ran") });
    const kept = queue.add({ source: "cli", bytes: 1, run: async () => log.push("kept ran") });
    gone.abort();
    running.open();
    await first;
    await expect(cancelled).rejects.toMatchObject({ code: "REQUEST_CANCELLED" });
    await expect(expired).rejects.toMatchObject({ code: "REQUEST_EXPIRED" });
    await kept;
    expect(log).toEqual(["running", "kept ran"]);
    expect(drops).toEqual(["http:cancelled", "mqtt:expired"]);
    expect(queue.stats.dropped).toEqual({ cancelled: 1, expired: 1 });
  });
});

// The service in front of a real model, reached over real HTTP.
describe("one segmentation service for every way in", () => {
  let model: SamModel;
  let scene: Scene;
  let dir: string;
  const apps: FastifyInstance[] = [];

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    scene = await loadScene("landscape");
    dir = await mkdtemp(join(tmpdir(), "sam-edge-service-"));
  });
  afterAll(async () => {
    for (const app of apps) await app.close();
    await model.release();
    await rm(dir, { recursive: true, force: true });
  });

  const everything = (url: string, init: RequestInit = {}, side = 8) =>
    request(`${url}/v1/segment/everything`, { method: "POST", body: form({ image: scene.bytes, points_per_side: String(side), pred_iou_thresh: "0", stability_score_thresh: "0" }), ...init });

  it("HTTP requests go through it: counted by source, timed per stage, and seen by auto routing, which sends a job to the cloud while they queue", async () => {
    const registry = new Registry();
    // The "cloud" is a second box's API over loopback.
    const cloudBox = await startServer({ engine: new SegmentEngine(model), token: "t" });
    apps.push(cloudBox.app);
    const service = new SegmentationService({
      engine: new SegmentEngine(model),
      latencyBudgetMs: 1,
      registry,
      cloud: {
        client: new SamClient({ baseUrl: cloudBox.url, token: "t", timeoutMs: 30_000 }),
        budget: new CloudBudget(dir, 100),
        breaker: new CircuitBreaker(3, 60_000),
        retries: 0,
        retryBaseMs: 1,
      },
    });
    const { app, url } = await startServer({ service, registry });
    apps.push(app);
    // One job timed, so auto knows what a local job costs.
    await service.segment({ source: "mqtt", bytes: scene.bytes, mode: "prompts", prompts: [{ points: [{ x: 10, y: 10, label: 1 }] }], coordinates: "pixels", route: "local" });
    const load = [everything(url), everything(url), everything(url)];
    while (service.stats.queue.waiting.http === 0) await new Promise((r) => setTimeout(r, 5));
    const auto = await service.segment({ source: "mqtt", bytes: scene.bytes, mode: "prompts", prompts: [{ points: [{ x: 10, y: 10, label: 1 }] }], coordinates: "pixels", route: "auto" });
    expect(auto.route).toBe("cloud");
    for (const res of await Promise.all(load)) expect([res.status, res.headers.get("x-sam-edge-model")]).toEqual([200, "tiny-sam"]);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/sam_edge_jobs_total\{source="http",route="local",result="ok"\} 3/);
    expect(metrics).toMatch(/sam_edge_stage_duration_seconds_count\{stage="decode"\} [1-9]/);
    expect(service.stats).toMatchObject({ local: 4, cloud: 1 });
  }, 120_000);

  it("over its share, HTTP gets 503 BUSY with Retry-After; a client that hangs up is dropped before the model sees its image", async () => {
    const registry = new Registry();
    const service = new SegmentationService({ engine: new SegmentEngine(model), latencyBudgetMs: 10_000, registry, queueLimits: { http: { jobs: 1, bytes: 1e9 } } });
    const { app, url } = await startServer({ service, registry });
    apps.push(app);
    // Long enough (a 24x24 grid) for the next two to arrive while it runs.
    const running = everything(url, {}, 24);
    while (!service.stats.queue.running) await new Promise((r) => setTimeout(r, 5));
    // One waits (the line's one place), the next is refused.
    const aborted = new AbortController();
    const waiting = everything(url, { signal: aborted.signal }).catch((err: Error) => err.name);
    while (service.stats.queue.waiting.http === 0) await new Promise((r) => setTimeout(r, 5));
    const busy = await everything(url);
    expect([busy.status, busy.body.error.code]).toEqual([503, "BUSY"]);
    expect(Number(busy.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    aborted.abort();
    expect(await waiting).toBe("AbortError");
    expect((await running).status).toBe(200);
    while (service.stats.queue.dropped.cancelled === 0) await new Promise((r) => setTimeout(r, 5));
    expect(await registry.metrics()).toMatch(/sam_edge_jobs_dropped_total\{source="http",reason="cancelled"\} 1/);
    expect(await registry.metrics()).toMatch(/sam_edge_jobs_refused_total\{source="http"\} 1/);
    // Only the first reached the model: the refused one and the dropped one never did.
    expect(service.stats.local).toBe(1);
  }, 120_000);
});

describe("the model's worker thread", () => {
  it("answers like the model in this thread; a worker that dies fails what it ran and the next request gets a new one", async () => {
    const { WorkerEngine } = await import("../agent/src/service/worker-engine.ts");
    const { InProcessEngine } = await import("../agent/src/service/engine.ts");
    const { DEFAULT_SESSION_CONFIG } = await import("../agent/src/model/sam-model.ts");
    const scene = await loadScene("landscape");
    const click = { points: [{ x: scene.objects[0]!.click[0], y: scene.objects[0]!.click[1], label: 1 as const }] };
    const worker = await WorkerEngine.load(TINY_SAM_DIR, DEFAULT_SESSION_CONFIG);
    const here = await InProcessEngine.load(TINY_SAM_DIR, DEFAULT_SESSION_CONFIG);
    try {
      const [a, b] = [await worker.segment(scene.bytes, click), await here.segment(scene.bytes, click)];
      expect(Buffer.from(a.masks[0]!.mask.data).equals(Buffer.from(b.masks[0]!.mask.data))).toBe(true);
      expect(a.masks[0]!.confidence).toBe(b.masks[0]!.confidence);
      // A crash in the worker, as an out-of-memory kill would leave it.
      const thread = await (worker as unknown as { current: Promise<{ terminate(): Promise<number> }> }).current;
      const inFlight = worker.segment(scene.bytes, { points: [{ x: 5, y: 5, label: 1 }] });
      await thread.terminate();
      await expect(inFlight).rejects.toMatchObject({ code: "MODEL_FAILED", message: expect.stringMatching(/worker thread exited/) });
      const again = await worker.segment(scene.bytes, click);
      expect(Buffer.from(again.masks[0]!.mask.data).equals(Buffer.from(b.masks[0]!.mask.data))).toBe(true);
      expect(worker.model.manifest.name).toBe("tiny-sam");
    } finally {
      await worker.release();
      await here.release();
    }
  }, 60_000);
});
