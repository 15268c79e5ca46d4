import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { FastifyInstance } from "fastify";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamApiError, SamClient } from "../agent/src/client/index.ts";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { decodeRle, encodeRle, maskToPng, polygonsToMask, type Polygon } from "../agent/src/segment/formats/index.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { decodeMask, FixtureCameras } from "./helpers/http.ts";
import { loadScene, TINY_SAM_DIR, type Scene, MIN_CLICK_IOU } from "./helpers/scenes.ts";

const TOKEN = "client-token";
const CLIENT_DIR = fileURLToPath(new URL("../agent/src/client/", import.meta.url));
const exec = promisify(execFile);

describe("the typed client against the local API", () => {
  let model: SamModel;
  let app: FastifyInstance;
  let url: string;
  let client: SamClient;
  let landscape: Scene;
  let small: Scene;

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    landscape = await loadScene("landscape");
    small = await loadScene("small");
    ({ app, url } = await startServer({ engine: new SegmentEngine(model), token: TOKEN, cameras: new FixtureCameras({ yard: landscape.bytes }) }));
    client = new SamClient({ baseUrl: `${url}/`, token: TOKEN });
  });
  afterAll(async () => {
    await app.close();
    await model.release();
  });

  it("interactive: the clicked object's mask, every candidate with multimask, the overlay when asked", async () => {
    const obj = landscape.objects[0]!;
    const point = { x: obj.click[0], y: obj.click[1], label: 1 as const };
    const result = await client.interactive(landscape.bytes, { points: [point] }, { multimask: true, returnOverlay: true });
    expect(result.masks).toHaveLength(3);
    expect(result.route).toBe("local");
    expect((await sharp(Buffer.from(result.overlay!, "base64")).metadata()).format).toBe("jpeg");
    const viaCamera = await client.interactive({ camera: "yard" }, { points: [point] });
    expect(viaCamera.mask).toBe(result.mask);
    expect(maskIoU(await decodeMask(result.mask), landscape.truth(obj.label))).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
  });

  it("batches: per-image prompts (points or a box) answered in order, a bad item with its own error", async () => {
    const [a, b] = small.objects;
    const [x, y, w, h] = b!.bbox;
    const batch = await client.interactiveBatch(
      [small.bytes, small.bytes, small.bytes],
      [{ points: [{ x: a!.click[0], y: a!.click[1], label: 1 }] }, { box: [x, y, x + w, y + h] }, { points: [{ x: 999, y: 5, label: 1 }] }],
    );
    expect(batch.results).toHaveLength(3);
    const [first, second, third] = batch.results as unknown as [{ mask: string }, { mask: string }, { error: { code: string } }];
    expect(third.error.code).toBe("PROMPT_INVALID");
    const everything = await client.everythingBatch([{ camera: "yard" }, { camera: "nowhere" }], { pointsPerSide: 4 });
    expect("masks" in everything.results[0]!).toBe(true);
    expect(everything.results[1]).toMatchObject({ error: { code: "CAMERA_NOT_FOUND" } });

    expect(maskIoU(await decodeMask(first.mask), small.truth(a!.label))).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
    expect(maskIoU(await decodeMask(second.mask), small.truth(b!.label))).toBeGreaterThanOrEqual(MIN_CLICK_IOU);
  });

  it("everything: masks with bbox and confidence", async () => {
    const result = await client.everything(small.bytes, { pointsPerSide: 4 });
    expect(Array.isArray(result.masks)).toBe(true);
    for (const m of result.masks) {
      expect(m.bbox).toHaveLength(4);
      expect(typeof m.confidence).toBe("number");
      expect((await decodeMask(m.mask)).width).toBe(small.width);
    }
  });

  it("maskToPolygon from PNG bytes, base64 and RLE gives the same polygons, which rasterise back exactly", async () => {
    const truth = small.truth(3);
    const png = await maskToPng(truth);
    const fromPng = await client.maskToPolygon({ png }, { tolerance: 0 });
    const fromBase64 = await client.maskToPolygon({ base64: png.toString("base64") }, { tolerance: 0 });
    const fromRle = await client.maskToPolygon({ rle: encodeRle(truth) }, { tolerance: 0 });
    expect(fromBase64.polygons).toEqual(fromPng.polygons);
    expect(fromRle.polygons).toEqual(fromPng.polygons);
    expect(polygonsToMask(fromPng.polygons as Polygon[], truth.width, truth.height).data).toEqual(truth.data);
    expect(decodeRle(fromPng.rle).data).toEqual(truth.data);
  });

  it("errors come back as SamApiError with the status and the API's code", async () => {
    const bad = await client.interactive(Buffer.from("not an image"), { points: [{ x: 1, y: 1, label: 1 }] }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(SamApiError);
    expect([(bad as SamApiError).status, (bad as SamApiError).code]).toEqual([415, "IMAGE_UNSUPPORTED"]);
    const unauthorised = await new SamClient({ baseUrl: url }).everything(small.bytes).catch((e: unknown) => e);
    expect([(unauthorised as SamApiError).status, (unauthorised as SamApiError).code]).toEqual([401, "UNAUTHORIZED"]);
  });

  it("the README example runs as written against the local API, with only the base URL and token set", async () => {
    const readme = await readFile(join(CLIENT_DIR, "README.md"), "utf8");
    const code = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(code).toBeDefined();
    const dir = await mkdtemp(join(tmpdir(), "sam-edge-client-"));
    try {
      // The example imports the client relative to a checkout; here it runs from a temp folder.
      await writeFile(join(dir, "example.mts"), code!.replace("./agent/src/client/index.ts", pathToFileURL(join(CLIENT_DIR, "index.ts")).href));
      await sharp(landscape.bytes).jpeg().toFile(join(dir, "image.jpg"));
      const tsx = fileURLToPath(new URL("../node_modules/.bin/tsx", import.meta.url));
      const { stdout } = await exec(tsx, ["example.mts"], { cwd: dir, env: { ...process.env, SAM_API_URL: url, SAM_API_TOKEN: TOKEN } });
      const lines = stdout.trim().split("\n");
      expect(lines[0]).toMatch(/^bbox: \[ \d+, \d+, \d+, \d+ \] confidence: [\d.e-]+$/);
      expect(lines[1]).toMatch(/^polygons: \d+$/);
      expect(lines[2]).toMatch(/^Found \d+ distinct objects$/);
      expect(lines[3]).toBe("refused: 400 PROMPT_INVALID");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
