/**
 * The bundled model on the test fixture scenes: what the engine and Everything tests' bars are
 * set against.
 *
 *   npx tsx bench/fixtures-quality.ts [MODEL_DIR]
 *
 * Prints JSON: per scene, the IoU of a click at each object's click point; and Everything
 * mode's recall (objects with a mask of IoU >= 0.7) over five scenes on a 16x16 grid, for
 * SAM's default filters and looser ones, with the masks returned per scene.
 */
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { segmentEverything } from "../agent/src/segment/everything.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "../test/helpers/scenes.ts";

const round = (v: number): number => Math.round(v * 1000) / 1000;
const engine = new SegmentEngine(await SamModel.load(process.argv[2] ?? TINY_SAM_DIR));

const scenes = new Map<string, Scene>();
for (const name of ["landscape", "portrait", "portrait-exif6", "small", "large", "square"]) scenes.set(name, await loadScene(name));

const clicks: Record<string, number[]> = {};
for (const [name, scene] of scenes) {
  clicks[name] = [];
  for (const obj of scene.objects) {
    const r = await engine.segment(scene.bytes, { points: [{ x: obj.click[0], y: obj.click[1], label: 1 }] });
    clicks[name].push(round(maskIoU(r.masks[0]!.mask, scene.truth(obj.label))));
  }
}

const everything: Record<string, unknown>[] = [];
for (const [predIouThresh, stabilityScoreThresh] of [[0.88, 0.95], [0.5, 0.8], [0.5, 0.6]] as const) {
  let found = 0;
  let objects = 0;
  const masksPerScene: Record<string, number> = {};
  for (const name of ["landscape", "portrait", "small", "large", "square"]) {
    const scene = scenes.get(name)!;
    const r = await segmentEverything(engine, scene.bytes, { pointsPerSide: 16, predIouThresh, stabilityScoreThresh });
    found += scene.objects.filter((o) => Math.max(0, ...r.masks.map((m) => maskIoU(m.mask, scene.truth(o.label)))) >= 0.7).length;
    objects += scene.objects.length;
    masksPerScene[name] = r.masks.length;
  }
  everything.push({ pred_iou_thresh: predIouThresh, stability_score_thresh: stabilityScoreThresh, recall: round(found / objects), found, objects, masks_per_scene: masksPerScene });
}
console.log(JSON.stringify({ model: engine.model.manifest.name, click_iou: clicks, everything_16x16: everything }, null, 2));
await engine.model.release();
