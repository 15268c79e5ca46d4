import type { FastifyPluginAsync } from "fastify";
import { HttpError } from "../errors.ts";
import { modelStatusSchema, modelUpdateSchema } from "../schemas.ts";
import { modelState } from "./device.ts";

/** GET /v1/model (the model serving and the last update) and POST /v1/model (an update), when the server has an updater. */
export const modelRoutes: FastifyPluginAsync = async (app) => {
  const { updater, allowUpdates } = app.modelUpdates!;
  const status = () => {
    const error = modelState(app).error;
    return { ...updater.status(), ...(error ? { error } : {}) };
  };

  app.get("/v1/model", { schema: modelStatusSchema() }, async () => status());

  app.post<{ Body: { source: string } }>("/v1/model", { schema: modelUpdateSchema() }, async (request) => {
    if (!allowUpdates) {
      throw new HttpError("MODEL_UPDATE_DISABLED", "model updates over HTTP are off on this agent (model.update.http is false); set it to true to allow POST /v1/model");
    }
    await updater.update(request.body.source);
    return status();
  });
};
