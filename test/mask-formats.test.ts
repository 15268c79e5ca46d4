import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import { SamEdgeError } from "../agent/src/core/errors.ts";
import { maskArea, maskBBox, maskIoU, type BinaryMask } from "../agent/src/segment/mask.ts";
import {
  decodeRle,
  encodeRle,
  maskFromPng,
  maskToPng,
  maskToPngBase64,
  maskToPolygons,
  overlayImage,
  polygonsToMask,
  toCocoSegmentation,
  toYoloSegmentation,
  type Point,
  type Polygon,
} from "../agent/src/segment/formats/index.ts";
import { pngHeader } from "./helpers/png.ts";

// ---------- masks built in code ----------

function makeMask(width: number, height: number, isSet: (x: number, y: number) => boolean): BinaryMask {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = isSet(x, y) ? 1 : 0;
  return { width, height, data };
}

function inDisc(x: number, y: number, cx: number, cy: number, r: number): boolean {
  return (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r;
}

const disc = (w: number, h: number, cx: number, cy: number, r: number) => makeMask(w, h, (x, y) => inDisc(x, y, cx, cy, r));
const ring = (w: number, h: number, cx: number, cy: number, outer: number, inner: number) =>
  makeMask(w, h, (x, y) => inDisc(x, y, cx, cy, outer) && !inDisc(x, y, cx, cy, inner));

/** Deterministic noise: mulberry32, so a failure reproduces. */
function noise(width: number, height: number, density: number, seed: number): BinaryMask {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return makeMask(width, height, () => random() < density);
}

const FIXTURES: Record<string, BinaryMask> = {
  disc: disc(64, 48, 30, 24, 18),
  ring: ring(70, 70, 35, 35, 30, 15),
  ringWithIsland: makeMask(50, 50, (x, y) => (inDisc(x, y, 25, 25, 22) && !inDisc(x, y, 25, 25, 14)) || inDisc(x, y, 25, 25, 6)),
  blobs: makeMask(80, 60, (x, y) => inDisc(x, y, 15, 15, 10) || inDisc(x, y, 55, 20, 12) || inDisc(x, y, 35, 45, 9)),
  singlePixel: makeMask(7, 5, (x, y) => x === 3 && y === 2),
  topLeftPixel: makeMask(4, 3, (x, y) => x === 0 && y === 0),
  full: makeMask(9, 4, () => true),
  empty: makeMask(6, 6, () => false),
  touchesBorders: makeMask(31, 17, (x, y) => inDisc(x, y, 0, 0, 9) || x === 30 || y === 16),
  diagonalPair: makeMask(2, 2, (x, y) => x === y),
  checkerboard: makeMask(9, 7, (x, y) => (x + y) % 2 === 0),
  column1xN: makeMask(1, 17, (_x, y) => y % 5 < 2),
  row1xN: makeMask(23, 1, (x) => x % 7 > 3),
  onePixelMask: makeMask(1, 1, () => true),
  // Long runs: counts need several 5-bit groups, and their differences go negative.
  sparseLarge: makeMask(400, 300, (x, y) => inDisc(x, y, 300, 200, 40) || (x === 5 && y < 250)),
  // Sizes a SAM mask usually has, for the tolerance-1 IoU checks.
  largeRing: ring(130, 130, 65, 65, 60, 30),
  largeRingWithIsland: makeMask(110, 110, (x, y) => (inDisc(x, y, 55, 55, 50) && !inDisc(x, y, 55, 55, 30)) || inDisc(x, y, 55, 55, 15)),
  largeBlobs: makeMask(160, 120, (x, y) => inDisc(x, y, 30, 30, 22) || inDisc(x, y, 110, 40, 25) || inDisc(x, y, 70, 90, 20)),
  largeOnBorders: makeMask(100, 80, (x, y) => inDisc(x, y, 0, 0, 40) || y >= 60 || (x >= 80 && y >= 20 && y < 45)),
  noise30: noise(37, 23, 0.3, 1),
  noise50: noise(41, 29, 0.5, 2),
  noise70: noise(33, 31, 0.7, 3),
};

function differingPixels(a: BinaryMask, b: BinaryMask): number {
  expect([b.width, b.height]).toEqual([a.width, a.height]);
  let n = 0;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) n++;
  return n;
}

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a SamEdgeError, but nothing was thrown");
}

async function caughtAsync(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a SamEdgeError, but nothing was thrown");
}

function expectMaskInvalid(err: unknown, message?: RegExp): void {
  expect(err).toBeInstanceOf(SamEdgeError);
  expect((err as SamEdgeError).code).toBe("MASK_INVALID");
  if (message) expect((err as SamEdgeError).message).toMatch(message);
}

// ---------- COCO RLE ----------

/** Column-major bytes, as pycocotools wants the mask. */
function fortranBytes(mask: BinaryMask): Buffer {
  const out = Buffer.alloc(mask.width * mask.height);
  let k = 0;
  for (let x = 0; x < mask.width; x++) for (let y = 0; y < mask.height; y++) out[k++] = mask.data[y * mask.width + x]!;
  return out;
}

/** COCO's uncompressed counts, written out independently of encodeRle. */
function naiveRuns(mask: BinaryMask): number[] {
  const runs = [0];
  let current = 0;
  for (const value of fortranBytes(mask)) {
    if (value !== current) {
      runs.push(0);
      current = value;
    }
    runs[runs.length - 1]!++;
  }
  return runs;
}

interface Reference {
  encoded: string[];
  fromUncompressed: string[];
}

const HELPER = fileURLToPath(new URL("./helpers/coco_rle.py", import.meta.url));

function pycocotoolsReference(masks: BinaryMask[]): Reference {
  const request = {
    masks: masks.map((m) => ({ h: m.height, w: m.width, fortran: fortranBytes(m).toString("base64") })),
    uncompressed: masks.map((m) => ({ h: m.height, w: m.width, counts: naiveRuns(m) })),
  };
  try {
    return JSON.parse(execFileSync("python3", [HELPER], { input: JSON.stringify(request), encoding: "utf8" })) as Reference;
  } catch (err) {
    throw new Error(`${HELPER} failed; install its needs with: pip install -r test/helpers/requirements.txt\n${(err as Error).message}`);
  }
}


describe("COCO RLE", () => {
  const names = Object.keys(FIXTURES);
  const masks = Object.values(FIXTURES);
  let reference: Reference;

  beforeAll(() => {
    reference = pycocotoolsReference(masks);
  });

  it.each(names)("decode(encode(%s)) gives the mask back", (name) => {
    const mask = FIXTURES[name]!;
    const rle = encodeRle(mask);
    expect(rle.size).toEqual([mask.height, mask.width]);
    expect(differingPixels(mask, decodeRle(rle))).toBe(0);
  });

  it.each(names)("counts for %s are byte-identical to pycocotools' mask.encode", (name) => {
    expect(encodeRle(FIXTURES[name]!).counts).toBe(reference.encoded[names.indexOf(name)]);
  });

  it.each(names)("counts for %s are the same when the encoder is given the mask's box and reads only inside it", (name) => {
    const mask = FIXTURES[name]!;
    expect(encodeRle(mask, maskBBox(mask)).counts).toBe(reference.encoded[names.indexOf(name)]);
  });

  it.each(names)("uncompressed counts for %s decode, and pycocotools compresses them to the same string", (name) => {
    const mask = FIXTURES[name]!;
    const counts = naiveRuns(mask);
    expect(differingPixels(mask, decodeRle({ size: [mask.height, mask.width], counts }))).toBe(0);
    expect(reference.fromUncompressed[names.indexOf(name)]).toBe(encodeRle(mask).counts);
  });

  it("starts with a zero-length run when the top-left pixel is set", () => {
    expect(encodeRle(FIXTURES.topLeftPixel!).counts.startsWith("0")).toBe(true);
    expect(naiveRuns(FIXTURES.topLeftPixel!)).toEqual([0, 1, 11]);
  });

  it("rejects counts that do not cover height x width", () => {
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: [1, 2] })), /add up to 3 pixels but the size needs 6/);
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: [1, 2, 2, 2] })), /add up to 7/);
    const threeByThree = encodeRle(makeMask(3, 3, (x, y) => x === y));
    expectMaskInvalid(caught(() => decodeRle({ size: [3, 4], counts: threeByThree.counts })));
  });

  it("rejects negative, fractional and non-numeric runs", () => {
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: [7, -1] })), /non-negative integer/);
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: [1.5, 4.5] })), /non-negative integer/);
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: ["6"] as unknown as number[] })));
    // Runs 4, 1, then a difference of -3 against the run two back: 1 - 3 = -2.
    const negative = String.fromCharCode(48 + 4, 48 + 1, 48 + 0, 48 + (-3 & 0x1f));
    expectMaskInvalid(caught(() => decodeRle({ size: [1, 5], counts: negative })), /non-negative integer/);
  });

  it("rejects malformed counts strings", () => {
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: "6~" })), /outside/);
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: "6 " })), /outside/);
    // 0x20 set on the last character: the number never ends.
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: String.fromCharCode(48 + 0x26) })), /middle of a number/);
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: "P".repeat(20) + "0" })), /too long/);
    expectMaskInvalid(caught(() => decodeRle({ size: [2, 3], counts: { length: 1 } as unknown as string })), /string or an array/);
  });

  it("rejects sizes that are not positive integers or are too large", () => {
    expectMaskInvalid(caught(() => decodeRle({ size: [2.5, 3], counts: [7.5] })), /positive integers/);
    expectMaskInvalid(caught(() => decodeRle({ size: [0, 3], counts: [] })), /positive integers/);
    expectMaskInvalid(caught(() => decodeRle({ size: [-2, -3], counts: [6] })), /positive integers/);
    expectMaskInvalid(caught(() => decodeRle({ size: [100_000, 100_000], counts: [1e10] })), /limit is 67108864 pixels/);
    expectMaskInvalid(caught(() => decodeRle({ size: [3] as unknown as [number, number], counts: [3] })), /\[height, width\]/);
    expectMaskInvalid(caught(() => decodeRle(null as unknown as { size: [number, number]; counts: string })));
  });

  it("rejects a mask whose data does not match its size", () => {
    expectMaskInvalid(caught(() => encodeRle({ width: 3, height: 3, data: new Uint8Array(8) })), /needs 9 data bytes, got 8/);
  });
});

// ---------- polygons ----------

function cornerSet(ring: readonly Point[]): string[] {
  return ring.map(([x, y]) => `${x},${y}`).sort();
}

/**
 * Signed area by the trapezoid rule (each edge's strip down to the x axis), an independent
 * formula from the agent's shoelace sum: positive for rings running clockwise on screen (y down).
 */
function signedArea(ring: readonly Point[]): number {
  let strips = 0;
  for (let i = 0; i < ring.length; i++) {
    const [x0, y0] = ring[i]!;
    const [x1, y1] = ring[(i + 1) % ring.length]!;
    strips += (x1 - x0) * (y1 + y0);
  }
  return -strips / 2;
}

function allRings(polygons: readonly Polygon[]): Point[][] {
  return polygons.flatMap((p) => [p.exterior, ...p.holes]);
}

function vertexCount(polygons: readonly Polygon[]): number {
  return allRings(polygons).reduce((n, r) => n + r.length, 0);
}

describe("polygons", () => {
  it.each(Object.keys(FIXTURES))("%s survives mask -> polygons(tolerance 0) -> mask exactly", (name) => {
    const mask = FIXTURES[name]!;
    const back = polygonsToMask(maskToPolygons(mask, { tolerance: 0 }), mask.width, mask.height);
    expect(differingPixels(mask, back)).toBe(0);
  });

  // Chords of a convex outline cut inside it, so at tolerance 1 small regions lose more:
  // a disc of radius 10 keeps IoU 0.96, radius 18 keeps 0.97 and radius 30 keeps 0.99.
  it.each(["disc", "largeRing", "largeRingWithIsland", "largeBlobs", "largeOnBorders", "sparseLarge"])(
    "%s keeps IoU >= 0.97 at tolerance 1 with fewer vertices",
    (name) => {
      const mask = FIXTURES[name]!;
      const exact = maskToPolygons(mask, { tolerance: 0 });
      const simplified = maskToPolygons(mask, { tolerance: 1 });
      expect(maskIoU(mask, polygonsToMask(simplified, mask.width, mask.height))).toBeGreaterThanOrEqual(0.97);
      expect(vertexCount(simplified)).toBeLessThan(vertexCount(exact) * 0.75);
      expect(simplified.length).toBe(exact.length);
    },
  );

  it("keeps only corners at tolerance 0, on the integer corner grid", () => {
    for (const [name, mask] of Object.entries(FIXTURES)) {
      for (const ring of allRings(maskToPolygons(mask, { tolerance: 0 }))) {
        for (let i = 0; i < ring.length; i++) {
          const [ax, ay] = ring[(i + ring.length - 1) % ring.length]!;
          const [bx, by] = ring[i]!;
          const [cx, cy] = ring[(i + 1) % ring.length]!;
          expect(Number.isInteger(bx) && Number.isInteger(by), name).toBe(true);
          expect(bx >= 0 && bx <= mask.width && by >= 0 && by <= mask.height, name).toBe(true);
          expect((bx - ax) * (cy - by) - (by - ay) * (cx - bx), `${name}: collinear point at ${bx},${by}`).not.toBe(0);
        }
      }
    }
  });

  it("outlines a single pixel with its four corners", () => {
    const polygons = maskToPolygons(FIXTURES.singlePixel!, { tolerance: 0 });
    expect(polygons).toHaveLength(1);
    expect(cornerSet(polygons[0]!.exterior)).toEqual(["3,2", "3,3", "4,2", "4,3"]);
    expect(polygons[0]!.holes).toEqual([]);
  });

  it("keeps a single pixel at tolerance 1 instead of simplifying it away", () => {
    const polygons = maskToPolygons(FIXTURES.singlePixel!, { tolerance: 1 });
    expect(differingPixels(FIXTURES.singlePixel!, polygonsToMask(polygons, 7, 5))).toBe(0);
  });

  it("outlines a full mask as its frame and an empty mask as nothing", () => {
    const full = maskToPolygons(FIXTURES.full!, { tolerance: 0 });
    expect(full).toHaveLength(1);
    expect(cornerSet(full[0]!.exterior)).toEqual(["0,0", "0,4", "9,0", "9,4"]);
    expect(maskToPolygons(FIXTURES.empty!, { tolerance: 0 })).toEqual([]);
  });

  it("gives a ring one exterior with one hole, and the hole stays empty when rasterised", () => {
    const mask = FIXTURES.ring!;
    for (const tolerance of [0, 1]) {
      const polygons = maskToPolygons(mask, { tolerance });
      expect(polygons).toHaveLength(1);
      expect(polygons[0]!.holes).toHaveLength(1);
      const back = polygonsToMask(polygons, mask.width, mask.height);
      for (let y = 0; y < mask.height; y++) {
        for (let x = 0; x < mask.width; x++) {
          if (inDisc(x, y, 35, 35, 13)) expect(back.data[y * mask.width + x], `hole pixel ${x},${y}`).toBe(0);
        }
      }
    }
  });

  it("runs exteriors clockwise on screen and holes the other way", () => {
    const [polygon] = maskToPolygons(FIXTURES.ring!, { tolerance: 0 });
    expect(signedArea(polygon!.exterior)).toBeGreaterThan(0);
    expect(signedArea(polygon!.holes[0]!)).toBeLessThan(0);
    // The exterior's area minus the hole's is the ring's pixel count.
    expect(signedArea(polygon!.exterior) + signedArea(polygon!.holes[0]!)).toBe(maskArea(FIXTURES.ring!));
  });

  it("gives an island inside a hole its own polygon", () => {
    const polygons = maskToPolygons(FIXTURES.ringWithIsland!, { tolerance: 0 });
    expect(polygons.map((p) => p.holes.length).sort()).toEqual([0, 1]);
  });

  it("gives each separate blob its own polygon", () => {
    const polygons = maskToPolygons(FIXTURES.blobs!, { tolerance: 0 });
    expect(polygons).toHaveLength(3);
    expect(polygons.every((p) => p.holes.length === 0)).toBe(true);
  });

  it("joins pixels that touch only at a corner (8-connectivity)", () => {
    const polygons = maskToPolygons(FIXTURES.diagonalPair!, { tolerance: 0 });
    expect(polygons).toHaveLength(1);
    expect(polygons[0]!.exterior).toHaveLength(8);
    expect(maskToPolygons(FIXTURES.checkerboard!, { tolerance: 0 })).toHaveLength(1);
  });

  it("rasterises a hand-written triangle at pixel centres", () => {
    const triangle: Polygon = { exterior: [[0, 0], [4, 0], [0, 4]], holes: [] };
    const mask = polygonsToMask([triangle], 4, 4);
    // Centre (x + 0.5, y + 0.5) is inside when x + y + 1 < 4.
    expect(Array.from(mask.data)).toEqual([1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("clips polygons that reach outside the mask", () => {
    const mask = polygonsToMask([{ exterior: [[-5, -5], [50, -5], [50, 50], [-5, 50]], holes: [] }], 3, 2);
    expect(Array.from(mask.data)).toEqual([1, 1, 1, 1, 1, 1]);
  });

  it("rejects bad tolerance, bad coordinates and bad sizes", () => {
    expectMaskInvalid(caught(() => maskToPolygons(FIXTURES.disc!, { tolerance: -1 })), /tolerance/);
    expectMaskInvalid(caught(() => maskToPolygons(FIXTURES.disc!, { tolerance: Number.NaN })), /tolerance/);
    const bad: Polygon = { exterior: [[0, 0], [Number.NaN, 1], [1, 1]], holes: [] };
    expectMaskInvalid(caught(() => polygonsToMask([bad], 4, 4)), /finite/);
    expectMaskInvalid(caught(() => polygonsToMask([], 0, 4)), /positive integers/);
    expectMaskInvalid(caught(() => maskToPolygons({ width: 2, height: 2, data: new Uint8Array(3) }, { tolerance: 0 })));
  });
});

describe("COCO and YOLO polygon exports", () => {
  it("writes one flat list per exterior for COCO, leaving holes to RLE", () => {
    const polygons = maskToPolygons(FIXTURES.ring!, { tolerance: 0 });
    const segmentation = toCocoSegmentation(polygons);
    expect(segmentation).toHaveLength(1);
    expect(segmentation[0]).toEqual(polygons[0]!.exterior.flat());
    expect(segmentation[0]!.length).toBeGreaterThanOrEqual(6);
  });

  it("writes normalised YOLO lines with the class id first", () => {
    const mask = FIXTURES.blobs!;
    const polygons = maskToPolygons(mask, { tolerance: 1 });
    const lines = toYoloSegmentation(polygons, mask.width, mask.height, 3);
    expect(lines).toHaveLength(3);
    for (const [i, line] of lines.entries()) {
      const [classId, ...coords] = line.split(" ");
      expect(classId).toBe("3");
      expect(coords).toHaveLength(polygons[i]!.exterior.length * 2);
      const values = coords.map(Number);
      expect(values.every((v) => v >= 0 && v <= 1)).toBe(true);
      expect(values[0]).toBeCloseTo(polygons[i]!.exterior[0]![0] / mask.width, 6);
      expect(values[1]).toBeCloseTo(polygons[i]!.exterior[0]![1] / mask.height, 6);
    }
  });

  it("defaults the YOLO class to 0 and rejects a bad class id", () => {
    const polygons = maskToPolygons(FIXTURES.full!, { tolerance: 0 });
    expect(toYoloSegmentation(polygons, 9, 4)[0]!.split(" ").sort()).toEqual(["0", "0", "0", "0", "0", "1", "1", "1", "1"]);
    expectMaskInvalid(caught(() => toYoloSegmentation(polygons, 9, 4, -1)), /class id/);
  });
});

// ---------- PNG ----------

describe("PNG", () => {
  it.each(["disc", "ring", "singlePixel", "full", "empty", "column1xN", "row1xN", "noise50"])("%s round-trips through PNG", async (name) => {
    const mask = FIXTURES[name]!;
    expect(differingPixels(mask, await maskFromPng(await maskToPng(mask)))).toBe(0);
  });

  it.each(Object.keys(FIXTURES))("%s: given the mask's box, the PNG is the same bytes", async (name) => {
    const mask = FIXTURES[name]!;
    expect((await maskToPng(mask, maskBBox(mask))).equals(await maskToPng(mask))).toBe(true);
  });

  // Runs of 1..5 and around a copy's 258-byte limit, and rows whose runs end at the last pixel.
  const runMasks: Record<string, BinaryMask> = {
    ...FIXTURES,
    runLengths: makeMask(1100, 3, (x, y) => {
      const lengths = [1, 2, 3, 4, 5, 257, 258, 259, 260, 261, 262, 516, 517];
      let edge = 0;
      for (const [i, n] of lengths.entries()) if (x < (edge += n + y)) return i % 2 === 0;
      return y === 2;
    }),
    lastPixelSet: makeMask(300, 2, (x, y) => y === 1 && x > 10),
    wide: makeMask(5000, 4, (x, y) => y % 2 === 1 && x % 1000 < 600),
    noiseLarge: noise(640, 120, 0.4, 4),
  };

  it.each(Object.keys(runMasks))("%s: round-trips through PNG, written whole or from its box", async (name) => {
    const mask = runMasks[name]!;
    expect(differingPixels(mask, await maskFromPng(await maskToPng(mask)))).toBe(0);
    expect(differingPixels(mask, await maskFromPng(await maskToPng(mask, maskBBox(mask))))).toBe(0);
  });

  it("writes a 1-channel 8-bit PNG holding only 0 and 255", async () => {
    const mask = FIXTURES.ring!;
    const png = await maskToPng(mask);
    expect(png.readUInt32BE(16)).toBe(mask.width);
    expect(png.readUInt32BE(20)).toBe(mask.height);
    expect(png[24]).toBe(8); // bit depth
    expect(png[25]).toBe(0); // colour type 0: greyscale, no alpha
    const pixels = await sharp(png).extractChannel(0).raw().toBuffer();
    expect(new Set(pixels)).toEqual(new Set([0, 255]));
    expect(pixels.filter((v) => v === 255).length).toBe(maskArea(mask));
  });

  it("treats every non-zero byte as set, in aligned and unaligned mask data alike", async () => {
    // 8 x 2, so rows are whole 4-byte words; byte values other than 1 in every lane of a word.
    const values = [0, 1, 2, 128, 255, 0, 0, 7, 64, 0, 3, 0, 0, 0, 0, 9];
    const aligned = { width: 8, height: 2, data: Uint8Array.from(values) };
    const shifted = new Uint8Array(values.length + 1);
    shifted.set(values, 1);
    const unaligned = { width: 8, height: 2, data: shifted.subarray(1) };
    for (const mask of [aligned, unaligned]) {
      const pixels = await sharp(await maskToPng(mask)).extractChannel(0).raw().toBuffer();
      expect([...pixels]).toEqual(values.map((v) => (v ? 255 : 0)));
    }
  });

  it("base64 is the same PNG", async () => {
    const mask = FIXTURES.blobs!;
    expect(Buffer.from(await maskToPngBase64(mask), "base64").equals(await maskToPng(mask))).toBe(true);
  });

  it("reads RGBA PNGs by their first channel, above 127", async () => {
    // Red 128 with everything else 0 is set; red 127 with everything else 255 is not.
    const rgba = Buffer.from([128, 0, 0, 0, 127, 255, 255, 255, 255, 0, 0, 255, 0, 255, 255, 255]);
    const png = await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } }).png().toBuffer();
    const mask = await maskFromPng(png);
    expect([mask.width, mask.height]).toEqual([2, 2]);
    expect(Array.from(mask.data)).toEqual([1, 0, 1, 0]);
  });

  it("reads 16-bit greyscale PNGs", async () => {
    const mask = FIXTURES.disc!;
    const grey = Buffer.from(mask.data.map((v) => v * 255));
    const png16 = await sharp(grey, { raw: { width: mask.width, height: mask.height, channels: 1 } }).toColourspace("grey16").png().toBuffer();
    expect(png16[24]).toBe(16);
    expect(differingPixels(mask, await maskFromPng(png16))).toBe(0);
  });

  it("rejects an empty buffer", async () => {
    expectMaskInvalid(await caughtAsync(() => maskFromPng(Buffer.alloc(0))), /empty/);
  });

  it("rejects bytes that are not a PNG", async () => {
    expectMaskInvalid(await caughtAsync(() => maskFromPng(Buffer.from("this is a text file, not a picture\n"))), /not a PNG/);
    const jpeg = await sharp({ create: { width: 4, height: 4, channels: 3, background: "#000" } }).jpeg().toBuffer();
    expectMaskInvalid(await caughtAsync(() => maskFromPng(jpeg)), /not a PNG/);
  });

  it("rejects a truncated PNG", async () => {
    const png = await maskToPng(FIXTURES.noise50!);
    expectMaskInvalid(await caughtAsync(() => maskFromPng(png.subarray(0, Math.floor(png.length / 2)))), /cannot be decoded/);
  });

  it("rejects a header declaring 30000x30000 before decoding anything", async () => {
    expectMaskInvalid(await caughtAsync(() => maskFromPng(pngHeader(30000, 30000, 0))), /30000x30000 is 900000000 pixels/);
    expectMaskInvalid(await caughtAsync(() => maskFromPng(pngHeader(0, 10, 0))), /positive integers/);
  });
});

// ---------- overlay ----------

async function decodeRgb(jpeg: Buffer): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

function pixelAt(image: { data: Buffer; width: number }, x: number, y: number): number[] {
  const i = (y * image.width + x) * 3;
  return [image.data[i]!, image.data[i + 1]!, image.data[i + 2]!];
}

function distance(a: readonly number[], b: readonly number[]): number {
  return Math.hypot(...a.map((v, i) => v - b[i]!));
}

describe("overlayImage", () => {
  const width = 40;
  const height = 30;
  const grey = () => sharp({ create: { width, height, channels: 3, background: { r: 128, g: 128, b: 128 } } });
  const leftHalf = makeMask(width, height, (x) => x < 20);
  const bottomRight = makeMask(width, height, (x, y) => x >= 30 && y >= 20);

  it("blends each mask in its colour at alpha 0.5 and returns a JPEG of the image's size", async () => {
    const image = await grey().png().toBuffer();
    const out = await overlayImage(image, [leftHalf, bottomRight], { colors: [[255, 0, 0], [0, 0, 255]] });
    expect(Array.from(out.subarray(0, 3))).toEqual([0xff, 0xd8, 0xff]);
    const rgb = await decodeRgb(out);
    expect([rgb.width, rgb.height]).toEqual([width, height]);
    expect(distance(pixelAt(rgb, 8, 15), [192, 64, 64])).toBeLessThan(12);
    expect(distance(pixelAt(rgb, 36, 26), [64, 64, 192])).toBeLessThan(12);
    expect(distance(pixelAt(rgb, 28, 8), [128, 128, 128])).toBeLessThan(12);
  });

  it("picks distinct colours when none are given", async () => {
    const rgb = await decodeRgb(await overlayImage(await grey().jpeg().toBuffer(), [leftHalf, bottomRight]));
    const first = pixelAt(rgb, 8, 15);
    const second = pixelAt(rgb, 36, 26);
    expect(distance(first, [128, 128, 128])).toBeGreaterThan(40);
    expect(distance(second, [128, 128, 128])).toBeGreaterThan(40);
    expect(distance(first, second)).toBeGreaterThan(60);
  });

  it("turns the image upright from EXIF orientation, so masks use the upright size", async () => {
    const rotated = await grey().jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const upright = makeMask(height, width, (x) => x < 5);
    const rgb = await decodeRgb(await overlayImage(rotated, [upright]));
    expect([rgb.width, rgb.height]).toEqual([height, width]);
    expectMaskInvalid(await caughtAsync(() => overlayImage(rotated, [leftHalf])), /is 40x30 but the image is 30x40/);
  });

  it("rejects masks of the wrong size and bad options", async () => {
    const image = await grey().png().toBuffer();
    expectMaskInvalid(await caughtAsync(() => overlayImage(image, [FIXTURES.disc!])), /masks must match the image/);
    expectMaskInvalid(await caughtAsync(() => overlayImage(image, [leftHalf], { alpha: 2 })), /alpha/);
    expectMaskInvalid(await caughtAsync(() => overlayImage(image, [leftHalf], { quality: 0 })), /quality/);
  });

  it("reports undecodable images with the image error codes", async () => {
    const empty = await caughtAsync(() => overlayImage(Buffer.alloc(0), []));
    expect((empty as SamEdgeError).code).toBe("IMAGE_EMPTY");
    const garbage = await caughtAsync(() => overlayImage(Buffer.from("not an image"), []));
    expect(garbage).toBeInstanceOf(SamEdgeError);
    expect((garbage as SamEdgeError).code).toBe("IMAGE_CORRUPT");
  });
});
