/**
 * Peak resident memory of one process that loads a model with the agent's engine and segments
 * one image (a click, then a box): what a box needs to hold to serve that model.
 *
 *   npx tsx bench/quantize-rss.ts MODEL_DIR [IMAGE]
 *
 * Prints JSON. bench/quantize.ts runs it in a fresh process per model, so that one model's
 * memory does not count against another's.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: npx tsx bench/quantize-rss.ts MODEL_DIR [IMAGE]");
  process.exit(2);
}
const image = process.argv[3] ?? fileURLToPath(new URL("../test/fixtures/scenes/portrait.jpg", import.meta.url));
const bytes = await readFile(image);
const baselineKB = process.resourceUsage().maxRSS;
const model = await SamModel.load(dir);
const loadedKB = process.resourceUsage().maxRSS;
const engine = new SegmentEngine(model);
const click = await engine.segment(bytes, { points: [{ x: 100, y: 100, label: 1 }] });
await engine.segment(bytes, { box: [50, 50, Math.min(300, click.width), Math.min(300, click.height)] });
const mb = (kb: number) => +(kb / 1024).toFixed(1);
console.log(
  JSON.stringify({
    model: model.manifest.name,
    image,
    peak_rss_mb: mb(process.resourceUsage().maxRSS),
    peak_rss_after_load_mb: mb(loadedKB),
    peak_rss_before_load_mb: mb(baselineKB),
  }),
);
await model.release();
