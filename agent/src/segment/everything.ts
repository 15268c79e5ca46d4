import { SamEdgeError } from "../errors.ts";
import type { SegmentEngine, ImageEmbedding, MaskResult } from "./engine.ts";
import { maskBBox, type BBox } from "./mask.ts";
import { MASK_THRESHOLD, STABILITY_OFFSET, thresholdLogits, upsampleLowRes } from "./postprocess.ts";
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
  /** Loop over single prompts even when the decoder takes a batch (benchmarks compare the two). */
  forceLoop: boolean;
}

export const DEFAULT_EVERYTHING_OPTIONS: EverythingOptions = {
  pointsPerSide: 32,
  pointsPerBatch: 64,
  predIouThresh: 0.88,
  stabilityScoreThresh: 0.95,
  boxNmsThresh: 0.7,
  minMaskRegionArea: 0,
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
}

export function validateEverythingOptions(o: EverythingOptions): void {
  const bad = (m: string) => new SamEdgeError("PROMPT_INVALID", m);
  if (!Number.isInteger(o.pointsPerSide) || o.pointsPerSide < 1 || o.pointsPerSide > 64) throw bad(`points_per_side must be an integer from 1 to 64, got ${o.pointsPerSide}`);
  if (!Number.isInteger(o.pointsPerBatch) || o.pointsPerBatch < 1 || o.pointsPerBatch > 1024) throw bad(`points_per_batch must be an integer from 1 to 1024`);
  for (const [k, v] of [["pred_iou_thresh", o.predIouThresh], ["stability_score_thresh", o.stabilityScoreThresh], ["box_nms_thresh", o.boxNmsThresh]] as const) {
    if (!Number.isFinite(v) || v < 0 || v > 1) throw bad(`${k} must be a number from 0 to 1, got ${v}`);
  }
  if (!Number.isInteger(o.minMaskRegionArea) || o.minMaskRegionArea < 0) throw bad(`min_mask_region_area must be a whole number of pixels`);
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

/** Greedy non-maximum suppression by box IoU, highest score first; returns kept indices. */
export function nms(boxes: BBox[], scores: number[], threshold: number): number[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]!);
  const kept: number[] = [];
  for (const i of order) {
    if (kept.every((k) => boxIoU(boxes[i]!, boxes[k]!) <= threshold)) kept.push(i);
  }
  return kept;
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

/**
 * Everything mode: a grid of single-point prompts, each answered with SAM's three multimask
 * outputs, filtered by predicted IoU and stability, de-duplicated by box NMS. Scoring and NMS
 * work on the low-res logits; only the masks that survive are upsampled to the original size.
 */
export async function segmentEverything(
  engine: SegmentEngine,
  image: Uint8Array | ImageEmbedding,
  options: Partial<EverythingOptions> = {},
): Promise<EverythingResult> {
  const o = { ...DEFAULT_EVERYTHING_OPTIONS, ...options };
  validateEverythingOptions(o);
  const t0 = performance.now();
  const emb = image instanceof Uint8Array ? (await engine.embed(image)).embedding : image;
  const t1 = performance.now();
  const model = engine.model;
  const inputSize = model.manifest.inputSize;
  const sx = emb.resizedWidth / emb.width;
  const sy = emb.resizedHeight / emb.height;
  const points = pointGrid(o.pointsPerSide).map(([u, v]) => [u * emb.width, v * emb.height] as [number, number]);
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
    // orig_im_size only sizes the full-resolution `masks` output, which Everything mode does
    // not read: asking for 1x1 spares the decoder a full-size upsample of every candidate.
    const out = await model.decode({ embedding: emb.tensor, coords, labels, batch: chunk.length, points: 2, origSize: { width: 1, height: 1 } });
    const m = out.masksPerPrompt;
    const side = out.lowRes.dims[3]!;
    const cellsW = Math.ceil((emb.resizedWidth * side) / inputSize);
    const cellsH = Math.ceil((emb.resizedHeight * side) / inputSize);
    const cellX = emb.width / ((emb.resizedWidth * side) / inputSize);
    const cellY = emb.height / ((emb.resizedHeight * side) / inputSize);
    const data = out.lowRes.data as Float32Array;
    for (let b = 0; b < chunk.length; b++) {
      for (let k = m > 1 ? 1 : 0; k < m; k++) {
        total++;
        const idx = b * m + k;
        const confidence = out.scores[idx]!;
        if (confidence < o.predIouThresh) continue;
        afterIou++;
        const low = data.subarray(idx * side * side, (idx + 1) * side * side);
        const { box, stability } = lowResBox(low, side, cellsW, cellsH, cellX, cellY);
        if (stability < o.stabilityScoreThresh || box[2] === 0) continue;
        candidates.push({ lowRes: low.slice(), confidence, stability, box, point: chunk[b]! });
      }
    }
  }
  const t2 = performance.now();
  const kept = nms(
    candidates.map((c) => c.box),
    candidates.map((c) => c.confidence),
    o.boxNmsThresh,
  );
  const side = Math.sqrt(candidates[0]?.lowRes.length ?? 0);
  const masks: EverythingMask[] = kept.map((i) => {
    const c = candidates[i]!;
    const logits = upsampleLowRes(c.lowRes, side, inputSize, { width: emb.resizedWidth, height: emb.resizedHeight }, emb);
    let { mask, area } = thresholdLogits(logits, emb.width, emb.height);
    if (o.minMaskRegionArea > 0) ({ mask, area } = removeSmallRegions(mask, o.minMaskRegionArea));
    return { mask, bbox: maskBBox(mask), area, confidence: c.confidence, stability: c.stability, lowRes: c.lowRes, point: c.point };
  });
  const t3 = performance.now();
  return {
    width: emb.width,
    height: emb.height,
    masks: masks.filter((mk) => mk.area > 0),
    counts: { candidates: total, afterIou, afterStability: candidates.length, afterNms: kept.length },
    timings: { encodeMs: t1 - t0, decodeMs: t2 - t1, postprocessMs: t3 - t2 },
  };
}
