/**
 * What turning a click's logits into its answer costs, per mask, on real masks:
 *
 *   npx tsx bench/mask-answer.ts [SCENE] [--runs N]
 *
 * Clicks every object of a fixture scene (default `portrait`, 480x640) with the bundled fp32
 * model, then times, in alternating blocks over those masks: `thresholdLogits` on each
 * candidate's full-size logits (the mask, area, stability and box in one pass) next to a
 * separate `maskBBox` pass (what finding the box cost before it joined the threshold pass), and
 * the answer's mask PNG (zlib's run-length deflate) and COCO RLE with and without the mask's box
 * (given the box they read only inside it), and a click itself (the decoder and the engine's
 * postprocessing on the scene's cached embedding) to weigh the answer against. Prints JSON
 * medians in milliseconds and the ratios that compare them; the machine is noisy, so compare
 * ratios of one run, not times across runs. Each step runs over the masks back to back, so these are times
 * with warm caches: in a request, right after a model run, the same steps take longer (the
 * handle phase of bench/http.ts holds them).
 */
import { parseArgs } from "node:util";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { encodeRle, maskToPng } from "../agent/src/segment/formats/index.ts";
import { maskBBox, type BBox, type BinaryMask } from "../agent/src/segment/mask.ts";
import { lowResRows, thresholdLogits } from "../agent/src/segment/postprocess.ts";
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
/** One candidate mask: its full-size logits, the mask and box the engine made of them, and its click. */
interface Subject {
  logits: Float32Array;
  mask: BinaryMask;
  bbox: BBox;
  click: [number, number];
}

const subjects: Subject[] = [];
for (const obj of scene.objects) {
  const result = await engine.segment(scene.bytes, { points: [{ x: obj.click[0], y: obj.click[1], label: 1 }] });
  for (const m of result.masks) {
    // The full-size plane the threshold pass reads (the engine itself makes it a row at a time).
    const logits = new Float32Array(scene.width * scene.height);
    const rows = lowResRows(m.lowRes, Math.sqrt(m.lowRes.length), "sam", model.input.size, resized, scene);
    for (let y = 0; y < scene.height; y++) rows(y, logits.subarray(y * scene.width, (y + 1) * scene.width));
    subjects.push({ logits, mask: m.mask, bbox: m.bbox, click: obj.click });
  }
}

const steps = {
  threshold: (s: Subject) => thresholdLogits(s.logits, scene.width, scene.height),
  separate_bbox: (s: Subject) => maskBBox(s.mask),
  png: (s: Subject) => maskToPng(s.mask),
  png_in_box: (s: Subject) => maskToPng(s.mask, s.bbox),
  rle: (s: Subject) => encodeRle(s.mask),
  rle_in_box: (s: Subject) => encodeRle(s.mask, s.bbox),
  // What the interactive route runs for a click on a cached image: the answer is weighed against it.
  click: (s: Subject) => engine.segment(embedding, { points: [{ x: s.click[0], y: s.click[1], label: 1 }] }, { bestOnly: true }),
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
await model.release();
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
      png_in_box_over_click: ratio(p50.png_in_box, p50.click),
      png_bytes_p50: median(await Promise.all(subjects.map(async (s) => (await maskToPng(s.mask, s.bbox)).length))),
    },
    null,
    2,
  ),
);
