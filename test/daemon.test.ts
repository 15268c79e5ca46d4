import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeRle, polygonsToMask, type CocoRle, type Polygon } from "../agent/src/segment/formats/index.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { CameraServer } from "./helpers/camera-server.ts";
import { sceneJpeg } from "./helpers/frames.ts";
import { freePort, Mosquitto } from "./helpers/mosquitto.ts";

const HELPERS_BIN = fileURLToPath(new URL("./helpers/bin/", import.meta.url));

interface ResultMessage {
  device: string;
  camera: string;
  frame: number;
  frame_id: string;
  captured_at: string;
  route: string;
  width: number;
  height: number;
  latency_ms: Record<string, number>;
  masks: { prompt?: number; bbox: number[]; area: number; confidence: number; stability: number; rle?: CocoRle; polygons?: Polygon[] }[];
}

// The daemon as a child process against a real Mosquitto: an ffmpeg test pattern, an
// ESP32-CAM stand-in over HTTP that also sends broken frames, and a USB webcam (an fswebcam
// stand-in on PATH), all on one engine; results, stats, status and requests over MQTT.
describe("sam-edge run: cameras in, masks out over MQTT", () => {
  let broker: Mosquitto;
  let camera: CameraServer;
  let tmp: string;
  let agent: AgentProcess;
  let sub: Subscriber;
  let httpPort: number;
  let small: Buffer;
  const base = "site1";
  const device = "box1";

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-daemon-"));
    broker = await Mosquitto.start();
    small = await sceneJpeg(160);
    const good = await sceneJpeg(240);
    const truncated = good.subarray(0, good.length - 400);
    const notAnImage = Buffer.from("<html>camera busy</html>");
    // The door camera (max_fps 2) takes about every third or fourth of these 6 fps frames: a
    // cycle of three could lock onto one phase and never show it one kind of bad frame, so the
    // cycle is five long (coprime to both).
    camera = await new CameraServer({ frames: [good, truncated, good, good, notAnImage], fps: 6, authorization: "Basic YWRtaW46c2VjcmV0" }).start();
    await writeFile(join(tmp, "webcam.jpg"), small);
    httpPort = await freePort();
    sub = await Subscriber.connect(broker.url, [`${base}/#`], { protocolVersion: 5 });
    agent = await AgentProcess.start(
      tmp,
      "agent",
      {
        device_id: device,
        state_dir: join(tmp, "state"),
        mqtt: { url: broker.url, base_topic: base, stats_interval_s: 1 },
        results: { mask_formats: ["rle", "polygon"], polygon_tolerance: 0, overlay: true },
        http: { port: httpPort },
        cameras: [
          {
            id: "pattern",
            type: "ffmpeg",
            input: "testsrc=size=320x240:rate=10",
            input_args: ["-f", "lavfi", "-re"],
            fps: 4,
            max_fps: 2,
            prompts: [{ points: [{ x: 0.5, y: 0.5 }] }, { box: [0.1, 0.1, 0.6, 0.6] }],
          },
          // Everything mode (no prompts) on a coarse grid: SAM's default 32x32 takes seconds a frame on 2 cores.
          { id: "door", type: "mjpeg", url: `${camera.url}/stream`, username: "admin", password: "secret", max_fps: 2, everything: { points_per_side: 4 } },
          { id: "usb", type: "webcam", device: "/dev/video0", width: 160, height: 120, interval_ms: 700, coordinates: "pixels", prompts: [{ points: [{ x: 40, y: 30, label: 1 }] }] },
        ],
      },
      { env: { PATH: `${HELPERS_BIN}:${process.env.PATH}`, FSWEBCAM_JPEG: join(tmp, "webcam.jpg"), FSWEBCAM_DEVICE: "/dev/video0" } },
    );
    await sub.waitFor(() => ["pattern", "door", "usb"].every((c) => sub.on(new RegExp(`/cameras/${c}/result$`)).length >= 3), "3 results of each camera", 120_000);
  });

  afterAll(async () => {
    await agent?.stop("SIGKILL");
    await sub?.close();
    await camera?.close();
    await broker?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it("publishes a retained online status", async () => {
    const status = sub.on(new RegExp(`^${base}/${device}/status$`));
    expect(status.at(-1)?.payload.toString()).toBe("online");
    const late = await Subscriber.connect(broker.url, [`${base}/${device}/status`]);
    try {
      await late.waitFor(() => late.messages.length > 0, "the retained status");
      expect([late.messages[0]!.payload.toString(), late.messages[0]!.retain]).toEqual(["online", true]);
    } finally {
      await late.close();
    }
  });

  it("ffmpeg test pattern -> results whose RLE and polygon masks decode to the frame's size, one per prompt", () => {
    const results = sub.json<ResultMessage>(/\/cameras\/pattern\/result$/);
    for (const r of results) {
      expect(r).toMatchObject({ device, camera: "pattern", route: "local", width: 320, height: 240 });
      expect(new Date(r.captured_at).getTime()).toBeGreaterThan(Date.now() - 300_000);
      expect(Object.keys(r.latency_ms)).toEqual(expect.arrayContaining(["queue", "preprocess", "encode", "decode", "postprocess", "format", "total"]));
      expect(r.masks.map((m) => m.prompt)).toEqual([0, 1]);
      for (const m of r.masks) {
        const mask = decodeRle(m.rle!);
        expect([mask.width, mask.height]).toEqual([320, 240]);
        expect(m.area).toBe(mask.data.reduce((a, v) => a + v, 0));
        // Polygons at tolerance 0 are the same mask, exactly.
        expect(maskIoU(polygonsToMask(m.polygons!, 320, 240), mask)).toBe(m.area === 0 ? 0 : 1);
        expect(typeof m.confidence).toBe("number");
        expect(typeof m.stability).toBe("number");
        expect(m.bbox).toHaveLength(4);
      }
    }
    const frames = results.map((r) => r.frame);
    expect(frames).toEqual([...frames].sort((a, b) => a - b));
    expect(new Set(results.map((r) => r.frame_id)).size).toBe(results.length);
  });

  it("the ESP32-CAM stand-in over MJPEG (basic auth) and the webcam (fswebcam) deliver results too", () => {
    expect(sub.json<ResultMessage>(/\/cameras\/door\/result$/).every((r) => r.width === 240 && r.height === 180)).toBe(true);
    const usb = sub.json<ResultMessage>(/\/cameras\/usb\/result$/);
    expect(usb.every((r) => r.width === 160 && r.height === 120 && r.masks.length === 1)).toBe(true);
    expect(camera.unauthorized).toBe(0);
  });

  it("overlays: a retained JPEG of the masks over the frame, per camera", async () => {
    const overlays = sub.on(new RegExp(`^${base}/${device}/cameras/usb/overlay$`));
    expect(overlays.length).toBeGreaterThan(0);
    const meta = await sharp(overlays.at(-1)!.payload).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(["jpeg", 160, 120]);
    // The overlay differs from the frame: the mask is drawn on it.
    const [frame, overlay] = await Promise.all([small, overlays.at(-1)!.payload].map((b) => sharp(b).raw().toBuffer()));
    expect(frame!.equals(overlay!)).toBe(false);
  });

  // Each good door frame is an Everything run; under the full suite's load on two cores that
  // can take seconds, so this waits longer than one test's default.
  it("corrupt frames (truncated JPEG, not an image) are counted and skipped; stats say so, per camera", { timeout: 150_000 }, async () => {
    await sub.waitFor(() => sub.json(/\/stats$/).some((s) => s.cameras?.door?.corrupt >= 2 && s.cameras?.door?.processed >= 3), "stats counting corrupt frames", 120_000);
    const stats = sub.json(/\/stats$/).at(-1)!; // counters only grow: the latest has what was awaited
    expect(stats.device).toBe(device);
    expect(stats.cameras.door.corrupt).toBeGreaterThanOrEqual(2);
    expect(stats.cameras.door.processed).toBeGreaterThanOrEqual(3);
    expect(stats.cameras.pattern).toMatchObject({ connected: true, corrupt: 0, reconnects: 0 });
    expect(stats.cameras.pattern.fps_in).toBeGreaterThan(1);
    expect(stats.cameras.pattern.fps_out).toBeGreaterThan(0);
    // Frames arrive faster than max_fps lets them through: the surplus is dropped, not queued.
    expect(stats.cameras.pattern.dropped).toBeGreaterThan(0);
    expect(stats.mqtt.connected).toBe(true);
    // The two kinds of bad frame come in turn; wait until both have been logged once.
    await sub.waitFor(() => /skipped: IMAGE_CORRUPT/.test(agent.stderr) && /skipped: IMAGE_UNSUPPORTED/.test(agent.stderr), "both bad frames logged");
    expect(agent.stderr).toMatch(/camera door frame \d+ skipped: IMAGE_CORRUPT: the JPEG is truncated/);
    expect(agent.stderr).toMatch(/camera door frame \d+ skipped: IMAGE_UNSUPPORTED/);
  });

  it("the HTTP API serves the daemon's cameras and its metrics", async () => {
    const cameras = (await (await fetch(`http://127.0.0.1:${httpPort}/v1/cameras`)).json()) as { cameras: { id: string; healthy: boolean }[] };
    expect(cameras.cameras.map((c) => c.id).sort()).toEqual(["door", "pattern", "usb"]);
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(metrics).toMatch(/sam_edge_frames_processed_total\{camera="pattern"\} [1-9]/);
    expect(metrics).toMatch(/sam_edge_outbox_depth \d/);
    const frame = await fetch(`http://127.0.0.1:${httpPort}/v1/cameras/usb/frame.jpg`);
    expect(Buffer.from(await frame.arrayBuffer()).equals(small)).toBe(true);
  });

  it("overlay.jpg is the camera's last segmented frame with its mask drawn over it", async () => {
    const res = await fetch(`http://127.0.0.1:${httpPort}/v1/cameras/usb/overlay.jpg`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/jpeg");
    expect(Number(res.headers.get("x-mask-count"))).toBe(1);
    const overlay = await sharp(Buffer.from(await res.arrayBuffer())).raw().toBuffer({ resolveWithObject: true });
    const plain = await sharp(small).raw().toBuffer({ resolveWithObject: true });
    expect([overlay.info.width, overlay.info.height]).toEqual([plain.info.width, plain.info.height]);
    // The mask is tinted: many pixels differ from the frame by more than JPEG noise.
    let changed = 0;
    for (let i = 0; i < plain.data.length; i += 3) {
      if (Math.abs(overlay.data[i]! - plain.data[i]!) + Math.abs(overlay.data[i + 1]! - plain.data[i + 1]!) + Math.abs(overlay.data[i + 2]! - plain.data[i + 2]!) > 60) changed++;
    }
    expect(changed).toBeGreaterThan(100);
    const missing = await fetch(`http://127.0.0.1:${httpPort}/v1/cameras/attic/overlay.jpg`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("CAMERA_NOT_FOUND");
  });

  it("request/response: MQTT 5 response topic with correlation data; MQTT 3.1.1 reply topic by id; errors with codes", async () => {
    const requester = await Subscriber.connect(broker.url, ["replies/#", `${base}/${device}/response/#`, `${base}/${device}/cameras/+/result`], { protocolVersion: 5 });
    const legacy = await Subscriber.connect(broker.url, [`${base}/${device}/response/#`], { protocolVersion: 4 });
    try {
      const image = small.toString("base64");
      await requester.client.publishAsync(
        `${base}/${device}/request`,
        JSON.stringify({ image, prompts: [{ points: [{ x: 80, y: 60, label: 1 }] }] }),
        { qos: 1, properties: { responseTopic: `${base}/${device}/response/app1`, correlationData: Buffer.from("corr-42") } },
      );
      // Response topics outside <base>/<device>/response/ are refused: the agent would publish wherever it is told.
      for (const [id, responseTopic] of [["r-elsewhere", "replies/app1"], ["r-own", `${base}/${device}/cameras/usb/result`]] as const) {
        await requester.client.publishAsync(`${base}/${device}/request`, JSON.stringify({ id, camera: "usb" }), { qos: 1, properties: { responseTopic, correlationData: Buffer.from(id) } });
      }
      await legacy.client.publishAsync(`${base}/${device}/request`, JSON.stringify({ id: "r-311", camera: "usb" }), { qos: 1 });
      await legacy.client.publishAsync(`${base}/${device}/request`, JSON.stringify({ id: "r-bad", camera: "attic" }), { qos: 1 });
      await legacy.client.publishAsync(`${base}/${device}/request`, JSON.stringify({ id: "r-typo", image, prompt: [] }), { qos: 1 });
      // An id that is no topic level (a wildcard, a separator) is answered on the plain response topic.
      await legacy.client.publishAsync(`${base}/${device}/request`, JSON.stringify({ id: "x/#", camera: "usb" }), { qos: 1 });
      await requester.waitFor(() => requester.on(/\/response\/app1$/).length === 1, "the MQTT 5 reply");
      const answered = () => new Set(legacy.messages.map((m) => m.topic.split("/").pop()));
      const expected = ["r-311", "r-bad", "r-typo", "response", "r-elsewhere", "r-own"];
      await legacy.waitFor(() => expected.every((id) => answered().has(id)), "the 3.1.1 replies and the refusals");

      const reply = requester.on(/\/response\/app1$/)[0]!;
      expect(Buffer.from(reply.properties!.correlationData as Uint8Array).toString()).toBe("corr-42");
      const body = JSON.parse(reply.payload.toString()) as ResultMessage;
      expect(body).toMatchObject({ route: "local", width: 160, height: 120 });
      expect(decodeRle(body.masks[0]!.rle!).width).toBe(160);

      const byId = Object.fromEntries(legacy.messages.map((m) => [m.topic.split("/").pop(), JSON.parse(m.payload.toString())]));
      expect(byId["r-311"]).toMatchObject({ id: "r-311", camera: "usb", width: 160, height: 120 });
      expect(byId["r-bad"]).toEqual({ id: "r-bad", error: { code: "CAMERA_NOT_FOUND", message: expect.stringMatching(/attic/) } });
      expect(byId["r-typo"].error.code).toBe("REQUEST_INVALID");
      expect(byId["r-typo"].error.message).toMatch(/prompt/);
      expect(legacy.messages.map((m) => m.topic)).toContain(`${base}/${device}/response`);
      expect(byId.response).toEqual({ error: { code: "REQUEST_INVALID", message: expect.stringMatching(/id/) } });
      for (const id of ["r-elsewhere", "r-own"]) {
        expect(byId[id]).toEqual({ id, error: { code: "REQUEST_INVALID", message: expect.stringMatching(/response topics must start with "site1\/.*\/response\/"/) } });
      }
      expect(requester.on(/^replies\//)).toEqual([]);
      // Nothing but results ever reaches a camera's result topic.
      expect(requester.on(/\/result$/).every((m) => "frame_id" in JSON.parse(m.payload.toString()))).toBe(true);
    } finally {
      await requester.close();
      await legacy.close();
    }
  });

  it("SIGTERM drains, flushes and says offline (retained), exiting 0", async () => {
    const exit = await agent.stop("SIGTERM");
    expect(exit).toEqual({ code: 0, signal: null });
    await sub.waitFor(() => sub.on(new RegExp(`^${base}/${device}/status$`)).at(-1)?.payload.toString() === "offline", "offline");
    expect(agent.stderr).toMatch(/stopped/);
    // Every result the agent printed reached the broker before it exited.
    const published = new Set(sub.json<ResultMessage>(/\/result$/).map((r) => `${r.camera}/${r.frame_id}`));
    expect(agent.printed.filter((p) => !published.has(`${p.camera}/${p.frame_id}`))).toEqual([]);
  });
});

describe("sam-edge run: start-up", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-start-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("an invalid config stops the start with CONFIG_INVALID naming each bad key", async () => {
    const agent = await AgentProcess.start(tmp, "bad", {
      state_dir: join(tmp, "state"),
      mqtt: { url: "mqtt://127.0.0.1:1", qos: 2 },
      http: { port: "8080" },
      cameras: [{ id: "door", type: "mjpeg", url: "not a url" }],
    });
    expect((await agent.exited).code).toBe(1);
    expect(agent.stderr).toMatch(/sam-edge: CONFIG_INVALID: .*bad\.json: invalid configuration/);
    expect(agent.stderr).toMatch(/mqtt\.qos is not a setting/);
    expect(agent.stderr).toMatch(/http\.port must be integer/);
    expect(agent.stderr).toMatch(/cameras\[0\]\.url must match/);
    expect(agent.stderr).not.toMatch(/\n\s+at /);
  });

  it("with no config: the demo on the bundled samples, an embedded broker when none listens, the HTTP API, and how to watch", async () => {
    const [mqttPort, httpPort] = [await freePort(), await freePort()];
    // The real defaults are 1883 and 8080; only the ports are moved so the test never depends on them.
    const agent = await AgentProcess.start(tmp, "none", {}, { args: [], env: { SAM_EDGE_CONFIG: "", XDG_STATE_HOME: tmp, SAM_EDGE_MQTT_URL: `mqtt://127.0.0.1:${mqttPort}`, SAM_EDGE_HTTP_PORT: String(httpPort) } });
    try {
      await agent.waitFor(() => /mosquitto_sub/.test(agent.stderr), "the watch hint");
      expect(agent.stderr).toMatch(/started an embedded one \(aedes/);
      expect(agent.stderr).toContain(`mosquitto_sub -h 127.0.0.1 -p ${mqttPort} -v -t 'sam-edge/#'`);
      const sub = await Subscriber.connect(`mqtt://127.0.0.1:${mqttPort}`, ["sam-edge/#"], { protocolVersion: 4 });
      try {
        await sub.waitFor(() => sub.on(/\/cameras\/demo\/result$/).length >= 1, "a demo result", 60_000);
        const result = sub.json<ResultMessage>(/\/cameras\/demo\/result$/)[0]!;
        expect(result.masks).toHaveLength(1);
        expect(decodeRle(result.masks[0]!.rle!).width).toBe(result.width);
      } finally {
        await sub.close();
      }
      const health = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
      expect(health.status).toBe(200);
      expect(await agent.stop("SIGINT")).toEqual({ code: 0, signal: null });
    } finally {
      await agent.stop("SIGKILL");
    }
  });
});
