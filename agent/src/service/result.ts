import type { ApiMask, ResultMask as WireMask, ResultMessage } from "../client/types.ts";
import { encodeRle, maskToPngBase64, maskToPolygons } from "../segment/formats/index.ts";
import type { ResultMask, SegmentationResult } from "./segmentation.ts";

/**
 * The one encoder of results, for every transport: which formats a mask is written in is the
 * caller's choice (HTTP answers carry a PNG and COCO RLE, MQTT what `results.mask_formats`
 * says, the CLI what `--format` says); the numbers are rounded alike everywhere.
 */
export interface MaskEncoding {
  png?: boolean;
  rle?: boolean;
  /** Polygons at this tolerance (pixels); none when unset. */
  polygonTolerance?: number;
}

/** Scores to 4 decimals: more is noise, and the same rounding everywhere keeps answers comparable. */
export const roundScore = (v: number): number => Math.round(v * 1e4) / 1e4;
/** Milliseconds to 2 decimals. */
export const roundMs = (v: number): number => Math.round(v * 100) / 100;

export async function encodeMask(m: ResultMask, encoding: MaskEncoding): Promise<WireMask> {
  return {
    ...(m.prompt !== undefined ? { prompt: m.prompt } : {}),
    ...(m.point ? { point: m.point } : {}),
    bbox: m.bbox,
    area: m.area,
    confidence: roundScore(m.confidence),
    ...(m.stability !== undefined ? { stability: roundScore(m.stability) } : {}),
    ...(encoding.png ? { mask: await maskToPngBase64(m.mask, m.bbox) } : {}),
    ...(encoding.rle ? { rle: m.rle ?? encodeRle(m.mask, m.bbox) } : {}),
    ...(encoding.polygonTolerance !== undefined ? { polygons: maskToPolygons(m.mask, { tolerance: encoding.polygonTolerance }) } : {}),
  };
}

/** A mask as the hosted API answers it (always with its PNG). */
export async function apiMask(m: ResultMask): Promise<ApiMask & WireMask> {
  return (await encodeMask(m, { png: true })) as ApiMask & WireMask;
}

/** `fooMs` timings as `latency_ms` keys: `queue`, `preprocess`, ..., `cloud`, in ms. */
export function latencyMs(timings: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(timings)) out[key.replace(/Ms$/, "").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = roundMs(value);
  return out;
}

/** A result as an MQTT message body: route, sizes, latencies and the masks in the chosen formats. */
export async function encodeResult(result: SegmentationResult, encoding: MaskEncoding, extraTimings: Record<string, number> = {}): Promise<ResultMessage> {
  return {
    route: result.route,
    ...(result.fallback ? { fallback: result.fallback } : {}),
    ...(result.model ? { model: result.model } : {}),
    width: result.width,
    height: result.height,
    latency_ms: latencyMs({ ...result.timings, ...extraTimings }),
    masks: await Promise.all(result.masks.map((m) => encodeMask(m, encoding))),
  };
}

/** The config's `results` settings as an encoding. */
export function resultEncoding(results: { mask_formats: readonly string[]; polygon_tolerance: number }): MaskEncoding {
  return {
    rle: results.mask_formats.includes("rle"),
    ...(results.mask_formats.includes("polygon") ? { polygonTolerance: results.polygon_tolerance } : {}),
  };
}

/** A result line for --print: everything but the mask encodings. */
export function printable(message: ResultMessage): string {
  const masks = message.masks.map(({ rle: _rle, polygons: _polygons, mask: _mask, ...rest }) => rest);
  return JSON.stringify({ ...message, masks });
}
