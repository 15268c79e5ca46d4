import sharp from "sharp";
import { SamEdgeError } from "../../errors.ts";
import type { BinaryMask } from "../mask.ts";
import { pngDeclaredSize } from "../preprocess.ts";
import { assertMaskSize, assertValidMask, MAX_MASK_PIXELS } from "./validate.ts";


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

function readPngSize(png: Uint8Array): { width: number; height: number } {
  if (png.length === 0) throw new SamEdgeError("MASK_INVALID", "the mask PNG is empty (0 bytes); send a PNG file");
  const size = pngDeclaredSize(png);
  if (!size) {
    const head = Buffer.from(png.subarray(0, 8)).toString("hex");
    throw new SamEdgeError("MASK_INVALID", `the mask is not a PNG file (it starts with 0x${head}); send a PNG`);
  }
  assertMaskSize(size.width, size.height, "the mask PNG header");
  return size;
}
