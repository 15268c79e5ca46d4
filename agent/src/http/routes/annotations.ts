import { join } from "node:path";
import type { FastifyPluginAsync } from "fastify";
import { maskArea, maskBBox } from "../../segment/mask.ts";
import { EXPORT_FORMATS, exportArchive, type ExportFormat } from "../../dataset/export.ts";
import { MAX_CLASS_NAME } from "../../dataset/store.ts";
import { requireMultipart } from "../multipart.ts";
import { annotationSchema, exportSchema } from "../schemas.ts";
import { readMask, type MaskFields } from "./labeling.ts";
import { sources, type SourceFields } from "./sources.ts";

interface AnnotationBody extends SourceFields, MaskFields {
  class: string;
}

/** POST /v1/annotations (a mask accepted into the dataset) and GET /v1/export, when the server has a dataset. */
export const annotationRoutes: FastifyPluginAsync<{ fieldLimit: number }> = async (app, { fieldLimit }) => {
  const store = app.dataset!;
  const options = {
    schema: annotationSchema(MAX_CLASS_NAME),
    preValidation: requireMultipart,
    // A mask sent as base64 or RLE text can be a long field.
    config: { multipartFieldSize: fieldLimit },
  };
  app.post<{ Body: AnnotationBody }>("/v1/annotations", options, async (request, reply) => {
    const image = sources(request.body, app.cameras)[0]!();
    const mask = await readMask(request.body);
    const a = await store.add(image, mask, request.body.class);
    return reply.status(201).send({ id: a.id, image: a.image, class: a.class, width: a.width, height: a.height, bbox: maskBBox(mask), area: maskArea(mask) });
  });

  app.get<{ Querystring: { format: ExportFormat } }>("/v1/export", { schema: exportSchema(EXPORT_FORMATS) }, async (request, reply) => {
    const { format } = request.query;
    return reply
      .type("application/gzip")
      .header("content-disposition", `attachment; filename="sam-edge-${format}.tar.gz"`)
      .send(exportArchive(store, format, join(store.dir, "tmp")));
  });
};
