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
 * align_corners=False, edge taps clamped).
 */
export function upsampleBicubic(low: Float32Array, lowSide: number, out: { width: number; height: number }): Float32Array {
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
  // Rows first: each low-res row interpolated across to the output width, once.
  const rows = new Float32Array(lowSide * out.width);
  for (let r = 0; r < lowSide; r++) {
    for (let x = 0; x < out.width; x++) {
      let v = 0;
      for (let k = 0; k < 4; k++) v += low[r * lowSide + xt.index[x * 4 + k]!]! * xt.weight[x * 4 + k]!;
      rows[r * out.width + x] = v;
    }
  }
  const result = new Float32Array(out.width * out.height);
  for (let y = 0; y < out.height; y++) {
    for (let k = 0; k < 4; k++) {
      const w = yt.weight[y * 4 + k]!;
      const src = yt.index[y * 4 + k]! * out.width;
      for (let x = 0; x < out.width; x++) result[y * out.width + x] = result[y * out.width + x]! + rows[src + x]! * w;
    }
  }
  return result;
}

/**
 * torch's F.interpolate(mode="bilinear", align_corners=False) of the top-left `outW/scaleX` x
 * `outH/scaleY` part of a `width`-wide plane: source = (dst + 0.5) * scale - 0.5, clamped at 0.
 */
function bilinear(src: Float32Array, width: number, height: number, scaleX: number, scaleY: number, outW: number, outH: number): Float32Array {
  const out = new Float32Array(outW * outH);
  const xs = new Int32Array(outW);
  const x1 = new Int32Array(outW);
  const xw = new Float32Array(outW);
  for (let x = 0; x < outW; x++) {
    const u = Math.max((x + 0.5) * scaleX - 0.5, 0);
    xs[x] = Math.floor(u);
    x1[x] = Math.min(xs[x]! + 1, width - 1);
    xw[x] = u - xs[x]!;
  }
  for (let y = 0; y < outH; y++) {
    const v = Math.max((y + 0.5) * scaleY - 0.5, 0);
    const y0 = Math.floor(v);
    const wy = v - y0;
    const r0 = y0 * width;
    const r1 = Math.min(y0 + 1, height - 1) * width;
    for (let x = 0; x < outW; x++) {
      const wx = xw[x]!;
      const top = src[r0 + xs[x]!]! * (1 - wx) + src[r0 + x1[x]!]! * wx;
      const bottom = src[r1 + xs[x]!]! * (1 - wx) + src[r1 + x1[x]!]! * wx;
      out[y * outW + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}

/**
 * SAM's postprocess_masks step by step, as its predictor and transformers' post_process_masks
 * run it: low-res logits to the padded input square, cropped to the resized image, then to the
 * original size. For decoders that return only low-res logits (EdgeSAM's, transformers') this
 * gives the reference's mask edges, where one combined lookup (upsampleLowRes) moves some by a
 * pixel.
 */
export function upsampleLikeSam(
  low: Float32Array,
  lowSide: number,
  inputSize: number,
  resized: { width: number; height: number },
  out: { width: number; height: number },
): Float32Array {
  const padded = bilinear(low, lowSide, lowSide, lowSide / inputSize, lowSide / inputSize, resized.width, resized.height);
  return bilinear(padded, resized.width, resized.height, resized.width / out.width, resized.height / out.height, out.width, out.height);
}
