/**
 * Size and raw onnxruntime latency of models' encoders and decoders, measured here and now.
 *
 *   npx tsx bench/model-latency.ts [MODEL_DIR...] [--runs N] [--settings agent,one,spin]
 *
 * Prints JSON per model and session setting: file sizes, median/p90 milliseconds per
 * session.run, and each median over its budget (the bundled model's, issue 18: encoder 250 ms,
 * decoder 15 ms, 24 MB for all its files), so a ratio above 1 is a budget missed on this machine. Sessions get the
 * agent's own options (`agent`, the default: onnxruntime's thread count, no spinning) or a
 * variant of them: `one` runs one thread, `spin` lets the threads busy-wait. With several
 * folders or settings (say the bundled model and an earlier one checked out of git), their runs
 * alternate in blocks so that every one sees the same machine, and each median is also given
 * over the first's: the machine is noisy (the same decoder's median moves by half between quiet
 * and busy hours), so those ratios are what compares, not absolute times across runs.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { readManifest, type ModelManifest } from "../agent/src/model/manifest.ts";
import { DEFAULT_SESSION_CONFIG, sessionOptions } from "../agent/src/model/sam-model.ts";
import { BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";
import { wholeNumber } from "./options.ts";

const BUDGET = { encoderMs: 250, decoderMs: 15, totalBytes: 24 * 1000 * 1000 };
const BLOCKS = 5;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function summary(ms: number[]): { median: number; p90: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  return { median: +percentile(sorted, 0.5).toFixed(2), p90: +percentile(sorted, 0.9).toFixed(2) };
}

/** `runs` timed calls after one untimed one, appended to `into`. */
async function time(runs: number, fn: () => Promise<unknown>, into: number[]): Promise<void> {
  await fn();
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    into.push(performance.now() - t);
  }
}

const SETTINGS: Record<string, ort.InferenceSession.SessionOptions> = {
  agent: sessionOptions(DEFAULT_SESSION_CONFIG, ["cpu"]),
  one: sessionOptions({ ...DEFAULT_SESSION_CONFIG, intraOpThreads: 1 }, ["cpu"]),
  spin: sessionOptions({ ...DEFAULT_SESSION_CONFIG, spinWait: true }, ["cpu"]),
};

interface Subject {
  dir: string;
  setting: string;
  manifest: ModelManifest;
  encode: () => Promise<unknown>;
  decode: () => Promise<unknown>;
  release: () => Promise<void>;
  encoderMs: number[];
  decoderMs: number[];
}

async function load(dir: string, setting: string): Promise<Subject> {
  const manifest = await readManifest(dir);
  const size = manifest.inputSize;
  const encoder = await ort.InferenceSession.create(join(dir, manifest.encoder), SETTINGS[setting]);
  const decoder = await ort.InferenceSession.create(join(dir, manifest.decoder), SETTINGS[setting]);
  const image = new ort.Tensor("float32", new Float32Array(3 * size * size).map(() => Math.random() * 2 - 1), [1, 3, size, size]);
  const input = { [encoder.inputNames[0]!]: image };
  const embedding = (await encoder.run(input))[encoder.outputNames.includes("image_embeddings") ? "image_embeddings" : encoder.outputNames[0]!]!;
  const feeds: Record<string, ort.Tensor> = {
    image_embeddings: embedding,
    point_coords: new ort.Tensor("float32", Float32Array.of(400, 300, 0, 0), [1, 2, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.of(1, -1), [1, 2]),
  };
  if (decoder.inputNames.includes("mask_input")) {
    feeds.mask_input = new ort.Tensor("float32", new Float32Array(256 * 256), [1, 1, 256, 256]);
    feeds.has_mask_input = new ort.Tensor("float32", Float32Array.of(0), [1]);
  }
  if (decoder.inputNames.includes("orig_im_size")) feeds.orig_im_size = new ort.Tensor("float32", Float32Array.of(480, 640), [2]);
  return {
    dir,
    setting,
    manifest,
    encode: () => encoder.run(input),
    decode: () => decoder.run(feeds),
    release: async () => void (await Promise.all([encoder.release(), decoder.release()])),
    encoderMs: [],
    decoderMs: [],
  };
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: "string", default: "20" }, settings: { type: "string", default: "agent" } } });
const runs = wholeNumber("runs", values.runs, BLOCKS);
const settings = values.settings.split(",");
const unknown = settings.filter((s) => !(s in SETTINGS));
if (unknown.length > 0) throw new Error(`--settings: unknown ${unknown.join(", ")} (known: ${Object.keys(SETTINGS).join(", ")})`);
const subjects: Subject[] = [];
for (const dir of positionals.length > 0 ? positionals : [BUNDLED_MODEL_DIR]) for (const setting of settings) subjects.push(await load(dir, setting));

for (let block = 0; block < BLOCKS; block++) {
  for (const s of subjects) {
    await time(Math.ceil(runs / BLOCKS), s.encode, s.encoderMs);
    await time(Math.ceil((runs * 5) / BLOCKS), s.decode, s.decoderMs);
  }
}

const first = { encoder: summary(subjects[0]!.encoderMs).median, decoder: summary(subjects[0]!.decoderMs).median };
const results = [];
for (const s of subjects) {
  const { manifest, dir, setting } = s;
  const files = [manifest.encoder, manifest.decoder, ...(manifest.decoderBatch ? [manifest.decoderBatch] : [])];
  const bytes = Object.fromEntries(await Promise.all(files.map(async (f) => [f, (await stat(join(dir, f))).size] as const)));
  const pairBytes = bytes[manifest.encoder]! + bytes[manifest.decoder]!;
  const allBytes = Object.values(bytes).reduce((a, b) => a + b, 0);
  const enc = summary(s.encoderMs);
  const dec = summary(s.decoderMs);
  results.push({
    model: manifest.name,
    dir,
    setting,
    intra_op_threads: SETTINGS[setting]!.intraOpNumThreads,
    bytes,
    encoder_plus_decoder_bytes: pairBytes,
    all_files_bytes: allBytes,
    encoder_ms: enc,
    decoder_ms: dec,
    decoder_orig_size: "640x480",
    ratio_to_budget: {
      encoder: +(enc.median / BUDGET.encoderMs).toFixed(3),
      decoder: +(dec.median / BUDGET.decoderMs).toFixed(3),
      size: +(allBytes / BUDGET.totalBytes).toFixed(3),
    },
    ...(subjects.length > 1 ? { median_over_first: { encoder: +(enc.median / first.encoder).toFixed(3), decoder: +(dec.median / first.decoder).toFixed(3) } } : {}),
  });
  await s.release();
}
console.log(JSON.stringify(subjects.length === 1 ? results[0] : results, null, 2));
