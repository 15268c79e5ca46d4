/**
 * Mask formats in and out of the agent: PNG, COCO RLE, polygons (with COCO and YOLO exports)
 * and a visual overlay. Every bad input raises SamEdgeError MASK_INVALID, except undecodable
 * overlay images, which raise the IMAGE_* codes the rest of the agent uses for images.
 */
export { maskFromPng, maskToPng, maskToPngBase64 } from "./png.ts";
export { decodeRle, encodeRle, type CocoRle, type UncompressedCocoRle } from "./rle.ts";
export { DEFAULT_TRACE_LIMITS, maskToPolygons, type Point, type Polygon, type PolygonOptions, type TraceLimits } from "./polygons.ts";
export { polygonsToMask } from "./rasterise.ts";
export { toCocoSegmentation, toYoloSegmentation } from "./annotations.ts";
export { overlayImage, type OverlayOptions, type Rgb } from "./overlay.ts";
export { MAX_MASK_PIXELS } from "./validate.ts";
