import type { FastifyInstance, FastifyPluginAsync } from "fastify";
import sharp from "sharp";
import { sniffFormat } from "../../segment/preprocess.ts";
import { latestFrameOf } from "../../capture/cameras.ts";
import { SamEdgeError } from "../../core/errors.ts";
import { toApiError } from "../errors.ts";
import { cameraFrameSchema, cameraOverlaySchema, camerasSchema, healthSchema, metricsSchema, readySchema } from "../schemas.ts";
/** The model's state for /readyz: loaded, still loading, or why it failed. */
export function modelState(app: FastifyInstance): { loaded: boolean; name?: string; error?: { code: string; message: string } } {
  const { engine, error } = app.segmentation.slot;
  if (engine) return { loaded: true, name: engine.model.manifest.name };
  if (error !== undefined) return { loaded: false, error: toApiError(error).body.error };
  return { loaded: false };
}

/** Health, readiness, metrics and the cameras. */
export const deviceRoutes: FastifyPluginAsync = async (app) => {
  app.get("/healthz", { schema: healthSchema() }, async () => ({ status: "ok" }));

  app.get("/readyz", { schema: readySchema() }, async (_request, reply) => {
    const model = modelState(app);
    const cameras = (app.cameras?.list() ?? []).map(({ id, healthy }) => ({ id, healthy }));
    const ready = model.loaded && cameras.every((c) => c.healthy);
    return reply.status(ready ? 200 : 503).send({ ready, model, cameras });
  });

  app.get("/metrics", { schema: metricsSchema() }, async (_request, reply) => {
    const text = await app.apiMetrics.registry.metrics();
    return reply.type(app.apiMetrics.registry.contentType).send(text);
  });

  app.get("/v1/cameras", { schema: camerasSchema() }, async () => ({
    cameras: (app.cameras?.list() ?? []).map((c) => ({ id: c.id, healthy: c.healthy, ...(c.lastFrameAt ? { last_frame_at: c.lastFrameAt.toISOString() } : {}) })),
  }));

  app.get<{ Params: { id: string } }>("/v1/cameras/:id/frame.jpg", { schema: cameraFrameSchema() }, async (request, reply) => {
    const { bytes } = latestFrameOf(app.cameras, request.params.id);
    // Browsers show JPEGs as they are (EXIF included); other formats are turned upright and re-encoded.
    const jpeg = sniffFormat(bytes) === "jpeg" ? bytes : await sharp(bytes).rotate().jpeg({ quality: 90 }).toBuffer();
    return reply.type("image/jpeg").header("Cache-Control", "no-store").send(jpeg);
  });

  app.get<{ Params: { id: string } }>("/v1/cameras/:id/overlay.jpg", { schema: cameraOverlaySchema() }, async (request, reply) => {
    const { id } = request.params;
    latestFrameOf(app.cameras, id);
    const result = app.cameras?.latestResult(id);
    if (!result) throw new SamEdgeError("CAMERA_NO_RESULT", `no frame of camera "${id}" has been segmented yet; retry shortly (frame.jpg shows the latest frame)`);
    const jpeg = await result.overlay();
    return reply
      .type("image/jpeg")
      .header("Cache-Control", "no-store")
      .header("X-Frame-Captured-At", result.frame.capturedAt.toISOString())
      .header("X-Mask-Count", String(result.masks.length))
      .send(jpeg);
  });
};
