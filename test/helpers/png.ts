import { crc32, deflateSync } from "node:zlib";

/**
 * Hostile and minimal PNGs written byte by byte: an independent writer (the agent's own is in
 * segment/formats/png.ts), so a test cannot agree with a bug in it.
 */

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function chunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([length, body, crc]);
}

function ihdr(width: number, height: number, bitDepth: number, colourType: number): Buffer {
  const data = Buffer.alloc(13);
  data.writeUInt32BE(width, 0);
  data.writeUInt32BE(height, 4);
  data.set([bitDepth, colourType, 0, 0, 0], 8);
  return chunk("IHDR", data);
}

/** A valid signature and IHDR (correct CRC) declaring width x height, and no pixels: 8-bit RGB unless told. */
export function pngHeader(width: number, height: number, colourType: 0 | 2 = 2): Buffer {
  return Buffer.concat([SIGNATURE, ihdr(width, height, 8, colourType)]);
}

/**
 * A complete, valid 1-bit greyscale PNG of side x side black pixels: a few hundred KB on the
 * wire that would decode to side² pixels (a decompression bomb at 30000).
 */
export function pngBomb(side: number): Buffer {
  // Each row: filter byte 0, then side/8 bytes of zeros.
  const raw = Buffer.alloc((Math.ceil(side / 8) + 1) * side);
  return Buffer.concat([SIGNATURE, ihdr(side, side, 1, 0), chunk("IDAT", deflateSync(raw, { level: 9 })), chunk("IEND", Buffer.alloc(0))]);
}
