/**
 * Everything mode's time, today's settings against the ones before (commit 288e321), side by side:
 *
 *   npx tsx bench/everything.ts [MODEL_DIR ...] [--runs N] [--points-per-side N]
 *
 * For each model (default: the bundled int8 model, and the random-weight MobileSAM-layout model
 * of the layout tests), Everything runs on a 640x480 photograph (default 16x16 points, no score
 * filter, so every candidate goes through the whole path) in alternating blocks with 64 prompts
 * per decoder call (the default before) and with config/everything.ts's default (4). Both must
 * keep the same masks (the least IoU of each mask with its twin is printed); the JSON gives each's
 * median, the ratio and the stages of the last run (encode, decode with the score filters,
 * postprocess with NMS). The decoder's work per prompt is the same in both: what changes is
 * the batch's buffers.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { EVERYTHING_DEFAULTS } from "../agent/src/config/everything.ts";
import { BUNDLED_MODEL_DIR, SAMPLES_DIR } from "../agent/src/config/paths.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { segmentEverything, type EverythingOptions } from "../agent/src/segment/everything.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { wholeNumber } from "./options.ts";
import { median } from "./stats.ts";

const MOBILE_SAM = fileURLToPath(new URL("../test/fixtures/layouts/mobile-sam/", import.meta.url));
const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: "string", default: "4" }, "points-per-side": { type: "string", default: "16" } } });
const runs = wholeNumber("runs", values.runs, 1);
const pointsPerSide = wholeNumber("points-per-side", values["points-per-side"], 1);
const photo = await sharp(`${SAMPLES_DIR}/shapes-square.webp`).resize(640, 480, { fit: "fill" }).jpeg().toBuffer();

const settings: Record<string, Partial<EverythingOptions>> = {
  before: { pointsPerBatch: 64 },
  now: { pointsPerBatch: EVERYTHING_DEFAULTS.points_per_batch },
};
const out: Record<string, unknown> = { date: new Date().toISOString(), image: "640x480", points_per_side: pointsPerSide, runs };
for (const dir of positionals.length ? positionals : [BUNDLED_MODEL_DIR, MOBILE_SAM]) {
  const model = await SamModel.load(dir);
  const engine = new SegmentEngine(model);
  const base: Partial<EverythingOptions> = { pointsPerSide, predIouThresh: 0, stabilityScoreThresh: 0 };
  const results: Record<string, Awaited<ReturnType<typeof segmentEverything>>> = {};
  for (const [k, s] of Object.entries(settings)) results[k] = await segmentEverything(engine, photo, { ...base, ...s });
  // Each mask against its best twin: NMS may order equal scores differently.
  const ious = results.before!.masks.map((m) => Math.max(0, ...results.now!.masks.map((n) => maskIoU(m.mask, n.mask))));
  const times: Record<string, number[]> = { before: [], now: [] };
  for (let r = 0; r < runs; r++) {
    for (const [k, s] of Object.entries(settings)) {
      const t = performance.now();
      await segmentEverything(engine, photo, { ...base, ...s });
      times[k]!.push(performance.now() - t);
    }
  }
  out[model.manifest.name] = {
    batch_decoder: model.canBatch,
    masks: [results.before!.masks.length, results.now!.masks.length],
    min_pair_iou: Math.round(Math.min(1, ...ious) * 1000) / 1000,
    before_ms: Math.round(median(times.before!)),
    now_ms: Math.round(median(times.now!)),
    now_over_before: Math.round((median(times.now!) / median(times.before!)) * 1000) / 1000,
    now_stages_ms: Object.fromEntries(Object.entries(results.now!.timings).map(([k, v]) => [k, Math.round(v)])),
  };
  await model.release();
}
console.log(JSON.stringify(out, null, 2));
