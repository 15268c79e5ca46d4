import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

// The bundled model is the fixture of every other test: this one checks that it loads
// through onnxruntime-node with SAM's reference interface and that its masks find objects.
describe("bundled tiny-sam model", () => {
  let model: SamModel;
  let engine: SegmentEngine;
  let scene: Scene;

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    engine = new SegmentEngine(model);
    scene = await loadScene("large");
  });
  afterAll(async () => model.release());

  it("has SAM's reference ONNX layout", () => {
    expect(model.layout).toEqual({
      family: "sam",
      encoder: "SAM image encoder (normalised 1024x1024 input)",
      decoder: "SAM mask decoder (mask input, original-size masks)",
    });
    expect(model.canBatch).toBe(true);
  });

  it("segments the clicked object, and another object for another click", async () => {
    // Two clear objects of the scene (flat fills, medium size), where the model is reliable.
    const [a, b] = [scene.objects[2], scene.objects[3]];
    const first = await engine.segment(scene.bytes, { points: [{ x: a!.click[0], y: a!.click[1], label: 1 }] });
    const second = await engine.segment(scene.bytes, { points: [{ x: b!.click[0], y: b!.click[1], label: 1 }] });

    expect(first.masks).toHaveLength(3); // a lone click is ambiguous: SAM's three answers
    expect(first.masks[0]!.mask.width).toBe(scene.width);
    expect(first.masks[0]!.mask.height).toBe(scene.height);
    expect(maskIoU(first.masks[0]!.mask, scene.truth(a!.label))).toBeGreaterThan(0.9);
    expect(maskIoU(second.masks[0]!.mask, scene.truth(b!.label))).toBeGreaterThan(0.9);
    expect(maskIoU(first.masks[0]!.mask, second.masks[0]!.mask)).toBeLessThan(0.1);
    expect(second.cached).toBe(true); // same bytes: only the decoder ran
  });
});
