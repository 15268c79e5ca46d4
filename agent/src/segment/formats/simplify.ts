import type { Point } from "./trace.ts";

/**
 * Ramer–Douglas–Peucker on a closed ring: drops every point within `tolerance` pixels of the
 * simplified outline. The ring is cut at its first point and the point farthest from it, the
 * two ends that any simplification of it must keep. Undefined when `work` (distances taken)
 * runs out first.
 */
export function simplifyRing(ring: readonly Point[], tolerance: number, work: { left: number } = { left: Infinity }): Point[] | undefined {
  if (tolerance <= 0 || ring.length <= 3) return [...ring];
  const far = farthestFrom(ring, 0);
  const keep = new Uint8Array(ring.length);
  keep[0] = 1;
  keep[far] = 1;
  if (!markKept(ring, 0, far, tolerance, keep, work) || !markKept(ring, far, ring.length, tolerance, keep, work)) return undefined;
  return ring.filter((_, i) => keep[i] === 1);
}

/**
 * Iterative RDP over ring[first..last] (last may be ring.length, meaning point 0 again). Each
 * distance taken is counted against `work`; false when it runs out (the caller refuses the mask).
 */
function markKept(ring: readonly Point[], first: number, last: number, tolerance: number, keep: Uint8Array, work: { left: number }): boolean {
  // A stack instead of recursion: a large mask's boundary can have millions of corners.
  const spans: Array<[number, number]> = [[first, last]];
  while (spans.length > 0) {
    const [from, to] = spans.pop()!;
    const a = ring[from]!;
    const b = ring[to % ring.length]!;
    work.left -= to - from - 1;
    if (work.left < 0) return false;
    let worst = -1;
    let worstDistance = tolerance;
    for (let i = from + 1; i < to; i++) {
      const d = distanceToSegment(ring[i]!, a, b);
      if (d > worstDistance) {
        worst = i;
        worstDistance = d;
      }
    }
    if (worst < 0) continue;
    keep[worst] = 1;
    spans.push([from, worst], [worst, to]);
  }
  return true;
}

function farthestFrom(ring: readonly Point[], index: number): number {
  const [ox, oy] = ring[index]!;
  let best = index;
  let bestDistance = -1;
  for (let i = 0; i < ring.length; i++) {
    const [x, y] = ring[i]!;
    const d = (x - ox) ** 2 + (y - oy) ** 2;
    if (d > bestDistance) {
      best = i;
      bestDistance = d;
    }
  }
  return best;
}

/** Distance to the segment, not the infinite line, so a path that doubles back is not flattened. */
function distanceToSegment(p: Point, a: Point, b: Point): number {
  const [px, py] = p;
  const [ax, ay] = a;
  const dx = b[0] - ax;
  const dy = b[1] - ay;
  const lengthSquared = dx * dx + dy * dy;
  const t = lengthSquared === 0 ? 0 : Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / lengthSquared));
  return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
}
