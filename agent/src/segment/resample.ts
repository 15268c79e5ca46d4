/**
 * Pillow's `Image.resize(size, BILINEAR)` on 8-bit RGB, to the bit: SAM's reference predictor
 * resizes with it (ResizeLongestSide.apply_image), and a model's masks follow its input closely
 * enough that another library's bilinear (libvips rounds and centres differently) moves mask
 * edges by a pixel or more. Separable, horizontal pass first, as Pillow's Resample.c does:
 * triangle-filter weights widened by the scale when shrinking (antialiasing), normalised, in
 * 22-bit fixed point, each pass rounded to 8 bits.
 */

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

interface Coefficients {
  /** Per output pixel: first input pixel, and how many. */
  bounds: Int32Array;
  /** Per output pixel: `taps` fixed-point weights. */
  weights: Int32Array;
  taps: number;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter. */
function coefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * taps);
  const w = new Float64Array(taps);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C casts truncate toward zero.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const count = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < count; x++) {
      const t = Math.abs((x + xmin - center + 0.5) / filterScale);
      w[x] = t < 1 ? 1 - t : 0;
      sum += w[x]!;
    }
    for (let x = 0; x < count; x++) {
      const v = sum !== 0 ? w[x]! / sum : w[x]!;
      weights[xx * taps + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = count;
  }
  return { bounds, weights, taps };
}

/** Sums stay below 2^31 (weights sum to 2^22, pixels to 255): int32 arithmetic, as in C. */
function clip8(sum: number): number {
  return Math.min(255, Math.max(0, sum >> PRECISION_BITS));
}

function horizontal(src: Uint8Array, width: number, height: number, outWidth: number): Uint8Array {
  const { bounds, weights, taps } = coefficients(width, outWidth);
  const out = new Uint8Array(outWidth * height * 3);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2]!;
      const count = bounds[xx * 2 + 1]!;
      let r = HALF;
      let g = HALF;
      let b = HALF;
      for (let x = 0; x < count; x++) {
        const k = weights[xx * taps + x]!;
        const i = row + (xmin + x) * 3;
        r = (r + src[i]! * k) | 0;
        g = (g + src[i + 1]! * k) | 0;
        b = (b + src[i + 2]! * k) | 0;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return out;
}

function vertical(src: Uint8Array, width: number, height: number, outHeight: number): Uint8Array {
  const { bounds, weights, taps } = coefficients(height, outHeight);
  const stride = width * 3;
  const out = new Uint8Array(stride * outHeight);
  // Row by row into one accumulator: the same sums, in the order memory is laid out.
  const sum = new Int32Array(stride);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2]!;
    const count = bounds[yy * 2 + 1]!;
    sum.fill(HALF);
    for (let y = 0; y < count; y++) {
      const k = weights[yy * taps + y]!;
      const row = (ymin + y) * stride;
      for (let i = 0; i < stride; i++) sum[i] = (sum[i]! + src[row + i]! * k) | 0;
    }
    const o = yy * stride;
    for (let i = 0; i < stride; i++) out[o + i] = clip8(sum[i]!);
  }
  return out;
}

/** RGB bytes (row-major) at width x height -> outWidth x outHeight, as Pillow's bilinear resize. */
export function resizeBilinear(rgb: Uint8Array, width: number, height: number, outWidth: number, outHeight: number): Uint8Array {
  let out = rgb;
  if (outWidth !== width) out = horizontal(out, width, height, outWidth);
  if (outHeight !== height) out = vertical(out, outWidth, height, outHeight);
  return out;
}
