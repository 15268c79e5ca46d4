/**
 * The parity figures of each model layout: per layout and test image, the least and mean IoU of
 * the engine's masks with its reference predictor's, over every case and mask, and the largest
 * score difference (test/fixtures/parity, made by scripts/export/parity/make_layouts.py).
 *
 *   npx tsx bench/layout-parity.ts
 */
import { goldens, runParity } from "../test/helpers/parity.ts";

const rows = [];
for (const g of await goldens()) {
  const results = await runParity(g);
  for (const image of [...new Set(results.map((r) => r.image))]) {
    const of = results.filter((r) => r.image === image);
    const ious = of.flatMap((r) => r.ious);
    const scoreDiff = Math.max(...of.flatMap((r) => r.scores.engine.map((s, i) => Math.abs(s - r.scores.golden[i]!))));
    rows.push({
      layout: g.layout,
      reference: g.reference,
      image,
      cases: of.map((r) => r.case),
      masks: ious.length,
      min_iou: +Math.min(...ious).toFixed(4),
      mean_iou: +(ious.reduce((a, b) => a + b, 0) / ious.length).toFixed(4),
      max_score_diff: +scoreDiff.toFixed(5),
    });
  }
}
console.log(JSON.stringify(rows, null, 2));
