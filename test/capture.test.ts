import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connectAsync } from "mqtt";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FfmpegSource } from "../agent/src/capture/ffmpeg.ts";
import { FolderSource } from "../agent/src/capture/folder.ts";
import { backoffDelay } from "../agent/src/capture/health.ts";
import { JpegSplitter } from "../agent/src/capture/jpeg-stream.ts";
import { MjpegSource, MultipartSplitter } from "../agent/src/capture/mjpeg.ts";
import { cameraIdFromTopic, MqttFrameSource } from "../agent/src/capture/mqtt-frames.ts";
import { SnapshotSource } from "../agent/src/capture/snapshot.ts";
import type { Frame, FrameSource } from "../agent/src/capture/source.ts";
import { WebcamSource } from "../agent/src/capture/webcam.ts";
import { startEmbeddedBroker, type EmbeddedBroker } from "../agent/src/mqtt/broker.ts";
import { CameraServer } from "./helpers/camera-server.ts";
import { sceneJpeg } from "./helpers/frames.ts";
import { freePort } from "./helpers/mosquitto.ts";

const exec = promisify(execFile);
const HELPERS_BIN = fileURLToPath(new URL("./helpers/bin/", import.meta.url));
const MB = 1024 * 1024;

/** The first `count` frames of a source (or fewer if `timeoutMs` passes first), then stops it. */
async function take(source: FrameSource, count: number, timeoutMs = 20_000): Promise<Frame[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const frames: Frame[] = [];
  try {
    for await (const frame of source.frames(controller.signal)) {
      frames.push(frame);
      if (frames.length >= count) break;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return frames;
}

async function size(jpeg: Buffer): Promise<[number | undefined, number | undefined, string | undefined]> {
  const meta = await sharp(jpeg).metadata();
  return [meta.width, meta.height, meta.format];
}

describe("frame sources", () => {
  let small: Buffer;
  let wide: Buffer;
  let tmp: string;

  beforeAll(async () => {
    small = await sceneJpeg(160);
    wide = await sceneJpeg(200);
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-capture-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("JpegSplitter cuts ffmpeg's MJPEG pipe into whole JPEGs, however the bytes are chunked", async () => {
    const { stdout } = await exec("ffmpeg", ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-frames:v", "5", "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1"], {
      encoding: "buffer",
      maxBuffer: 16 * MB,
    });
    for (const chunkSize of [7, 1000, stdout.length]) {
      const splitter = new JpegSplitter(MB);
      const frames: Buffer[] = [];
      for (let i = 0; i < stdout.length; i += chunkSize) frames.push(...splitter.push(stdout.subarray(i, i + chunkSize)));
      expect(frames, `chunks of ${chunkSize}`).toHaveLength(5);
      expect(Buffer.concat(frames).equals(stdout)).toBe(true);
      for (const f of frames) expect(await size(f)).toEqual([96, 64, "jpeg"]);
    }
  });

  it("JpegSplitter drops a frame cut off by the next one and one over the size limit, and goes on", () => {
    const splitter = new JpegSplitter(small.length + 10);
    const cut = small.subarray(0, small.length >> 1);
    const huge = Buffer.concat([small.subarray(0, small.length - 2), Buffer.alloc(small.length), small.subarray(small.length - 2)]);
    const frames = splitter.push(Buffer.concat([cut, small, huge, small]));
    expect(frames.map((f) => f.equals(small))).toEqual([true, true]);
    expect(splitter.dropped).toBe(2);
  });

  it("MultipartSplitter: parts with or without Content-Length, boundaries with or without --, oversized parts skipped", () => {
    const body = (length: boolean) =>
      Buffer.concat(
        [small, wide].flatMap((jpeg) => [Buffer.from(`--b0undary\r\nContent-Type: image/jpeg\r\n${length ? `Content-Length: ${jpeg.length}\r\n` : ""}\r\n`), jpeg, Buffer.from("\r\n")]),
      );
    for (const withLength of [true, false]) {
      const splitter = new MultipartSplitter("b0undary", MB);
      const stream = Buffer.concat([body(withLength), Buffer.from("--b0undary\r\n")]);
      const parts: Buffer[] = [];
      for (let i = 0; i < stream.length; i += 333) parts.push(...splitter.push(stream.subarray(i, i + 333)));
      expect(parts.map((p) => p.equals(small) || p.equals(wide))).toEqual([true, true]);
    }
    const limited = new MultipartSplitter("--b0undary", small.length + 1);
    expect(limited.push(Buffer.concat([body(true), Buffer.from("--b0undary\r\n")])).map((p) => p.length)).toEqual([small.length]);
    expect(limited.dropped).toBe(1);
  });

  it("MJPEG over HTTP: real JPEG frames with the configured auth header; a dropped stream is reconnected", async () => {
    const camera = await new CameraServer({ frames: [small, wide], fps: 20, authorization: "Basic dXNlcjpwYXNz" }).start();
    try {
      const source = new MjpegSource({ cameraId: "door", url: `${camera.url}/stream`, username: "user", password: "pass", timeoutMs: 5000, maxFrameBytes: MB });
      const controller = new AbortController();
      const frames: Frame[] = [];
      let dropped = false;
      for await (const frame of source.frames(controller.signal)) {
        frames.push(frame);
        if (frames.length === 3 && !dropped) {
          dropped = true;
          camera.dropStreams();
        }
        if (frames.length >= 6) break;
      }
      controller.abort();
      expect(frames.map((f) => f.seq)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(frames.every((f) => f.cameraId === "door")).toBe(true);
      for (const f of frames) expect((await size(f.bytes))[2]).toBe("jpeg");
      expect(source.health().reconnects).toBeGreaterThanOrEqual(1);
      expect(camera.unauthorized).toBe(0);
    } finally {
      await camera.close();
    }
  });

  it("MJPEG: a wrong password is a source error (health says why), not a crash", async () => {
    const camera = await new CameraServer({ frames: [small], fps: 20, authorization: "Basic dXNlcjpwYXNz" }).start();
    try {
      const source = new MjpegSource({ cameraId: "door", url: `${camera.url}/stream`, headers: { Authorization: "Basic d3Jvbmc6d3Jvbmc=" }, timeoutMs: 5000, maxFrameBytes: MB });
      expect(await take(source, 1, 1500)).toEqual([]);
      expect(source.health()).toMatchObject({ connected: false, lastError: expect.stringMatching(/answered 401/) });
      expect(camera.unauthorized).toBeGreaterThanOrEqual(1);
    } finally {
      await camera.close();
    }
  });

  it("HTTP snapshot polling (ESP32-CAM /capture), at the configured interval", async () => {
    const camera = await new CameraServer({ frames: [small, wide], fps: 1, authorization: "Bearer cam-token" }).start();
    try {
      const source = new SnapshotSource({ cameraId: "yard", url: `${camera.url}/capture`, headers: { Authorization: "Bearer cam-token" }, timeoutMs: 5000, intervalMs: 100, maxFrameBytes: MB });
      const started = Date.now();
      const frames = await take(source, 3);
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
      expect(await Promise.all(frames.map((f) => size(f.bytes)))).toEqual([
        [160, 120, "jpeg"],
        [200, 150, "jpeg"],
        [160, 120, "jpeg"],
      ]);
    } finally {
      await camera.close();
    }
  });

  it("snapshot: a camera that is down is retried with growing backoff until it is back", async () => {
    const port = await freePort();
    const source = new SnapshotSource({ cameraId: "yard", url: `http://127.0.0.1:${port}/capture`, timeoutMs: 1000, intervalMs: 50, maxFrameBytes: MB });
    const controller = new AbortController();
    const iterator = source.frames(controller.signal)[Symbol.asyncIterator]();
    const first = iterator.next();
    await new Promise((r) => setTimeout(r, 1200));
    expect(source.health()).toMatchObject({ connected: false, lastError: expect.stringMatching(/ECONNREFUSED/) });
    expect(source.health().reconnects).toBeGreaterThanOrEqual(1);
    const camera = await new CameraServer({ frames: [small], fps: 1 }).start(port);
    try {
      const frame = (await first).value as Frame;
      expect((await size(frame.bytes))[0]).toBe(160);
      expect(source.health().connected).toBe(true);
    } finally {
      controller.abort();
      await iterator.return?.();
      await camera.close();
    }
    expect([0, 1, 2, 3, 10].map((a) => backoffDelay(a, { initialMs: 500, maxMs: 30_000 }, () => 0.5))).toEqual([500, 1000, 2000, 4000, 30_000]);
  });

  it("ffmpeg: a test pattern piped as MJPEG; a bad input is reported in health", async () => {
    const source = new FfmpegSource({ cameraId: "pattern", input: "testsrc=size=128x96:rate=25", inputArgs: ["-f", "lavfi", "-re"], fps: 10, maxFrameBytes: MB });
    const frames = await take(source, 4);
    expect(frames.map((f) => f.seq)).toEqual([0, 1, 2, 3]);
    for (const f of frames) expect(await size(f.bytes)).toEqual([128, 96, "jpeg"]);

    const broken = new FfmpegSource({ cameraId: "gone", input: join(tmp, "missing.mp4"), inputArgs: [], maxFrameBytes: MB });
    expect(await take(broken, 1, 1500)).toEqual([]);
    expect(broken.health().lastError).toMatch(/ffmpeg exited.*No such file/);
  });

  it("webcam through node-webcam: the fswebcam on PATH is run for the configured device and its JPEG delivered", async () => {
    const jpeg = join(tmp, "shot.jpg");
    await writeFile(jpeg, wide);
    const argsLog = join(tmp, "fswebcam-args.log");
    const saved = { ...process.env };
    Object.assign(process.env, { PATH: `${HELPERS_BIN}:${process.env.PATH}`, FSWEBCAM_JPEG: jpeg, FSWEBCAM_DEVICE: "/dev/video2", FSWEBCAM_ARGS_LOG: argsLog });
    try {
      const source = new WebcamSource({ cameraId: "usb", device: "/dev/video2", width: 640, height: 480, intervalMs: 50, maxFrameBytes: MB });
      const frames = await take(source, 2);
      expect(frames.map((f) => f.bytes.equals(wide))).toEqual([true, true]);
      const args = (await readFile(argsLog, "utf8")).trim().split("\n")[0]!;
      expect(args).toMatch(/-d \/dev\/video2/);
      expect(args).toMatch(/-r 640x480/);

      const missing = new WebcamSource({ cameraId: "usb2", device: "/dev/video7", width: 640, height: 480, intervalMs: 50, maxFrameBytes: MB });
      expect(await take(missing, 1, 1000)).toEqual([]);
      expect(missing.health().lastError).toMatch(/fswebcam on \/dev\/video7/);
    } finally {
      process.env = saved;
    }
  });

  describe("MQTT-relayed frames", () => {
    let broker: EmbeddedBroker;
    let url: string;
    beforeAll(async () => {
      broker = await startEmbeddedBroker("127.0.0.1", 0);
      url = `mqtt://127.0.0.1:${broker.port}`;
    });
    afterAll(async () => broker.close());

    it("the camera id is the topic level under the pattern's +, with or without $share", () => {
      expect(cameraIdFromTopic("esp32/+/jpeg", "esp32/porch/jpeg", "relay")).toBe("porch");
      expect(cameraIdFromTopic("$share/sam/esp32/+/jpeg", "esp32/garage.left/jpeg", "relay")).toBe("garage-left");
      expect(cameraIdFromTopic("cams/front", "cams/front", "relay")).toBe("relay");
    });

    it("JPEG payloads arrive as frames of the camera their topic names; oversized ones are counted", async () => {
      const source = new MqttFrameSource({ cameraId: "relay", url, client: { protocolVersion: 4 }, topic: "esp32/+/jpeg", maxFrameBytes: small.length + 100 });
      const controller = new AbortController();
      const iterator = source.frames(controller.signal)[Symbol.asyncIterator]();
      const first = iterator.next();
      const gateway = await connectAsync(url, { protocolVersion: 4 });
      try {
        for (let i = 0; i < 50 && !source.health().connected; i++) await new Promise((r) => setTimeout(r, 20));
        await new Promise((r) => setTimeout(r, 100)); // the subscription follows the connection
        await gateway.publishAsync("esp32/porch/jpeg", wide, { qos: 1 }); // over the limit
        await gateway.publishAsync("esp32/porch/jpeg", small, { qos: 1 });
        await gateway.publishAsync("esp32/garage/jpeg", small, { qos: 1 });
        const frames = [(await first).value as Frame, (await iterator.next()).value as Frame];
        expect(frames.map((f) => [f.cameraId, f.seq, f.bytes.equals(small)])).toEqual([
          ["porch", 0, true],
          ["garage", 0, true],
        ]);
        expect(source.health().badFrames).toBe(1);
      } finally {
        controller.abort();
        await iterator.return?.();
        await gateway.endAsync();
      }
    });
  });
});

describe("folder camera", () => {
  it("never reads a file that is a link out of its folder (a symlink to /etc/passwd), and says so without quoting it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sam-edge-folder-"));
    try {
      await writeFile(join(dir, "a.jpg"), await sceneJpeg(320));
      await symlink("/etc/passwd", join(dir, "b.jpg"));
      // A link inside the folder is one of its frames.
      await symlink(join(dir, "a.jpg"), join(dir, "c.jpg"));
      const source = new FolderSource({ cameraId: "door", dir, intervalMs: 0, loop: false });
      const frames: Frame[] = [];
      for await (const f of source.frames(new AbortController().signal)) frames.push(f);
      expect(frames.map((f) => f.bytes.subarray(0, 3).toString("hex"))).toEqual(["ffd8ff", "ffd8ff"]);
      const health = source.health();
      expect(health.badFrames).toBe(1);
      expect(health.lastError).toMatch(/skipped 1 file\(s\) that are links out of .* b\.jpg/);
      expect(health.lastError).not.toMatch(/root:/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
