import type { FastifyInstance } from "fastify";
import type { ModelUpdater } from "../../service/model-updater.ts";
import { HttpError } from "../errors.ts";
import { modelStatusSchema, modelUpdateSchema } from "../schemas.ts";
import type { RouteContext } from "./context.ts";

export function registerModelRoutes(app: FastifyInstance, ctx: RouteContext, updater: ModelUpdater, allowUpdates: boolean): void {
  const status = () => {
    const error = ctx.model().error;
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
}
