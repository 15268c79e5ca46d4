import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { maskArea, maskBBox, maskIoU } from "../agent/src/segment/mask.ts";
import { loadScene, MIN_CLICK_IOU, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

// Every image here goes through the full path (sharp decode, EXIF, resize, pad, encoder,
// decoder, mask postprocessing) and is compared with the scene's exact ground truth. A
// coordinate-transform mistake anywhere on that path puts masks in the wrong place (IoU near
// 0). The bar, a mean IoU of 0.75, holds for every non-square scene (0.87 to 0.95 with
// the bundled model, whose held-out 1-click mIoU is 0.85: models/tiny-sam/README.md); the
// crowded `square` scene, whose objects occlude each other, scores about 0.62 and is held to 0.5
// (per-object IoUs: `npx tsx bench/fixtures-quality.ts`).
const SCENES = ["landscape", "portrait", "portrait-exif6", "small", "large", "square"];

describe("segmentation engine on the bundled model", () => {
  let model: SamModel;
  let engine: SegmentEngine;
  const scenes = new Map<string, Scene>();
  /** Filled by the per-scene click test, read by the overall one after it. */
  const clickIoUs: number[] = [];

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    engine = new SegmentEngine(model);
    for (const name of SCENES) scenes.set(name, await loadScene(name));
  });
  afterAll(async () => model.release());

  it.each(SCENES)("a click inside each object of %s finds that object", async (name) => {
    const scene = scenes.get(name)!;
    const ious = [];
    for (const obj of scene.objects) {
      const result = await engine.segment(scene.bytes, { points: [{ x: obj.click[0], y: obj.click[1], label: 1 }] });
      expect([result.width, result.height]).toEqual([scene.width, scene.height]);
      // Box and area come out of the thresholding pass itself: they must be the mask's own.
      for (const m of result.masks) expect([m.bbox, m.area]).toEqual([maskBBox(m.mask), maskArea(m.mask)]);
      ious.push(maskIoU(result.masks[0]!.mask, scene.truth(obj.label)));
    }
    const mean = ious.reduce((a, b) => a + b, 0) / ious.length;
    expect(mean, `IoUs ${ious.map((v) => v.toFixed(3)).join(", ")}`).toBeGreaterThanOrEqual(name === "square" ? 0.5 : MIN_CLICK_IOU);
    clickIoUs.push(...ious);
  });

  it("over every fixture object, a click's mask has a mean IoU of 0.75 or more with the object", () => {
    expect(clickIoUs).toHaveLength(SCENES.reduce((n, name) => n + scenes.get(name)!.objects.length, 0));
    expect(clickIoUs.reduce((a, b) => a + b, 0) / clickIoUs.length).toBeGreaterThanOrEqual(0.75);
  });

  it("reads EXIF orientation: the rotated file gives the upright picture's masks", async () => {
    const upright = scenes.get("portrait")!;
    const rotated = scenes.get("portrait-exif6")!;
    const click = upright.objects[0]!.click;
    const a = await engine.segment(upright.bytes, { points: [{ x: click[0], y: click[1], label: 1 }] });
    const b = await engine.segment(rotated.bytes, { points: [{ x: click[0], y: click[1], label: 1 }] });
    expect([b.width, b.height]).toEqual([480, 640]);
    expect(maskIoU(a.masks[0]!.mask, b.masks[0]!.mask)).toBeGreaterThan(0.9);
  });

  it("a box around an object segments it", async () => {
    for (const name of ["landscape"]) {
      const scene = scenes.get(name)!;
      const obj = scene.objects[0]!;
      const [x, y, w, h] = obj.bbox;
      const result = await engine.segment(scene.bytes, { box: [x, y, x + w, y + h] });
      expect(result.masks).toHaveLength(1);
      expect(maskIoU(result.masks[0]!.mask, scene.truth(obj.label))).toBeGreaterThanOrEqual(0.85);
    }
  });

  it("a lone click returns SAM's three answers best first; more prompts return one", async () => {
    const scene = scenes.get("landscape")!;
    const [x, y] = scene.objects[0]!.click;
    const three = await engine.segment(scene.bytes, { points: [{ x, y, label: 1 }] });
    expect(three.masks).toHaveLength(3);
    const conf = three.masks.map((m) => m.confidence);
    expect(conf).toEqual([...conf].sort((a, b) => b - a));
    const one = await engine.segment(scene.bytes, { points: [{ x, y, label: 1 }, { x: x + 2, y: y + 2, label: 1 }] });
    expect(one.masks).toHaveLength(1);
    const forced = await engine.segment(scene.bytes, { points: [{ x, y, label: 1 }] }, { multimask: false });
    expect(forced.masks).toHaveLength(1);
  });

  it("bestOnly gives the best candidate alone, the same as the first of all of them, in every scene", async () => {
    for (const scene of scenes.values()) {
      for (const obj of scene.objects) {
        const prompt = { points: [{ x: obj.click[0], y: obj.click[1], label: 1 as const }] };
        const all = await engine.segment(scene.bytes, prompt);
        const best = await engine.segment(scene.bytes, prompt, { bestOnly: true });
        expect(best.masks).toHaveLength(1);
        const { mask: expectedMask, lowRes: _a, ...expected } = all.masks[0]!;
        const { mask: gotMask, lowRes: _b, ...got } = best.masks[0]!;
        expect(got).toEqual(expected);
        expect(Buffer.from(gotMask.data).equals(Buffer.from(expectedMask.data))).toBe(true);
      }
    }
  });

  it("a negative click takes away from the region it lands on", async () => {
    const scene = scenes.get("small")!;
    // A box that takes in object 1 and part of its neighbour, then a click on the neighbour.
    const target = scene.objects[0]!;
    const truth = scene.truth(target.label);
    const boxOnly = await engine.segment(scene.bytes, { box: [0, 0, scene.width, scene.height] });
    const spill = scene.objects.find((o) => o !== target && overlap(boxOnly.masks[0]!.mask.data, scene.truth(o.label).data) > 0.3);
    expect(spill, "the whole-image box should take in more than one object").toBeDefined();
    const withNegative = await engine.segment(scene.bytes, {
      box: [0, 0, scene.width, scene.height],
      points: [{ x: spill!.click[0], y: spill!.click[1], label: 0 }],
    });
    const spillTruth = scene.truth(spill!.label).data;
    expect(overlap(withNegative.masks[0]!.mask.data, spillTruth)).toBeLessThan(overlap(boxOnly.masks[0]!.mask.data, spillTruth));
    expect(truth.width).toBe(scene.width);
  });

  it("refining with the previous mask and a corrective click does not lower IoU on average, nor much for any object", async () => {
    const scene = scenes.get("large")!;
    const before: number[] = [];
    const after: number[] = [];
    for (const obj of scene.objects) {
      const truth = scene.truth(obj.label);
      const first = await engine.segment(scene.bytes, { points: [{ x: obj.click[0], y: obj.click[1], label: 1 }] });
      const fix = worstError(first.masks[0]!.mask.data, truth.data, scene.width);
      if (!fix) continue;
      const refined = await engine.segment(scene.bytes, {
        points: [{ x: obj.click[0], y: obj.click[1], label: 1 }, fix],
        maskInput: first.masks[0]!.lowRes,
      });
      before.push(maskIoU(first.masks[0]!.mask, truth));
      after.push(maskIoU(refined.masks[0]!.mask, truth));
    }
    expect(after.length).toBeGreaterThanOrEqual(2);
    // A corrective click on a mask that is already good can cost it a little (the bundled model
    // takes one of 0.95 to 0.93), as with SAM; on average it must help, and never much harm.
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(after)).toBeGreaterThanOrEqual(mean(before));
    for (const [i, iou] of after.entries()) expect(iou).toBeGreaterThanOrEqual(before[i]! - 0.05);
  });

  it("session options from the config: a CUDA preference falls back to the CPU, and the masks do not change", async () => {
    const other = await SamModel.load(TINY_SAM_DIR, { intraOpThreads: 1, graphOptimizationLevel: "basic", executionProviders: ["cuda", "cpu"], spinWait: true });
    try {
      const scene = scenes.get("landscape")!;
      const obj = scene.objects[0]!;
      const prompt = { points: [{ x: obj.click[0], y: obj.click[1], label: 1 as const }] };
      const a = await engine.segment(scene.bytes, prompt);
      const b = await new SegmentEngine(other).segment(scene.bytes, prompt);
      expect(maskIoU(a.masks[0]!.mask, b.masks[0]!.mask)).toBeGreaterThan(0.99);
    } finally {
      await other.release();
    }
  });

  it("runs requested together take turns with the event loop, in the order asked", async () => {
    const scene = scenes.get("landscape")!;
    await engine.segment(scene.bytes, { points: [{ x: 10, y: 10, label: 1 }] });
    const events: string[] = [];
    const runs = [0, 1, 2, 3].map((i) =>
      engine.segment(scene.bytes, { points: [{ x: 20 + i, y: 20, label: 1 }] }).then(() => {
        events.push(`run ${i}`);
        // A timer stands for a socket read that became ready during the first run: it must
        // not wait for the other three.
        if (i === 0) setTimeout(() => events.push("timer"), 0);
      }),
    );
    await Promise.all(runs);
    expect(events.filter((e) => e.startsWith("run"))).toEqual(["run 0", "run 1", "run 2", "run 3"]);
    expect(events.indexOf("timer")).toBeGreaterThan(0);
    expect(events.indexOf("timer")).toBeLessThan(events.indexOf("run 3"));
  });

  it("a second prompt on the same image runs only the decoder", async () => {
    const fresh = new SegmentEngine(model);
    const scene = scenes.get("landscape")!;
    const first = await fresh.segment(scene.bytes, { points: [{ x: 10, y: 10, label: 1 }] });
    const second = await fresh.segment(scene.bytes, { points: [{ x: 300, y: 200, label: 1 }] });
    expect(first.cached).toBe(false);
    expect(second.cached).toBe(true);
    expect(second.timings.encodeMs).toBe(0);
    expect(fresh.cacheStats).toMatchObject({ entries: 1, hits: 1, misses: 1 });
  });
});

/** Fraction of `region` covered by `mask`. */
function overlap(mask: Uint8Array, region: Uint8Array): number {
  let inter = 0;
  let total = 0;
  for (let i = 0; i < region.length; i++) {
    total += region[i]!;
    inter += region[i]! & mask[i]!;
  }
  return total === 0 ? 0 : inter / total;
}

/** A click in the middle of the largest error: positive where the mask misses, negative where it spills. */
function worstError(pred: Uint8Array, truth: Uint8Array, width: number): { x: number; y: number; label: 0 | 1 } | undefined {
  let best: { x: number; y: number; label: 0 | 1; size: number } | undefined;
  const seen = new Uint8Array(pred.length);
  for (let start = 0; start < pred.length; start++) {
    if (pred[start] === truth[start] || seen[start]) continue;
    const label = truth[start] as 0 | 1;
    const stack = [start];
    seen[start] = 1;
    const pixels: number[] = [];
    while (stack.length) {
      const p = stack.pop()!;
      pixels.push(p);
      for (const q of [p - 1, p + 1, p - width, p + width]) {
        if (q >= 0 && q < pred.length && !seen[q] && pred[q] !== truth[q] && truth[q] === label && Math.abs((q % width) - (p % width)) <= 1) {
          seen[q] = 1;
          stack.push(q);
        }
      }
    }
    if (!best || pixels.length > best.size) {
      const mid = pixels.reduce((a, p) => [a[0]! + (p % width), a[1]! + Math.floor(p / width)], [0, 0]);
      // Of the region's pixels, the one nearest its centroid: inside even for curved regions.
      const cx = mid[0]! / pixels.length;
      const cy = mid[1]! / pixels.length;
      const near = pixels.reduce((a, p) => ((p % width) - cx) ** 2 + (Math.floor(p / width) - cy) ** 2 < ((a % width) - cx) ** 2 + (Math.floor(a / width) - cy) ** 2 ? p : a);
      best = { x: near % width, y: Math.floor(near / width), label, size: pixels.length };
    }
  }
  return best && best.size >= 20 ? { x: best.x, y: best.y, label: best.label } : undefined;
}
