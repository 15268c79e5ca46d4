import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../agent/src/config/load.ts";
import { startServer } from "../agent/src/http/server.ts";
import { DEFAULT_SESSION_CONFIG, SamModel } from "../agent/src/model/sam-model.ts";
import { SELF_TEST_MIN_IOU } from "../agent/src/service/self-test.ts";
import { loadStartModel, ModelUpdater } from "../agent/src/service/model-updater.ts";
import { createLogger } from "../agent/src/core/log.ts";
import { InProcessEngine } from "../agent/src/service/engine.ts";
import { EngineSlot } from "../agent/src/service/engine-slot.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { postForm, request, type ApiResponse } from "./helpers/http.ts";
import { runPython } from "./helpers/python.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

const TOKEN = "model-update-token";
const INT8_DIR = new URL("../models/quantized/tiny-sam-int8/", import.meta.url).pathname;
const MAX_BYTES = 8 * 1024 * 1024;
const TIMEOUT_MS = 30_000;

const sha256 = async (path: string) => createHash("sha256").update(await readFile(path)).digest("hex");

/** A copy of a model set, its manifest edited by `edit` (after the files were). */
async function copySet(from: string, to: string, edit: (manifest: Record<string, any>) => void | Promise<void> = () => undefined): Promise<Record<string, any>> {
  await cp(from, to, { recursive: true });
  const manifest = JSON.parse(await readFile(join(to, "manifest.json"), "utf8"));
  await edit(manifest);
  await writeFile(join(to, "manifest.json"), JSON.stringify(manifest));
  return manifest;
}

/**
 * Model sets over real HTTP: files of the test's folder under /sets/, and a few hostile
 * answers: a manifest that never comes, one that is not JSON or is huge, a model file that
 * says it is too big, and one that never ends.
 */
function modelServer(root: string): Promise<{ server: Server; url: string }> {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url!, "http://x").pathname);
    if (path === "/stall/manifest.json") return; // never answers
    if (path === "/notjson/manifest.json") return res.end("<html>not found</html>");
    if (path === "/redirect/manifest.json") {
      res.writeHead(302, { location: `http://localhost:${(server.address() as { port: number }).port}/sets/int8/manifest.json` });
      return res.end();
    }
    if (path === "/bigmanifest/manifest.json") return res.end(`{"pad":"${"x".repeat(2 * 1024 * 1024)}"}`);
    if (path.startsWith("/huge/") && path.endsWith(".onnx")) {
      res.writeHead(200, { "content-length": String(MAX_BYTES * 4) });
      res.write(Buffer.alloc(1024));
      return; // the agent hangs up after the headers
    }
    if (path.startsWith("/endless/") && path.endsWith(".onnx")) {
      // Chunked, no length: the agent must stop reading at its limit.
      const chunk = Buffer.alloc(256 * 1024, 7);
      const pump = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once("drain", pump);
      };
      return pump();
    }
    const file = path.replace(/^\/(sets|huge|endless)\//, "/");
    try {
      res.end(await readFile(join(root, file)));
    } catch {
      res.writeHead(404).end("no such file");
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

describe("model updates: fetch, verify, self-test, swap", () => {
  let tmp: string;
  let sets: string;
  let stateDir: string;
  let slot: EngineSlot;
  let updater: ModelUpdater;
  let registry: Registry;
  let app: FastifyInstance;
  let api: string;
  let models: { server: Server; url: string };
  let scene: Scene;
  const logs: string[] = [];

  const update = (source: unknown, url = api) =>
    request(`${url}/v1/model`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ source }), token: TOKEN });
  const status = async () => (await request(`${api}/v1/model`, { token: TOKEN })).body;
  const segment = () => postForm(`${api}/v1/segment/interactive`, { image: scene.bytes, points: JSON.stringify([{ x: 150, y: 100, label: 1 }]) }, TOKEN);

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-model-update-"));
    sets = join(tmp, "sets");
    stateDir = join(tmp, "state");
    await mkdir(sets);
    scene = await loadScene("small");

    // Broken for real: a byte flipped in the decoder, the manifest untouched.
    await copySet(TINY_SAM_DIR, join(sets, "bad-sha"), async (m) => {
      const file = join(sets, "bad-sha", m.decoder);
      const bytes = await readFile(file);
      bytes[bytes.length >> 1]! ^= 0xff;
      await writeFile(file, bytes);
    });
    // A truncated encoder whose sha256 the manifest gives: only onnxruntime can tell.
    await copySet(TINY_SAM_DIR, join(sets, "truncated"), async (m) => {
      const file = join(sets, "truncated", m.encoder);
      await truncate(file, 100_000);
      m.sha256[m.encoder] = await sha256(file);
    });
    await copySet(TINY_SAM_DIR, join(sets, "missing-file"), async (m) => {
      await rm(join(sets, "missing-file", m.decoderBatch));
    });
    await copySet(TINY_SAM_DIR, join(sets, "no-sha"), (m) => {
      delete m.sha256;
    });
    await copySet(TINY_SAM_DIR, join(sets, "escape"), (m) => {
      m.decoder = "../../tiny-sam.decoder.onnx";
    });
    await copySet(INT8_DIR, join(sets, "int8"));
    // Links out of the folder: the manifest to /etc/passwd, and a model file to the bundled model's.
    await mkdir(join(sets, "passwd-link"));
    await symlink("/etc/passwd", join(sets, "passwd-link", "manifest.json"));
    await copySet(TINY_SAM_DIR, join(sets, "file-link"), async (m) => {
      await rm(join(sets, "file-link", m.decoder));
      await symlink(join(TINY_SAM_DIR, m.decoder), join(sets, "file-link", m.decoder));
    });
    for (const mode of ["negative-masks", "shuffled-encoder"]) {
      const made = await runPython("test/helpers/break_model.py", [TINY_SAM_DIR, join(sets, mode), mode]);
      expect(made.code, made.stderr).toBe(0);
    }
    models = await modelServer(sets);

    registry = new Registry();
    slot = new EngineSlot(new SegmentEngine(await SamModel.load(TINY_SAM_DIR)));
    updater = new ModelUpdater({
      slot,
      stateDir,
      configDir: TINY_SAM_DIR,
      session: DEFAULT_SESSION_CONFIG,
      limits: { maxBytes: MAX_BYTES, timeoutMs: TIMEOUT_MS },
      fetchPolicy: { allowedHosts: ["127.0.0.1"] },
      log: createLogger("info", (line) => logs.push(line)),
      registry,
    });
    ({ app, url: api } = await startServer({ engine: slot, token: TOKEN, registry, models: { updater, allowUpdates: true } }));
  }, 60_000);

  afterAll(async () => {
    await app?.close();
    await slot?.close();
    models?.server.closeAllConnections();
    await new Promise((r) => models?.server.close(r));
    await rm(tmp, { recursive: true, force: true });
  });

  it("GET /v1/model: the model serving now, no update yet; both routes want the token", async () => {
    const body = await status();
    expect(body.model).toMatchObject({ name: "tiny-sam", dir: TINY_SAM_DIR, input_size: 1024 });
    expect(body.model.sha256["tiny-sam.encoder.onnx"]).toBe(await sha256(join(TINY_SAM_DIR, "tiny-sam.encoder.onnx")));
    expect(body.update).toEqual({ running: null, last: null });
    expect((await request(`${api}/v1/model`)).status).toBe(401);
    const post = await request(`${api}/v1/model`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ source: INT8_DIR }) });
    expect([post.status, post.body.error.code]).toEqual([401, "UNAUTHORIZED"]);
  });

  // Each is refused with a stable code and a message naming the problem; the old model keeps serving.
  // [what, source, status, code, message, the detail only the agent's log has]
  const refusals: [string, () => unknown, number, string, RegExp, RegExp?][] = [
    ["a file whose sha256 differs from the manifest (folder)", () => join(sets, "bad-sha"), 422, "MODEL_UPDATE_CHECKSUM", /tiny-sam\.decoder\.onnx: sha256 is [0-9a-f]{64}, but .* says/],
    ["a file whose sha256 differs from the manifest (URL)", () => `${models.url}/sets/bad-sha/`, 422, "MODEL_UPDATE_CHECKSUM", /\/sets\/bad-sha\/tiny-sam\.decoder\.onnx: sha256 is/],
    ["a truncated ONNX file with a matching sha256", () => join(sets, "truncated"), 422, "MODEL_UPDATE_INVALID", /does not load \(MODEL_INVALID: .*tiny-sam\.encoder\.onnx is not an ONNX model: it is not a complete ONNX protobuf/],
    ["a manifest naming a missing file (folder)", () => join(sets, "missing-file"), 422, "MODEL_UPDATE_INVALID", /tiny-sam\.decoder-batch\.onnx does not exist/],
    ["a manifest naming a missing file (URL)", () => `${models.url}/sets/missing-file`, 502, "MODEL_UPDATE_FETCH_FAILED", /could not be fetched; the agent's log says why/, /decoder-batch\.onnx answered 404/],
    ["a manifest without sha256", () => join(sets, "no-sha"), 422, "MODEL_UPDATE_CHECKSUM", /gives no sha256 for tiny-sam\.encoder\.onnx, tiny-sam\.decoder\.onnx/],
    ["a manifest naming a file outside its folder", () => `${models.url}/sets/escape/manifest.json`, 422, "MODEL_UPDATE_INVALID", /"decoder" must name an \.onnx file inside the model folder/],
    ["a decoder whose masks are all negative", () => join(sets, "negative-masks"), 422, "MODEL_UPDATE_SELF_TEST", /tiny-sam-negative-masks failed the self-test .*every mask for a click .* is empty/],
    ["an encoder with scrambled weights", () => `${models.url}/sets/shuffled-encoder/`, 422, "MODEL_UPDATE_SELF_TEST", /overlaps it with IoU 0\.\d+, below 0\.5: the model does not follow the image/],
    ["no model set at the URL", () => `${models.url}/sets/nothing/`, 502, "MODEL_UPDATE_FETCH_FAILED", /could not be fetched; the agent's log says why/, /manifest\.json answered 404/],
    ["a manifest that is not JSON", () => `${models.url}/notjson/`, 422, "MODEL_UPDATE_INVALID", /manifest\.json is not valid JSON/],
    ["a manifest of 2 MiB", () => `${models.url}/bigmanifest/`, 422, "MODEL_UPDATE_INVALID", /over 1048576 bytes: not a manifest/],
    ["a model file that says it is over max_bytes", () => `${models.url}/huge/int8/`, 502, "MODEL_UPDATE_FETCH_FAILED", /could not be fetched/, /is 33554432 bytes, over model\.update\.max_bytes/],
    ["a model file that never ends", () => `${models.url}/endless/int8/`, 502, "MODEL_UPDATE_FETCH_FAILED", /could not be fetched/, /is over model\.update\.max_bytes \(8388608 bytes\)/],
    ["a folder that does not exist", () => join(tmp, "nowhere"), 422, "MODEL_UPDATE_INVALID", /nowhere\/manifest\.json does not exist/],
    ["a folder whose manifest.json is a link to /etc/passwd", () => join(sets, "passwd-link"), 422, "MODEL_UPDATE_INVALID", /manifest\.json is a symbolic link that leads out of .*passwd-link; copy the file/],
    ["a folder whose decoder is a link out of it", () => join(sets, "file-link"), 422, "MODEL_UPDATE_INVALID", /tiny-sam\.decoder\.onnx is a symbolic link that leads out of/],
    ["a relative path", () => "models/tiny-sam", 400, "MODEL_UPDATE_SOURCE_INVALID", /neither an absolute folder path nor an http\(s\) URL/],
    ["a file:// URL", () => `file://${INT8_DIR}`, 400, "MODEL_UPDATE_SOURCE_INVALID", /uses file:/],
    ["an ftp:// URL", () => "ftp://models.example.com/sam/", 400, "MODEL_UPDATE_SOURCE_INVALID", /uses ftp:/],
    ["a URL with credentials", () => `http://user:secret@127.0.0.1:1/sam/`, 400, "MODEL_UPDATE_SOURCE_INVALID", /carries credentials/],
    ["a blank source", () => "   ", 400, "MODEL_UPDATE_SOURCE_INVALID", /must be a folder path or an http\(s\) URL/],
  ];

  it.each(refusals)("refuses %s, and the old model keeps serving", async (_what, source, httpStatus, code, message, detail) => {
    const before = Number((await registry.getSingleMetric("sam_edge_model_updates_total")!.get()).values.find((v) => v.labels.code === code)?.value ?? 0);
    const res = await update(source());
    expect([res.status, res.body.error?.code], JSON.stringify(res.body)).toEqual([httpStatus, code]);
    expect(res.body.error.message).toMatch(message);
    // No error quotes what a file holds (a link to /etc/passwd must not leak it).
    expect(res.body.error.message).not.toMatch(/root:|\/bin\/(ba)?sh/);

    const after = await status();
    expect(after.model.name).toBe("tiny-sam");
    expect(after.update.last).toMatchObject({ result: "refused", error: { code, message: res.body.error.message } });
    const served = await segment();
    expect([served.status, served.headers.get("x-sam-edge-model")]).toEqual([200, "tiny-sam"]);
    expect(logs.at(-1)).toContain(`refused (${code}: `);
    if (detail) {
      expect(res.body.error.message).not.toMatch(detail);
      expect(logs.at(-1)).toMatch(detail);
    }
    expect(logs.at(-1)).toContain("still serving tiny-sam");
    const counted = (await registry.getSingleMetric("sam_edge_model_updates_total")!.get()).values.find((v) => v.labels.code === code);
    expect(counted).toMatchObject({ labels: { result: "refused", code }, value: before + 1 });
    // Nothing of a refused update stays on disk.
    expect(await readdir(join(stateDir, "models")).catch(() => [])).toEqual([]);
  });

  it("refuses bodies that are not {source: string} before any work", async () => {
    const post = (body: string, type = "application/json") => request(`${api}/v1/model`, { method: "POST", headers: { "content-type": type }, body, token: TOKEN });
    for (const [body, type, httpStatus, code] of [
      ["{}", "application/json", 400, "REQUEST_INVALID"],
      ['{"source": ', "application/json", 400, "REQUEST_INVALID"],
      ["[]", "application/json", 400, "REQUEST_INVALID"],
      [JSON.stringify({ source: `/${"a".repeat(5000)}` }), "application/json", 400, "REQUEST_INVALID"],
      [JSON.stringify({ source: INT8_DIR }), "text/plain", 415, "REQUEST_UNSUPPORTED"],
    ] as const) {
      const res = await post(body, type);
      expect([res.status, res.body.error?.code], body.slice(0, 40)).toEqual([httpStatus, code]);
    }
    expect((await status()).model.name).toBe("tiny-sam");
  });

  it("a good model set from a URL is swapped in while requests run: none fails, the ones after the swap run on it", async () => {
    const old = slot.engine!;
    const results: { res: ApiResponse; started: number; ended: number }[] = [];
    let stop = false;
    // Batches hold the engine from their first image to their last: the swap finds some running.
    // (Everything requests would too, but their long batched decoder calls block the event
    // loop, and the update's download with it: onnxruntime-node runs on the main thread.)
    const batch = () => postForm(`${api}/v1/segment/interactive`, { image: Array(5).fill(scene.bytes), points: JSON.stringify([{ x: 150, y: 100, label: 1 }]) }, TOKEN);
    const client = async (send: () => Promise<ApiResponse>) => {
      while (!stop) {
        const started = performance.now();
        const res = await send();
        results.push({ res, started, ended: performance.now() });
      }
    };
    const clients = Promise.all([client(segment), client(batch), client(batch)]);
    let res: ApiResponse;
    let sent: number;
    let swapped: number;
    try {
      while (results.length < 3) await new Promise((r) => setTimeout(r, 20));
      sent = performance.now();
      res = await update(`${models.url}/sets/int8/`);
      swapped = performance.now();
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      // Answers of every client that started after the update answered.
      while (results.filter((r) => r.started > swapped).length < 6) await new Promise((r) => setTimeout(r, 20));
    } finally {
      stop = true;
      await clients;
    }

    expect(res.body.model).toMatchObject({ name: "tiny-sam-int8", input_size: 1024 });
    expect(res.body.update.running).toBeNull();
    const last = res.body.update.last;
    expect(last).toMatchObject({ source: `${models.url}/sets/int8/`, result: "swapped", model: "tiny-sam-int8", self_test: { frame: "shapes-square.webp" } });
    expect(last.self_test.ious).toHaveLength(2);
    expect(last.self_test.ious.every((iou: number) => iou >= SELF_TEST_MIN_IOU)).toBe(true);
    expect(last.in_flight_at_swap).toBeGreaterThan(0);

    expect(results.filter((r) => r.res.status !== 200).map((r) => r.res.body)).toEqual([]);
    const model = (r: (typeof results)[number]) => r.res.headers.get("x-sam-edge-model");
    expect(results.filter((r) => r.ended < sent).map(model)).toContain("tiny-sam");
    expect(new Set(results.filter((r) => r.ended < sent).map(model))).toEqual(new Set(["tiny-sam"]));
    expect(new Set(results.filter((r) => r.started > swapped).map(model))).toEqual(new Set(["tiny-sam-int8"]));

    // The old model's sessions go once its last request ended.
    while (slot.draining > 0) await new Promise((r) => setTimeout(r, 20));
    await expect(old.segment(scene.bytes, { points: [{ x: 1, y: 1, label: 1 }] })).rejects.toThrow(/disposed/);
    expect(logs).toContain("sam-edge: model update: tiny-sam released");

    // The choice is recorded for the next start, with the verified copy it loads.
    const active = JSON.parse(await readFile(join(stateDir, "active-model.json"), "utf8"));
    expect(active).toMatchObject({ name: "tiny-sam-int8", source: `${models.url}/sets/int8/`, dir: res.body.model.dir });
    expect(res.body.model.dir.startsWith(join(stateDir, "models"))).toBe(true);
    expect((await readdir(res.body.model.dir)).sort()).toEqual(["manifest.json", "tiny-sam-int8.decoder-batch.onnx", "tiny-sam-int8.decoder.onnx", "tiny-sam-int8.encoder.onnx"]);
    const metrics = (await request(`${api}/metrics`, { token: TOKEN })).body as string;
    expect(metrics).toContain('sam_edge_model_updates_total{result="swapped",code=""} 1');
    expect(metrics).toMatch(/sam_edge_model_info\{name="tiny-sam-int8",id="[0-9a-f]{64}"\} 1/);
  }, 120_000);

  it("one update at a time: a second one while the first runs is refused as busy", async () => {
    const first = update(TINY_SAM_DIR);
    while (!updater.status().update.running) await new Promise((r) => setTimeout(r, 2));
    const second = await update(INT8_DIR);
    expect([second.status, second.body.error.code]).toEqual([409, "MODEL_UPDATE_BUSY"]);
    expect(second.body.error.message).toContain(`an update from ${TINY_SAM_DIR} is running`);
    const done = await first;
    expect([done.status, done.body.model.name, done.body.update.last.source]).toEqual([200, "tiny-sam", TINY_SAM_DIR]);
    expect((await segment()).headers.get("x-sam-edge-model")).toBe("tiny-sam");
    // The folder was copied and verified like a download; the copy of the model before it stays, to go back to.
    const kept = await readdir(join(stateDir, "models"));
    expect(kept).toHaveLength(2);
    expect(kept.some((d) => d.startsWith("tiny-sam-int8-"))).toBe(true);
    expect(done.body.model.dir).not.toBe(TINY_SAM_DIR);
  });

  it("a download that takes longer than model.update.timeout_ms is refused", async () => {
    const quick = new ModelUpdater({
      slot,
      stateDir,
      configDir: TINY_SAM_DIR,
      session: DEFAULT_SESSION_CONFIG,
      limits: { maxBytes: MAX_BYTES, timeoutMs: 300 },
      fetchPolicy: { allowedHosts: ["127.0.0.1"] },
      log: createLogger("error", () => undefined),
      registry: new Registry(),
    });
    await expect(quick.update(`${models.url}/stall/`)).rejects.toMatchObject({
      code: "MODEL_UPDATE_FETCH_FAILED",
      message: expect.stringMatching(/could not be fetched; the agent's log says why/),
      detail: expect.stringMatching(/stall\/manifest\.json failed: it took longer than model\.update\.timeout_ms/),
    });
    expect(quick.status().update.last).toMatchObject({ result: "refused", error: { code: "MODEL_UPDATE_FETCH_FAILED" } });
    expect(slot.engine!.model.manifest.name).toBe("tiny-sam");
  });

  it("fetches only https, never from this box's networks unless listed: loopback, link-local (metadata), names resolving inward and redirects inward are refused with one message", async () => {
    const lines: string[] = [];
    const updaterAllowing = (allowedHosts: string[]) =>
      new ModelUpdater({
        slot,
        stateDir,
        configDir: TINY_SAM_DIR,
        session: DEFAULT_SESSION_CONFIG,
        limits: { maxBytes: MAX_BYTES, timeoutMs: TIMEOUT_MS },
        fetchPolicy: { allowedHosts },
        log: createLogger("info", (line) => lines.push(line)),
        registry: new Registry(),
      });
    const strict = updaterAllowing([]);
    const port = new URL(models.url).port;
    const cases: [string, RegExp][] = [
      [`${models.url}/sets/int8/`, /http: to 127\.0\.0\.1 is not allowed/],
      [`https://127.0.0.1:${port}/sets/int8/`, /127\.0\.0\.1 is a private, loopback or link-local address/],
      ["https://169.254.169.254/latest/meta-data/", /169\.254\.169\.254 is a private/],
      [`https://[::ffff:127.0.0.1]:${port}/sets/int8/`, /is a private/],
      [`https://[::1]:${port}/sets/int8/`, /::1 is a private/],
      [`https://localhost:${port}/sets/int8/`, /localhost resolves to (127\.0\.0\.1|::1), a private/],
      ["https://10.1.2.3/models/", /10\.1\.2\.3 is a private/],
    ];
    for (const [source, detail] of cases) {
      const err = await strict.update(source).catch((e: unknown) => e);
      expect(err, source).toMatchObject({ code: "MODEL_UPDATE_FETCH_FAILED", message: expect.stringMatching(/could not be fetched; the agent's log says why$/) });
      expect((err as Error).message).not.toMatch(detail);
      expect(lines.at(-1), source).toMatch(detail);
    }
    // A listed host may redirect only to what is allowed too: this one sends the agent to localhost.
    const listed = updaterAllowing(["127.0.0.1"]);
    await expect(listed.update(`${models.url}/redirect/`)).rejects.toMatchObject({ code: "MODEL_UPDATE_FETCH_FAILED" });
    expect(lines.at(-1)).toMatch(/http: to localhost is not allowed/);
    // A 404 and a port where nothing listens give the same answer.
    const message = (source: string) => listed.update(source).then(() => "swapped", (e: Error) => e.message);
    const missing = await message(`${models.url}/sets/nothing/`);
    const closed = await message(`http://127.0.0.1:1/sets/nothing/`);
    expect(missing.replace(models.url, "X")).toBe(closed.replace("http://127.0.0.1:1", "X"));
    expect(slot.engine!.model.manifest.name).toBe("tiny-sam");
  });

  it("with updates over HTTP off, POST /v1/model answers 403 and GET still reports", async () => {
    const locked = await startServer({ engine: slot, token: TOKEN, models: { updater, allowUpdates: false } });
    try {
      const res = await update(INT8_DIR, locked.url);
      expect([res.status, res.body.error.code]).toEqual([403, "MODEL_UPDATE_DISABLED"]);
      expect(res.body.error.message).toContain("model.update.http");
      expect((await request(`${locked.url}/v1/model`, { token: TOKEN })).body.model.name).toBe("tiny-sam");
    } finally {
      await locked.app.close();
    }
  });
});

describe("a model update when the first model did not load", () => {
  it("GET /v1/model says why there is no model; a good update brings the agent up", async () => {
    const tmp = await mkdtemp(join(tmpdir(), "sam-edge-model-rescue-"));
    const slot = new EngineSlot(SamModel.load(join(tmp, "missing")).then((m) => new SegmentEngine(m)));
    const updater = new ModelUpdater({
      slot,
      stateDir: tmp,
      configDir: join(tmp, "missing"),
      session: DEFAULT_SESSION_CONFIG,
      limits: { maxBytes: MAX_BYTES, timeoutMs: TIMEOUT_MS },
      fetchPolicy: { allowedHosts: ["127.0.0.1"] },
      log: createLogger("error", () => undefined),
      registry: new Registry(),
    });
    const { app, url } = await startServer({ engine: slot, token: TOKEN, models: { updater, allowUpdates: true } });
    try {
      const scene = await loadScene("small");
      const click = { image: scene.bytes, points: JSON.stringify([{ x: 150, y: 100, label: 1 }]) };
      const down = await request(`${url}/v1/model`, { token: TOKEN });
      expect(down.body).toMatchObject({ model: null, error: { code: "MODEL_NOT_FOUND" }, update: { running: null, last: null } });
      expect((await postForm(`${url}/v1/segment/interactive`, click, TOKEN)).body.error.code).toBe("MODEL_NOT_FOUND");

      const up = await request(`${url}/v1/model`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ source: INT8_DIR }), token: TOKEN });
      expect([up.status, up.body.model?.name, up.body.error]).toEqual([200, "tiny-sam-int8", undefined]);
      expect((await request(`${url}/readyz`, { token: TOKEN })).status).toBe(200);
      const served = await postForm(`${url}/v1/segment/interactive`, click, TOKEN);
      expect([served.status, served.headers.get("x-sam-edge-model")]).toEqual([200, "tiny-sam-int8"]);
    } finally {
      await app.close();
      await slot.close();
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe("model.update settings", () => {
  it("default to HTTP on, MQTT off, 2 GiB per file, 10 minutes; a bad value names its key", async () => {
    const c = await loadConfig({ env: {} });
    expect(c.model.update).toEqual({ http: true, mqtt: false, max_bytes: 2 * 1024 ** 3, timeout_ms: 600_000, allowed_hosts: [] });
    const set = await loadConfig({ env: { SAM_EDGE_MODEL_UPDATE_MQTT: "true" }, sets: ["model.update.max_bytes=1048576"] });
    expect(set.model.update).toMatchObject({ mqtt: true, max_bytes: 1048576 });
    await expect(loadConfig({ env: {}, sets: ["model.update.timeout_ms=5"] })).rejects.toMatchObject({ code: "CONFIG_INVALID", message: expect.stringContaining("model.update.timeout_ms") });
    await expect(loadConfig({ env: { SAM_EDGE_MODEL_UPDATE_HTTP: "maybe" } })).rejects.toMatchObject({ code: "CONFIG_INVALID", message: expect.stringContaining("SAM_EDGE_MODEL_UPDATE_HTTP") });
  });
});

describe("EngineSlot", () => {
  it("a request holding the old engine finishes on it after a swap; its sessions are released when it lets go", async () => {
    const scene = await loadScene("small");
    const a = new InProcessEngine(new SegmentEngine(await SamModel.load(TINY_SAM_DIR)));
    const b = new InProcessEngine(new SegmentEngine(await SamModel.load(INT8_DIR)));
    const slot = new EngineSlot(a);
    const lease = slot.hold()!;
    let released = false;
    const swapped = slot.swap(b).then(() => (released = true));
    expect([slot.engine, slot.inUse, slot.draining]).toEqual([b, 0, 1]);
    const click = { points: [{ x: 150, y: 100, label: 1 as const }] };
    expect((await lease.engine.segment(scene.bytes, click)).masks.length).toBeGreaterThan(0);
    expect(released).toBe(false);
    lease.release();
    lease.release(); // a second release changes nothing
    await swapped;
    expect(slot.draining).toBe(0);
    await expect(a.segment(scene.bytes, click)).rejects.toThrow(/disposed/);
    expect((await slot.use((e) => e.segment(scene.bytes, click))).masks.length).toBeGreaterThan(0);
    await slot.close();
    await expect(b.segment(scene.bytes, click)).rejects.toThrow(/disposed/);
  });

  it("a first load that fails leaves the error; an update replaces it; a first load that arrives after an update is released", async () => {
    const failed = new EngineSlot(SamModel.load("/nonexistent/model").then((m) => new SegmentEngine(m)));
    await expect(failed.use(async (e) => e)).rejects.toMatchObject({ code: "MODEL_NOT_FOUND" });
    expect(failed.engine).toBeUndefined();
    const good = new InProcessEngine(new SegmentEngine(await SamModel.load(INT8_DIR)));
    await failed.swap(good);
    expect([failed.engine, failed.error]).toEqual([good, undefined]);
    await failed.close();

    let resolveLate!: (e: SegmentEngine) => void;
    const late = new EngineSlot(new Promise<SegmentEngine>((r) => (resolveLate = r)));
    const winner = new SegmentEngine(await SamModel.load(INT8_DIR));
    const loser = new SegmentEngine(await SamModel.load(TINY_SAM_DIR));
    await late.swap(winner);
    resolveLate(loser);
    await late.close();
    const scene = await loadScene("small");
    await expect(loser.segment(scene.bytes, { points: [{ x: 1, y: 1, label: 1 }] })).rejects.toThrow(/disposed/);
  });
});

describe("the active-model record at start", () => {
  it("a zero-filled or incomplete record is kept aside with a warning, and the start loads model.dir", async () => {
    const stateDir = await mkdtemp(join(tmpdir(), "sam-edge-active-"));
    try {
      for (const [content, reason] of [
        ["\u0000".repeat(200), /not valid JSON/],
        ['{"dir":"/etc","name":"x"}', /lacks one of/],
      ] as const) {
        await writeFile(join(stateDir, "active-model.json"), content);
        const logs: string[] = [];
        const model = await loadStartModel(stateDir, TINY_SAM_DIR, DEFAULT_SESSION_CONFIG, createLogger("info", (l) => logs.push(l)));
        try {
          expect(model.model.dir).toBe(TINY_SAM_DIR);
        } finally {
          await model.release();
        }
        expect(logs.filter((l) => l.includes("active-model.json"))).toHaveLength(1);
        expect(logs.join("\n")).toMatch(reason);
        const files = await readdir(stateDir);
        expect(files).not.toContain("active-model.json");
        const kept = files.filter((f) => f.startsWith("active-model.json.corrupt-"));
        expect(await readFile(join(stateDir, kept.at(-1)!), "utf8")).toBe(content);
        for (const f of kept) await rm(join(stateDir, f));
      }
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
