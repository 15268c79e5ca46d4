import type { BinaryMask } from "../../agent/src/segment/mask.ts";

/**
 * A mask PNG's image data before compression, written out byte by byte: each row a 0 filter
 * byte, then 0 or 255 per pixel. The reference the mask deflate is checked and timed against.
 */
export function pngRows({ width, height, data }: BinaryMask): Buffer {
  const rows = Buffer.alloc((width + 1) * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) if (data[y * width + x]) rows[y * (width + 1) + 1 + x] = 255;
  return rows;
}
