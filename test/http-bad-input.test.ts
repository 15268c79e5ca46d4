import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { FixtureCameras, form, request, type ApiResponse, type FieldValue } from "./helpers/http.ts";
import { pngBomb } from "./helpers/png.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

const TOKEN = "bad-input-token";
const INTERACTIVE = "/v1/segment/interactive";
const CLICK = '[{"x":100,"y":100,"label":1}]';

// Every case is a real request to a real server; each must get its documented 4xx as
// `{error: {code, message}}` with nothing else in it, and the next good request must still
// be answered.
describe("bad input to the local API: the documented 4xx, and the server keeps serving", () => {
  let model: SamModel;
  let app: FastifyInstance;
  let url: string;
  let scene: Scene;
  let bomb: Buffer;

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    scene = await loadScene("portrait");
    bomb = pngBomb(30000);
    const cameras = new FixtureCameras({ gate: scene.bytes }, ["garage"]);
    ({ app, url } = await startServer({ engine: new SegmentEngine(model), token: TOKEN, cameras }));
  });
  afterAll(async () => {
    await app.close();
    await model.release();
  });

  function expectError(res: ApiResponse, status: number, code: string): void {
    expect(res.status, JSON.stringify(res.body)).toBe(status);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(Object.keys(res.body)).toEqual(["error"]);
    expect(Object.keys(res.body.error).sort()).toEqual(["code", "message"]);
    expect(res.body.error.code).toBe(code);
    expect(res.body.error.message.length).toBeGreaterThan(10);
    // No stack frame or source path ever reaches a client.
    expect(res.body.error.message).not.toMatch(/\n\s+at |\.ts:\d+|node_modules/);
  }

  async function stillServes(): Promise<void> {
    const res = await request(url + INTERACTIVE, { method: "POST", token: TOKEN, body: form({ image: scene.bytes, points: CLICK }) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.width).toBe(scene.width);
  }

  const post = (fields: Record<string, FieldValue | FieldValue[]>, path = INTERACTIVE) => request(url + path, { method: "POST", token: TOKEN, body: form(fields) });

  it.each<[string, () => Record<string, FieldValue | FieldValue[]>, number, string]>([
    ["no image", () => ({ points: CLICK }), 400, "REQUEST_INVALID"],
    ["an empty image", () => ({ image: Buffer.alloc(0), points: CLICK }), 400, "IMAGE_EMPTY"],
    ["a text file as the image", () => ({ image: Buffer.from("GIF89a? no: just text pretending\n"), points: CLICK }), 415, "IMAGE_UNSUPPORTED"],
    ["the image as a text field, not a file", () => ({ image: "aGVsbG8=", points: CLICK }), 400, "REQUEST_INVALID"],
    ["a truncated JPEG", () => ({ image: scene.bytes.subarray(0, scene.bytes.length / 2), points: CLICK }), 400, "IMAGE_CORRUPT"],
    ["a decompression bomb (a PNG of 30000x30000)", () => ({ image: bomb, points: CLICK }), 413, "IMAGE_TOO_LARGE"],
    ["points that are not JSON", () => ({ image: scene.bytes, points: "x=100,y=100" }), 400, "PROMPT_INVALID"],
    ["points that are not an array", () => ({ image: scene.bytes, points: '{"x":100,"y":100,"label":1}' }), 400, "PROMPT_INVALID"],
    ["a label other than 0/1", () => ({ image: scene.bytes, points: '[{"x":100,"y":100,"label":2}]' }), 400, "PROMPT_INVALID"],
    ["coordinates outside the image", () => ({ image: scene.bytes, points: '[{"x":481,"y":100,"label":1}]' }), 400, "PROMPT_INVALID"],
    ["a box that is not four numbers", () => ({ image: scene.bytes, box: "[1,2,3]" }), 400, "PROMPT_INVALID"],
    ["no prompt at all", () => ({ image: scene.bytes }), 400, "PROMPT_INVALID"],
    ["an unknown camera", () => ({ camera: "attic", points: CLICK }), 404, "CAMERA_NOT_FOUND"],
    ["a camera with no frame yet", () => ({ camera: "garage", points: CLICK }), 503, "CAMERA_NO_FRAME"],
    ["both an image and a camera", () => ({ image: scene.bytes, camera: "gate", points: CLICK }), 400, "REQUEST_INVALID"],
    ["multimask that is not a boolean", () => ({ image: scene.bytes, points: CLICK, multimask: "perhaps" }), 400, "REQUEST_INVALID"],
    ["a points field over 1 MB", () => ({ image: scene.bytes, points: `[${" ".repeat(1024 * 1024)}]` }), 413, "REQUEST_TOO_LARGE"],
    ["more form fields than a request needs", () => ({ image: scene.bytes, points: CLICK, ...Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`f${i}`, "x"])) }), 400, "REQUEST_INVALID"],
  ])("interactive with %s", async (_, fields, status, code) => {
    expectError(await post(fields()), status, code);
    await stillServes();
  });

  it.each<[string, () => Record<string, FieldValue>, number, string]>([
    ["a mask that is not a PNG", () => ({ mask: { bytes: scene.bytes, filename: "mask.jpg" } }), 400, "MASK_INVALID"],
    ["an RLE whose counts do not cover the size", () => ({ rle: '{"size":[4,4],"counts":[3,2]}' }), 400, "MASK_INVALID"],
    ["an RLE that is not JSON", () => ({ rle: "size=4x4" }), 400, "MASK_INVALID"],
    ["neither mask nor RLE", () => ({ tolerance: "1" }), 400, "REQUEST_INVALID"],
    ["a negative tolerance", () => ({ rle: '{"size":[1,1],"counts":[0,1]}', tolerance: "-1" }), 400, "REQUEST_INVALID"],
  ])("mask-to-polygon with %s", async (_, fields, status, code) => {
    expectError(await post(fields(), "/v1/labeling/mask-to-polygon"), status, code);
    await stillServes();
  });

  it.each<[string, () => RequestInit, number, string]>([
    ["a JSON body", () => ({ headers: { "content-type": "application/json" }, body: JSON.stringify({ image: "aGVsbG8=", points: CLICK }) }), 415, "REQUEST_UNSUPPORTED"],
    ["a raw JPEG body", () => ({ headers: { "content-type": "image/jpeg" }, body: new Uint8Array(scene.bytes) }), 415, "REQUEST_UNSUPPORTED"],
    ["a text/plain body", () => ({ headers: { "content-type": "text/plain" }, body: "image=portrait.jpg" }), 415, "REQUEST_UNSUPPORTED"],
    ["multipart without a boundary", () => ({ headers: { "content-type": "multipart/form-data" }, body: "--xyz\r\n\r\n" }), 400, "REQUEST_INVALID"],
    ["multipart with a broken body", () => ({ headers: { "content-type": "multipart/form-data; boundary=xyz" }, body: "--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\nabc" }), 400, "REQUEST_INVALID"],
    ["a multipart part without a name", () => ({ headers: { "content-type": "multipart/form-data; boundary=xyz" }, body: "--xyz\r\nContent-Disposition: form-data; filename=\"a.jpg\"\r\n\r\nabc\r\n--xyz--\r\n" }), 400, "REQUEST_INVALID"],
    ["a text field in a charset the agent cannot decode", () => ({ headers: { "content-type": "multipart/form-data; boundary=xyz" }, body: "--xyz\r\nContent-Disposition: form-data; name=\"points\"\r\nContent-Type: text/plain; charset=klingon\r\n\r\n[]\r\n--xyz--\r\n" }), 400, "REQUEST_INVALID"],
  ])("interactive with the wrong content type: %s", async (_, init, status, code) => {
    expectError(await request(url + INTERACTIVE, { method: "POST", token: TOKEN, ...init() }), status, code);
    await stillServes();
  });

  it("a 30 MB upload is refused from its Content-Length with a 413", async () => {
    const big = Buffer.concat([scene.bytes, Buffer.alloc(30 * 1024 * 1024 - scene.bytes.length)]);
    expectError(await post({ image: big, points: CLICK }), 413, "REQUEST_TOO_LARGE");
    await stillServes();
  });

  it("a 30 MB chunked upload (no Content-Length) is cut off at the limit with a 413", async () => {
    const boundary = "----sam-edge-test";
    const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const chunk = Buffer.alloc(1024 * 1024);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 0) controller.enqueue(head);
        if (sent < 30) controller.enqueue(chunk);
        else {
          controller.enqueue(tail);
          controller.close();
        }
        sent++;
      },
    });
    const res = await request(url + INTERACTIVE, {
      method: "POST",
      token: TOKEN,
      headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
      body,
      duplex: "half",
    } as RequestInit);
    expectError(res, 413, "REQUEST_TOO_LARGE");
    await stillServes();
  });

  it("a missing token, a wrong token and a token in the wrong scheme are 401s with WWW-Authenticate", async () => {
    for (const authorization of [undefined, "Bearer not-the-token", `Basic ${TOKEN}`, `Bearer ${TOKEN}x`]) {
      const res = await request(url + INTERACTIVE, {
        method: "POST",
        body: form({ image: scene.bytes, points: CLICK }),
        ...(authorization ? { headers: { authorization } } : {}),
      });
      expectError(res, 401, "UNAUTHORIZED");
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    }
    for (const path of ["/readyz", "/metrics", "/openapi.json", "/v1/cameras"]) {
      expect((await request(url + path)).status, path).toBe(401);
    }
    expect((await request(url + "/healthz")).status).toBe(200);
    await stillServes();
  });

  it("an unknown route is a JSON 404", async () => {
    expectError(await request(url + "/v1/segment/nothing", { token: TOKEN }), 404, "NOT_FOUND");
    expectError(await request(url + "/v1/cameras/attic/frame.jpg", { token: TOKEN }), 404, "CAMERA_NOT_FOUND");
  });

  it("everything with points_per_side out of range, and more than 10 images", async () => {
    expectError(await post({ image: scene.bytes, points_per_side: "128" }, "/v1/segment/everything"), 400, "REQUEST_INVALID");
    expectError(await post({ image: Array.from({ length: 11 }, () => scene.bytes) }, "/v1/segment/everything"), 400, "REQUEST_INVALID");
    await stillServes();
  });
});

describe("the optional rate limit", () => {
  let model: SamModel;
  let app: FastifyInstance;
  let url: string;

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    ({ app, url } = await startServer({ engine: new SegmentEngine(model), token: TOKEN, rateLimitPerMinute: 3 }));
  });
  afterAll(async () => {
    await app.close();
    await model.release();
  });

  it("answers 429 RATE_LIMITED with Retry-After past the limit, counts wrong tokens too, and never limits /healthz", async () => {
    expect((await request(url + "/v1/cameras", { token: TOKEN })).status).toBe(200);
    expect((await request(url + "/v1/cameras", { token: "a-guess" })).status).toBe(401);
    expect((await request(url + "/v1/cameras", { token: TOKEN })).status).toBe(200);
    const limited = await request(url + "/v1/cameras", { token: TOKEN });
    expect(limited.status).toBe(429);
    expect(limited.body.error.code).toBe("RATE_LIMITED");
    expect(limited.body.error.message).toMatch(/more than 3 requests a minute/);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
    for (let i = 0; i < 5; i++) expect((await request(url + "/healthz")).status).toBe(200);
  });
});
