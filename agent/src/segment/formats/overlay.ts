import sharp from "sharp";
import { SamEdgeError } from "../../core/errors.ts";
import type { BinaryMask } from "../mask.ts";
import { assertValidMask, MAX_MASK_PIXELS } from "./validate.ts";

export type Rgb = [r: number, g: number, b: number];

export interface OverlayOptions {
  /** How much of each mask's colour replaces the image under it, 0..1. Default 0.5. */
  alpha?: number;
  /** Colours for masks 0, 1, ...; masks past the end of the list get generated colours. */
  colors?: readonly Rgb[];
  /** JPEG quality, 1..100. Default 85. */
  quality?: number;
}

/**
 * Draws each mask over the image in its own colour and returns a JPEG. The image is turned
 * upright from its EXIF orientation first, because masks are in upright coordinates (as
 * preprocess produces them); each mask must match the upright size.
 */
export async function overlayImage(image: Uint8Array, masks: readonly BinaryMask[], options: OverlayOptions = {}): Promise<Buffer> {
  const alpha = options.alpha ?? 0.5;
  if (!(alpha >= 0 && alpha <= 1)) throw new SamEdgeError("MASK_INVALID", `overlay alpha is ${alpha}; use a number from 0 to 1`);
  const quality = options.quality ?? 85;
  if (!Number.isInteger(quality) || quality < 1 || quality > 100) {
    throw new SamEdgeError("MASK_INVALID", `overlay JPEG quality is ${quality}; use a whole number from 1 to 100`);
  }
  const { pixels, width, height } = await decodeUprightRgb(image);
  for (const [index, mask] of masks.entries()) {
    assertValidMask(mask, `overlay mask ${index}`);
    if (mask.width !== width || mask.height !== height) {
      throw new SamEdgeError("MASK_INVALID", `overlay mask ${index} is ${mask.width}x${mask.height} but the image is ${width}x${height}; masks must match the image`);
    }
    blend(pixels, mask, options.colors?.[index] ?? generatedColor(index), alpha);
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .jpeg({ quality })
    .toBuffer();
}

async function decodeUprightRgb(image: Uint8Array): Promise<{ pixels: Buffer; width: number; height: number }> {
  if (image.length === 0) throw new SamEdgeError("IMAGE_EMPTY", "the image to overlay is empty (0 bytes); send a JPEG, PNG or WebP file");
  try {
    const { data, info } = await sharp(image, { limitInputPixels: MAX_MASK_PIXELS, failOn: "truncated" })
      .rotate()
      // Transparent areas would otherwise show whatever colour happens to sit under alpha 0.
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { pixels: data, width: info.width, height: info.height };
  } catch (err) {
    throw new SamEdgeError("IMAGE_CORRUPT", `the image to overlay cannot be decoded: ${(err as Error).message}`, { cause: err });
  }
}

function blend(pixels: Buffer, mask: BinaryMask, color: Rgb, alpha: number): void {
  for (let i = 0; i < mask.data.length; i++) {
    if (!mask.data[i]) continue;
    for (let c = 0; c < 3; c++) {
      const p = i * 3 + c;
      pixels[p] = Math.round(pixels[p]! * (1 - alpha) + color[c]! * alpha);
    }
  }
}

/** Hues a golden angle apart never repeat and stay far apart for the first dozen or so masks. */
function generatedColor(index: number): Rgb {
  const hue = (index * 137.508) % 360;
  return hsvToRgb(hue, 0.85, 1);
}

function hsvToRgb(hue: number, saturation: number, value: number): Rgb {
  const channel = (n: number): number => {
    const k = (n + hue / 60) % 6;
    return Math.round(255 * (value - value * saturation * Math.max(0, Math.min(k, 4 - k, 1))));
  };
  return [channel(5), channel(3), channel(1)];
}
