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

/** Fills `row` with the logits of output row `y`: a full-size plane is never held whole. */
export type RowSource = (y: number, row: Float32Array) => void;

/**
 * Logits, a row at a time -> binary mask, area, stability and box, in one pass: this runs on
 * every answered mask at full size, so it is a good part of a click's time, and at 8000x8000 a
 * float plane would be 256 MB where the mask is 64. The thresholds are copied to locals first,
 * as a loop reading imported bindings can run slower.
 */
export function thresholdRows(rows: RowSource, width: number, height: number): ThresholdedMask {
  const threshold = MASK_THRESHOLD;
  const above = MASK_THRESHOLD + STABILITY_OFFSET;
  const below = MASK_THRESHOLD - STABILITY_OFFSET;
  const data = new Uint8Array(width * height);
  const row = new Float32Array(width);
  let area = 0;
  let high = 0;
  let low = 0;
  let x0 = width;
  let x1 = -1;
  let y0 = -1;
  let y1 = -1;
  for (let y = 0, i = 0; y < height; y++) {
    rows(y, row);
    let first = -1;
    let last = -1;
    for (let x = 0; x < width; x++, i++) {
      const v = row[x]!;
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

/** thresholdRows over a whole plane of logits (width x height, row-major). */
export function thresholdLogits(logits: Float32Array, width: number, height: number): ThresholdedMask {
  return thresholdRows((y, row) => row.set(logits.subarray(y * width, (y + 1) * width)), width, height);
}

/**
 * How a layout's reference predictor brings the decoder's low-res logits to the original size:
 * `sam` as SAM's postprocess_masks (up to the padded input square, crop, down to the original),
 * `direct` one bilinear resize of the whole frame (SAM 2, whose input is the square itself),
 * `bicubic` one bicubic resize (EfficientSAM).
 */
export type Upsample = "sam" | "direct" | "bicubic";

/** The full-size logits of a low-res mask as rows, the reference's way; only the rows are made, never the plane. */
export function lowResRows(
  low: Float32Array,
  lowSide: number,
  upsample: Upsample,
  inputSize: number,
  resized: { width: number; height: number },
  out: { width: number; height: number },
): RowSource {
  if (upsample === "bicubic") return bicubicRows(low, lowSide, out);
  if (upsample === "sam") {
    // The padded square's image part, at most 1024x1024 floats, then down (or up) to the original.
    const padded = bilinear(low, lowSide, lowSide, lowSide / inputSize, lowSide / inputSize, resized.width, resized.height);
    return bilinearRows(padded, resized.width, resized.height, resized.width / out.width, resized.height / out.height, out.width);
  }
  return directRows(low, lowSide, (resized.width / out.width) * (lowSide / inputSize), (resized.height / out.height) * (lowSide / inputSize), out.width);
}

/** torch's F.interpolate(mode="bilinear", align_corners=False) rows of a `width` x `height` plane: source = (dst + 0.5) * scale - 0.5, clamped at 0. */
function bilinearRows(src: Float32Array, width: number, height: number, scaleX: number, scaleY: number, outW: number): RowSource {
  const xs = new Int32Array(outW);
  const x1 = new Int32Array(outW);
  const xw = new Float32Array(outW);
  for (let x = 0; x < outW; x++) {
    const u = Math.max((x + 0.5) * scaleX - 0.5, 0);
    xs[x] = Math.floor(u);
    x1[x] = Math.min(xs[x]! + 1, width - 1);
    xw[x] = u - xs[x]!;
  }
  return (y, row) => {
    const v = Math.max((y + 0.5) * scaleY - 0.5, 0);
    const y0 = Math.floor(v);
    const wy = v - y0;
    const r0 = y0 * width;
    const r1 = Math.min(y0 + 1, height - 1) * width;
    for (let x = 0; x < outW; x++) {
      const wx = xw[x]!;
      const top = src[r0 + xs[x]!]! * (1 - wx) + src[r0 + x1[x]!]! * wx;
      const bottom = src[r1 + xs[x]!]! * (1 - wx) + src[r1 + x1[x]!]! * wx;
      row[x] = top * (1 - wy) + bottom * wy;
    }
  };
}

/** One bilinear lookup from the original pixel's centre straight into the low-res frame, both ends clamped. */
function directRows(low: Float32Array, lowSide: number, sx: number, sy: number, outW: number): RowSource {
  const xs = new Int32Array(outW);
  const xw = new Float32Array(outW);
  for (let x = 0; x < outW; x++) {
    const u = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), lowSide - 1);
    xs[x] = Math.min(Math.floor(u), lowSide - 2);
    xw[x] = u - xs[x]!;
  }
  return (y, row) => {
    const v = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), lowSide - 1);
    const y0 = Math.min(Math.floor(v), lowSide - 2);
    const wy = v - y0;
    const r0 = y0 * lowSide;
    const r1 = r0 + lowSide;
    for (let x = 0; x < outW; x++) {
      const x0 = xs[x]!;
      const wx = xw[x]!;
      const top = low[r0 + x0]! * (1 - wx) + low[r0 + x0 + 1]! * wx;
      const bottom = low[r1 + x0]! * (1 - wx) + low[r1 + x0 + 1]! * wx;
      row[x] = top * (1 - wy) + bottom * wy;
    }
  };
}

/** torch's cubic convolution weights (A = -0.75) for a sample `t` (0..1) past the tap at floor. */
function cubicWeights(t: number): [number, number, number, number] {
  const a = -0.75;
  const near = (x: number) => ((a + 2) * x - (a + 3)) * x * x + 1;
  const far = (x: number) => ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return [far(t + 1), near(t), near(1 - t), far(2 - t)];
}

/**
 * For models whose reference upsamples the whole low-res frame straight to the original size
 * with torch's bicubic interpolation (EfficientSAM: F.interpolate(..., mode="bicubic"),
 * align_corners=False, edge taps clamped). Each low-res row is interpolated across once (a
 * lowSide x width buffer); each output row then combines four of them.
 */
function bicubicRows(low: Float32Array, lowSide: number, out: { width: number; height: number }): RowSource {
  const taps = (size: number) => {
    const scale = lowSide / size;
    const index = new Int32Array(size * 4);
    const weight = new Float32Array(size * 4);
    for (let o = 0; o < size; o++) {
      const src = (o + 0.5) * scale - 0.5;
      const base = Math.floor(src);
      const w = cubicWeights(src - base);
      for (let k = 0; k < 4; k++) {
        index[o * 4 + k] = Math.min(Math.max(base - 1 + k, 0), lowSide - 1);
        weight[o * 4 + k] = w[k]!;
      }
    }
    return { index, weight };
  };
  const xt = taps(out.width);
  const yt = taps(out.height);
  const across = new Float32Array(lowSide * out.width);
  for (let r = 0; r < lowSide; r++) {
    for (let x = 0; x < out.width; x++) {
      let v = 0;
      for (let k = 0; k < 4; k++) v += low[r * lowSide + xt.index[x * 4 + k]!]! * xt.weight[x * 4 + k]!;
      across[r * out.width + x] = v;
    }
  }
  return (y, row) => {
    row.fill(0);
    for (let k = 0; k < 4; k++) {
      const w = yt.weight[y * 4 + k]!;
      const src = yt.index[y * 4 + k]! * out.width;
      for (let x = 0; x < out.width; x++) row[x] = row[x]! + across[src + x]! * w;
    }
  };
}

/** A whole plane of bilinearRows (the padded square's image part: small). */
function bilinear(src: Float32Array, width: number, height: number, scaleX: number, scaleY: number, outW: number, outH: number): Float32Array {
  const out = new Float32Array(outW * outH);
  const rows = bilinearRows(src, width, height, scaleX, scaleY, outW);
  for (let y = 0; y < outH; y++) rows(y, out.subarray(y * outW, (y + 1) * outW));
  return out;
}
