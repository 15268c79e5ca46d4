import type { BinaryMask } from "../mask.ts";

/** A point on the pixel-corner grid: pixel (x, y) is the square from (x, y) to (x + 1, y + 1). */
export type Point = [x: number, y: number];

/** A closed boundary loop, its first point not repeated at the end, and the 8-connected component it bounds. */
export interface TracedLoop {
  points: Point[];
  component: number;
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
 */
export function traceBoundaries(mask: BinaryMask): TracedLoop[] {
  const grid = new CornerGrid(mask);
  const components = labelComponents(mask);
  const loops: TracedLoop[] = [];
  // Every closed loop has an eastward edge, so starting from each unvisited one finds them all.
  for (let y = 0; y < mask.height; y++) {
    for (let x = 0; x < mask.width; x++) {
      if (grid.isBoundary(x, y, EAST) && !grid.isVisited(x, y, EAST)) {
        loops.push({ points: grid.follow(x, y), component: components[y * mask.width + x]! });
      }
    }
  }
  return loops;
}

class CornerGrid {
  private readonly visited: Uint8Array;

  constructor(private readonly mask: BinaryMask) {
    this.visited = new Uint8Array((mask.width + 1) * (mask.height + 1));
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

  isVisited(x: number, y: number, dir: number): boolean {
    return (this.visited[this.corner(x, y)]! & (1 << dir)) !== 0;
  }

  /** Walks one loop from the eastward edge at (x, y) back to it, returning the corners where it turns. */
  follow(startX: number, startY: number): Point[] {
    const points: Point[] = [];
    let x = startX;
    let y = startY;
    let dir = EAST;
    do {
      this.visited[this.corner(x, y)]! |= 1 << dir;
      x += DX[dir]!;
      y += DY[dir]!;
      const next = this.nextDirection(x, y, dir);
      if (next !== dir) points.push([x, y]);
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

/** Labels 8-connected components of set pixels 1, 2, ... in scan order; unset pixels stay 0. */
function labelComponents(mask: BinaryMask): Int32Array {
  const { width, height, data } = mask;
  const labels = new Int32Array(width * height);
  const stack: number[] = [];
  let next = 0;
  for (let start = 0; start < labels.length; start++) {
    if (!data[start] || labels[start]) continue;
    labels[start] = ++next;
    stack.push(start);
    while (stack.length > 0) {
      const i = stack.pop()!;
      const x = i % width;
      const y = (i - x) / width;
      for (let ny = Math.max(0, y - 1); ny <= Math.min(height - 1, y + 1); ny++) {
        for (let nx = Math.max(0, x - 1); nx <= Math.min(width - 1, x + 1); nx++) {
          const j = ny * width + nx;
          if (data[j] && !labels[j]) {
            labels[j] = next;
            stack.push(j);
          }
        }
      }
    }
  }
  return labels;
}
