import sharp from "sharp";
import { SamEdgeError } from "../../errors.ts";
import type { BinaryMask } from "../mask.ts";
import { assertMaskSize, assertValidMask, MAX_MASK_PIXELS } from "./validate.ts";

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Signature (8) + IHDR length (4) + "IHDR" (4) + width (4) + height (4). */
const PNG_HEADER_BYTES = 24;

/** A 1-channel 8-bit greyscale PNG: 255 where the mask is set, 0 elsewhere. */
export async function maskToPng(mask: BinaryMask): Promise<Buffer> {
  assertValidMask(mask, "maskToPng");
  const grey = Buffer.alloc(mask.data.length);
  for (let i = 0; i < grey.length; i++) grey[i] = mask.data[i] ? 255 : 0;
  // Without "b-w" sharp writes a 1-channel raw input as an RGB PNG, three times the bytes.
  return sharp(grey, { raw: { width: mask.width, height: mask.height, channels: 1 } })
    .toColourspace("b-w")
    .png()
    .toBuffer();
}

export async function maskToPngBase64(mask: BinaryMask): Promise<string> {
  return (await maskToPng(mask)).toString("base64");
}

/**
 * Reads any PNG (greyscale, RGB, RGBA, palette, 16-bit): a pixel is set when its first channel,
 * scaled to 8 bits, is above 127. The size is checked from the header before anything is decoded.
 */
export async function maskFromPng(png: Uint8Array): Promise<BinaryMask> {
  const { width, height } = readPngSize(png);
  let first: Buffer;
  try {
    first = await sharp(png, { limitInputPixels: MAX_MASK_PIXELS, failOn: "truncated" })
      .extractChannel(0)
      .raw({ depth: "uchar" })
      .toBuffer();
  } catch (err) {
    throw new SamEdgeError("MASK_INVALID", `the mask PNG cannot be decoded (${(err as Error).message}); send a complete PNG file`, {
      cause: err,
    });
  }
  if (first.length !== width * height) {
    throw new SamEdgeError("MASK_INVALID", `the mask PNG decoded to ${first.length} bytes, not the ${width}x${height} its header declares`);
  }
  const data = new Uint8Array(first.length);
  for (let i = 0; i < data.length; i++) data[i] = first[i]! > 127 ? 1 : 0;
  return { width, height, data };
}

/** Reads width and height from the IHDR chunk, which the PNG spec requires to come first. */
function readPngSize(png: Uint8Array): { width: number; height: number } {
  if (png.length === 0) throw new SamEdgeError("MASK_INVALID", "the mask PNG is empty (0 bytes); send a PNG file");
  const bytes = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (bytes.length < PNG_HEADER_BYTES || !bytes.subarray(0, 8).equals(PNG_SIGNATURE) || bytes.toString("latin1", 12, 16) !== "IHDR") {
    const head = bytes.subarray(0, 8).toString("hex");
    throw new SamEdgeError("MASK_INVALID", `the mask is not a PNG file (it starts with 0x${head}); send a PNG`);
  }
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  assertMaskSize(width, height, "the mask PNG header");
  return { width, height };
}
