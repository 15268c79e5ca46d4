import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { FastifyInstance } from "fastify";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { DEFAULT_TRACE_LIMITS, encodeRle } from "../agent/src/segment/formats/index.ts";
import type { BinaryMask } from "../agent/src/segment/mask.ts";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { form, postForm, request } from "./helpers/http.ts";
import { freePort, Mosquitto } from "./helpers/mosquitto.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

const exec = promisify(execFile);
const SAMPLES = fileURLToPath(new URL("../agent/samples/", import.meta.url));

/** A 1-bit PNG of a checkerboard: a few KB on the wire, an outline with a corner at every pixel. */
async function checkerboardPng(side: number): Promise<{ png: Buffer; mask: BinaryMask }> {
  const data = new Uint8Array(side * side);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) data[y * side + x] = (x + y) & 1;
  const png = await sharp(Buffer.from(data.map((v) => v * 255)), { raw: { width: side, height: side, channels: 1 } })
    .png({ palette: true, colours: 2, compressionLevel: 9 })
    .toBuffer();
  return { png, mask: { width: side, height: side, data } };
}

// The reproductions of issue 20, each against a real server: the answer names the limit, and
// the server (and the export of everything else) goes on.
describe("masks too complex to trace", () => {
  let app: FastifyInstance;
  let url: string;
  let dataset: string;
  let work: string;
  let board: { png: Buffer; mask: BinaryMask };
  let photo: Buffer;

  beforeAll(async () => {
    dataset = await mkdtemp(join(tmpdir(), "sam-edge-hostile-"));
    work = await mkdtemp(join(tmpdir(), "sam-edge-hostile-x-"));
    board = await checkerboardPng(4096);
    photo = await sharp({ create: { width: 4096, height: 4096, channels: 3, background: "#336699" } }).jpeg().toBuffer();
    ({ app, url } = await startServer({ engine: new Promise<SegmentEngine>(() => {}), datasetDir: dataset }));
  });
  afterAll(async () => {
    await app.close();
    await rm(dataset, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it("mask-to-polygon with a 4096x4096 checkerboard at tolerance 0 is a 422 MASK_TOO_COMPLEX naming the limits", async () => {
    expect(board.png.length).toBeLessThan(64 * 1024);
    const res = await postForm(`${url}/v1/labeling/mask-to-polygon`, { mask: board.png, tolerance: "0" });
    expect([res.status, res.body.error?.code]).toEqual([422, "MASK_TOO_COMPLEX"]);
    expect(res.body.error.message).toContain(String(DEFAULT_TRACE_LIMITS.maxVertices));
    // The server is alive and still traces a plain mask.
    const ok = await postForm(`${url}/v1/labeling/mask-to-polygon`, { rle: JSON.stringify(encodeRle({ width: 8, height: 8, data: new Uint8Array(64).fill(1) })), tolerance: "0" });
    expect([ok.status, ok.body.polygons.length]).toEqual([200, 1]);
  });

  it("an annotation with that mask is refused at the door, and nothing is stored", async () => {
    const res = await postForm(`${url}/v1/annotations`, { image: photo, mask: board.png, class: "board" });
    expect([res.status, res.body.error?.code]).toEqual([422, "MASK_TOO_COMPLEX"]);
    expect(await readdir(join(dataset, "annotations")).catch(() => [])).toEqual([]);
  });

  it("an export skips what cannot be exported (a mask an older agent accepted, a torn file), lists it in export-report.json, and exports the rest", async () => {
    const square = new Uint8Array(4096 * 4096);
    for (let y = 100; y < 300; y++) square.fill(1, y * 4096 + 100, y * 4096 + 300);
    const ok = await postForm(`${url}/v1/annotations`, { image: photo, mask: { bytes: await sharp(Buffer.from(square.map((v) => v * 255)), { raw: { width: 4096, height: 4096, channels: 1 } }).png().toBuffer(), filename: "m.png" }, class: "square" });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    // What the agent of 288e321 wrote for the checkerboard: a valid record whose mask no export can trace.
    const stored = JSON.parse(await readFile(join(dataset, "annotations", `${ok.body.id}.json`), "utf8"));
    const id = "20261207T000000000Z-deadbeef";
    await writeFile(join(dataset, "annotations", `${id}.json`), JSON.stringify({ ...stored, id, class: "board", rle: encodeRle(board.mask) }));
    await writeFile(join(dataset, "annotations", "20261207T000000001Z-torn0000.json"), '{"id": "20261207T0000');
    for (const format of ["coco", "yolo", "voc"]) {
      const res = await request(`${url}/v1/export?format=${format}`);
      expect(res.status).toBe(200);
      const dir = join(work, format);
      await mkdir(dir);
      await writeFile(join(dir, "x.tar.gz"), res.body as Buffer);
      await exec("tar", ["-xzf", "x.tar.gz"], { cwd: dir });
      const report = JSON.parse(await readFile(join(dir, "export-report.json"), "utf8"));
      expect(report.format).toBe(format);
      const skipped = report.skipped.map((s: { annotation: string }) => s.annotation).sort();
      // VOC paints masks into index images: no outline to trace, so the checkerboard goes in.
      if (format === "voc") expect([report.exported, skipped]).toEqual([2, ["annotations/20261207T000000001Z-torn0000.json"]]);
      else {
        expect([report.exported, skipped]).toEqual([1, [id, "annotations/20261207T000000001Z-torn0000.json"]]);
        expect(report.skipped.find((s: { annotation: string }) => s.annotation === id).reason).toMatch(/outline has more than/);
      }
      if (format === "coco") {
        const coco = JSON.parse(await readFile(join(dir, "annotations.json"), "utf8"));
        expect(coco.annotations).toHaveLength(1);
        expect(coco.annotations[0].bbox).toEqual([100, 100, 200, 200]);
      }
    }
    // And the server still answers.
    expect((await request(`${url}/healthz`)).status).toBe(200);
  }, 60_000);
});

/** A raw HTTP/1.1 exchange: what a browser's fetch or curl would hide (a Host of our choosing, a body at our pace). */
function rawRequest(port: number, head: string, body: (socket: Socket) => void = () => {}): Promise<{ text: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(port, "127.0.0.1", () => {
      socket.write(head);
      body(socket);
    });
    let text = "";
    socket.setEncoding("latin1").on("data", (d: string) => (text += d));
    socket.once("error", reject);
    socket.once("close", () => resolve({ text, closedAfterMs: Date.now() - started }));
  });
}

describe("the local API against a LAN neighbour and a web page", () => {
  let model: SamModel;
  let app: FastifyInstance;
  let url: string;
  let port: number;
  let scene: Scene;

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    scene = await loadScene("small");
    ({ app, url } = await startServer({ engine: new SegmentEngine(model), requestTimeoutMs: 1500, site: { allowedHosts: ["127.0.0.1", "localhost", "box.lan"], allowedOrigins: ["https://labeler.example.com"] } }));
    port = Number(new URL(url).port);
  });
  afterAll(async () => {
    await app.close();
    await model.release();
  });

  it("a point at x = -1 is refused naming the image's real size", async () => {
    const res = await postForm(`${url}/v1/segment/interactive`, { image: scene.bytes, points: '[{"x":-1,"y":5,"label":1}]' });
    expect([res.status, res.body.error.code]).toEqual([400, "PROMPT_INVALID"]);
    expect(res.body.error.message).toContain(`outside the ${scene.width}x${scene.height} image`);
  });

  it("a body sent at 1 byte a second is cut off at the request timeout (408) and the socket closed", async () => {
    let timer: NodeJS.Timeout | undefined;
    const res = await rawRequest(port, `POST /v1/labeling/mask-to-polygon HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`, (socket) => {
      timer = setInterval(() => socket.writable && socket.write("{"), 1000);
    });
    clearInterval(timer);
    // Node answers 408 when it can, else just closes: either way the socket is not held.
    expect(res.text).toMatch(/^$|^HTTP\/1\.1 408/);
    // The limit (1.5 s) plus Node's check interval, well short of a minute.
    expect(res.closedAfterMs).toBeLessThan(6000);
    // Headers that never end get the same.
    const headers = await rawRequest(port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: `);
    expect(headers.text).toMatch(/^$|^HTTP\/1\.1 408/);
    expect(headers.closedAfterMs).toBeLessThan(6000);
    expect((await request(`${url}/healthz`)).status).toBe(200);
  }, 20_000);

  it("a Host the box does not answer to (a DNS-rebinding site) is a 421; its own names pass", async () => {
    const evil = await rawRequest(port, `GET /v1/cameras HTTP/1.1\r\nHost: attacker.example:8080\r\nConnection: close\r\n\r\n`);
    expect(evil.text).toMatch(/^HTTP\/1\.1 421/);
    expect(evil.text).toContain('"HOST_NOT_ALLOWED"');
    expect(evil.text).toContain("http.allowed_hosts");
    for (const host of ["box.lan:8080", "localhost", "BOX.LAN.", "[::1]:80", "app.localhost"]) {
      const ok = await rawRequest(port, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect(ok.text, host).toMatch(/^HTTP\/1\.1 200/);
    }
    const none = await rawRequest(port, `GET /healthz HTTP/1.0\r\n\r\n`);
    expect(none.text).toMatch(/^HTTP\/1\.[01] 421/);
  });

  it("a form another site's page posts (no CORS preflight for multipart) is refused before it is read; same-origin and listed origins pass", async () => {
    const body = form({ rle: JSON.stringify(encodeRle({ width: 4, height: 4, data: new Uint8Array(16).fill(1) })), tolerance: "0" });
    const post = (headers: Record<string, string>) => request(`${url}/v1/labeling/mask-to-polygon`, { method: "POST", body, headers });
    const refused: Record<string, string>[] = [{ origin: "http://attacker.example" }, { origin: "null" }, { "sec-fetch-site": "cross-site" }, { origin: `http://127.0.0.1:${port + 1}` }];
    for (const headers of refused) {
      const res = await post(headers);
      expect([res.status, res.body.error?.code], JSON.stringify(headers)).toEqual([403, "CROSS_SITE_REQUEST"]);
    }
    const allowed: Record<string, string>[] = [{}, { origin: url, "sec-fetch-site": "same-origin" }, { origin: "https://labeler.example.com", "sec-fetch-site": "cross-site" }];
    for (const headers of allowed) {
      expect((await post(headers)).status, JSON.stringify(headers)).toBe(200);
    }
    // Reading is not changing: a cross-site GET is answered (the browser keeps its answer from the page, as no CORS header is sent).
    const read = await request(`${url}/v1/cameras`, { headers: { origin: "http://attacker.example" } });
    expect(read.status).toBe(200);
    expect(read.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("the daemon reachable from the LAN with no token configured", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-lan-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("makes a token at the first start (0600 in the state dir), prints the URL with it once, wants it, and keeps it across restarts", async () => {
    const port = await freePort();
    const config = { state_dir: join(tmp, "state"), mqtt: { enabled: false }, cameras: [], http: { host: "0.0.0.0", port } };
    const first = await AgentProcess.start(tmp, "lan", config, { args: [] });
    let token: string;
    try {
      await first.waitFor(() => /#token=/.test(first.stderr), "the URL with the token");
      token = /#token=([A-Za-z0-9_-]+)/.exec(first.stderr)![1]!;
      const file = join(tmp, "state", "http-token");
      expect((await readFile(file, "utf8")).trim()).toBe(token);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const api = `http://127.0.0.1:${port}`;
      expect((await request(`${api}/v1/cameras`)).status).toBe(401);
      expect((await request(`${api}/v1/cameras`, { token })).status).toBe(200);
      expect((await request(`${api}/healthz`)).status).toBe(200);
    } finally {
      await first.stop();
    }
    const second = await AgentProcess.start(tmp, "lan", config, { args: [] });
    try {
      await second.waitFor(() => /wants the token kept in/.test(second.stderr), "the token's file named");
      expect(second.stderr).not.toContain(token);
      expect((await request(`http://127.0.0.1:${port}/v1/cameras`, { token })).status).toBe(200);
    } finally {
      await second.stop();
    }
  }, 60_000);
});

describe("the daemon's memory under the largest requests the limits accept", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-memory-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("with a 256 MB JavaScript heap: an 8000x8000 PNG, a batch of them and Everything 32x32 on 1280x720 are answered, and the agent stays up", async () => {
    const port = await freePort();
    const agent = await AgentProcess.start(tmp, "heap", { state_dir: join(tmp, "state"), mqtt: { enabled: false }, cameras: [], http: { port } }, { args: [], env: { NODE_OPTIONS: "--max-old-space-size=256" } });
    const api = `http://127.0.0.1:${port}`;
    try {
      await agent.waitFor(() => /HTTP API at/.test(agent.stderr), "the HTTP API");
      while ((await request(`${api}/readyz`).catch(() => ({ status: 0 }))).status !== 200) await new Promise((r) => setTimeout(r, 100));
      // The kernel's peak RSS of the agent (reset here, read after): a 1 GB box's MemoryMax must hold.
      const kb = async (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(await readFile(`/proc/${agent.child.pid}/status`, "utf8"))![1]);
      await postForm(`${api}/v1/segment/interactive`, { image: await sharp(join(SAMPLES, "shapes-square.webp")).jpeg().toBuffer(), points: '[{"x":5,"y":5,"label":1}]' });
      const idle = await kb("VmRSS");
      await writeFile(`/proc/${agent.child.pid}/clear_refs`, "5");
      const big = await sharp({ create: { width: 8000, height: 8000, channels: 3, background: "#6a8caf" } }).png({ compressionLevel: 9 }).toBuffer();
      const hd = await sharp(join(SAMPLES, "shapes-square.webp")).resize(1280, 720, { fit: "fill" }).jpeg().toBuffer();
      const click = JSON.stringify([{ x: 4000, y: 4000, label: 1 }]);
      const one = await postForm(`${api}/v1/segment/interactive`, { image: big, points: click });
      expect([one.status, one.body.width, one.body.height]).toEqual([200, 8000, 8000]);
      // A mask at the image's full size, around the click.
      expect(one.body.area).toBeGreaterThan(0);
      const [x, y, w, h] = one.body.bbox as number[];
      expect(x! <= 4000 && 4000 <= x! + w! && y! <= 4000 && 4000 <= y! + h!).toBe(true);
      const batch = await postForm(`${api}/v1/segment/interactive`, { image: [big, big, big], points: click });
      expect([batch.status, batch.body.results.length, batch.body.results.every((r: { width?: number }) => r.width === 8000)]).toEqual([200, 3, true]);
      const everything = await postForm(`${api}/v1/segment/everything`, { image: hd, points_per_side: "32" });
      expect([everything.status, everything.body.width]).toEqual([200, 1280]);
      expect((await request(`${api}/healthz`)).status).toBe(200);
      expect(agent.child.exitCode).toBeNull();
      // bench/memory.ts measures the budget (250 MB); this bound only has to catch the GB the full-size outputs took.
      expect((await kb("VmHWM")) - idle).toBeLessThan(400 * 1024);
    } finally {
      await agent.stop();
    }
  }, 240_000);
});

describe("an MQTT request flood", () => {
  let broker: Mosquitto;
  let tmp: string;
  beforeAll(async () => {
    broker = await Mosquitto.start();
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-flood-"));
  });
  afterAll(async () => {
    await broker.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it("slows the cameras to their share without stopping them; past the line's length requests get BUSY; one that expires while it waits is dropped unrun", async () => {
    const device = "flood";
    const root = `sam-edge/${device}`;
    const agent = await AgentProcess.start(
      tmp,
      "flood",
      {
        device_id: device,
        state_dir: join(tmp, "state"),
        mqtt: { url: broker.url, protocol_version: 5 },
        http: { enabled: false },
        cameras: [{ id: "door", type: "folder", dir: SAMPLES, interval_ms: 100, loop: true, max_fps: 5 }],
      },
      { args: [] },
    );
    const sub = await Subscriber.connect(broker.url, [`${root}/cameras/+/result`, `${root}/response/#`], { protocolVersion: 5 });
    try {
      await sub.waitFor(() => sub.on(/\/result$/).length > 0, "a first camera result");
      const image = (await sharp(join(SAMPLES, "shapes-square.webp")).resize(640, 480, { fit: "fill" }).jpeg().toBuffer()).toString("base64");
      const request = (id: string) => JSON.stringify({ id, image, mode: "everything", everything: { points_per_side: 8, pred_iou_thresh: 0, stability_score_thresh: 0 } });
      const expiring = "r-expires";
      for (let i = 0; i < 24; i++) {
        await sub.client.publishAsync(`${root}/request`, request(`r${i}`), { qos: 1 });
        // While the line is long: it waits well past its 1 s expiry.
        if (i === 4) await sub.client.publishAsync(`${root}/request`, request(expiring), { qos: 1, properties: { messageExpiryInterval: 1 } });
      }
      const answered = () => new Set(sub.on(/\/response\//).map((m) => m.topic.split("/").pop()));
      await sub.waitFor(() => answered().size >= 25, "an answer to every request", 180_000);
      const replies: Record<string, { masks?: unknown[]; error?: { code: string; message: string } }> = Object.fromEntries(
        sub.on(/\/response\//).map((m) => [m.topic.split("/").pop(), JSON.parse(m.payload.toString())]),
      );
      expect(replies[expiring]!.error?.code).toBe("REQUEST_EXPIRED");
      const busy = Object.values(replies).filter((r) => r.error?.code === "BUSY");
      const done = Object.values(replies).filter((r) => r.masks);
      expect(busy.length).toBeGreaterThan(0);
      expect(busy[0]!.error!.message).toMatch(/retry in \d+ s/);
      expect(done.length).toBeGreaterThanOrEqual(12);
      expect(done.length + busy.length + 1).toBe(25);
      // Camera results kept coming between the flood's first answer and its last.
      const isReply = (m: { topic: string }) => m.topic.includes("/response/");
      const first = sub.messages.findIndex(isReply);
      const last = sub.messages.length - 1 - [...sub.messages].reverse().findIndex(isReply);
      const during = sub.messages.slice(first, last).filter((m) => m.topic.endsWith("/result"));
      expect(during.length).toBeGreaterThanOrEqual(3);
    } finally {
      await sub.close();
      await agent.stop();
    }
  }, 240_000);
});
