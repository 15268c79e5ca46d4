import { EVERYTHING_DEFAULTS, everythingProblem, type EverythingKey } from "../config/everything.ts";
import { SamEdgeError } from "../core/errors.ts";
import type { SegmentEngine, ImageEmbedding, MaskResult } from "./engine.ts";
import { maskBBox, type BBox, type BinaryMask } from "./mask.ts";
import { lowResRows, MASK_THRESHOLD, STABILITY_OFFSET, thresholdRows, type Upsample } from "./postprocess.ts";
import { decodeUpright, type RawImage } from "./preprocess.ts";
import { removeSmallRegions } from "./regions.ts";

/** SAM's automatic mask generator settings; the defaults are SamAutomaticMaskGenerator's. */
export interface EverythingOptions {
  pointsPerSide: number;
  /** Prompts per decoder call when the decoder takes a batch. */
  pointsPerBatch: number;
  predIouThresh: number;
  stabilityScoreThresh: number;
  boxNmsThresh: number;
  /** Holes and islands smaller than this (pixels) are filled / removed; 0 keeps masks as they are. */
  minMaskRegionArea: number;
  /** Extra layers of overlapping crops (layer i: 2^i x 2^i crops), each re-encoded. */
  cropNLayers: number;
  cropOverlapRatio: number;
  cropNmsThresh: number;
  /** Layer i prompts pointsPerSide / factor^i points per side. */
  cropNPointsDownscaleFactor: number;
  /** Loop over single prompts even when the decoder takes a batch (benchmarks compare the two). */
  forceLoop: boolean;
}

/** The shared settings' defaults (config/everything.ts), and SAM's crop settings. */
export const DEFAULT_EVERYTHING_OPTIONS: EverythingOptions = {
  pointsPerSide: EVERYTHING_DEFAULTS.points_per_side,
  pointsPerBatch: EVERYTHING_DEFAULTS.points_per_batch,
  predIouThresh: EVERYTHING_DEFAULTS.pred_iou_thresh,
  stabilityScoreThresh: EVERYTHING_DEFAULTS.stability_score_thresh,
  boxNmsThresh: EVERYTHING_DEFAULTS.box_nms_thresh,
  minMaskRegionArea: EVERYTHING_DEFAULTS.min_mask_region_area,
  cropNLayers: 0,
  cropOverlapRatio: 512 / 1500,
  cropNmsThresh: 0.7,
  cropNPointsDownscaleFactor: 1,
  forceLoop: false,
};

export interface EverythingMask extends MaskResult {
  /** The grid point that produced this mask, in original-image pixels. */
  point: [number, number];
}

export interface EverythingResult {
  width: number;
  height: number;
  masks: EverythingMask[];
  /** Candidates the decoder produced, and how many each filter let through. */
  counts: { candidates: number; afterIou: number; afterStability: number; afterNms: number };
  timings: { encodeMs: number; decodeMs: number; postprocessMs: number };
}

interface Candidate {
  lowRes: Float32Array;
  confidence: number;
  stability: number;
  /** Box from the low-res mask, scaled to original pixels: NMS runs before any upsampling. */
  box: BBox;
  point: [number, number];
  /** How this model's reference brings low-res logits to the original size. */
  upsample: Upsample;
}

export function validateEverythingOptions(o: EverythingOptions): void {
  const bad = (m: string) => new SamEdgeError("PROMPT_INVALID", m);
  const shared: Record<EverythingKey, number> = {
    points_per_side: o.pointsPerSide,
    points_per_batch: o.pointsPerBatch,
    pred_iou_thresh: o.predIouThresh,
    stability_score_thresh: o.stabilityScoreThresh,
    box_nms_thresh: o.boxNmsThresh,
    min_mask_region_area: o.minMaskRegionArea,
  };
  for (const [key, value] of Object.entries(shared)) {
    const problem = everythingProblem(key, value);
    if (problem) throw bad(problem.replace(/^"(\w+)"/, "$1"));
  }
  if (!Number.isInteger(o.cropNLayers) || o.cropNLayers < 0 || o.cropNLayers > 3) throw bad(`crop_n_layers must be 0, 1, 2 or 3`);
  if (!(o.cropOverlapRatio >= 0 && o.cropOverlapRatio < 1)) throw bad(`crop_overlap_ratio must be at least 0 and below 1`);
  if (!(o.cropNmsThresh >= 0 && o.cropNmsThresh <= 1)) throw bad(`crop_nms_thresh must be a number from 0 to 1`);
  if (!Number.isInteger(o.cropNPointsDownscaleFactor) || o.cropNPointsDownscaleFactor < 1) throw bad(`crop_n_points_downscale_factor must be a whole number >= 1`);
}

/** Normalised centres of an n x n grid, as SAM's build_point_grid. */
export function pointGrid(n: number): [number, number][] {
  const offset = 1 / (2 * n);
  const step = n > 1 ? (1 - 2 * offset) / (n - 1) : 0;
  const grid: [number, number][] = [];
  for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) grid.push([offset + i * step, offset + j * step]);
  return grid;
}

/** IoU of two [x, y, w, h] boxes. */
export function boxIoU(a: BBox, b: BBox): number {
  const ix = Math.max(0, Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]));
  const inter = ix * iy;
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union <= 0 ? 0 : inter / union;
}

/**
 * Greedy non-maximum suppression by box IoU, highest score first; returns kept indices. With
 * `maskOf` (binary masks, one frame for all, built only for pairs that need them), a
 * candidate whose box overlaps a kept one is also
 * suppressed when the masks' IoU is over the threshold: a mask with a stray speck far from
 * the object has a much larger box than its twin without one, and box IoU alone keeps both.
 */
export function nms(boxes: BBox[], scores: number[], threshold: number, maskOf?: (i: number) => Uint8Array): number[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]!);
  const kept: number[] = [];
  const masks = new Map<number, { mask: Uint8Array; area: number }>();
  const entry = (i: number) => {
    let e = masks.get(i);
    if (!e) {
      const mask = maskOf!(i);
      masks.set(i, (e = { mask, area: mask.reduce((s, v) => s + v, 0) }));
    }
    return e;
  };
  const duplicate = (i: number, k: number) => {
    const overlap = boxIoU(boxes[i]!, boxes[k]!);
    if (overlap > threshold) return true;
    if (!maskOf || overlap === 0) return false;
    const [a, b] = [entry(i), entry(k)];
    // Two masks' IoU is at most the ratio of their areas: most pairs need no pixel count.
    return Math.min(a.area, b.area) > threshold * Math.max(a.area, b.area) && binaryIoU(a.mask, b.mask) > threshold;
  };
  for (const i of order) {
    if (!kept.some((k) => duplicate(i, k))) kept.push(i);
  }
  return kept;
}

function binaryIoU(a: Uint8Array, b: Uint8Array): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    inter += a[i]! & b[i]!;
    union += a[i]! | b[i]!;
  }
  return union === 0 ? 0 : inter / union;
}

/** Box of the valid (unpadded) part of a low-res mask, in original pixels. */
function lowResBox(low: Float32Array, side: number, cellsW: number, cellsH: number, sx: number, sy: number): { box: BBox; stability: number } {
  let x0 = side;
  let y0 = side;
  let x1 = -1;
  let y1 = -1;
  let high = 0;
  let lowCount = 0;
  for (let y = 0; y < cellsH; y++) {
    for (let x = 0; x < cellsW; x++) {
      const v = low[y * side + x]!;
      if (v > MASK_THRESHOLD + STABILITY_OFFSET) high++;
      if (v > MASK_THRESHOLD - STABILITY_OFFSET) lowCount++;
      if (v > MASK_THRESHOLD) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  const box: BBox = x1 < 0 ? [0, 0, 0, 0] : [x0 * sx, y0 * sy, (x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy];
  return { box, stability: lowCount === 0 ? 0 : high / lowCount };
}

/** A crop of the image: [x0, y0, x1, y1] and the layer it belongs to (0 = the whole image). */
interface Crop {
  box: [number, number, number, number];
  layer: number;
}

/** SAM's generate_crop_boxes: the whole image, then 2^i x 2^i overlapping crops per layer i. */
export function cropBoxes(width: number, height: number, layers: number, overlapRatio: number): Crop[] {
  const crops: Crop[] = [{ box: [0, 0, width, height], layer: 0 }];
  const shortSide = Math.min(width, height);
  for (let layer = 1; layer <= layers; layer++) {
    const n = 2 ** layer;
    const overlap = Math.floor(overlapRatio * shortSide * (2 / n));
    const cw = Math.ceil((overlap * (n - 1) + width) / n);
    const ch = Math.ceil((overlap * (n - 1) + height) / n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const x0 = Math.floor((cw - overlap) * i);
        const y0 = Math.floor((ch - overlap) * j);
        crops.push({ box: [x0, y0, Math.min(x0 + cw, width), Math.min(y0 + ch, height)], layer });
      }
    }
  }
  return crops;
}

/** A box that touches its crop's edge where that edge is not the image's: cut off by the crop. */
function nearCropEdge(box: BBox, crop: Crop, width: number, height: number): boolean {
  const [x0, y0, x1, y1] = crop.box;
  const near = (a: number, b: number) => Math.abs(a - b) <= 20;
  const bx1 = box[0] + box[2];
  const by1 = box[1] + box[3];
  return (
    (near(box[0], x0) && !near(box[0], 0)) ||
    (near(box[1], y0) && !near(box[1], 0)) ||
    (near(bx1, x1) && !near(bx1, width)) ||
    (near(by1, y1) && !near(by1, height))
  );
}

/** Prompts a grid over one embedded image; candidates that pass the IoU and stability filters. */
async function gridCandidates(engine: SegmentEngine, emb: ImageEmbedding, pointsPerSide: number, o: EverythingOptions) {
  const model = engine.model;
  const inputSize = model.manifest.inputSize;
  const sx = emb.resizedWidth / emb.width;
  const sy = emb.resizedHeight / emb.height;
  const points = pointGrid(pointsPerSide).map(([u, v]) => [u * emb.width, v * emb.height] as [number, number]);
  const batch = o.forceLoop || !model.canBatch ? 1 : o.pointsPerBatch;
  const candidates: Candidate[] = [];
  let total = 0;
  let afterIou = 0;
  for (let start = 0; start < points.length; start += batch) {
    const chunk = points.slice(start, start + batch);
    const coords = new Float32Array(chunk.length * 4);
    const labels = new Float32Array(chunk.length * 2);
    chunk.forEach(([x, y], i) => {
      coords.set([x * sx, y * sy, 0, 0], i * 4);
      labels.set([1, -1], i * 2);
    });
    const out = await model.decode({ embedding: emb.features, coords, labels, batch: chunk.length, points: 2 });
    const m = out.masksPerPrompt;
    const side = out.lowRes.dims[3]!;
    const cellsW = Math.ceil((emb.resizedWidth * side) / inputSize);
    const cellsH = Math.ceil((emb.resizedHeight * side) / inputSize);
    const cellX = emb.width / ((emb.resizedWidth * side) / inputSize);
    const cellY = emb.height / ((emb.resizedHeight * side) / inputSize);
    const data = out.lowRes.data as Float32Array;
    for (let b = 0; b < chunk.length; b++) {
      for (let k = out.multimaskFrom; k < m; k++) {
        total++;
        const idx = b * m + k;
        const confidence = out.scores[idx]!;
        if (confidence < o.predIouThresh) continue;
        afterIou++;
        const low = data.subarray(idx * side * side, (idx + 1) * side * side);
        const { box, stability } = lowResBox(low, side, cellsW, cellsH, cellX, cellY);
        if (stability < o.stabilityScoreThresh || box[2] === 0) continue;
        candidates.push({ lowRes: low.slice(), confidence, stability, box, point: chunk[b]!, upsample: out.upsample });
      }
    }
  }
  return { candidates, total, afterIou };
}

/**
 * Everything mode: a grid of single-point prompts, each answered with SAM's three multimask
 * outputs, filtered by predicted IoU and stability, de-duplicated by box NMS; with crop
 * layers, the same again on overlapping crops (re-encoded), preferring masks from smaller
 * crops. Scoring and NMS work on the low-res logits; only the masks that survive are
 * upsampled to the original size.
 */
export async function segmentEverything(
  engine: SegmentEngine,
  image: Uint8Array | ImageEmbedding,
  options: Partial<EverythingOptions> = {},
): Promise<EverythingResult> {
  const o = { ...DEFAULT_EVERYTHING_OPTIONS, ...options };
  validateEverythingOptions(o);
  if (o.cropNLayers > 0 && !(image instanceof Uint8Array)) {
    throw new SamEdgeError("PROMPT_INVALID", "crop layers re-encode parts of the image: pass the image bytes, not an embedding");
  }
  const timings = { encodeMs: 0, decodeMs: 0, postprocessMs: 0 };
  let t = performance.now();
  const full = image instanceof Uint8Array ? (await engine.embed(image)).embedding : image;
  // Crops are cut from the image decoded once, and reach the encoder as pixels, not as files.
  const decoded = o.cropNLayers > 0 ? await decodeUpright(image as Uint8Array) : undefined;
  timings.encodeMs += performance.now() - t;
  const { width, height } = full;
  const counts = { candidates: 0, afterIou: 0, afterStability: 0, afterNms: 0 };
  const kept: { c: Candidate; crop: Crop; emb: ImageEmbedding }[] = [];
  for (const crop of cropBoxes(width, height, o.cropNLayers, o.cropOverlapRatio)) {
    t = performance.now();
    const emb = crop.layer === 0 ? full : (await engine.embed(cropOf(decoded!, crop))).embedding;
    timings.encodeMs += performance.now() - t;
    t = performance.now();
    const side = Math.max(1, Math.floor(o.pointsPerSide / o.cropNPointsDownscaleFactor ** crop.layer));
    const { candidates, total, afterIou } = await gridCandidates(engine, emb, side, o);
    timings.decodeMs += performance.now() - t;
    counts.candidates += total;
    counts.afterIou += afterIou;
    counts.afterStability += candidates.length;
    const inCrop = candidates.filter((c) => crop.layer === 0 || !nearCropEdge(shift(c.box, crop), crop, width, height));
    const survivors = nms(
      inCrop.map((c) => c.box),
      inCrop.map((c) => c.confidence),
      o.boxNmsThresh,
      (i) => Uint8Array.from(inCrop[i]!.lowRes, (v) => (v > MASK_THRESHOLD ? 1 : 0)),
    );
    for (const i of survivors) kept.push({ c: inCrop[i]!, crop, emb });
  }
  t = performance.now();
  // Across crops, prefer the mask from the smaller crop: it saw the object at a higher resolution.
  const area = (k: (typeof kept)[number]) => (k.crop.box[2] - k.crop.box[0]) * (k.crop.box[3] - k.crop.box[1]);
  const final =
    o.cropNLayers > 0
      ? nms(
          kept.map((k) => shift(k.c.box, k.crop)),
          kept.map((k) => 1 / area(k)),
          o.cropNmsThresh,
        ).map((i) => kept[i]!)
      : kept;
  const masks: EverythingMask[] = final.map(({ c, crop, emb }) => {
    const side = Math.sqrt(c.lowRes.length);
    const rows = lowResRows(c.lowRes, side, c.upsample, engine.model.input.size, { width: emb.resizedWidth, height: emb.resizedHeight }, emb);
    let { mask, area } = thresholdRows(rows, emb.width, emb.height);
    if (crop.layer > 0) mask = uncrop(mask, crop, width, height);
    if (o.minMaskRegionArea > 0) ({ mask, area } = removeSmallRegions(mask, o.minMaskRegionArea));
    const point: [number, number] = [c.point[0] + crop.box[0], c.point[1] + crop.box[1]];
    return { mask, bbox: maskBBox(mask), area, confidence: c.confidence, stability: c.stability, lowRes: c.lowRes, point };
  });
  // NMS compared low-res masks; at the size they are returned two of them can come out a
  // little above the threshold, so the kept ones are checked once more, earlier ones winning.
  const nonEmpty = masks.filter((mk) => mk.area > 0);
  const distinct = nms(
    nonEmpty.map((mk) => mk.bbox),
    nonEmpty.map((_, i) => -i),
    o.cropNLayers > 0 ? Math.min(o.boxNmsThresh, o.cropNmsThresh) : o.boxNmsThresh,
    (i) => nonEmpty[i]!.mask.data,
  );
  counts.afterNms = distinct.length;
  timings.postprocessMs += performance.now() - t;
  return { width, height, masks: distinct.map((i) => nonEmpty[i]!), counts, timings };
}

function shift(box: BBox, crop: Crop): BBox {
  return [box[0] + crop.box[0], box[1] + crop.box[1], box[2], box[3]];
}

function cropOf(image: RawImage, crop: Crop): RawImage {
  const [x0, y0, x1, y1] = crop.box;
  const width = x1 - x0;
  const height = y1 - y0;
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) rgb.set(image.rgb.subarray(((y0 + y) * image.width + x0) * 3, ((y0 + y) * image.width + x1) * 3), y * width * 3);
  return { width, height, rgb };
}

function uncrop(mask: BinaryMask, crop: Crop, width: number, height: number): BinaryMask {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < mask.height; y++) {
    data.set(mask.data.subarray(y * mask.width, (y + 1) * mask.width), (y + crop.box[1]) * width + crop.box[0]);
  }
  return { width, height, data };
}
