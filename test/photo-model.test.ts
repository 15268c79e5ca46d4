import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { type BinaryMask, maskIoU } from "../agent/src/segment/mask.ts";
import { TINY_SAM_DIR } from "./helpers/scenes.ts";

const PHOTO_DIR = fileURLToPath(new URL("../models/tiny-sam-photo/", import.meta.url));
const DAVIS = fileURLToPath(new URL("../../shared/datasets/eval/davis345/", import.meta.url));
const SAMPLES = fileURLToPath(new URL("../agent/samples/", import.meta.url));
const BIN = fileURLToPath(new URL("../agent/bin/sam-edge.js", import.meta.url));
const exec = promisify(execFile);

/** A DAVIS frame's foreground (every annotated object, 255 = void left out) and its box. */
async function davisObject(name: string): Promise<{ bytes: Buffer; truth: BinaryMask; box: [number, number, number, number] }> {
  const { data, info } = await sharp(`${DAVIS}masks/${name}.png`).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  const truth = new Uint8Array(info.width * info.height);
  let [x0, y0, x1, y1] = [info.width, info.height, -1, -1];
  for (let i = 0; i < truth.length; i++) {
    if (data[i] === 0 || data[i] === 255) continue;
    truth[i] = 1;
    const x = i % info.width;
    const y = (i - x) / info.width;
    [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
  }
  return { bytes: await readFile(`${DAVIS}images/${name}.jpg`), truth: { width: info.width, height: info.height, data: truth }, box: [x0, y0, x1, y1] };
}

// The real-photo candidate (models/tiny-sam-photo) must do what it is shipped for: on real
// photographs (DAVIS frames, which training never reads) its masks follow objects better than
// the default model's, through the agent's own engine; and Everything with the thresholds
// calibrated in its manifest finds something on each of the bundled photographs.
describe("the real-photo model", () => {
  let photo: SamModel;
  let bundled: SamModel;
  beforeAll(async () => {
    [photo, bundled] = await Promise.all([SamModel.load(PHOTO_DIR), SamModel.load(TINY_SAM_DIR)]);
  });
  afterAll(async () => Promise.all([photo.release(), bundled.release()]));

  it("a DAVIS object's box gives a better mask than the default model's", { timeout: 120_000 }, async () => {
    const ious = { photo: [] as number[], bundled: [] as number[] };
    for (const name of ["000", "001", "002", "003", "004", "005"]) {
      const object = await davisObject(name);
      for (const [key, model] of [["photo", photo], ["bundled", bundled]] as const) {
        const result = await new SegmentEngine(model).segment(object.bytes, { box: object.box });
        ious[key].push(maskIoU(result.masks[0]!.mask, object.truth));
      }
    }
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    // noc.py on these six: 0.84 against 0.64 (davis345.json has all 345 objects).
    expect(mean(ious.photo), JSON.stringify(ious)).toBeGreaterThanOrEqual(0.75);
    expect(mean(ious.photo) - mean(ious.bundled), JSON.stringify(ious)).toBeGreaterThanOrEqual(0.1);
  });

  it.each(["photo-astronaut.jpg", "photo-chelsea.jpg", "photo-coffee.jpg", "photo-rocket.jpg"])(
    "Everything at the manifest's calibrated thresholds finds regions on %s",
    { timeout: 60_000 },
    async (file) => {
      const { stdout } = await exec("node", [BIN, "segment", `${SAMPLES}${file}`, "--everything", "--model", PHOTO_DIR], { maxBuffer: 64 * 1024 * 1024 });
      const result = JSON.parse(stdout) as { width: number; height: number; masks: { area: number }[] };
      expect(result.masks.length).toBeGreaterThanOrEqual(1);
      for (const m of result.masks) expect(m.area).toBeLessThan(result.width * result.height);
    },
  );
});
