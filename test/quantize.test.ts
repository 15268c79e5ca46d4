import { createHash } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../agent/src/model/folder.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { runPython } from "./helpers/python.ts";
import { loadScene, TINY_SAM_DIR } from "./helpers/scenes.ts";

const QUANTIZE = "scripts/quantize/quantize.py";
// Small enough for CI on two cores; the committed model uses the defaults (see scripts/quantize/README.md).
const QUICK = ["--calibration-scenes", "4", "--eval-scenes", "3", "--latency-runs", "1", "--threads", "2"];

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

describe("scripts/quantize/quantize.py on the bundled tiny model", () => {
  let dir: string;
  let source: string[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "quantize-"));
    const m = await readManifest(TINY_SAM_DIR);
    source = ["--encoder", join(TINY_SAM_DIR, m.encoder), "--decoder", join(TINY_SAM_DIR, m.decoder), "--decoder-batch", join(TINY_SAM_DIR, m.decoderBatch!)];
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("writes an int8 model folder the engine loads, with its measurements in the manifest", { timeout: 300_000 }, async () => {
    const out = join(dir, "tiny-sam-int8");
    // --budget report: the bundled model may be a placeholder whose quality means nothing;
    // the verdict is still computed and recorded.
    const result = await runPython(QUANTIZE, [...source, ...QUICK, "--budget", "report", "--out", out]);
    expect(result.code, result.stderr).toBe(0);

    const manifest = JSON.parse(await readFile(join(out, "manifest.json"), "utf8"));
    const files = ["tiny-sam-int8.encoder.onnx", "tiny-sam-int8.decoder.onnx", "tiny-sam-int8.decoder-batch.onnx"] as const;
    expect(manifest).toMatchObject({ name: "tiny-sam-int8", encoder: files[0], decoder: files[1], decoderBatch: files[2], inputSize: 1024 });
    for (const f of files) {
      const bytes = await readFile(join(out, f));
      expect(manifest.sha256[f]).toBe(createHash("sha256").update(bytes).digest("hex"));
      expect(manifest.bytes[f]).toBe(bytes.length);
    }
    for (const role of ["encoder", "decoder", "decoderBatch"]) {
      const src = await readFile(manifest.sources[role].path);
      expect(manifest.sources[role].sha256).toBe(createHash("sha256").update(src).digest("hex"));
    }
    // The size budget holds for the architecture whatever its weights.
    expect(manifest.sizeRatio).toBeLessThanOrEqual(0.35);
    expect(Object.keys(manifest.candidates).sort()).toEqual(["dynamic", "static-qdq"]);
    expect(["dynamic", "static-qdq"]).toContain(manifest.method.encoder);
    expect(manifest.method.decoder).toBe("dynamic");
    expect(manifest.method.floatNodes).toHaveLength(2); // @first and @last
    if (manifest.method.encoder === "static-qdq") expect(manifest.calibration).toMatchObject({ kind: "scenes", images: 4, method: "minmax" });
    expect(manifest.ops[files[0]]).toEqual(expect.arrayContaining(manifest.method.encoder === "static-qdq" ? ["QuantizeLinear", "DequantizeLinear"] : ["DynamicQuantizeLinear"]));
    expect(manifest.ops[files[1]]).toEqual(expect.arrayContaining(["DynamicQuantizeLinear", "MatMulInteger"]));
    for (const kind of ["oneClick", "box"]) {
      expect(manifest.agreement[kind]).toBeGreaterThanOrEqual(0);
      expect(manifest.agreement[kind]).toBeLessThanOrEqual(1);
      expect(manifest.groundTruth.drop[kind]).toBeCloseTo(manifest.groundTruth.fp32[kind] - manifest.groundTruth.int8[kind], 3);
    }
    expect(manifest.evaluation.targets).toBeGreaterThan(0);
    expect(manifest.latencyMs.int8.encoderMs).toBeGreaterThan(0);
    expect(manifest.budget.passed).toBe(manifest.budget.failures.length === 0);

    const [int8, fp32] = await Promise.all([SamModel.load(out), SamModel.load(TINY_SAM_DIR)]);
    try {
      expect(int8.layout.encoder).toBe("SAM image encoder (normalised 1024x1024 input)");
      expect(int8.canBatch).toBe(true);
      const scene = await loadScene("landscape");
      const engines = [new SegmentEngine(int8), new SegmentEngine(fp32)] as const;
      const [a] = scene.objects;
      const click = await engines[0].segment(scene.bytes, { points: [{ x: a!.click[0], y: a!.click[1], label: 1 }] });
      expect(click.masks).toHaveLength(3);
      expect([click.masks[0]!.mask.width, click.masks[0]!.mask.height]).toEqual([scene.width, scene.height]);
      // Quantisation error, not quality: the int8 masks follow the float model's for the same boxes.
      const ious: number[] = [];
      for (const o of scene.objects) {
        const box: [number, number, number, number] = [o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]];
        const [q, f] = await Promise.all(engines.map((e) => e.segment(scene.bytes, { box })));
        ious.push(maskIoU(q!.masks[0]!.mask, f!.masks[0]!.mask));
      }
      expect(ious.reduce((s, v) => s + v, 0) / ious.length).toBeGreaterThan(0.8);
    } finally {
      await Promise.all([int8.release(), fp32.release()]);
    }
  });

  it("takes a decoder with EdgeSAM's interface (three inputs; scores and low-res masks)", { timeout: 300_000 }, async () => {
    const decoder = join(dir, "edgesam-style.decoder.onnx");
    const made = await runPython("test/helpers/edgesam_style_decoder.py", [source[3]!, decoder]);
    expect(made.code, made.stderr).toBe(0);
    const out = join(dir, "edgesam-style-int8");
    const result = await runPython(QUANTIZE, [...source.slice(0, 2), "--decoder", decoder, ...QUICK, "--encoder-method", "static", "--budget", "report", "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    const manifest = JSON.parse(await readFile(join(out, "manifest.json"), "utf8"));
    expect(manifest.decoderBatch).toBeUndefined();
    expect(manifest.evaluation.targets).toBeGreaterThan(0);

    const model = await SamModel.load(out);
    try {
      expect(model.layout.decoder).toBe("SAM mask decoder (no mask input, low-res masks only)");
      const scene = await loadScene("small");
      const { masks } = await new SegmentEngine(model).segment(scene.bytes, { box: [10, 10, 120, 90] });
      expect(masks[0]!.mask.data).toHaveLength(scene.width * scene.height);
    } finally {
      await model.release();
    }
  });

  it("exits 3 outside the budget and leaves --out alone (the files go to OUT.rejected)", { timeout: 300_000 }, async () => {
    const out = join(dir, "too-big");
    const result = await runPython(QUANTIZE, [...source, ...QUICK, "--encoder-method", "static", "--max-size-ratio", "0.01", "--out", out]);
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/outside the budget: size 0\.\d+x the float files > 0\.01x/);
    expect(await exists(out)).toBe(false);
    const rejected = JSON.parse(await readFile(join(`${out}.rejected`, "manifest.json"), "utf8"));
    expect(rejected.budget).toMatchObject({ passed: false, maxSizeRatio: 0.01 });
    expect(rejected.candidates["static-qdq"].failures).toEqual([expect.stringMatching(/^size /)]);
  });

  // Concurrent: each case is a Python start-up that fails before any model work.
  describe.concurrent("bad input fails with exit 2 and says what is wrong", () => {
    it("a missing encoder file", async ({ expect }) => {
      const result = await runPython(QUANTIZE, ["--encoder", join(dir, "missing.onnx"), ...source.slice(2), "--calibration-scenes", "1", "--out", join(dir, "a")]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--encoder .*missing\.onnx: no such file/);
    });

    it("a file that is not ONNX", async ({ expect }) => {
      const text = join(dir, "notes.onnx");
      await writeFile(text, "this is not a protobuf, whatever its name says\n");
      const result = await runPython(QUANTIZE, [...source.slice(0, 2), "--decoder", text, "--calibration-scenes", "1", "--out", join(dir, "b")]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--decoder .*notes\.onnx: not an ONNX model/);
    });

    it("a decoder passed as the encoder", async ({ expect }) => {
      const result = await runPython(QUANTIZE, ["--encoder", source[3]!, "--decoder", source[3]!, "--calibration-scenes", "1", "--out", join(dir, "c")]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--encoder .* is a SAM mask decoder .*did you swap --encoder and --decoder\?/);
    });

    it("an encoder passed as the decoder", async ({ expect }) => {
      const result = await runPython(QUANTIZE, ["--encoder", source[1]!, "--decoder", source[1]!, "--calibration-scenes", "1", "--out", join(dir, "d")]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--decoder .* is not a SAM mask decoder: it needs inputs image_embeddings, point_coords, point_labels.*did you swap/);
    });

    it("a calibration folder without images", async ({ expect }) => {
      const empty = join(dir, "empty");
      await mkdir(empty, { recursive: true });
      const result = await runPython(QUANTIZE, [...source, "--calibration", empty, "--out", join(dir, "e")]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--calibration .*empty: no images/);
    });

    it("no calibration set for a static encoder", async ({ expect }) => {
      const result = await runPython(QUANTIZE, [...source, "--out", join(dir, "f")]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--calibration DIR or --calibration-scenes N is required unless --encoder-method dynamic/);
    });
  });
});
