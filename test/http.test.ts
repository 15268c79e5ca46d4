import type { FastifyInstance } from "fastify";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { decodeRle, maskToPng, polygonsToMask, type Polygon } from "../agent/src/segment/formats/index.ts";
import { maskBBox, maskIoU } from "../agent/src/segment/mask.ts";
import { decodeMask, FixtureCameras, postForm, request } from "./helpers/http.ts";
import { loadScene, TINY_SAM_DIR, type Scene, MIN_CLICK_IOU } from "./helpers/scenes.ts";

const TOKEN = "local-test-token";

// A real server on an ephemeral loopback port, real HTTP, the bundled model: answers are
// checked against the scenes' exact ground truth, so a wrong coordinate or a mangled PNG on
// the way through the API shows up as a low IoU.
describe("local SAM API", () => {
  let model: SamModel;
  let app: FastifyInstance;
  let url: string;
  let landscape: Scene;
  let portrait: Scene;

  const post = (path: string, fields: Parameters<typeof postForm>[1]) => postForm(url + path, fields, TOKEN);
  const click = (obj: Scene["objects"][number]) => JSON.stringify([{ x: obj.click[0], y: obj.click[1], label: 1 }]);

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    landscape = await loadScene("landscape");
    portrait = await loadScene("portrait");
    const cameras = new FixtureCameras({ yard: landscape.bytes, door: portrait.bytes });
    ({ app, url } = await startServer({ engine: new SegmentEngine(model), token: TOKEN, cameras }));
  });
  afterAll(async () => {
    await app.close();
    await model.release();
  });

  it("listens on 127.0.0.1 unless told otherwise", () => {
    expect(new URL(url).hostname).toBe("127.0.0.1");
  });

  it("interactive: a click inside each object answers that object's mask, with bbox, confidence and RLE", async () => {
    for (const obj of landscape.objects) {
      const res = await post("/v1/segment/interactive", { image: landscape.bytes, points: click(obj) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const mask = await decodeMask(res.body.mask);
      expect([mask.width, mask.height, res.body.width, res.body.height]).toEqual([640, 480, 640, 480]);
      expect(res.body.bbox).toEqual(maskBBox(mask));
      expect(typeof res.body.confidence).toBe("number");
      expect(decodeRle(res.body.rle).data).toEqual(mask.data);
      expect(res.body).toMatchObject({ route: "local" });
      expect(res.body.latency_ms).toBeGreaterThan(0);
      expect(res.body.masks).toBeUndefined();
      expect(res.body.overlay).toBeUndefined();
      expect(maskIoU(mask, landscape.truth(obj.label)), `object ${obj.label} (${obj.kind})`).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
    }
  });

  it("interactive: multimask answers every candidate best first; return_overlay a JPEG of the image's size", async () => {
    const obj = landscape.objects[0]!;
    const res = await post("/v1/segment/interactive", { image: landscape.bytes, points: click(obj), multimask: "true", return_overlay: "true" });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.masks).toHaveLength(3);
    const confidences = res.body.masks.map((m: { confidence: number }) => m.confidence);
    expect(confidences).toEqual([...confidences].sort((a, b) => b - a));
    expect(res.body.masks[0].mask).toBe(res.body.mask);
    const overlay = await sharp(Buffer.from(res.body.overlay, "base64")).metadata();
    expect([overlay.format, overlay.width, overlay.height]).toEqual(["jpeg", 640, 480]);
  });

  it("interactive: a box prompt, and a negative click that takes a region out", async () => {
    const obj = landscape.objects[1]!;
    const [x, y, w, h] = obj.bbox;
    const negative = await post("/v1/segment/interactive", {
      image: landscape.bytes,
      points: JSON.stringify([{ x: obj.click[0], y: obj.click[1], label: 1 }, { x: 5, y: 470, label: 0 }]),
    });
    expect(negative.status).toBe(200);
    expect((await decodeMask(negative.body.mask)).data[470 * 640 + 5]).toBe(0);
    const boxed = await post("/v1/segment/interactive", { image: landscape.bytes, box: JSON.stringify([x, y, x + w, y + h]) });
    expect(boxed.status, JSON.stringify(boxed.body)).toBe(200);
    expect(maskIoU(await decodeMask(boxed.body.mask), landscape.truth(obj.label))).toBeGreaterThanOrEqual(0.85);
  });

  it("interactive: camera=<id> segments that camera's latest frame, as if it had been uploaded", async () => {
    const obj = landscape.objects[0]!;
    const viaCamera = await post("/v1/segment/interactive", { camera: "yard", points: click(obj) });
    const viaUpload = await post("/v1/segment/interactive", { image: landscape.bytes, points: click(obj) });
    expect(viaCamera.status).toBe(200);
    expect(viaCamera.body.mask).toBe(viaUpload.body.mask);
  });

  it("a batch answers each image in order, each with its own result or its own error", async () => {
    const l = landscape.objects[0]!;
    const p = portrait.objects[2]!;
    const points = JSON.stringify([
      [{ x: l.click[0], y: l.click[1], label: 1 }],
      [{ x: p.click[0], y: p.click[1], label: 1 }],
      [{ x: 10, y: 10, label: 1 }],
      // Inside the landscape picture but outside the portrait one.
      [{ x: 600, y: 100, label: 1 }],
    ]);
    const res = await post("/v1/segment/interactive", {
      image: [landscape.bytes, portrait.bytes, Buffer.from("not an image at all"), portrait.bytes],
      points,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const [a, b, c, d] = res.body.results;
    expect(c.error.code).toBe("IMAGE_UNSUPPORTED");
    expect(d.error.code).toBe("PROMPT_INVALID");
    expect(res.body.route).toBe("local");
    expect(maskIoU(await decodeMask(a.mask), landscape.truth(l.label))).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
    expect(maskIoU(await decodeMask(b.mask), portrait.truth(p.label))).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
  });

  it("a batch of cameras, one of them unknown; more than 10 images is refused", async () => {
    const points = click(landscape.objects[0]!);
    const res = await post("/v1/segment/interactive", { camera: ["yard", "attic", "door"], points });
    expect(res.status).toBe(200);
    expect(res.body.results.map((r: { error?: { code: string } }) => r.error?.code ?? "ok")).toEqual(["ok", "CAMERA_NOT_FOUND", "ok"]);
    const eleven = await post("/v1/segment/interactive", { image: Array.from({ length: 11 }, () => landscape.bytes), points });
    expect(eleven.status).toBe(400);
    expect(eleven.body.error.code).toBe("REQUEST_INVALID");
  });

  it("everything: distinct masks with bbox and confidence, one of them an object of the scene", async () => {
    // With the filters off every grid point answers: the answer's form does not depend on the model.
    const unfiltered = await post("/v1/segment/everything", {
      image: landscape.bytes,
      points_per_side: "4",
      pred_iou_thresh: "0",
      stability_score_thresh: "0",
      return_overlay: "true",
    });
    expect(unfiltered.status, JSON.stringify(unfiltered.body)).toBe(200);
    expect(unfiltered.body.masks.length).toBeGreaterThan(0);
    for (const m of unfiltered.body.masks) {
      expect(m.bbox).toEqual(maskBBox(await decodeMask(m.mask)));
      expect(typeof m.confidence).toBe("number");
      expect(m.point).toHaveLength(2);
    }
    expect((await sharp(Buffer.from(unfiltered.body.overlay, "base64")).metadata()).format).toBe("jpeg");

    // SAM's default filters (0.88 / 0.95) keep none of the bundled model's masks of landscape.
    const res = await post("/v1/segment/everything", { image: landscape.bytes, points_per_side: "16", pred_iou_thresh: "0.5", stability_score_thresh: "0.8" });
    expect(res.status).toBe(200);
    const masks = await Promise.all(res.body.masks.map((m: { mask: string }) => decodeMask(m.mask)));
    const best = Math.max(0, ...landscape.objects.flatMap((o) => masks.map((m) => maskIoU(m, landscape.truth(o.label)))));
    expect(best).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
  });

  it("everything: points_per_side outside 1..64 is a 400", async () => {
    for (const side of ["0", "65", "many", "2.5"]) {
      const res = await post("/v1/segment/everything", { image: landscape.bytes, points_per_side: side });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe("REQUEST_INVALID");
      expect(res.body.error.message).toContain("points_per_side");
    }
  });

  it("mask-to-polygon: a polygon keeps its hole and rasterises back to the mask exactly", async () => {
    // The small scene's rectangle 3 has another shape inside it: a hole in its visible pixels.
    const truth = (await loadScene("small")).truth(3);
    const png = await maskToPng(truth);
    const asFile = await post("/v1/labeling/mask-to-polygon", { mask: { bytes: png, filename: "mask.png", type: "image/png" }, tolerance: "0" });
    expect(asFile.status, JSON.stringify(asFile.body)).toBe(200);
    expect(asFile.body.has_holes).toBe(true);
    expect(asFile.body.polygons[0].holes.length).toBeGreaterThan(0);
    const back = polygonsToMask(asFile.body.polygons as Polygon[], truth.width, truth.height);
    expect(back.data).toEqual(truth.data);
    expect(asFile.body.segmentation[0]).toEqual((asFile.body.polygons[0] as Polygon).exterior.flat());
    expect(asFile.body.bbox).toEqual(maskBBox(truth));
    expect(decodeRle(asFile.body.rle).data).toEqual(truth.data);

    // The same mask as base64 text (as an interactive answer gives it) and as RLE in a JSON body.
    const asText = await post("/v1/labeling/mask-to-polygon", { mask: png.toString("base64"), tolerance: "0" });
    expect(asText.body.polygons).toEqual(asFile.body.polygons);
    const asJson = await request(url + "/v1/labeling/mask-to-polygon", {
      method: "POST",
      token: TOKEN,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ rle: asFile.body.rle, tolerance: 0 }),
    });
    expect(asJson.status).toBe(200);
    expect(asJson.body.polygons).toEqual(asFile.body.polygons);
  });

  it("mask-to-polygon: a larger tolerance gives fewer corners", async () => {
    const png = (await maskToPng(portrait.truth(portrait.objects[0]!.label))).toString("base64");
    const corners = async (tolerance: string) => {
      const res = await post("/v1/labeling/mask-to-polygon", { mask: png, tolerance });
      return res.body.polygons[0].exterior.length as number;
    };
    expect(await corners("2")).toBeLessThan(await corners("0"));
  });

  it("/healthz is open; /readyz reports the model and cameras", async () => {
    const health = await request(url + "/healthz");
    expect([health.status, health.body]).toEqual([200, { status: "ok" }]);
    const ready = await request(url + "/readyz", { token: TOKEN });
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ ready: true, model: { loaded: true, name: "tiny-sam" }, cameras: [{ id: "yard", healthy: true }, { id: "door", healthy: true }] });
  });

  it("/metrics counts requests per route and status, stage latencies and embedding cache hits", async () => {
    const points = click(landscape.objects[0]!);
    await post("/v1/segment/interactive", { image: landscape.bytes, points });
    const res = await request(url + "/metrics", { token: TOKEN });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}"/]/g, "\\$&")} (\\S+)$`, "m").exec(res.body)?.[1]);
    expect(value('sam_edge_http_requests_total{method="POST",route="/v1/segment/interactive",status="200"}')).toBeGreaterThan(0);
    expect(value("sam_edge_embedding_cache_hits")).toBeGreaterThan(0);
    expect(value('sam_edge_stage_duration_seconds_count{stage="decode"}')).toBeGreaterThan(0);
    expect(res.body).toContain("process_resident_memory_bytes");
  });

  it("/v1/cameras lists the cameras and frame.jpg serves a JPEG of the latest frame", async () => {
    const list = await request(url + "/v1/cameras", { token: TOKEN });
    expect(list.body.cameras.map((c: { id: string }) => c.id)).toEqual(["yard", "door"]);
    // yard's frame is a PNG: it comes back converted; door's is a JPEG: it comes back as it is.
    const yard = await request(url + "/v1/cameras/yard/frame.jpg", { token: TOKEN });
    expect(yard.headers.get("content-type")).toBe("image/jpeg");
    expect((await sharp(yard.body).metadata()).format).toBe("jpeg");
    const door = await request(url + "/v1/cameras/door/frame.jpg", { token: TOKEN });
    expect(Buffer.compare(door.body, portrait.bytes)).toBe(0);
    // Frames but no segmentation behind them: overlay.jpg says so rather than serving the bare frame.
    const overlay = await request(url + "/v1/cameras/door/overlay.jpg", { token: TOKEN });
    expect(overlay.status).toBe(503);
    expect(overlay.body.error.code).toBe("CAMERA_NO_RESULT");
  });

  it("/openapi.json documents every route, images as binary file parts; /docs loads nothing from outside", async () => {
    const spec = await request(url + "/openapi.json", { token: TOKEN });
    expect(spec.status).toBe(200);
    for (const path of ["/v1/segment/interactive", "/v1/segment/everything", "/v1/labeling/mask-to-polygon", "/healthz", "/readyz", "/metrics"]) {
      expect(Object.keys(spec.body.paths)).toContain(path);
    }
    const image = spec.body.paths["/v1/segment/interactive"].post.requestBody.content["multipart/form-data"].schema.properties.image;
    expect(image.anyOf[0]).toMatchObject({ type: "string", format: "binary" });
    const docs = await request(url + "/docs", { token: TOKEN });
    expect(docs.status).toBe(200);
    const assets = [...String(docs.body).matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThan(2);
    expect(assets.filter((a) => /^(https?:)?\/\//.test(a))).toEqual([]);
  });
});

describe("local SAM API while the model is loading, or failed to load", () => {
  it("/healthz answers, /readyz and the segment routes say 503 with the reason", async () => {
    const scene = await loadScene("small");
    const loading = await startServer({ engine: new Promise<SegmentEngine>(() => {}), cameras: new FixtureCameras({ cam: scene.bytes }, [], ["cam"]) });
    const failed = await startServer({ engine: SamModel.load("/nonexistent/model").then((m) => new SegmentEngine(m)) });
    try {
      expect((await request(loading.url + "/healthz")).status).toBe(200);
      const ready = await request(loading.url + "/readyz");
      expect([ready.status, ready.body.model.loaded, ready.body.cameras]).toEqual([503, false, [{ id: "cam", healthy: false }]]);
      const seg = await postForm(loading.url + "/v1/segment/interactive", { image: scene.bytes, points: '[{"x":1,"y":1,"label":1}]' });
      expect([seg.status, seg.body.error.code]).toEqual([503, "MODEL_LOADING"]);

      const notReady = await request(failed.url + "/readyz");
      expect([notReady.status, notReady.body.model.error.code]).toEqual([503, "MODEL_NOT_FOUND"]);
      const segFailed = await postForm(failed.url + "/v1/segment/everything", { image: scene.bytes });
      expect([segFailed.status, segFailed.body.error.code]).toEqual([503, "MODEL_NOT_FOUND"]);
    } finally {
      await loading.app.close();
      await failed.app.close();
    }
  });
});
