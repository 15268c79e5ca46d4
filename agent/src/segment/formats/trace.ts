import { SamEdgeError } from "../../core/errors.ts";
import type { BinaryMask } from "../mask.ts";

/** A point on the pixel-corner grid: pixel (x, y) is the square from (x, y) to (x + 1, y + 1). */
export type Point = [x: number, y: number];

/** A closed boundary loop, its first point not repeated at the end, and the 8-connected component it bounds. */
export interface TracedLoop {
  points: Point[];
  component: number;
}

/**
 * How much outline one mask may have. A mask's outline can hold about as many corners as it
 * has pixels (a 4096x4096 checkerboard: 33 million), so every trace is bounded: past a limit it
 * stops with MASK_TOO_COMPLEX instead of filling the heap. A photo's object at 4K has a few
 * thousand corners; the defaults leave two orders of magnitude above that.
 */
export interface TraceLimits {
  /** Corners over all loops. */
  maxVertices: number;
  /** Loops: exteriors and holes. */
  maxRings: number;
}

export const DEFAULT_TRACE_LIMITS: TraceLimits = { maxVertices: 250_000, maxRings: 10_000 };

export function tooComplex(what: string, limits: TraceLimits): SamEdgeError {
  return new SamEdgeError(
    "MASK_TOO_COMPLEX",
    `the mask's outline has ${what}; the limits are ${limits.maxVertices} corners and ${limits.maxRings} rings (regions and holes). Send a simpler mask, e.g. without isolated pixels (SAM's min_mask_region_area) or at a lower resolution`,
  );
}

/** Directions run clockwise on screen (y points down), so +1 turns right and +3 turns left. */
const EAST = 0;
const SOUTH = 1;
const WEST = 2;
const DX = [1, 0, -1, 0] as const;
const DY = [0, 1, 0, -1] as const;
/** Turns tried at each corner, as steps clockwise: left first (see nextDirection), then straight, then right. */
const TURNS = [3, 0, 1] as const;

/**
 * Follows every boundary between set and unset pixels along pixel edges, keeping the set pixels
 * on the right. Outer boundaries therefore run clockwise on screen (positive shoelace area in
 * image coordinates) and hole boundaries anticlockwise. Where two set pixels touch only at a
 * corner the trace turns left, crossing over to the diagonal pixel: the mask is read with
 * 8-connectivity, as OpenCV's findContours reads it. Only corners are kept, never collinear points.
 *
 * Memory beyond the loops themselves is a bit per pixel corner and two rows of labels: loops
 * are found in the same row-by-row scan that labels the components, each tagged with the label
 * of its first pixel, and the labels are resolved once the scan is done.
 */
export function traceBoundaries(mask: BinaryMask, limits: TraceLimits = DEFAULT_TRACE_LIMITS): TracedLoop[] {
  const grid = new CornerGrid(mask);
  const components = new RowLabeller(mask, limits);
  const loops: TracedLoop[] = [];
  let vertices = 0;
  // Every closed loop has an eastward edge, so starting from each unvisited one finds them all.
  for (let y = 0; y < mask.height; y++) {
    const row = components.labelRow(y);
    for (let x = 0; x < mask.width; x++) {
      if (grid.isBoundary(x, y, EAST) && !grid.isVisited(x, y)) {
        if (loops.length >= limits.maxRings) throw tooComplex(`more than ${limits.maxRings} rings`, limits);
        const points = grid.follow(x, y, limits.maxVertices - vertices, limits);
        vertices += points.length;
        loops.push({ points, component: row[x]! });
      }
    }
  }
  for (const loop of loops) loop.component = components.resolve(loop.component);
  return loops;
}

class CornerGrid {
  /** One bit per corner: whether its eastward edge has been walked (the only direction a loop starts in). */
  private readonly visited: Uint8Array;

  constructor(private readonly mask: BinaryMask) {
    this.visited = new Uint8Array(Math.ceil(((mask.width + 1) * (mask.height + 1)) / 8));
  }

  /** Whether the unit edge leaving corner (x, y) in `dir` has a set pixel on its right and an unset one on its left. */
  isBoundary(x: number, y: number, dir: number): boolean {
    switch (dir) {
      case EAST:
        return this.pixel(x, y) && !this.pixel(x, y - 1);
      case SOUTH:
        return this.pixel(x - 1, y) && !this.pixel(x, y);
      case WEST:
        return this.pixel(x - 1, y - 1) && !this.pixel(x - 1, y);
      default: // north
        return this.pixel(x, y - 1) && !this.pixel(x - 1, y - 1);
    }
  }

  isVisited(x: number, y: number): boolean {
    const c = this.corner(x, y);
    return (this.visited[c >> 3]! & (1 << (c & 7))) !== 0;
  }

  /** Walks one loop from the eastward edge at (x, y) back to it, returning the corners where it turns (at most `budget`). */
  follow(startX: number, startY: number, budget: number, limits: TraceLimits): Point[] {
    const points: Point[] = [];
    let x = startX;
    let y = startY;
    let dir = EAST;
    do {
      if (dir === EAST) {
        const c = this.corner(x, y);
        this.visited[c >> 3]! |= 1 << (c & 7);
      }
      x += DX[dir]!;
      y += DY[dir]!;
      const next = this.nextDirection(x, y, dir);
      if (next !== dir) {
        if (points.length >= budget) throw tooComplex(`more than ${limits.maxVertices} corners`, limits);
        points.push([x, y]);
      }
      dir = next;
    } while (x !== startX || y !== startY || dir !== EAST);
    return points;
  }

  /** Left first, so that at a corner shared by two diagonal set pixels the trace joins them. */
  private nextDirection(x: number, y: number, dir: number): number {
    for (const turn of TURNS) {
      const candidate = (dir + turn) % 4;
      if (this.isBoundary(x, y, candidate)) return candidate;
    }
    throw new Error(`boundary trace lost at corner (${x}, ${y}); this is a bug in traceBoundaries`);
  }

  private pixel(x: number, y: number): boolean {
    const { width, height, data } = this.mask;
    return x >= 0 && y >= 0 && x < width && y < height && data[y * width + x] !== 0;
  }

  private corner(x: number, y: number): number {
    return y * (this.mask.width + 1) + x;
  }
}

/**
 * 8-connected components, one row at a time (the classic two-pass labelling with union-find,
 * keeping only the previous row). A new label starts only at a pixel with no set neighbour
 * above or to its left, which is a corner of the outline, so labels are bounded like corners.
 */
class RowLabeller {
  private previous: Int32Array;
  private current: Int32Array;
  private parent = new Int32Array(1024);
  private count = 1; // label 0 is "unset"

  constructor(
    private readonly mask: BinaryMask,
    private readonly limits: TraceLimits,
  ) {
    this.previous = new Int32Array(mask.width);
    this.current = new Int32Array(mask.width);
  }

  /** Provisional labels of row y (0 for unset pixels); valid until the next call. */
  labelRow(y: number): Int32Array {
    [this.previous, this.current] = [this.current, this.previous];
    const { width, data } = this.mask;
    const above = this.previous;
    const row = this.current;
    const offset = y * width;
    for (let x = 0; x < width; x++) {
      if (!data[offset + x]) {
        row[x] = 0;
        continue;
      }
      // The row above is all zeros at y = 0 (both buffers start zeroed).
      let label = x > 0 ? row[x - 1]! : 0;
      if (x > 0) label = this.join(label, above[x - 1]!);
      label = this.join(label, above[x]!);
      if (x + 1 < width) label = this.join(label, above[x + 1]!);
      row[x] = label === 0 ? this.newLabel() : label;
    }
    return row;
  }

  /** The component a provisional label belongs to, once every row has been labelled. */
  resolve(label: number): number {
    let root = label;
    while (this.parent[root] !== root) root = this.parent[root]!;
    // Path compression: later lookups of the same component are one step.
    while (this.parent[label] !== root) {
      const next = this.parent[label]!;
      this.parent[label] = root;
      label = next;
    }
    return root;
  }

  /** `label` with neighbour `n` joined to it (0 stands for none on either side). */
  private join(label: number, n: number): number {
    if (n === 0) return label;
    if (label === 0) return n;
    if (label !== n) {
      const ra = this.resolve(label);
      const rb = this.resolve(n);
      if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb);
    }
    return label;
  }

  private newLabel(): number {
    if (this.count > this.limits.maxVertices) throw tooComplex(`more than ${this.limits.maxVertices} corners`, this.limits);
    if (this.count === this.parent.length) {
      const grown = new Int32Array(this.parent.length * 2);
      grown.set(this.parent);
      this.parent = grown;
    }
    const label = this.count++;
    this.parent[label] = label;
    return label;
  }
}
