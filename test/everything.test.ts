import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { boxIoU, cropBoxes, nms, pointGrid, segmentEverything } from "../agent/src/segment/everything.ts";
import { maskArea, maskIoU, type BinaryMask } from "../agent/src/segment/mask.ts";
import { removeSmallRegions } from "../agent/src/segment/regions.ts";
import { loadScene, TINY_SAM_DIR } from "./helpers/scenes.ts";

describe("Everything mode building blocks", () => {
  it("builds SAM's point grid: cell centres, row by row", () => {
    expect(pointGrid(2)).toEqual([
      [0.25, 0.25],
      [0.75, 0.25],
      [0.25, 0.75],
      [0.75, 0.75],
    ]);
    expect(pointGrid(1)).toEqual([[0.5, 0.5]]);
  });

  it("lays out crop layers as SAM does: the image, then 2x2 overlapping crops", () => {
    // overlap = floor(512/1500 * 480) = 163; crops 402x322, so the second row/column starts at 402-163 and 322-163.
    const crops = cropBoxes(640, 480, 1, 512 / 1500);
    expect(crops).toHaveLength(5);
    expect(crops[0]).toEqual({ box: [0, 0, 640, 480], layer: 0 });
    for (const { box } of crops.slice(1)) {
      expect(box[2] - box[0]).toBeGreaterThan(320);
      expect(box[2]).toBeLessThanOrEqual(640);
      expect(box[3]).toBeLessThanOrEqual(480);
    }
    expect(crops.slice(1).map((c) => [c.box[0], c.box[1]])).toEqual([
      [0, 0],
      [0, 159],
      [239, 0],
      [239, 159],
    ]);
  });

  it("suppresses boxes that overlap a better one, keeps the rest", () => {
    expect(boxIoU([0, 0, 10, 10], [5, 0, 10, 10])).toBeCloseTo(50 / 150);
    const kept = nms(
      [
        [0, 0, 10, 10],
        [1, 0, 10, 10],
        [50, 50, 5, 5],
      ],
      [0.8, 0.9, 0.7],
      0.7,
    );
    expect(kept).toEqual([1, 2]);
  });

  it("with masks, also suppresses a twin whose stray speck makes its box much larger", () => {
    const side = 16;
    const square = new Uint8Array(side * side);
    for (let y = 2; y < 8; y++) for (let x = 2; x < 8; x++) square[y * side + x] = 1;
    const speck = square.slice();
    speck[15 * side + 15] = 1;
    const other = new Uint8Array(side * side);
    for (let y = 9; y < 14; y++) for (let x = 9; x < 14; x++) other[y * side + x] = 1;
    const boxes: [number, number, number, number][] = [
      [2, 2, 6, 6],
      [2, 2, 14, 14],
      [9, 9, 5, 5],
    ];
    // Box IoU of the twins is 36/196: box NMS alone keeps all three.
    expect(nms(boxes, [0.8, 0.9, 0.7], 0.7)).toEqual([1, 0, 2]);
    const masks = [square, speck, other];
    expect(nms(boxes, [0.8, 0.9, 0.7], 0.7, (i) => masks[i]!)).toEqual([1, 2]);
  });

  it("fills small holes and drops small islands", () => {
    const width = 20;
    const data = new Uint8Array(width * 20);
    for (let y = 2; y < 12; y++) for (let x = 2; x < 12; x++) data[y * width + x] = 1;
    data[5 * width + 5] = 0; // a one-pixel hole
    data[18 * width + 18] = 1; // a one-pixel island
    const { mask, area } = removeSmallRegions({ width, height: 20, data }, 4);
    expect(mask.data[5 * width + 5]).toBe(1);
    expect(mask.data[18 * width + 18]).toBe(0);
    expect(area).toBe(100);
    expect(maskArea(mask)).toBe(100);
  });
});

describe("Everything mode on the bundled model", () => {
  let model: SamModel;
  let engine: SegmentEngine;
  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    engine = new SegmentEngine(model);
  });
  afterAll(async () => model.release());

  // SAM's default filters (predicted IoU 0.88, stability 0.95) keep few of the bundled
  // model's softer masks (recall 0.26 on these scenes); its stability scores are what loses
  // objects: at 0.5 / 0.8 recall is 0.79, at 0.5 / 0.6 it is 0.89 (11 to 18 masks a scene;
  // `npx tsx bench/fixtures-quality.ts`).
  const FILTERS = { predIouThresh: 0.5, stabilityScoreThresh: 0.6 };
  const SCENES = ["landscape", "portrait", "small", "large", "square"];
  /** Per scene: objects found (a mask with IoU >= 0.7) and objects in all. */
  const recall = new Map<string, { found: number; objects: number }>();

  it.each(SCENES)("finds the objects of %s, each once", async (name) => {
    const scene = await loadScene(name);
    const result = await segmentEverything(engine, scene.bytes, { pointsPerSide: 16, ...FILTERS });
    const masks = result.masks.map((m) => m.mask);
    const found = scene.objects.filter((o) => bestIoU(scene.truth(o.label), masks) >= 0.7);
    recall.set(name, { found: found.length, objects: scene.objects.length });
    expect(found.length, `found ${found.length} of ${scene.objects.length} objects in ${masks.length} masks`).toBeGreaterThanOrEqual(1);
    // No duplicates: NMS leaves no pair of masks above its IoU threshold (0.7).
    for (let i = 0; i < masks.length; i++) {
      for (let j = i + 1; j < masks.length; j++) expect(maskIoU(masks[i]!, masks[j]!)).toBeLessThanOrEqual(0.7);
    }
    for (const m of result.masks) {
      expect(m.confidence).toBeGreaterThanOrEqual(FILTERS.predIouThresh);
      expect(m.stability).toBeGreaterThanOrEqual(FILTERS.stabilityScoreThresh);
      expect(m.mask.data[Math.round(m.point[1]) * scene.width + Math.round(m.point[0])]).toBeDefined();
    }
    expect(result.counts.candidates).toBe(16 * 16 * 3);
  });

  it("finds at least 80% of all the scenes' objects at IoU 0.7", () => {
    expect(recall.size).toBe(SCENES.length);
    const found = [...recall.values()].reduce((n, r) => n + r.found, 0);
    const objects = [...recall.values()].reduce((n, r) => n + r.objects, 0);
    expect(found / objects, JSON.stringify(Object.fromEntries(recall))).toBeGreaterThanOrEqual(0.8);
  });

  it("gives the same masks batched as looped", async () => {
    const scene = await loadScene("small");
    const batched = await segmentEverything(engine, scene.bytes, { pointsPerSide: 6 });
    const looped = await segmentEverything(engine, scene.bytes, { pointsPerSide: 6, forceLoop: true });
    expect(batched.masks.length).toBe(looped.masks.length);
    for (const [i, m] of batched.masks.entries()) expect(maskIoU(m.mask, looped.masks[i]!.mask)).toBeGreaterThan(0.99);
  });

  it("with a crop layer, returns full-size masks", async () => {
    const scene = await loadScene("landscape");
    const result = await segmentEverything(engine, scene.bytes, { pointsPerSide: 8, cropNLayers: 1, predIouThresh: 0.3, stabilityScoreThresh: 0.6 });
    expect(result.counts.candidates).toBe(5 * 8 * 8 * 3);
    expect(result.masks.length).toBeGreaterThan(0);
    for (const m of result.masks) expect([m.mask.width, m.mask.height]).toEqual([640, 480]);
  });

  it("rejects out-of-range settings", async () => {
    const scene = await loadScene("small");
    await expect(segmentEverything(engine, scene.bytes, { pointsPerSide: 65 })).rejects.toMatchObject({ code: "PROMPT_INVALID" });
    await expect(segmentEverything(engine, scene.bytes, { predIouThresh: 1.5 })).rejects.toMatchObject({ code: "PROMPT_INVALID" });
    await expect(segmentEverything(engine, scene.bytes, { cropNLayers: 9 })).rejects.toMatchObject({ code: "PROMPT_INVALID" });
    const { embedding } = await engine.embed(scene.bytes);
    await expect(segmentEverything(engine, embedding, { cropNLayers: 1 })).rejects.toMatchObject({ code: "PROMPT_INVALID" });
  });
});

function bestIoU(truth: BinaryMask, masks: BinaryMask[]): number {
  return Math.max(0, ...masks.map((m) => maskIoU(m, truth)));
}
