import type { FastifyPluginAsync } from "fastify";
import type { MaskToPolygonResult } from "../../client/types.ts";
import { SamEdgeError } from "../../core/errors.ts";
import { decodeRle, encodeRle, maskFromPng, maskToPolygons, toCocoSegmentation, type CocoRle, type UncompressedCocoRle } from "../../segment/formats/index.ts";
import { maskArea, maskBBox, type BinaryMask } from "../../segment/mask.ts";
import { HttpError } from "../errors.ts";
import { maskToPolygonSchema } from "../schemas.ts";

/** The mask fields of a request (mask-to-polygon, annotations). */
export interface MaskFields {
  /** A PNG file part, or base64 PNG text. */
  mask?: Buffer | string;
  /** JSON text (multipart) or an object (JSON body). */
  rle?: string | CocoRle | UncompressedCocoRle;
}

interface MaskToPolygonBody extends MaskFields {
  tolerance: number;
}

export async function readMask(body: MaskFields): Promise<BinaryMask> {
  if ((body.mask === undefined) === (body.rle === undefined)) {
    throw new HttpError("REQUEST_INVALID", 'send exactly one of "mask" (a PNG file, or base64 PNG text) and "rle" (COCO RLE)');
  }
  if (body.mask !== undefined) return maskFromPng(typeof body.mask === "string" ? Buffer.from(body.mask, "base64") : body.mask);
  let rle = body.rle!;
  if (typeof rle === "string") {
    try {
      rle = JSON.parse(rle) as CocoRle;
    } catch {
      throw new SamEdgeError("MASK_INVALID", 'rle is not valid JSON; send {"size": [height, width], "counts": "..."} as pycocotools writes it');
    }
  }
  return decodeRle(rle);
}

/** Masks in, polygons out: no model involved. */
export const labelingRoutes: FastifyPluginAsync<{ fieldLimit: number }> = async (app, { fieldLimit }) => {
  app.post<{ Body: MaskToPolygonBody }>(
    "/v1/labeling/mask-to-polygon",
    // An RLE of a large mask is a long text field.
    { schema: maskToPolygonSchema(), config: { multipartFieldSize: fieldLimit } },
    async (request): Promise<MaskToPolygonResult> => {
      const mask = await readMask(request.body);
      const polygons = maskToPolygons(mask, { tolerance: request.body.tolerance });
      return {
        width: mask.width,
        height: mask.height,
        polygons,
        segmentation: toCocoSegmentation(polygons),
        has_holes: polygons.some((p) => p.holes.length > 0),
        rle: encodeRle(mask),
        bbox: maskBBox(mask),
        area: maskArea(mask),
      };
    },
  );
};
