import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSource } from "../agent/src/capture/create.ts";
import type { ResultMessage } from "../agent/src/client/types.ts";
import { loadConfig } from "../agent/src/config/load.ts";
import { createLogger } from "../agent/src/core/log.ts";
import { CameraScheduler, type ProcessedFrame } from "../agent/src/daemon/camera-scheduler.ts";
import { Controller } from "../agent/src/daemon/controller.ts";
import type { ResultEvent } from "../agent/src/daemon/results.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { InProcessEngine } from "../agent/src/service/engine.ts";
import { SegmentationService } from "../agent/src/service/segmentation.ts";
import { CameraServer } from "./helpers/camera-server.ts";
import { sceneJpeg } from "./helpers/frames.ts";
import { SCENES_DIR, TINY_SAM_DIR } from "./helpers/scenes.ts";

// The controller and the scheduler built in this process from real parts (a real model, real
// sources, a camera stand-in speaking MJPEG over HTTP): no daemon to spawn, nothing replaced.
describe("the daemon's parts, in process", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-inprocess-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("the controller runs a folder camera's frames through the service to its features: results in order, --print after, metrics counted", async () => {
    const config = await loadConfig({
      env: {},
      overrides: [
        { path: ["state_dir"], value: join(tmp, "state"), origin: "test" },
        { path: ["mqtt", "enabled"], value: false, origin: "test" },
        { path: ["http", "enabled"], value: false, origin: "test" },
        { path: ["print_results"], value: true, origin: "test" },
        { path: ["model", "dir"], value: TINY_SAM_DIR, origin: "test" },
        { path: ["cameras"], value: [{ id: "files", type: "folder", dir: SCENES_DIR, interval_ms: 0, loop: false }], origin: "test" },
      ],
    });
    const printed: string[] = [];
    const controller = await Controller.start(config, createLogger("error"), { print: (line) => printed.push(line), load: InProcessEngine.load });
    const events: ResultEvent[] = [];
    controller.results.on((e) => {
      events.push(e);
    });
    try {
      await controller.finished();
    } finally {
      await controller.stop();
    }
    expect(events.length).toBeGreaterThan(2);
    expect(events.map((e) => e.frame.seq)).toEqual(events.map((_, i) => i));
    // --print subscribed before this listener: every event seen here was printed first.
    const lines = printed.map((l) => JSON.parse(l) as ResultMessage);
    expect(lines.map((l) => l.frame)).toEqual(events.map((e) => e.frame.seq));
    for (const [i, e] of events.entries()) {
      expect(e.message).toMatchObject({ camera: "files", route: "local", model: "tiny-sam", width: e.result.width, height: e.result.height });
      expect(e.message.masks[0]!.rle).toBeDefined();
      expect(lines[i]!.masks[0]).not.toHaveProperty("rle");
      expect(e.message.latency_ms.total).toBeGreaterThanOrEqual(e.message.latency_ms.decode!);
    }
    const metrics = await controller.registry.metrics();
    expect(metrics).toContain(`sam_edge_frames_processed_total{camera="files"} ${events.length}`);
    expect(metrics).toMatch(/sam_edge_jobs_total\{source="camera",route="local",result="ok"\} \d+/);
    expect(controller.stats()).toMatchObject({ cameras: { files: { processed: events.length, failed: 0 } }, router: { local: events.length } });
  }, 120_000);

  it("the scheduler: a live camera faster than its max_fps keeps only its newest frame (the rest counted dropped), and a slow folder camera still gets its turns", async () => {
    const model = await SamModel.load(TINY_SAM_DIR);
    const service = new SegmentationService({ engine: new SegmentEngine(model), latencyBudgetMs: 10_000 });
    const camera = await new CameraServer({ frames: [await sceneJpeg(320), await sceneJpeg(320, "small.png")], fps: 25 }).start();
    const config = await loadConfig({
      env: {},
      overrides: [
        {
          path: ["cameras"],
          value: [
            { id: "live", type: "mjpeg", url: `${camera.url}/stream`, max_fps: 4 },
            { id: "files", type: "folder", dir: SCENES_DIR, interval_ms: 0, loop: true, max_fps: 4 },
          ],
          origin: "test",
        },
      ],
    });
    const processed: ProcessedFrame[] = [];
    const scheduler = new CameraScheduler(
      config.cameras.map((settings) => ({ settings, source: createSource(settings, { url: config.mqtt.url, client: {} }) })),
      { service, defaultRoute: "local", log: createLogger("error"), onResult: async (p) => void processed.push(p) },
    );
    scheduler.start();
    try {
      await new Promise((r) => setTimeout(r, 3000));
    } finally {
      await scheduler.stop();
      await camera.close();
      await service.close();
    }
    const stats = scheduler.stats();
    const live = processed.filter((p) => p.frame.cameraId === "live");
    const files = processed.filter((p) => p.frame.cameraId === "files");
    expect(live.length).toBeGreaterThan(0);
    expect(files.length).toBeGreaterThan(0);
    // At most max_fps a second each (3 s, and the first frame at once).
    expect(live.length).toBeLessThanOrEqual(4 * 3 + 1);
    expect(stats.live!.frames).toBeGreaterThan(live.length);
    expect(stats.live!.dropped).toBeGreaterThan(0);
    // Results of one camera come in the order its frames arrived.
    expect(live.map((p) => p.frame.seq)).toEqual([...live.map((p) => p.frame.seq)].sort((a, b) => a - b));
    expect(stats.files).toMatchObject({ failed: 0, corrupt: 0 });
  }, 60_000);
});
