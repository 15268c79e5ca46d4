/** A binary mask at some image's size: one byte per pixel (0 or 1), row-major. */
export interface BinaryMask {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** [x, y, width, height] in pixels, as the hosted API and COCO write boxes. */
export type BBox = [number, number, number, number];

export function maskArea(mask: BinaryMask): number {
  let n = 0;
  for (const v of mask.data) n += v;
  return n;
}

/** Tight box around the set pixels; [0, 0, 0, 0] for an empty mask. */
export function maskBBox(mask: BinaryMask): BBox {
  const { width, height, data } = mask;
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      if (data[row + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  return x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}

export function maskIoU(a: BinaryMask, b: BinaryMask): number {
  if (a.width !== b.width || a.height !== b.height) {
    throw new RangeError(`masks differ in size: ${a.width}x${a.height} vs ${b.width}x${b.height}`);
  }
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.data.length; i++) {
    const p = a.data[i]!;
    const q = b.data[i]!;
    inter += p & q;
    union += p | q;
  }
  return union === 0 ? 0 : inter / union;
}
