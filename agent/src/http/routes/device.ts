import type { FastifyInstance } from "fastify";
import sharp from "sharp";
import { sniffFormat } from "../../segment/preprocess.ts";
import { cameraFrameSchema, camerasSchema, healthSchema, metricsSchema, readySchema } from "../schemas.ts";
import type { RouteContext } from "./context.ts";

export function registerDeviceRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get("/healthz", { schema: healthSchema() }, async () => ({ status: "ok" }));

  app.get("/readyz", { schema: readySchema() }, async (_request, reply) => {
    const model = ctx.model();
    const cameras = (ctx.cameras?.list() ?? []).map(({ id, healthy }) => ({ id, healthy }));
    const ready = model.loaded && cameras.every((c) => c.healthy);
    return reply.status(ready ? 200 : 503).send({ ready, model, cameras });
  });

  app.get("/metrics", { schema: metricsSchema() }, async (_request, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });

  app.get("/v1/cameras", { schema: camerasSchema() }, async () => ({
    cameras: (ctx.cameras?.list() ?? []).map((c) => ({ id: c.id, healthy: c.healthy, ...(c.lastFrameAt ? { last_frame_at: c.lastFrameAt.toISOString() } : {}) })),
  }));

  app.get<{ Params: { id: string } }>("/v1/cameras/:id/frame.jpg", { schema: cameraFrameSchema() }, async (request, reply) => {
    const { bytes } = ctx.frameOf(request.params.id);
    // Browsers show JPEGs as they are (EXIF included); other formats are turned upright and re-encoded.
    const jpeg = sniffFormat(bytes) === "jpeg" ? bytes : await sharp(bytes).rotate().jpeg({ quality: 90 }).toBuffer();
    return reply.type("image/jpeg").header("Cache-Control", "no-store").send(jpeg);
  });
}
