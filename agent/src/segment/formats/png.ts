import { constants as zlibConstants, crc32, deflateSync } from "node:zlib";
import sharp from "sharp";
import { SamEdgeError } from "../../core/errors.ts";
import type { BBox, BinaryMask } from "../mask.ts";
import { pngDeclaredSize } from "../preprocess.ts";
import { assertMaskSize, assertValidMask, MAX_MASK_PIXELS } from "./validate.ts";

function pngChunk(type: string, body: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(body.length, 0);
  head.write(type, 4, "latin1");
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(crc32(body, crc32(head.subarray(4, 8))) >>> 0, 0);
  return Buffer.concat([head, body, tail]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * A 1-channel 8-bit greyscale PNG: 255 where the mask is set, 0 elsewhere. The rows are written
 * here and deflated by zlib's run-length strategy, which suits rows of two values: a mask is the
 * one image every answer carries, and a general encoder (sharp) spends its time on filters a
 * mask does not need. bench/mask-answer.ts gives its cost beside a click's. 8-bit rather than
 * 1-bit greyscale, since clients threshold the decoded values (`> 127`) as the hosted API's
 * masks invite. `bbox`, when the caller has it, must be the mask's own box (maskBBox): pixels
 * outside it are then not read.
 */
export async function maskToPng(mask: BinaryMask, bbox?: BBox): Promise<Buffer> {
  assertValidMask(mask, "maskToPng");
  const { width, height } = mask;
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 0; // greyscale; compression, filter and interlace methods stay 0
  const idat = deflateSync(maskRows(mask, bbox ?? [0, 0, width, height]), { level: 1, strategy: zlibConstants.Z_RLE });
  return Buffer.concat([PNG_SIGNATURE, pngChunk("IHDR", header), pngChunk("IDAT", idat), pngChunk("IEND", new Uint8Array(0))]);
}

/** The PNG's image data: each row a 0 filter byte (none), then 0 or 255 per pixel. */
function maskRows({ width, data }: BinaryMask, [x0, y0, w, h]: BBox): Buffer {
  const rows = Buffer.alloc((width + 1) * (data.length / width));
  for (let y = y0; y < y0 + h; y++) {
    const from = y * width;
    const to = y * (width + 1) + 1;
    for (let x = x0; x < x0 + w; x++) if (data[from + x]) rows[to + x] = 255;
  }
  return rows;
}

export async function maskToPngBase64(mask: BinaryMask, bbox?: BBox): Promise<string> {
  return (await maskToPng(mask, bbox)).toString("base64");
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
