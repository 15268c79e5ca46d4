import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { runPython } from "./helpers/python.ts";
import { loadScene } from "./helpers/scenes.ts";

const EXPORT = "scripts/export/export_hf_sam.py";

// A transformers SamModel of a tiny random config goes through the exporter (which checks the
// ONNX files against transformers itself) and then through the engine: the layout a real
// sam-vit-base export has, without a download.
describe("scripts/export/export_hf_sam.py", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "export-hf-sam-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("exports a random tiny SamConfig that the engine loads and runs", { timeout: 300_000 }, async () => {
    const out = join(dir, "hf-sam-tiny");
    const result = await runPython(EXPORT, ["--random-config", "tiny", "--out", out]);
    expect(result.stderr).toContain("verified against transformers");
    expect(result.code).toBe(0);

    const manifest = JSON.parse(await readFile(join(out, "manifest.json"), "utf8"));
    expect(manifest).toMatchObject({
      name: "hf-sam-tiny",
      inputSize: 1024,
      encoder: "hf-sam-tiny.encoder.onnx",
      decoder: "hf-sam-tiny.decoder.onnx",
      decoderBatch: "hf-sam-tiny.decoder-batch.onnx",
    });
    expect(manifest.source).toMatch(/RANDOM WEIGHTS/);
    expect(Object.keys(manifest.sha256).sort()).toEqual(["hf-sam-tiny.decoder-batch.onnx", "hf-sam-tiny.decoder.onnx", "hf-sam-tiny.encoder.onnx"]);

    const model = await SamModel.load(out); // also checks every sha256
    try {
      expect(model.layout).toEqual({
        family: "sam",
        encoder: "SAM image encoder (normalised 1024x1024 input)",
        decoder: "SAM mask decoder (mask input, original-size masks)",
      });
      expect(model.canBatch).toBe(true);

      const scene = await loadScene("landscape");
      const engine = new SegmentEngine(model);
      const [a] = scene.objects;
      const click = await engine.segment(scene.bytes, { points: [{ x: a!.click[0], y: a!.click[1], label: 1 }] });
      expect(click.masks).toHaveLength(3); // SAM's three multimask answers: all four mask tokens were exported
      for (const m of click.masks) {
        expect([m.mask.width, m.mask.height]).toEqual([scene.width, scene.height]);
        expect(m.lowRes).toHaveLength(256 * 256);
        expect(Number.isFinite(m.confidence)).toBe(true);
      }
      const [x, y, w, h] = a!.bbox;
      const box = await engine.segment(scene.bytes, { box: [x, y, x + w, y + h] });
      expect(box.masks).toHaveLength(1);
      expect(box.cached).toBe(true);
      expect(box.masks[0]!.mask.data).toHaveLength(scene.width * scene.height);
    } finally {
      await model.release();
    }
  });

  it("refuses a checkpoint folder that does not exist", async () => {
    const result = await runPython(EXPORT, ["--checkpoint", join(dir, "nowhere"), "--out", join(dir, "x")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/nowhere: no such folder/);
  });

  it("refuses a transformers checkpoint that is not a SamModel", async () => {
    const bert = join(dir, "bert");
    await mkdir(bert, { recursive: true });
    await writeFile(join(bert, "config.json"), JSON.stringify({ model_type: "bert", hidden_size: 8 }));
    const result = await runPython(EXPORT, ["--checkpoint", bert, "--out", join(dir, "y")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/model_type is 'bert'; this exporter takes SamModel checkpoints/);
  });
});
