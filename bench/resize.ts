/**
 * What resizing as the reference predictors do costs: an image decoded by sharp and resized by
 * Pillow's bilinear to the bit (agent/src/segment/resample.ts), next to sharp decoding and
 * resizing in one pipeline, alternating, on the samples and a 640x480 frame. The engine
 * (loadForModel) takes the first path for images the resize enlarges and the second for those
 * it shrinks; `exact_ms` is the engine's own path, `sharp_ms` sharp's alone.
 *
 *   npx tsx bench/resize.ts [--runs N]
 *
 * Prints per image the median milliseconds of each and their ratio, for SAM's longest side
 * (1024) and SAM 2's square.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { SAMPLES_DIR } from "../agent/src/config/paths.ts";
import { loadForModel, resizedShape, type ResizeTo } from "../agent/src/segment/preprocess.ts";
import { wholeNumber } from "./options.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "30" } } });
const runs = wholeNumber("runs", values.runs, 1);
const images = {
  "shapes-portrait.jpg (480x640)": await readFile(join(SAMPLES_DIR, "shapes-portrait.jpg")),
  "shapes-large.jpg (1600x1200)": await readFile(join(SAMPLES_DIR, "shapes-large.jpg")),
  "wide.png (640x480)": await readFile(new URL("../test/fixtures/parity/images/wide.png", import.meta.url)),
};

/** The previous path: sharp decodes and resizes (kernel "linear") in one pipeline. */
async function sharpOnly(bytes: Buffer, to: ResizeTo): Promise<void> {
  const meta = await sharp(bytes).metadata();
  const t = to.fit === "stretch" ? { width: to.size, height: to.size } : resizedShape(meta.width!, meta.height!, to.size);
  await sharp(bytes).rotate().removeAlpha().toColourspace("srgb").resize(t.width, t.height, { fit: "fill", kernel: "linear" }).raw().toBuffer();
}

const results = [];
for (const [name, bytes] of Object.entries(images)) {
  for (const to of [{ fit: "longest-side", size: 1024 }, { fit: "stretch", size: 1024 }] as ResizeTo[]) {
    const exact: number[] = [];
    const fast: number[] = [];
    await loadForModel(bytes, to);
    await sharpOnly(bytes, to);
    for (let i = 0; i < runs; i++) {
      let t = performance.now();
      await loadForModel(bytes, to);
      exact.push(performance.now() - t);
      t = performance.now();
      await sharpOnly(bytes, to);
      fast.push(performance.now() - t);
    }
    results.push({ image: name, fit: to.fit, exact_ms: +median(exact).toFixed(2), sharp_ms: +median(fast).toFixed(2), exact_over_sharp: +(median(exact) / median(fast)).toFixed(2) });
  }
}
console.log(JSON.stringify(results, null, 2));
