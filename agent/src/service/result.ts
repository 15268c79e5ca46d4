import type { Config } from "../config/schema.ts";
import type { RoutedResult } from "./router.ts";
import { encodeRle, maskToPolygons } from "../segment/formats/index.ts";

const round = (v: number): number => Math.round(v * 1e4) / 1e4;
const ms = (v: number): number => Math.round(v * 100) / 100;

/** The masks and timings of a result as the MQTT messages carry them. */
export function resultBody(result: RoutedResult, formats: Config["results"], extraTimings: Record<string, number>): Record<string, unknown> {
  const timings: Record<string, number> = {};
  for (const [key, value] of Object.entries({ ...result.timings, ...extraTimings })) timings[key.replace(/Ms$/, "").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = ms(value);
  return {
    route: result.route,
    ...(result.fallback ? { fallback: result.fallback } : {}),
    width: result.width,
    height: result.height,
    latency_ms: timings,
    masks: result.masks.map((m) => ({
      ...(m.prompt !== undefined ? { prompt: m.prompt } : {}),
      ...(m.point ? { point: m.point } : {}),
      bbox: m.bbox,
      area: m.area,
      confidence: round(m.confidence),
      ...(m.stability !== undefined ? { stability: round(m.stability) } : {}),
      ...(formats.mask_formats.includes("rle") ? { rle: encodeRle(m.mask) } : {}),
      ...(formats.mask_formats.includes("polygon") ? { polygons: maskToPolygons(m.mask, { tolerance: formats.polygon_tolerance }) } : {}),
    })),
  };
}

/** A result line for --print: everything but the mask encodings. */
export function printable(message: Record<string, unknown>): string {
  const masks = (message.masks as Record<string, unknown>[]).map(({ rle: _rle, polygons: _polygons, ...rest }) => rest);
  return JSON.stringify({ ...message, masks });
}
