/**
 * The engine's own overhead, measured side by side in one run on this machine:
 *
 *   npx tsx bench/engine.ts [MODEL_DIR] [--runs N] [--everything-side N]
 *
 * Prints JSON ratios (budgets from the engine issue):
 * - engine_over_session: engine.segment time over the time inside onnxruntime's session.run
 *   for the same uncached prompts (<= 1.15: pre/postprocessing must not dominate);
 * - cached_over_uncached: a re-prompt on a cached image over an uncached prompt (<= 0.10);
 * - best_only_over_all_candidates: a cached re-prompt answering only a lone click's best
 *   candidate (`bestOnly`) over one answering all three;
 * - everything_looped_over_batched: Everything mode looping single prompts over batching them
 *   (>= 4 wanted);
 * - engine_over_python: the engine over SAM's predictor path in Python (onnxruntime + numpy +
 *   Pillow) on the same model, image and click (<= 1.0).
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { promisify } from "node:util";
import { BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { segmentEverything } from "../agent/src/segment/everything.ts";
import { median } from "./stats.ts";

const IMAGE = fileURLToPath(new URL("../test/fixtures/scenes/portrait.jpg", import.meta.url));
const CLICK = { x: 240, y: 320, label: 1 as const };

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: "string", default: "10" }, "everything-side": { type: "string", default: "32" } },
});
const dir = positionals[0] ?? BUNDLED_MODEL_DIR;
const runs = Number(values.runs);
const side = Number(values["everything-side"]);
const bytes = await readFile(IMAGE);
const model = await SamModel.load(dir);

// Uncached: a fresh cache per prompt, so every call runs preprocessing and the encoder.
const uncachedEngine = new SegmentEngine(model, { cacheEntries: 0 });
await uncachedEngine.segment(bytes, { points: [CLICK] });
const e2e: number[] = [];
const session: number[] = [];
for (let i = 0; i < runs; i++) {
  const s0 = model.sessionMs;
  const t = performance.now();
  await uncachedEngine.segment(bytes, { points: [CLICK] });
  e2e.push(performance.now() - t);
  session.push(model.sessionMs - s0);
}

// Cached re-prompts, alternating: all of a lone click's candidates, and only the best
// (`bestOnly`, as the HTTP route asks when multimask is off).
const cachedEngine = new SegmentEngine(model);
await cachedEngine.segment(bytes, { points: [CLICK] });
const cached: number[] = [];
const cachedBestOnly: number[] = [];
for (let i = 0; i < runs; i++) {
  for (const [times, options] of [[cached, {}], [cachedBestOnly, { bestOnly: true }]] as const) {
    const t = performance.now();
    await cachedEngine.segment(bytes, { points: [CLICK] }, options);
    times.push(performance.now() - t);
  }
}

const { embedding } = await cachedEngine.embed(bytes);
let t = performance.now();
const batched = await segmentEverything(cachedEngine, embedding, { pointsPerSide: side });
const batchedMs = performance.now() - t;
t = performance.now();
await segmentEverything(cachedEngine, embedding, { pointsPerSide: side, forceLoop: true });
const loopedMs = performance.now() - t;

const python = JSON.parse(
  (
    await promisify(execFile)("python3", [
      fileURLToPath(new URL("python/reference_pipeline.py", import.meta.url)),
      dir,
      IMAGE,
      String(CLICK.x),
      String(CLICK.y),
      "--runs",
      String(runs),
    ])
  ).stdout,
) as { uncached_ms: number; cached_ms: number };

const r = (v: number) => +v.toFixed(3);
console.log(
  JSON.stringify(
    {
      model: model.manifest.name,
      image: "test/fixtures/scenes/portrait.jpg (480x640 JPEG)",
      runs,
      median_ms: { uncached: r(median(e2e)), session_run: r(median(session)), cached: r(median(cached)), cached_best_only: r(median(cachedBestOnly)), python_uncached: r(python.uncached_ms), python_cached: r(python.cached_ms) },
      everything: { points_per_side: side, batched_ms: r(batchedMs), looped_ms: r(loopedMs), masks: batched.masks.length },
      ratios: {
        engine_over_session: r(median(e2e) / median(session)),
        cached_over_uncached: r(median(cached) / median(e2e)),
        best_only_over_all_candidates: r(median(cachedBestOnly) / median(cached)),
        everything_looped_over_batched: r(loopedMs / batchedMs),
        engine_over_python: r(median(e2e) / python.uncached_ms),
        engine_cached_over_python_cached: r(median(cached) / python.cached_ms),
      },
    },
    null,
    2,
  ),
);
await model.release();
