import { SamEdgeError } from "../../core/errors.ts";
import type { BinaryMask } from "../mask.ts";
import type { Point, Polygon } from "./polygons.ts";
import { assertMaskSize } from "./validate.ts";

/**
 * Fills each polygon (its exterior and holes together, even-odd) at pixel centres and unions
 * the polygons. Pixel centres never lie on the integer-coordinate edges `maskToPolygons` traces,
 * so its tolerance-0 polygons come back as exactly the original mask.
 */
export function polygonsToMask(polygons: readonly Polygon[], width: number, height: number): BinaryMask {
  assertMaskSize(width, height, "polygonsToMask");
  const data = new Uint8Array(width * height);
  for (const [index, polygon] of polygons.entries()) {
    const rings = [polygon.exterior, ...polygon.holes];
    assertFinitePoints(rings, index);
    fillEvenOdd(rings, data, width, height);
  }
  return { width, height, data };
}

function assertFinitePoints(rings: readonly (readonly Point[])[], polygon: number): void {
  for (const ring of rings) {
    for (const [x, y] of ring) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        throw new SamEdgeError("MASK_INVALID", `polygon ${polygon} has point (${x}, ${y}); every coordinate must be a finite number`);
      }
    }
  }
}

/** Scanline fill: on each row, the centres between the 1st and 2nd crossing, the 3rd and 4th, ... */
function fillEvenOdd(rings: readonly (readonly Point[])[], data: Uint8Array, width: number, height: number): void {
  const [top, bottom] = rowRange(rings, height);
  if (top > bottom) return;
  const rows = crossingsByRow(rings, top, bottom);
  for (const [offset, crossings] of rows.entries()) {
    crossings.sort((a, b) => a - b);
    const rowStart = (top + offset) * width;
    for (let i = 0; i + 1 < crossings.length; i += 2) {
      // Pixel x is inside when its centre x + 0.5 lies in [left, right).
      const first = Math.max(0, Math.ceil(crossings[i]! - 0.5));
      const last = Math.min(width, Math.ceil(crossings[i + 1]! - 0.5));
      if (last > first) data.fill(1, rowStart + first, rowStart + last);
    }
  }
}

/** The rows whose centres the rings can reach, clipped to the mask. */
function rowRange(rings: readonly (readonly Point[])[], height: number): [number, number] {
  let minY = Infinity;
  let maxY = -Infinity;
  for (const ring of rings) {
    for (const [, y] of ring) {
      minY = Math.min(minY, y);
      maxY = Math.max(maxY, y);
    }
  }
  return [Math.max(0, Math.ceil(minY - 0.5)), Math.min(height - 1, Math.ceil(maxY - 0.5) - 1)];
}

/**
 * For rows top..bottom, the x where each edge crosses the row's centre line y + 0.5. Each edge
 * visits only the rows it spans, so a polygon with thousands of holes stays linear in its size.
 * An edge covers centres in [its lower y, its upper y): a vertex on a centre line counts once.
 */
function crossingsByRow(rings: readonly (readonly Point[])[], top: number, bottom: number): number[][] {
  const rows = Array.from({ length: bottom - top + 1 }, (): number[] => []);
  for (const ring of rings) {
    for (let i = 0; i < ring.length; i++) {
      const [x0, y0] = ring[i]!;
      const [x1, y1] = ring[(i + 1) % ring.length]!;
      if (y0 === y1) continue;
      const first = Math.max(top, Math.ceil(Math.min(y0, y1) - 0.5));
      const last = Math.min(bottom, Math.ceil(Math.max(y0, y1) - 0.5) - 1);
      for (let row = first; row <= last; row++) {
        rows[row - top]!.push(x0 + ((row + 0.5 - y0) / (y1 - y0)) * (x1 - x0));
      }
    }
  }
  return rows;
}
