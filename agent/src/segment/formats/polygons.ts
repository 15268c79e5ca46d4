import { SamEdgeError } from "../../core/errors.ts";
import type { BinaryMask } from "../mask.ts";
import { simplifyRing } from "./simplify.ts";
import { DEFAULT_TRACE_LIMITS, tooComplex, traceBoundaries, type Point, type TraceLimits } from "./trace.ts";
import { assertValidMask } from "./validate.ts";

export { DEFAULT_TRACE_LIMITS, type Point, type TraceLimits } from "./trace.ts";

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
  /** Past these the mask is refused with MASK_TOO_COMPLEX; DEFAULT_TRACE_LIMITS when unset. */
  limits?: TraceLimits;
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
  const limits = options.limits ?? DEFAULT_TRACE_LIMITS;
  const exteriors = new Map<number, Point[]>();
  const holes = new Map<number, Point[][]>();
  const loops = traceBoundaries(mask, limits);
  // RDP is quadratic on the worst outlines: its steps are bounded like the trace's output.
  const work = { left: SIMPLIFY_STEPS_PER_VERTEX * limits.maxVertices };
  for (const loop of loops) {
    const ring = simplifyOrKeep(loop.points, tolerance, work, limits);
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

/** Distance evaluations RDP may spend per corner the limits allow: typical outlines use a few. */
const SIMPLIFY_STEPS_PER_VERTEX = 64;

function simplifyOrKeep(ring: Point[], tolerance: number, work: { left: number }, limits: TraceLimits): Point[] {
  const simplified = simplifyRing(ring, tolerance, work);
  if (!simplified) throw tooComplex(`an outline whose simplification takes more than ${SIMPLIFY_STEPS_PER_VERTEX * limits.maxVertices} steps`, limits);
  return simplified.length >= 3 ? simplified : ring;
}
