import { SamEdgeError } from "../../core/errors.ts";
import type { Polygon } from "./polygons.ts";
import { assertMaskSize } from "./validate.ts";

/**
 * COCO's polygon `segmentation`: one flat [x1, y1, x2, y2, ...] list per exterior. COCO polygons
 * cannot carry holes (every list is filled, and overlapping lists are unioned), so holes are
 * left out here: for a mask with holes, store `encodeRle(mask)` as the segmentation instead.
 */
export function toCocoSegmentation(polygons: readonly Polygon[]): number[][] {
  return polygons.map((polygon) => polygon.exterior.flat());
}

/**
 * YOLO segmentation label lines: `class x1 y1 x2 y2 ...`, coordinates divided by the image's
 * width and height so they lie in 0..1. Like COCO polygons, YOLO labels have no holes.
 */
export function toYoloSegmentation(polygons: readonly Polygon[], width: number, height: number, classId = 0): string[] {
  assertMaskSize(width, height, "toYoloSegmentation");
  if (!Number.isInteger(classId) || classId < 0) {
    throw new SamEdgeError("MASK_INVALID", `YOLO class id is ${classId}; use a non-negative integer`);
  }
  return polygons.map((polygon) => {
    const coords = polygon.exterior.flatMap(([x, y]) => [formatCoord(x / width), formatCoord(y / height)]);
    return [String(classId), ...coords].join(" ");
  });
}

/** Six decimals is finer than a pixel for images up to a million pixels wide; trailing zeros go. */
function formatCoord(value: number): string {
  return String(Number(value.toFixed(6)));
}
