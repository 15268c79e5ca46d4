/**
 * int8 against float, measured side by side in one run on this machine:
 *
 *   npx tsx bench/quantize.ts [--tiny-int8 DIR] [--vit-b DIR --vit-b-int8 DIR] [--runs N] [--skip-vit-b]
 *
 * Prints JSON (budgets from the quantisation issue):
 * - tiny: the bundled model and its int8 folder (scripts/quantize, default
 *   models/quantized/tiny-sam-int8): file sizes and their ratio (<= 0.35); through the engine
 *   on every test fixture scene, a click at each object's click point and a box at its bbox:
 *   mIoU of the int8 masks against the float masks (agreement, >= 0.95) and of each against the
 *   ground truth (drop <= 0.02); and what the quantise script measured, from the int8 manifest.
 * - vit_b: a randomly initialised SAM ViT-B (scripts/export) and its int8 (scripts/quantize,
 *   both made into .cache/models/ when missing, which takes minutes): median encoder and decoder
 *   latency through the engine's model sessions, runs interleaved, and fp32/int8 speed-ups
 *   (encoder >= 1.8, decoder >= 1.0); peak RSS of a fresh process running the engine on each.
 *   --vit-b and --vit-b-int8 measure another float/int8 pair instead (a real sam-vit-base
 *   export, say); folders given that way are never generated.
 */
import { execFile } from "node:child_process";
import { access, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { BUNDLED_FP32_MODEL_DIR, BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";
import { SamModel, type ImageFeatures } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { maskIoU, type BinaryMask } from "../agent/src/segment/mask.ts";
import { loadScene, SCENES_DIR } from "../test/helpers/scenes.ts";
import { median } from "./stats.ts";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../", import.meta.url));
const CACHE = join(ROOT, ".cache", "models");

const { values } = parseArgs({
  options: {
    "tiny-int8": { type: "string", default: BUNDLED_MODEL_DIR },
    "vit-b": { type: "string" },
    "vit-b-int8": { type: "string" },
    runs: { type: "string", default: "5" },
    "skip-vit-b": { type: "boolean", default: false },
  },
});
const runs = Number(values.runs);
const r = (v: number, digits = 3) => +v.toFixed(digits);

function mean(xs: number[]): number {
  return xs.reduce((s, v) => s + v, 0) / xs.length;
}

/** Two empty predictions agree. */
function agreement(a: BinaryMask, b: BinaryMask): number {
  return a.data.some(Boolean) || b.data.some(Boolean) ? maskIoU(a, b) : 1;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function folderBytes(model: SamModel): Promise<Record<string, number>> {
  const m = model.manifest;
  const files = [m.encoder, m.decoder, ...(m.decoderBatch ? [m.decoderBatch] : [])];
  return Object.fromEntries(await Promise.all(files.map(async (f) => [f, (await stat(join(model.dir, f))).size] as const)));
}

async function tiny(int8Dir: string) {
  if (!(await exists(join(int8Dir, "manifest.json")))) {
    throw new Error(`${int8Dir} has no int8 model; make it with the command in scripts/quantize/README.md`);
  }
  const [fp32, int8] = await Promise.all([SamModel.load(BUNDLED_FP32_MODEL_DIR), SamModel.load(int8Dir)]);
  const [fpBytes, qBytes] = await Promise.all([folderBytes(fp32), folderBytes(int8)]);
  const total = (b: Record<string, number>) => Object.values(b).reduce((s, v) => s + v, 0);
  const engines = { fp32: new SegmentEngine(fp32), int8: new SegmentEngine(int8) };
  const iou = { agree: { oneClick: [] as number[], box: [] as number[] }, fp32: { oneClick: [] as number[], box: [] as number[] }, int8: { oneClick: [] as number[], box: [] as number[] } };
  const names = (await readdir(SCENES_DIR)).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5));
  for (const name of names) {
    const scene = await loadScene(name);
    for (const o of scene.objects) {
      const truth = scene.truth(o.label);
      const prompts = {
        oneClick: { points: [{ x: o.click[0], y: o.click[1], label: 1 as const }] },
        box: { box: [o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]] as [number, number, number, number] },
      };
      for (const kind of ["oneClick", "box"] as const) {
        const f = (await engines.fp32.segment(scene.bytes, prompts[kind])).masks[0]!.mask;
        const q = (await engines.int8.segment(scene.bytes, prompts[kind])).masks[0]!.mask;
        iou.agree[kind].push(agreement(f, q));
        iou.fp32[kind].push(maskIoU(f, truth));
        iou.int8[kind].push(maskIoU(q, truth));
      }
    }
  }
  const script = JSON.parse(await readFile(join(int8Dir, "manifest.json"), "utf8"));
  await Promise.all([fp32.release(), int8.release()]);
  const per = (o: { oneClick: number[]; box: number[] }) => ({ oneClick: r(mean(o.oneClick), 4), box: r(mean(o.box), 4) });
  return {
    fp32: { model: fp32.manifest.name, source: fp32.manifest.source, bytes: fpBytes },
    int8: { model: int8.manifest.name, dir: int8Dir, method: script.method?.encoder, bytes: qBytes },
    size_ratio: r(total(qBytes) / total(fpBytes), 4),
    engine_on_fixtures: {
      scenes: names.length,
      targets: iou.agree.box.length,
      agreement_miou: per(iou.agree),
      ground_truth_miou: { fp32: per(iou.fp32), int8: per(iou.int8) },
      ground_truth_drop: { oneClick: r(mean(iou.fp32.oneClick) - mean(iou.int8.oneClick), 4), box: r(mean(iou.fp32.box) - mean(iou.int8.box), 4) },
    },
    quantize_script: { agreement: script.agreement, groundTruth: script.groundTruth, sizeRatio: script.sizeRatio, latencyMs: script.latencyMs, budget: script.budget, evaluation: script.evaluation },
  };
}

async function python(args: string[]): Promise<void> {
  console.error(`bench/quantize: python3 ${args.join(" ")}`);
  await run("python3", args, { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
}

/** The random ViT-B pair in .cache/models, exported and quantised the first time. */
async function randomVitB(): Promise<{ fp32: string; int8: string }> {
  const VIT_B = join(CACHE, "sam-vit-b-random");
  const VIT_B_INT8 = join(CACHE, "sam-vit-b-random-int8");
  if (!(await exists(join(VIT_B, "manifest.json")))) {
    await python(["scripts/export/export_hf_sam.py", "--random-config", "vit-b", "--out", VIT_B]);
  }
  if (!(await exists(join(VIT_B_INT8, "manifest.json")))) {
    const m = JSON.parse(await readFile(join(VIT_B, "manifest.json"), "utf8"));
    // Random weights: its masks mean nothing, so the quality budget is reported, not enforced.
    await python([
      "scripts/quantize/quantize.py",
      ...["--encoder", join(VIT_B, m.encoder), "--decoder", join(VIT_B, m.decoder), "--decoder-batch", join(VIT_B, m.decoderBatch)],
      ...["--calibration-scenes", "8", "--eval-scenes", "4", "--latency-runs", "2", "--budget", "report", "--out", VIT_B_INT8],
    ]);
  }
  return { fp32: VIT_B, int8: VIT_B_INT8 };
}

async function rss(dir: string): Promise<unknown> {
  const script = fileURLToPath(new URL("quantize-rss.ts", import.meta.url));
  const { stdout } = await run(process.execPath, ["--import", "tsx", script, dir], { cwd: ROOT });
  return JSON.parse(stdout);
}

async function vitB() {
  const given = values["vit-b"] !== undefined || values["vit-b-int8"] !== undefined;
  if (given && (values["vit-b"] === undefined || values["vit-b-int8"] === undefined)) throw new Error("--vit-b and --vit-b-int8 come together");
  const dirs = given ? { fp32: values["vit-b"]!, int8: values["vit-b-int8"]! } : await randomVitB();
  const models = { fp32: await SamModel.load(dirs.fp32), int8: await SamModel.load(dirs.int8) };
  const size = 1024;
  const image = { width: size, height: size, resizedWidth: size, resizedHeight: size, rgb: Uint8Array.from({ length: 3 * size * size }, () => Math.floor(Math.random() * 256)) };
  const emb: Record<string, ImageFeatures> = {};
  for (const [k, m] of Object.entries(models)) emb[k] = await m.encode(image); // warm-up
  const decodeInputs = (k: string) => ({
    embedding: emb[k]!,
    coords: Float32Array.of(400, 300, 0, 0),
    labels: Float32Array.of(1, -1),
    batch: 1,
    points: 2,
    origSize: { width: 640, height: 480 },
  });
  for (const [k, m] of Object.entries(models)) await m.decode(decodeInputs(k));
  const enc: Record<string, number[]> = { fp32: [], int8: [] };
  const dec: Record<string, number[]> = { fp32: [], int8: [] };
  for (let i = 0; i < runs; i++) {
    for (const [k, m] of Object.entries(models)) {
      const t = performance.now();
      await m.encode(image);
      enc[k]!.push(performance.now() - t);
    }
  }
  for (let i = 0; i < runs * 5; i++) {
    for (const [k, m] of Object.entries(models)) {
      const t = performance.now();
      await m.decode(decodeInputs(k));
      dec[k]!.push(performance.now() - t);
    }
  }
  const bytes = { fp32: await folderBytes(models.fp32), int8: await folderBytes(models.int8) };
  const script = JSON.parse(await readFile(join(dirs.int8, "manifest.json"), "utf8"));
  await Promise.all([models.fp32.release(), models.int8.release()]);
  const med = (o: Record<string, number[]>) => ({ fp32: r(median(o.fp32!), 1), int8: r(median(o.int8!), 1) });
  return {
    models: { fp32: dirs.fp32, int8: dirs.int8, int8_encoder_method: script.method?.encoder, source: models.fp32.manifest.source },
    bytes,
    runs: { encoder: runs, decoder: runs * 5 },
    median_ms: { encoder: med(enc), decoder: med(dec), decoder_orig_size: "640x480" },
    speedup_fp32_over_int8: { encoder: r(median(enc.fp32!) / median(enc.int8!)), decoder: r(median(dec.fp32!) / median(dec.int8!)) },
    peak_rss_engine: { int8: await rss(dirs.int8), fp32: await rss(dirs.fp32) },
  };
}

const result: Record<string, unknown> = { tiny: await tiny(values["tiny-int8"]!) };
if (!values["skip-vit-b"]) result.vit_b = await vitB();
console.log(JSON.stringify(result, null, 2));
