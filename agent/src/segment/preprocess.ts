import sharp from "sharp";
import { SamEdgeError } from "../core/errors.ts";
import { resizeBilinear } from "./resample.ts";

export type ImageFormat = "jpeg" | "png" | "webp";

export interface ImageLimits {
  /** Largest accepted file, in bytes (the hosted API accepts 25 MB). */
  maxBytes: number;
  /** Largest accepted width x height: a guard against decompression bombs. */
  maxPixels: number;
}

export const DEFAULT_IMAGE_LIMITS: ImageLimits = { maxBytes: 25 * 1024 * 1024, maxPixels: 64 * 1024 * 1024 };

/**
 * An image resized for the encoder: the longest side is `size` (SAM), or `size` x `size`
 * (SAM 2, EfficientSAM), EXIF orientation applied, RGB bytes row-major. `width`/`height` are
 * the original (upright) dimensions that prompts and masks are expressed in.
 */
export interface ModelImage {
  width: number;
  height: number;
  resizedWidth: number;
  resizedHeight: number;
  rgb: Uint8Array;
}

/** Decoded pixels: RGB bytes, row-major, upright (EXIF orientation applied). */
export interface RawImage {
  width: number;
  height: number;
  rgb: Uint8Array;
}

/** The encoder's input size for an image of width x height. */
/**
 * Where the image goes, and whose resize takes it there: Pillow's bilinear to the bit where it
 * enlarges (or keeps) the image, sharp's where it shrinks it. EfficientSAM's graph resizes itself:
 * it gets the image as decoded, up to twice its input size.
 */
function resizePlan(width: number, height: number, resize: ResizeTo): { target: { width: number; height: number }; exact: boolean } {
  if (resize.fit === "none") {
    const asDecoded = Math.max(width, height) <= 2 * resize.size;
    return asDecoded ? { target: { width, height }, exact: true } : { target: { width: resize.size, height: resize.size }, exact: false };
  }
  const target = resize.fit === "stretch" ? { width: resize.size, height: resize.size } : resizedShape(width, height, resize.size);
  return { target, exact: target.width >= width && target.height >= height };
}

/** Decodes an image once, upright, to RGB: for work on several parts of it (Everything's crops). */
export async function decodeUpright(bytes: Uint8Array, limits: ImageLimits = DEFAULT_IMAGE_LIMITS): Promise<RawImage> {
  const info = await inspectImage(bytes, limits);
  try {
    const { data, info: out } = await sharp(bytes, { limitInputPixels: limits.maxPixels, failOn: "truncated" }).rotate().removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
    return { width: out.width, height: out.height, rgb: data };
  } catch (err) {
    throw new SamEdgeError("IMAGE_CORRUPT", `the ${info.format.toUpperCase()} image cannot be decoded: ${(err as Error).message}`, { cause: err });
  }
}

/** Identifies the format by its magic bytes, never by a file name or a declared type. */
export function sniffFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  if (bytes.length >= 8 && Buffer.from(bytes.subarray(0, 8)).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return "png";
  if (bytes.length >= 12 && Buffer.from(bytes.subarray(0, 4)).toString("latin1") === "RIFF" && Buffer.from(bytes.subarray(8, 12)).toString("latin1") === "WEBP") {
    return "webp";
  }
  return undefined;
}

/**
 * Width and height from a PNG's IHDR chunk (which the spec puts first), read without a
 * decoder: a decompression bomb is refused before any library sees it. Undefined when the
 * bytes are not a PNG with a complete header.
 */
export function pngDeclaredSize(bytes: Uint8Array): { width: number; height: number } | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 24 || sniffFormat(b) !== "png" || b.toString("latin1", 12, 16) !== "IHDR") return undefined;
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

/**
 * How a model wants its image resized: SAM's longest side, keeping the aspect ratio (then
 * padded), SAM 2's square, not keeping it, or not at all (EfficientSAM's graph resizes).
 */
export interface ResizeTo {
  fit: "longest-side" | "stretch" | "none";
  size: number;
}

/** SAM's ResizeLongestSide.get_preprocess_shape. */
export function resizedShape(width: number, height: number, longest: number): { width: number; height: number } {
  const scale = longest / Math.max(width, height);
  return { width: Math.floor(width * scale + 0.5), height: Math.floor(height * scale + 0.5) };
}

/** Checks bytes and header before any pixel is decoded. */
export async function inspectImage(bytes: Uint8Array, limits: ImageLimits = DEFAULT_IMAGE_LIMITS): Promise<{ format: ImageFormat; width: number; height: number; orientation: number }> {
  if (bytes.length === 0) throw new SamEdgeError("IMAGE_EMPTY", "the image is empty (0 bytes); send a JPEG, PNG or WebP file");
  if (bytes.length > limits.maxBytes) {
    throw new SamEdgeError("IMAGE_TOO_LARGE", `the image is ${bytes.length} bytes; the limit is ${limits.maxBytes} bytes`);
  }
  const format = sniffFormat(bytes);
  if (!format) {
    const head = Buffer.from(bytes.subarray(0, 8)).toString("hex");
    throw new SamEdgeError("IMAGE_UNSUPPORTED", `the bytes are not a JPEG, PNG or WebP image (they start with 0x${head}); send one of those formats`);
  }
  const declared = format === "png" ? pngDeclaredSize(bytes) : undefined;
  if (declared && declared.width * declared.height > limits.maxPixels) {
    throw new SamEdgeError("IMAGE_TOO_LARGE", `the PNG declares ${declared.width}x${declared.height} pixels; the limit is ${limits.maxPixels} pixels in all`);
  }
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>["metadata"]>>;
  try {
    meta = await sharp(bytes).metadata();
  } catch (err) {
    throw new SamEdgeError("IMAGE_CORRUPT", `the ${format.toUpperCase()} header cannot be read: ${(err as Error).message}`, { cause: err });
  }
  const { width, height } = meta;
  if (!width || !height) throw new SamEdgeError("IMAGE_CORRUPT", `the ${format.toUpperCase()} image declares no size`);
  if (width * height > limits.maxPixels) {
    throw new SamEdgeError("IMAGE_TOO_LARGE", `the image declares ${width}x${height} pixels; the limit is ${limits.maxPixels} pixels in all`);
  }
  const orientation = meta.orientation ?? 1;
  // Orientations 5-8 turn the image a quarter: the upright image has width and height swapped.
  const swap = orientation >= 5 && orientation <= 8;
  return { format, width: swap ? height : width, height: swap ? width : height, orientation };
}

/**
 * Decodes, turns upright and resizes for the encoder. An image the resize enlarges (or keeps) is
 * resized as the reference predictors do, Pillow's bilinear to the bit (segment/resample.ts):
 * there libvips' bilinear differs most (up to 93 grey levels at edges on the parity fixtures).
 * One it shrinks is resized by sharp in its decoding pipeline (JPEG shrink-on-load: 5x faster on
 * a 1600x1200 JPEG, bench/resize.ts), within 3 grey levels of Pillow's. EfficientSAM's graph
 * resizes itself: it gets the image as decoded, up to twice its input size.
 */
export async function loadForModel(input: Uint8Array | RawImage, resize: ResizeTo, limits: ImageLimits = DEFAULT_IMAGE_LIMITS): Promise<ModelImage> {
  if (!(input instanceof Uint8Array)) return resizeRaw(input, resize);
  const bytes = input;
  const info = await inspectImage(bytes, limits);
  const { target, exact } = resizePlan(info.width, info.height, resize);
  try {
    const pipeline = sharp(bytes, { limitInputPixels: limits.maxPixels, failOn: "truncated" }).rotate().removeAlpha().toColourspace("srgb");
    let rgb: Uint8Array;
    if (exact) {
      const decoded = await pipeline.raw().toBuffer();
      rgb = resizeBilinear(decoded, info.width, info.height, target.width, target.height);
    } else {
      rgb = await pipeline.resize(target.width, target.height, { fit: "fill", kernel: "linear" }).raw().toBuffer();
    }
    return { width: info.width, height: info.height, resizedWidth: target.width, resizedHeight: target.height, rgb };
  } catch (err) {
    throw new SamEdgeError("IMAGE_CORRUPT", `the ${info.format.toUpperCase()} image cannot be decoded: ${(err as Error).message}`, { cause: err });
  }
}

/** The same resize as loadForModel's, of pixels already decoded. */
async function resizeRaw(image: RawImage, resize: ResizeTo): Promise<ModelImage> {
  const { width, height } = image;
  const { target, exact } = resizePlan(width, height, resize);
  const rgb = exact
    ? resizeBilinear(image.rgb, width, height, target.width, target.height)
    : await sharp(image.rgb, { raw: { width, height, channels: 3 } }).resize(target.width, target.height, { fit: "fill", kernel: "linear" }).raw().toBuffer();
  return { width, height, resizedWidth: target.width, resizedHeight: target.height, rgb };
}
