import type { BinaryMask } from "./mask.ts";

/** Sizes of the 8-connected components of pixels equal to `value`; labels[i] = component index or -1. */
function components(mask: BinaryMask, value: 0 | 1): { labels: Int32Array; sizes: number[] } {
  const { width, height, data } = mask;
  const labels = new Int32Array(data.length).fill(-1);
  const sizes: number[] = [];
  const queue = new Int32Array(data.length);
  for (let start = 0; start < data.length; start++) {
    if (data[start] !== value || labels[start] !== -1) continue;
    const id = sizes.length;
    let head = 0;
    let tail = 0;
    queue[tail++] = start;
    labels[start] = id;
    while (head < tail) {
      const p = queue[head++]!;
      const px = p % width;
      const py = (p - px) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const y = py + dy;
        if (y < 0 || y >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const x = px + dx;
          if (x < 0 || x >= width) continue;
          const q = y * width + x;
          if (data[q] === value && labels[q] === -1) {
            labels[q] = id;
            queue[tail++] = q;
          }
        }
      }
    }
    sizes.push(tail);
  }
  return { labels, sizes };
}

/**
 * SAM's remove_small_regions: fills holes smaller than `minArea` pixels, then drops islands
 * smaller than that (keeping the largest island if every one is small).
 */
export function removeSmallRegions(mask: BinaryMask, minArea: number): { mask: BinaryMask; area: number } {
  const data = mask.data.slice();
  const holes = components(mask, 0);
  for (let i = 0; i < data.length; i++) if (holes.labels[i]! >= 0 && holes.sizes[holes.labels[i]!]! < minArea) data[i] = 1;
  const filled = { width: mask.width, height: mask.height, data };
  const islands = components(filled, 1);
  const largest = islands.sizes.reduce((best, s, i, all) => (s > all[best]! ? i : best), 0);
  const keep = islands.sizes.map((s, i) => s >= minArea || (i === largest && islands.sizes.every((t) => t < minArea)));
  let area = 0;
  for (let i = 0; i < data.length; i++) {
    if (data[i]) {
      if (keep[islands.labels[i]!]) area++;
      else data[i] = 0;
    }
  }
  return { mask: filled, area };
}
