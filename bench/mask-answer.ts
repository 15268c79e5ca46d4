/**
 * What turning a click's logits into its answer costs, per mask, on real masks:
 *
 *   npx tsx bench/mask-answer.ts [SCENE] [--runs N]
 *
 * Clicks every object of a fixture scene (default `portrait`, 480x640) with the bundled fp32
 * model, then times, in alternating blocks over those masks: `thresholdLogits` on each
 * candidate's full-size logits (the mask, area, stability and box in one pass) next to a
 * separate `maskBBox` pass (what finding the box cost before it joined the threshold pass), and
 * the answer's mask PNG and COCO RLE with and without the mask's box (given the box they read
 * only inside it), and the PNG's deflate (mask-deflate.ts, from the mask's runs) next to zlib's
 * run-length deflate of the same image data, with the bytes each writes. Prints JSON medians in
 * milliseconds and the ratios that compare them; the machine is noisy, so compare ratios of one
 * run, not times across runs. Each step runs over the masks back to back, so these are times
 * with warm caches: in a request, right after a model run, the same steps take longer (the
 * handle phase of bench/http.ts holds them).
 */
import { parseArgs } from "node:util";
import { constants as zlibConstants, deflateSync } from "node:zlib";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { encodeRle, maskToPng } from "../agent/src/segment/formats/index.ts";
import { deflateMaskRows } from "../agent/src/segment/formats/mask-deflate.ts";
import { maskBBox, type BBox, type BinaryMask } from "../agent/src/segment/mask.ts";
import { thresholdLogits, upsampleLowRes } from "../agent/src/segment/postprocess.ts";
import { pngRows } from "../test/helpers/png-rows.ts";
import { loadScene, TINY_SAM_DIR } from "../test/helpers/scenes.ts";
import { median } from "./stats.ts";
import { wholeNumber } from "./options.ts";

const BLOCKS = 5;
const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: "string", default: "40" } } });
const runs = wholeNumber("runs", values.runs, BLOCKS);

const scene = await loadScene(positionals[0] ?? "portrait");
const model = await SamModel.load(TINY_SAM_DIR);
const engine = new SegmentEngine(model);
const { embedding } = await engine.embed(scene.bytes);
const resized = { width: embedding.resizedWidth, height: embedding.resizedHeight };
/** One candidate mask: its full-size logits, the mask and box the engine made of them, and the PNG's image data. */
interface Subject {
  logits: Float32Array;
  mask: BinaryMask;
  bbox: BBox;
  pngRows: Buffer;
}

const zlibRle = (rows: Buffer) => deflateSync(rows, { level: 1, strategy: zlibConstants.Z_RLE });
const subjects: Subject[] = [];
for (const obj of scene.objects) {
  const result = await engine.segment(scene.bytes, { points: [{ x: obj.click[0], y: obj.click[1], label: 1 }] });
  for (const m of result.masks) {
    const logits = upsampleLowRes(m.lowRes, Math.sqrt(m.lowRes.length), model.manifest.inputSize, resized, scene);
    subjects.push({ logits, mask: m.mask, bbox: m.bbox, pngRows: pngRows(m.mask) });
  }
}
await model.release();

const steps = {
  threshold: (s: Subject) => thresholdLogits(s.logits, scene.width, scene.height),
  separate_bbox: (s: Subject) => maskBBox(s.mask),
  png: (s: Subject) => maskToPng(s.mask),
  png_in_box: (s: Subject) => maskToPng(s.mask, s.bbox),
  rle: (s: Subject) => encodeRle(s.mask),
  rle_in_box: (s: Subject) => encodeRle(s.mask, s.bbox),
  zlib_rle_deflate: (s: Subject) => zlibRle(s.pngRows),
  mask_deflate: (s: Subject) => deflateMaskRows(s.mask, s.bbox),
};
type Step = keyof typeof steps;
const times = Object.fromEntries(Object.keys(steps).map((k) => [k, [] as number[]])) as Record<Step, number[]>;
for (let block = 0; block < BLOCKS; block++) {
  for (const [name, step] of Object.entries(steps) as [Step, (s: Subject) => unknown][]) {
    for (let r = 0; r < runs / BLOCKS; r++) {
      for (const s of subjects) {
        const t = performance.now();
        await step(s);
        times[name].push(performance.now() - t);
      }
    }
  }
}
const p50 = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)])) as Record<Step, number>;
const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
console.log(
  JSON.stringify(
    {
      scene: scene.name,
      size: `${scene.width}x${scene.height}`,
      masks: subjects.length,
      runs,
      p50_ms: Object.fromEntries(Object.entries(p50).map(([k, v]) => [k, Math.round(v * 1000) / 1000])),
      separate_bbox_over_threshold: ratio(p50.separate_bbox, p50.threshold),
      png_in_box_over_png: ratio(p50.png_in_box, p50.png),
      rle_in_box_over_rle: ratio(p50.rle_in_box, p50.rle),
      mask_deflate_over_zlib_rle: ratio(p50.mask_deflate, p50.zlib_rle_deflate),
      deflated_bytes_p50: {
        zlib_rle: median(subjects.map((s) => zlibRle(s.pngRows).length)),
        mask_deflate: median(subjects.map((s) => deflateMaskRows(s.mask, s.bbox).length)),
      },
    },
    null,
    2,
  ),
);
