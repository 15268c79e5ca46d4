import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { REPO_ROOT, runPython } from "./helpers/python.ts";
import { loadScene, TINY_SAM_DIR } from "./helpers/scenes.ts";

const run = promisify(execFile);
const SCRIPTS = fileURLToPath(new URL("../scripts/train-tiny-sam/", import.meta.url));

// The training script must not rot: CI trains a few steps on small batches of real photographs
// and scenes, exports the result and loads it through the engine, the way the shipped model was made.
describe("scripts/train-tiny-sam smoke run", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tiny-sam-smoke-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("trains, logs, exports a loadable SAM-layout model, and evaluates it", { timeout: 600_000 }, async () => {
    const config = join(dir, "smoke.json");
    await writeFile(config, JSON.stringify({ steps: 3, images_per_step: 2, targets_per_image: 1, val_every: 3, val_scenes: 2, val_real: 2, warmup_steps: 1 }));
    await run("python3", ["train.py", "--config", config, "--out", join(dir, "run")], { cwd: SCRIPTS });
    const log = (await readFile(join(dir, "run", "log.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    expect(log[0].params).toBeGreaterThan(100_000);
    expect(log.at(-1)).toMatchObject({ step: 3 });
    for (const key of ["real_1click", "real_box", "real_3click", "synthetic_1click", "synthetic_box", "synthetic_3click"]) {
      expect(log.at(-1)[key]).toBeGreaterThanOrEqual(0);
      expect(log.at(-1)[key]).toBeLessThanOrEqual(1);
    }

    await run("python3", ["export.py", "--checkpoint", join(dir, "run", "checkpoint.pt"), "--out", join(dir, "model")], { cwd: SCRIPTS });
    const manifest = JSON.parse(await readFile(join(dir, "model", "manifest.json"), "utf8"));
    expect(Object.keys(manifest.sha256).sort()).toEqual(["tiny-sam.decoder-batch.onnx", "tiny-sam.decoder.onnx", "tiny-sam.encoder.onnx"]);

    const model = await SamModel.load(join(dir, "model"));
    const scene = await loadScene("small");
    const result = await new SegmentEngine(model).segment(scene.bytes, { box: [10, 10, 120, 90] });
    expect(result.masks[0]!.mask.data.length).toBe(scene.width * scene.height);
    await model.release();

    const { stdout } = await run("python3", ["evaluate.py", "--model", join(dir, "model"), "--scenes", "2"], { cwd: SCRIPTS });
    const metrics = JSON.parse(stdout);
    expect(metrics.miou_1click).toBeGreaterThanOrEqual(0);
    expect(metrics.miou_by_clicks).toHaveLength(4);
  });

  it("a second phase starts from the first run's checkpoint, and refuses one at another step", { timeout: 600_000 }, async () => {
    const phase = (initStep: number) => JSON.stringify({ init_from: "run/checkpoint.pt", init_step: initStep, seed: 2, steps: 2, images_per_step: 2, targets_per_image: 1, val_every: 2, val_scenes: 2, val_real: 2, warmup_steps: 1 });
    await writeFile(join(dir, "wrong.json"), phase(7));
    const wrong = await run("python3", ["train.py", "--config", join(dir, "wrong.json"), "--out", join(dir, "wrong")], { cwd: SCRIPTS }).catch((err: { stderr: string }) => err);
    expect((wrong as { stderr: string }).stderr).toMatch(/run\/checkpoint\.pt is at step 3, the config expects 7/);

    // The path is relative to the config file, and kept as written in the checkpoint and the manifest.
    await writeFile(join(dir, "phase2.json"), phase(3));
    await run("python3", ["train.py", "--config", join(dir, "phase2.json"), "--out", join(dir, "run2")], { cwd: SCRIPTS });
    const log = (await readFile(join(dir, "run2", "log.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    expect(log.at(-1)).toMatchObject({ step: 2 });
    await run("python3", ["export.py", "--checkpoint", join(dir, "run2", "checkpoint.pt"), "--out", join(dir, "model2")], { cwd: SCRIPTS });
    const manifest = JSON.parse(await readFile(join(dir, "model2", "manifest.json"), "utf8"));
    expect(manifest.source).toContain('"init_from": "run/checkpoint.pt"');
  });

  it("rebuilds a checkpoint from an export that reproduces it; a frozen-BatchNorm phase trains on from there, stops and resumes", { timeout: 600_000 }, async () => {
    const rebuild = async (model: string, out: string, step: number) => {
      const { stdout } = await run("python3", ["from_onnx.py", "--model", join(dir, model), "--out", join(dir, out, "checkpoint.pt"), "--step", String(step)], { cwd: SCRIPTS });
      const check = JSON.parse(stdout.split("\n")[0]!);
      expect(check.max_abs_diff).toBeLessThan(1e-4);
    };
    await rebuild("model", "rebuilt", 3);

    const phase = { init_from: "rebuilt/checkpoint.pt", init_step: 3, freeze_bn: true, seed: 3, steps: 2, images_per_step: 2, targets_per_image: 1, val_every: 2, save_every: 1, val_scenes: 2, val_real: 2, warmup_steps: 1 };
    await writeFile(join(dir, "phase3.json"), JSON.stringify(phase));
    // Stopped by the clock before its first step: the checkpoint it leaves is resumed to the end.
    await run("python3", ["train.py", "--config", join(dir, "phase3.json"), "--out", join(dir, "run3"), "--minutes", "0"], { cwd: SCRIPTS });
    await run("python3", ["train.py", "--config", join(dir, "phase3.json"), "--out", join(dir, "run3"), "--resume"], { cwd: SCRIPTS });
    const log = (await readFile(join(dir, "run3", "log.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    expect(log[0].init).toMatchObject({ new: [], dropped: [] }); // the same architecture: every weight carried over
    expect(log.at(-1)).toMatchObject({ step: 2 });
    await writeFile(join(dir, "other.json"), JSON.stringify({ ...phase, seed: 4 }));
    const other = await run("python3", ["train.py", "--config", join(dir, "other.json"), "--out", join(dir, "run3"), "--resume"], { cwd: SCRIPTS }).catch((err: { stderr: string }) => err);
    expect((other as { stderr: string }).stderr).toMatch(/--resume: .*checkpoint\.pt was made with another config/);
    // Its export rebuilds too.
    await run("python3", ["export.py", "--checkpoint", join(dir, "run3", "checkpoint.pt"), "--out", join(dir, "model3")], { cwd: SCRIPTS });
    await rebuild("model3", "rebuilt3", 2);

    // Not ONNX files of a tiny SAM: a clear refusal, not a checkpoint of garbage.
    const bad = await run("python3", ["from_onnx.py", "--model", dir, "--out", join(dir, "bad.pt"), "--step", "1"], { cwd: SCRIPTS }).catch((err: { stderr: string }) => err);
    expect((bad as { stderr: string }).stderr).toMatch(/tiny-sam\.encoder\.onnx: not found/);
    await writeFile(join(dir, "tiny-sam.encoder.onnx"), "not a model");
    await writeFile(join(dir, "tiny-sam.decoder.onnx"), "not a model");
    const garbage = await run("python3", ["from_onnx.py", "--model", dir, "--out", join(dir, "bad.pt"), "--step", "1"], { cwd: SCRIPTS }).catch((err: { stderr: string }) => err);
    expect((garbage as { stderr: string }).stderr).toMatch(/tiny-sam\.(en|de)coder\.onnx: not an ONNX model/);
  });

  // The real-photo figures of the model card come from noc.py: two DAVIS objects, three clicks,
  // GrabCut and Everything included, so that a broken script fails here and not in a later run.
  it("noc.py measures the bundled model and GrabCut on real photographs by the clicking protocol", { timeout: 120_000 }, async () => {
    const out = join(dir, "noc.json");
    const result = await runPython("scripts/train-tiny-sam/noc.py", ["--model", TINY_SAM_DIR, "--limit", "2", "--clicks", "3", "--grabcut", "--everything", "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/\[2\/2 \d+s\] 001 /); // per-object progress
    const report = JSON.parse(await readFile(out, "utf8"));
    expect(report).toMatchObject({ objects: 2, protocol: { clicks: 3 } });
    const figures = [report.models[TINY_SAM_DIR], report.grabcut];
    for (const f of figures) {
      expect(f.objects).toBe(2);
      for (const noc of [f.noc85, f.noc90]) {
        expect(noc).toBeGreaterThanOrEqual(1);
        expect(noc).toBeLessThanOrEqual(3);
      }
      expect(f.never_90).toBeGreaterThanOrEqual(0);
      expect(f.never_90).toBeLessThanOrEqual(2);
      expect(Object.keys(f.miou_at_clicks)).toEqual(["1", "2", "3"]);
      for (const v of [...Object.values(f.miou_at_clicks), f.miou_box, f.speckle]) {
        expect(v).toBeGreaterThanOrEqual(0);
        expect(v).toBeLessThanOrEqual(1);
      }
    }
    const everything = report.models[TINY_SAM_DIR].everything;
    expect(everything.settings.points_per_side).toBe(16);
    expect(everything.at_settings.recall_iou50).toBeGreaterThanOrEqual(0);
    expect(everything.at_settings.recall_iou50).toBeLessThanOrEqual(1);
    // The sweep the manifest's thresholds are calibrated from: predicted IoU x stability.
    expect(Object.keys(everything.grid)).toHaveLength(49);
    for (const cell of Object.values(everything.grid) as { recall_iou50: number; empty_frames: number }[]) {
      expect(cell.recall_iou50).toBeLessThanOrEqual(1);
      expect(cell.empty_frames).toBeLessThanOrEqual(2);
    }

    const missing = await runPython("scripts/train-tiny-sam/noc.py", ["--model", TINY_SAM_DIR, "--data", join(dir, "nowhere")]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--data .*nowhere: no masks\/\*\.png/);

    // A training set's 0/255 masks (one object each) are read with --binary: without it, 255 is DAVIS's "ignore".
    const coco = join(REPO_ROOT, "..", "shared", "datasets", "train", "coco-mval");
    const binaryOut = join(dir, "binary.json");
    const binary = await runPython("scripts/train-tiny-sam/noc.py", ["--model", TINY_SAM_DIR, "--data", coco, "--binary", "--stride", "10", "--limit", "1", "--clicks", "1", "--out", binaryOut]);
    expect(binary.code, binary.stderr).toBe(0);
    expect(JSON.parse(await readFile(binaryOut, "utf8")).models[TINY_SAM_DIR].miou_at_clicks["1"]).toBeGreaterThan(0);
    const badStride = await runPython("scripts/train-tiny-sam/noc.py", ["--model", TINY_SAM_DIR, "--stride", "0"]);
    expect(badStride.code).not.toBe(0);
    expect(badStride.stderr).toMatch(/--stride and --limit must be whole numbers of 1 or more/);
  });
});
