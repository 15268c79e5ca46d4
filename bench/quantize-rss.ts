/**
 * Peak resident memory of one process that loads a model with the agent's engine and segments
 * one image (a click, then a box): what a box needs to hold to serve that model.
 *
 *   npx tsx bench/quantize-rss.ts MODEL_DIR [IMAGE]
 *
 * Prints JSON. bench/quantize.ts runs it in a fresh process per model, so that one model's
 * memory does not count against another's.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: npx tsx bench/quantize-rss.ts MODEL_DIR [IMAGE]");
  process.exit(2);
}
/**
 * Peak RSS of this process in MB, from /proc (Linux, as on the boxes). Not
 * process.resourceUsage().maxRSS: getrusage keeps the maximum across fork and exec, so a child
 * of a process holding a model would report the parent's memory.
 */
function peakRssMb(): number {
  const kb = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
  if (!kb) throw new Error("no VmHWM in /proc/self/status");
  return +(Number(kb[1]) / 1024).toFixed(1);
}

const image = process.argv[3] ?? fileURLToPath(new URL("../test/fixtures/scenes/portrait.jpg", import.meta.url));
const bytes = await readFile(image);
const before = peakRssMb();
const model = await SamModel.load(dir);
const loaded = peakRssMb();
const engine = new SegmentEngine(model);
const click = await engine.segment(bytes, { points: [{ x: 100, y: 100, label: 1 }] });
await engine.segment(bytes, { box: [50, 50, Math.min(300, click.width), Math.min(300, click.height)] });
console.log(JSON.stringify({ model: model.manifest.name, image, peak_rss_mb: peakRssMb(), peak_rss_after_load_mb: loaded, peak_rss_before_load_mb: before }));
await model.release();
