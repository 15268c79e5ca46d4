import { SamEdgeError } from "../../core/errors.ts";
import type { BBox, BinaryMask } from "../mask.ts";
import { assertMaskSize, assertValidMask } from "./validate.ts";

/**
 * COCO run-length encoding, as pycocotools' `mask.encode` returns it: runs walk the mask
 * column by column (Fortran order), alternate 0s and 1s, and always start with a run of 0s
 * (of length 0 when the top-left pixel is set).
 */
export interface CocoRle {
  size: [height: number, width: number];
  counts: string;
}

/** The uncompressed form COCO uses for `iscrowd` annotations: the runs as plain numbers. */
export interface UncompressedCocoRle {
  size: [height: number, width: number];
  counts: number[];
}

/**
 * Encodes a mask; `counts` is byte-identical to pycocotools' compressed string. `bbox`, when the
 * caller has it, must be the mask's own box (maskBBox): pixels outside it are then not read.
 */
export function encodeRle(mask: BinaryMask, bbox?: BBox): CocoRle {
  assertValidMask(mask, "encodeRle");
  return { size: [mask.height, mask.width], counts: runsToString(columnMajorRuns(mask, bbox ?? [0, 0, mask.width, mask.height])) };
}

/** Decodes either the compressed string form or the uncompressed number[] form. */
export function decodeRle(rle: CocoRle | UncompressedCocoRle): BinaryMask {
  const [height, width] = readSize(rle);
  const runs = typeof rle.counts === "string" ? runsFromString(rle.counts) : rle.counts;
  return paintRuns(runs, width, height);
}

/**
 * The runs, found without walking the mask column by column: that walk strides a whole row per
 * pixel, which is most of an answer's encoding time. Instead each row is compared with the row
 * above (four pixels at a time where the rows are 4-byte aligned) and only the pixels that differ
 * become change points, kept as column-major positions; sorted, their gaps are the runs. Outside
 * the box every pixel is 0, so only its rows (and the row below it) and its columns can differ
 * from the row above. The change points arrive row by row, so each column's are already in
 * order: counting them per column orders them all without a comparison sort.
 */
function columnMajorRuns(mask: BinaryMask, [bx, by, bw, bh]: BBox): number[] {
  const { width, height, data } = mask;
  // Each change point as its column and its column-major position.
  const columns: number[] = [];
  const changes: number[] = [];
  // Column tops: the pixel before (x, 0) in column-major order is the bottom of column x - 1,
  // and before the first column a run of 0s.
  for (let x = 0; x < width; x++) {
    const before = x === 0 ? 0 : data[(height - 1) * width + x - 1]! ? 1 : 0;
    if ((data[x]! ? 1 : 0) !== before) columns.push(x), changes.push(x * height);
  }
  const words = width % 4 === 0 && data.byteOffset % 4 === 0 ? new Uint32Array(data.buffer, data.byteOffset, data.length / 4) : undefined;
  const rowWords = width / 4;
  for (let y = Math.max(1, by), yEnd = Math.min(height - 1, by + bh); y <= yEnd; y++) {
    const row = y * width;
    if (words) {
      const w0 = row / 4;
      for (let w = bx >> 2, wEnd = (bx + bw + 3) >> 2; w < wEnd; w++) {
        if (words[w0 + w] === words[w0 + w - rowWords]) continue;
        for (let x = w * 4; x < w * 4 + 4; x++) {
          if ((data[row + x]! ? 1 : 0) !== (data[row + x - width]! ? 1 : 0)) columns.push(x), changes.push(x * height + y);
        }
      }
    } else {
      for (let x = bx; x < bx + bw; x++) {
        if ((data[row + x]! ? 1 : 0) !== (data[row + x - width]! ? 1 : 0)) columns.push(x), changes.push(x * height + y);
      }
    }
  }
  const next = new Uint32Array(width + 1);
  for (const x of columns) next[x + 1]!++;
  for (let x = 0; x < width; x++) next[x + 1]! += next[x]!;
  const sorted = new Float64Array(changes.length);
  for (let i = 0; i < changes.length; i++) sorted[next[columns[i]!]!++] = changes[i]!;
  const runs: number[] = [];
  let last = 0;
  for (const p of sorted) {
    runs.push(p - last);
    last = p;
  }
  runs.push(width * height - last);
  return runs;
}

/**
 * pycocotools' rleToString: each run, minus the run two before it (from the fourth run on, the
 * C code's `i > 2`), as a signed LEB128-like number in 5-bit groups, with 0x20 as the
 * "more follows" bit, offset into the printable range by 48.
 */
function runsToString(runs: readonly number[]): string {
  // At most MAX_GROUPS_PER_RUN characters per run, written as bytes and read as one string.
  const out = Buffer.allocUnsafe(runs.length * MAX_GROUPS_PER_RUN);
  let n = 0;
  for (let i = 0; i < runs.length; i++) {
    let x = runs[i]! - (i > 2 ? runs[i - 2]! : 0);
    let more = true;
    while (more) {
      let c = x & 0x1f;
      // Sizes are capped at 100 megapixels, so runs and their differences fit in 32 bits.
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out[n++] = c + 48;
    }
  }
  return out.toString("latin1", 0, n);
}

/** A 100-megapixel count needs 6 groups of 5 bits; more than this is hostile input, not a mask. */
const MAX_GROUPS_PER_RUN = 7;

/** pycocotools' rleFrString, rejecting what the C code would silently misread. */
function runsFromString(counts: string): number[] {
  const runs: number[] = [];
  let p = 0;
  while (p < counts.length) {
    let x = 0;
    let groups = 0;
    let more = true;
    while (more) {
      if (p >= counts.length) throw invalidCounts("it ends in the middle of a number");
      const c = counts.charCodeAt(p) - 48;
      if (c < 0 || c > 0x3f) throw invalidCounts(`character ${JSON.stringify(counts[p])} at ${p} is outside '0'..'o'`);
      if (groups === MAX_GROUPS_PER_RUN) throw invalidCounts(`the number at ${p} is too long`);
      // Multiplication, not <<, so 35-bit values cannot wrap around in 32-bit integer maths.
      x += (c & 0x1f) * 2 ** (5 * groups);
      more = (c & 0x20) !== 0;
      p++;
      groups++;
      if (!more && c & 0x10) x -= 2 ** (5 * groups);
    }
    if (runs.length > 2) x += runs[runs.length - 2]!;
    runs.push(x);
  }
  return runs;
}

function invalidCounts(why: string): SamEdgeError {
  return new SamEdgeError("MASK_INVALID", `RLE counts string is not valid: ${why}; send counts as pycocotools' mask.encode writes them`);
}

function readSize(rle: CocoRle | UncompressedCocoRle): [number, number] {
  const size: unknown = rle?.size;
  if (!Array.isArray(size) || size.length !== 2) {
    throw new SamEdgeError("MASK_INVALID", "RLE size must be [height, width]");
  }
  const [height, width] = size as [number, number];
  assertMaskSize(width, height, "RLE size");
  return [height, width];
}

/** Paints the 1-runs (every second run) column by column into a row-major mask. */
function paintRuns(runs: unknown, width: number, height: number): BinaryMask {
  assertRunsCover(runs, width * height);
  const data = new Uint8Array(width * height);
  let position = 0;
  for (let i = 0; i < runs.length; i++) {
    if (i % 2 === 1) paintColumnMajor(data, width, height, position, runs[i]!);
    position += runs[i]!;
  }
  return { width, height, data };
}

/** Runs come from untrusted JSON: they must be non-negative integers adding up to the mask's area. */
function assertRunsCover(runs: unknown, total: number): asserts runs is number[] {
  if (!Array.isArray(runs)) throw new SamEdgeError("MASK_INVALID", "RLE counts must be a string or an array of numbers");
  let sum = 0;
  for (let i = 0; i < runs.length; i++) {
    const run: unknown = runs[i];
    if (typeof run !== "number" || !Number.isInteger(run) || run < 0) {
      throw new SamEdgeError("MASK_INVALID", `RLE run ${i} is ${String(run)}; every run must be a non-negative integer`);
    }
    sum += run;
  }
  if (sum !== total) {
    throw new SamEdgeError("MASK_INVALID", `RLE counts add up to ${sum} pixels but the size needs ${total}; send counts that cover the mask exactly`);
  }
}

function paintColumnMajor(data: Uint8Array, width: number, height: number, start: number, length: number): void {
  let x = Math.floor(start / height);
  let y = start % height;
  for (let n = 0; n < length; n++) {
    data[y * width + x] = 1;
    if (++y === height) {
      y = 0;
      x++;
    }
  }
}
