import { SamEdgeError } from "../../errors.ts";
import type { BinaryMask } from "../mask.ts";
import { simplifyRing } from "./simplify.ts";
import { traceBoundaries, type Point } from "./trace.ts";
import { assertValidMask } from "./validate.ts";

export type { Point } from "./trace.ts";

/**
 * One 8-connected region of a mask, in pixel-corner coordinates (pixel (x, y) spans x..x+1,
 * y..y+1). Rings are closed implicitly: the first point is not repeated. The exterior runs
 * clockwise on screen and holes anticlockwise, as traced; rasterising does not depend on it.
 */
export interface Polygon {
  exterior: Point[];
  holes: Point[][];
}

export interface PolygonOptions {
  /** Ramer–Douglas–Peucker tolerance in pixels; 0 keeps every corner of the pixel outline. */
  tolerance: number;
}

/**
 * Outlines each 8-connected region with its holes. At tolerance 0 `polygonsToMask` gives the
 * mask back exactly. A ring smaller than the tolerance is kept as traced rather than dropped,
 * so simplifying never makes a region or a hole disappear.
 */
export function maskToPolygons(mask: BinaryMask, options: PolygonOptions): Polygon[] {
  assertValidMask(mask, "maskToPolygons");
  const { tolerance } = options;
  if (!Number.isFinite(tolerance) || tolerance < 0) {
    throw new SamEdgeError("MASK_INVALID", `polygon tolerance is ${tolerance}; use a number of pixels, 0 or more`);
  }
  const exteriors = new Map<number, Point[]>();
  const holes = new Map<number, Point[][]>();
  for (const loop of traceBoundaries(mask)) {
    const ring = simplifyOrKeep(loop.points, tolerance);
    // The sign is read before simplifying: a traced ring's area is a non-zero whole number.
    if (signedArea(loop.points) > 0) exteriors.set(loop.component, ring);
    else holesOf(holes, loop.component).push(ring);
  }
  return [...exteriors].map(([component, exterior]) => ({ exterior, holes: holes.get(component) ?? [] }));
}

/** Shoelace area in image coordinates (y down): positive for rings running clockwise on screen. */
function signedArea(ring: readonly Point[]): number {
  let twice = 0;
  for (let i = 0; i < ring.length; i++) {
    const [x0, y0] = ring[i]!;
    const [x1, y1] = ring[(i + 1) % ring.length]!;
    twice += x0 * y1 - x1 * y0;
  }
  return twice / 2;
}

function holesOf(holes: Map<number, Point[][]>, component: number): Point[][] {
  let list = holes.get(component);
  if (!list) holes.set(component, (list = []));
  return list;
}

function simplifyOrKeep(ring: Point[], tolerance: number): Point[] {
  const simplified = simplifyRing(ring, tolerance);
  return simplified.length >= 3 ? simplified : ring;
}
