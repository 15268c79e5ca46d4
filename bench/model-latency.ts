/**
 * Size and raw onnxruntime latency of a model's encoder and decoder, measured here and now.
 *
 *   npx tsx bench/model-latency.ts [MODEL_DIR] [--runs N]
 *
 * Prints JSON: file sizes, median/p90 milliseconds per session.run, and each median over its
 * budget (the bundled model's: encoder 150 ms, decoder 10 ms, 12 MB in all), so a ratio above
 * 1 is a budget missed on this machine. Medians over repeated runs after a warm-up; the
 * machine is noisy, so compare ratios from one run rather than absolute times across runs.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { readManifest } from "../agent/src/model/manifest.ts";
import { BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";

const BUDGET = { encoderMs: 150, decoderMs: 10, totalBytes: 12 * 1000 * 1000 };

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function time(runs: number, fn: () => Promise<unknown>): Promise<{ median: number; p90: number }> {
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { median: +percentile(ms, 0.5).toFixed(2), p90: +percentile(ms, 0.9).toFixed(2) };
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: "string", default: "20" } } });
const dir = positionals[0] ?? BUNDLED_MODEL_DIR;
const runs = Number(values.runs);
const manifest = await readManifest(dir);
const size = manifest.inputSize;
const encoder = await ort.InferenceSession.create(join(dir, manifest.encoder));
const decoder = await ort.InferenceSession.create(join(dir, manifest.decoder));

const image = new ort.Tensor("float32", new Float32Array(3 * size * size).map(() => Math.random() * 2 - 1), [1, 3, size, size]);
const embedding = (await encoder.run({ [encoder.inputNames[0]!]: image }))[encoder.outputNames.includes("image_embeddings") ? "image_embeddings" : encoder.outputNames[0]!]!;
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

const enc = await time(runs, () => encoder.run({ [encoder.inputNames[0]!]: image }));
const dec = await time(runs * 5, () => decoder.run(feeds));
const files = [manifest.encoder, manifest.decoder, ...(manifest.decoderBatch ? [manifest.decoderBatch] : [])];
const bytes = Object.fromEntries(await Promise.all(files.map(async (f) => [f, (await stat(join(dir, f))).size] as const)));
const pairBytes = bytes[manifest.encoder]! + bytes[manifest.decoder]!;
console.log(
  JSON.stringify(
    {
      model: manifest.name,
      bytes,
      encoder_plus_decoder_bytes: pairBytes,
      encoder_ms: enc,
      decoder_ms: dec,
      decoder_orig_size: "640x480",
      ratio_to_budget: {
        encoder: +(enc.median / BUDGET.encoderMs).toFixed(3),
        decoder: +(dec.median / BUDGET.decoderMs).toFixed(3),
        size: +(pairBytes / BUDGET.totalBytes).toFixed(3),
      },
    },
    null,
    2,
  ),
);
await Promise.all([encoder.release(), decoder.release()]);
