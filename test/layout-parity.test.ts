import { describe, expect, it } from "vitest";
import { goldens, runParity, type Golden } from "./helpers/parity.ts";

/**
 * The acceptance test of the model layouts: for each SAM-family project, a random-weight model
 * exported by that project's own export code, loaded from the folder layout it publishes (no
 * rename, no manifest), must give the masks that project's own Python predictor gives for the
 * same image and prompt (scripts/export/parity/make_layouts.py made both). `square.png` needs
 * no resize for any layout (1024x1024); `wide.png` (640x480) is resized by every one.
 */
const MIN_IOU = { "square.png": 0.99, "wide.png": 0.97 } as Record<string, number>;
/** Scores come from onnxruntime on one side and torch on the other. */
const SCORE_TOLERANCE = 0.005;

const all: Golden[] = await goldens();

describe("layout parity with the reference predictors", () => {
  it("covers every layout of the issue", () => {
    expect(all.map((g) => g.layout)).toEqual(["edge-sam", "efficient-sam", "hf-sam", "hf-sam2", "mobile-sam", "sam-official", "sam-samexporter", "sam2-samexporter"]);
  });

  for (const golden of all) {
    it(`${golden.layout}: every mask of every case matches ${golden.reference}`, { timeout: 120_000 }, async () => {
      const results = await runParity(golden);
      expect(results).toHaveLength(golden.cases.length);
      for (const r of results) {
        const where = `${golden.layout} ${r.image} ${r.case}`;
        expect(r.engineMasks, where).toBe(r.scores.golden.length);
        for (const iou of r.ious) expect(iou, `${where}: mask IoU`).toBeGreaterThanOrEqual(MIN_IOU[r.image]!);
        for (const [i, s] of r.scores.engine.entries()) expect(Math.abs(s - r.scores.golden[i]!), `${where}: score ${i}`).toBeLessThanOrEqual(SCORE_TOLERANCE);
      }
    });
  }
});
