/**
 * Size, raw onnxruntime latency and peak memory of models' encoders and decoders, measured here
 * and now, for every layout the agent loads (SAM, samexporter, MobileSAM, EdgeSAM, EfficientSAM,
 * SAM 2, transformers.js / onnx-community).
 *
 *   npx tsx bench/model-latency.ts [MODEL...] [--runs N] [--settings agent,one,spin] [--isolate]
 *
 * MODEL is a folder or FOLDER#NAME, as `--model` takes it. Prints JSON per model and session
 * setting: file sizes, median/p90 milliseconds inside session.run (the model's own time: the
 * image is decoded and resized once, beforehand), and each median over its budget (the bundled
 * model's, issue 18: encoder 250 ms, decoder 15 ms, 24 MB for all its files), so a ratio above 1 is a budget missed on
 * this machine. Sessions get the agent's own options (`agent`, the default: onnxruntime's thread
 * count, no spinning) or a variant of them: `one` runs one thread, `spin` lets the threads
 * busy-wait. With several folders or settings, their runs alternate in blocks so that every one
 * sees the same machine, and each median is also given over the first's: the machine is noisy
 * (the same decoder's median moves by half between quiet and busy hours), so those ratios are
 * what compares, not absolute times across runs.
 *
 * `--isolate` measures each model in a process of its own, one after the other, and adds its
 * peak RSS (the process's high-water mark after loading it and running it: what a box must
 * hold); the models then do not alternate, so compare their times with care.
 */
import { execFile } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { BUNDLED_MODEL_DIR, SAMPLES_DIR } from "../agent/src/config/paths.ts";
import { manifestFiles } from "../agent/src/model/manifest.ts";
import { DEFAULT_SESSION_CONFIG, SamModel, type DecoderInputs, type EncoderImage, type SessionConfig } from "../agent/src/model/sam-model.ts";
import { loadForModel } from "../agent/src/segment/preprocess.ts";
import { wholeNumber } from "./options.ts";

const BUDGET = { encoderMs: 250, decoderMs: 15, totalBytes: 24 * 1000 * 1000 };
const BLOCKS = 5;
const IMAGE = join(SAMPLES_DIR, "shapes-portrait.jpg");

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function summary(ms: number[]): { median: number; p90: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  return { median: +percentile(sorted, 0.5).toFixed(2), p90: +percentile(sorted, 0.9).toFixed(2) };
}

const SETTINGS: Record<string, SessionConfig> = {
  agent: DEFAULT_SESSION_CONFIG,
  one: { ...DEFAULT_SESSION_CONFIG, intraOpThreads: 1 },
  spin: { ...DEFAULT_SESSION_CONFIG, spinWait: true },
};

interface Subject {
  spec: string;
  setting: string;
  model: SamModel;
  encode: () => Promise<unknown>;
  decode: () => Promise<unknown>;
  encoderMs: number[];
  decoderMs: number[];
}

/** `runs` calls after one untimed one, each timed by the model's own session.run clock. */
async function time(model: SamModel, runs: number, fn: () => Promise<unknown>, into: number[]): Promise<void> {
  await fn();
  for (let i = 0; i < runs; i++) {
    const before = model.sessionMs;
    await fn();
    into.push(model.sessionMs - before);
  }
}

async function load(spec: string, setting: string, bytes: Buffer): Promise<Subject> {
  const model = await SamModel.load(spec, SETTINGS[setting]);
  const image: EncoderImage = await loadForModel(bytes, model.input);
  const embedding = await model.encode(image);
  // A click and SAM's padding point, in the encoder's frame, on the 480x640 sample.
  const sx = image.resizedWidth / image.width;
  const sy = image.resizedHeight / image.height;
  const inputs: DecoderInputs = {
    embedding,
    coords: Float32Array.of(240 * sx, 320 * sy, 0, 0),
    labels: Float32Array.of(1, -1),
    batch: 1,
    points: 2,
  };
  return { spec, setting, model, encode: () => model.encode(image), decode: () => model.decode(inputs), encoderMs: [], decoderMs: [] };
}

async function measure(specs: string[], settings: string[], runs: number): Promise<Record<string, unknown>[]> {
  const bytes = await readFile(IMAGE);
  const subjects: Subject[] = [];
  for (const spec of specs) for (const setting of settings) subjects.push(await load(spec, setting, bytes));
  for (let block = 0; block < BLOCKS; block++) {
    for (const s of subjects) {
      await time(s.model, Math.ceil(runs / BLOCKS), s.encode, s.encoderMs);
      await time(s.model, Math.ceil((runs * 5) / BLOCKS), s.decode, s.decoderMs);
    }
  }
  const first = { encoder: summary(subjects[0]!.encoderMs).median, decoder: summary(subjects[0]!.decoderMs).median };
  const results = [];
  for (const s of subjects) {
    const { manifest, dir } = s.model;
    const files = manifestFiles(manifest);
    const sizes = Object.fromEntries(await Promise.all(files.map(async (f) => [f, (await stat(join(dir, f))).size] as const)));
    const total = Object.values(sizes).reduce((sum, n) => sum + n, 0);
    const enc = summary(s.encoderMs);
    const dec = summary(s.decoderMs);
    results.push({
      model: manifest.name,
      spec: s.spec,
      layout: s.model.layout,
      setting: s.setting,
      intra_op_threads: SETTINGS[s.setting]!.intraOpThreads,
      bytes: sizes,
      all_files_bytes: total,
      encoder_ms: enc,
      decoder_ms: dec,
      decoder_orig_size: "480x640",
      ratio_to_budget: {
        encoder: +(enc.median / BUDGET.encoderMs).toFixed(3),
        decoder: +(dec.median / BUDGET.decoderMs).toFixed(3),
        size: +(total / BUDGET.totalBytes).toFixed(3),
      },
      ...(subjects.length > 1 ? { median_over_first: { encoder: +(enc.median / first.encoder).toFixed(3), decoder: +(dec.median / first.decoder).toFixed(3) } } : {}),
    });
    await s.model.release();
  }
  return results;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: "string", default: "20" }, settings: { type: "string", default: "agent" }, isolate: { type: "boolean" }, child: { type: "boolean" } },
});
const runs = wholeNumber("runs", values.runs, BLOCKS);
const settings = values.settings.split(",");
const unknown = settings.filter((s) => !(s in SETTINGS));
if (unknown.length > 0) throw new Error(`--settings: unknown ${unknown.join(", ")} (known: ${Object.keys(SETTINGS).join(", ")})`);
const specs = positionals.length > 0 ? positionals : [BUNDLED_MODEL_DIR];

let results: Record<string, unknown>[];
if (values.isolate) {
  results = [];
  const run = promisify(execFile);
  const self = fileURLToPath(import.meta.url);
  for (const spec of specs) {
    const { stdout } = await run(process.execPath, ["--import", "tsx", self, spec, "--child", "--runs", String(runs), "--settings", values.settings], { maxBuffer: 16 * 1024 * 1024 });
    results.push(...(JSON.parse(stdout) as Record<string, unknown>[]));
  }
} else {
  results = await measure(specs, settings, runs);
  // maxRSS is the whole process's high-water mark: one model's own only in a process of its own.
  if (values.child) for (const r of results) r.peak_rss_mb = Math.round(process.resourceUsage().maxRSS / 1024);
}
console.log(JSON.stringify(values.child ? results : results.length === 1 ? results[0] : results, null, 2));
