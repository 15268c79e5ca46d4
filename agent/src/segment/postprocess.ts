import type { BBox, BinaryMask } from "./mask.ts";

/** SAM's mask threshold on logits, and the offset of its stability score. */
export const MASK_THRESHOLD = 0;
export const STABILITY_OFFSET = 1;

export interface ThresholdedMask {
  mask: BinaryMask;
  area: number;
  /** Area at threshold +offset over area at threshold -offset (SAM's stability score). */
  stability: number;
  /** The set pixels' box, as maskBBox gives it. */
  bbox: BBox;
}

/**
 * Logits of one mask (width x height, row-major) -> binary mask, area, stability and box, in one
 * pass: this runs on every candidate mask at full size, so it is a good part of a click's time.
 * The thresholds are copied to locals first, as a loop reading imported bindings can run slower.
 */
export function thresholdLogits(logits: Float32Array, width: number, height: number): ThresholdedMask {
  const threshold = MASK_THRESHOLD;
  const above = MASK_THRESHOLD + STABILITY_OFFSET;
  const below = MASK_THRESHOLD - STABILITY_OFFSET;
  const data = new Uint8Array(width * height);
  let area = 0;
  let high = 0;
  let low = 0;
  let x0 = width;
  let x1 = -1;
  let y0 = -1;
  let y1 = -1;
  for (let y = 0, i = 0; y < height; y++) {
    let first = -1;
    let last = -1;
    for (let x = 0; x < width; x++, i++) {
      const v = logits[i]!;
      if (v > threshold) {
        data[i] = 1;
        area++;
        if (first < 0) first = x;
        last = x;
      }
      if (v > above) high++;
      if (v > below) low++;
    }
    if (first < 0) continue;
    if (first < x0) x0 = first;
    if (last > x1) x1 = last;
    if (y0 < 0) y0 = y;
    y1 = y;
  }
  const bbox: BBox = x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
  return { mask: { width, height, data }, area, stability: low === 0 ? 0 : high / low, bbox };
}

/**
 * For decoders that return only low-res logits: SAM's postprocessing (upsample to the
 * encoder frame, crop the padding, resize to the original size) as one bilinear lookup.
 */
export function upsampleLowRes(
  low: Float32Array,
  lowSide: number,
  inputSize: number,
  resized: { width: number; height: number },
  out: { width: number; height: number },
): Float32Array {
  const result = new Float32Array(out.width * out.height);
  // Original pixel centre -> encoder-frame coordinate -> low-res coordinate (half-pixel centres).
  const sx = (resized.width / out.width) * (lowSide / inputSize);
  const sy = (resized.height / out.height) * (lowSide / inputSize);
  const xs = new Int32Array(out.width);
  const xw = new Float32Array(out.width);
  for (let x = 0; x < out.width; x++) {
    const u = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), lowSide - 1);
    xs[x] = Math.min(Math.floor(u), lowSide - 2);
    xw[x] = u - xs[x]!;
  }
  for (let y = 0; y < out.height; y++) {
    const v = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), lowSide - 1);
    const y0 = Math.min(Math.floor(v), lowSide - 2);
    const wy = v - y0;
    const r0 = y0 * lowSide;
    const r1 = r0 + lowSide;
    for (let x = 0; x < out.width; x++) {
      const x0 = xs[x]!;
      const wx = xw[x]!;
      const top = low[r0 + x0]! * (1 - wx) + low[r0 + x0 + 1]! * wx;
      const bottom = low[r1 + x0]! * (1 - wx) + low[r1 + x0 + 1]! * wx;
      result[y * out.width + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return result;
}
