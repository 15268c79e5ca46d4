import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Registry } from "prom-client";
import type { Logger } from "../core/log.ts";
import type { ModelUpdater } from "../service/model-updater.ts";
import type { SegmentEngine } from "../segment/engine.ts";
import { EngineSlot } from "../service/engine-slot.ts";
import { AnnotationStore } from "../dataset/store.ts";
import { registerBearerAuth } from "./auth.ts";
import type { CameraProvider } from "../capture/cameras.ts";
import { HttpError, toApiError } from "./errors.ts";
import { DEFAULT_BODY_LIMIT } from "./limits.ts";
import { ApiMetrics } from "./metrics.ts";
import { defaultAllowedHosts, registerSiteGuard, type SiteGuardOptions } from "./site-guard.ts";
import { fileKeyword, registerMultipart } from "./multipart.ts";
import { registerAnnotationRoutes } from "./routes/annotations.ts";
import type { RouteContext } from "./routes/context.ts";
import { registerDeviceRoutes } from "./routes/device.ts";
import { registerLabelingRoutes } from "./routes/labeling.ts";
import { registerModelRoutes } from "./routes/model.ts";
import { registerSegmentRoutes } from "./routes/segment.ts";
import { registerWebRoutes } from "./routes/web.ts";

/** Only this machine can reach the API unless the configuration says otherwise. */
export const DEFAULT_HOST = "127.0.0.1";

/** A 25 MB image over a slow Wi-Fi link arrives well within this; a stalled upload does not hold a socket longer. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/** A connection that has sent nothing (not even headers) for this long is closed. */
const IDLE_TIMEOUT_MS = 30_000;

export interface ServerOptions {
  /**
   * The engine, or its pending load: the server answers /healthz (and 503s) while the model
   * loads. The daemon passes the slot its model updates swap engines in.
   */
  engine: SegmentEngine | Promise<SegmentEngine> | EngineSlot;
  /** GET /v1/model, and POST /v1/model unless `allowUpdates` is false; without it those routes are off. */
  models?: { updater: ModelUpdater; allowUpdates: boolean };
  /** When set, every route but /healthz and the page's static shell wants `Authorization: Bearer <token>`. */
  token?: string;
  cameras?: CameraProvider;
  /** Where the API's metrics go; the daemon passes its own so its metrics share /metrics. */
  registry?: Registry;
  /** The dataset folder (in the agent's state dir) for POST /v1/annotations and GET /v1/export; without it those routes are off. */
  datasetDir?: string;
  /** Largest request body in bytes. */
  bodyLimit?: number;
  /** Requests per minute per client address (0 or unset: no limit). /healthz is never limited. */
  rateLimitPerMinute?: number;
  /**
   * Names the server answers to and other sites' pages that may change things (site-guard.ts);
   * unset: the loopback names only, and no other site.
   */
  site?: Partial<SiteGuardOptions>;
  /** Longest a request may take to arrive, headers and body (a body sent at 1 byte/s is cut off). */
  requestTimeoutMs?: number;
  /** Where 500s and the server's own troubles are logged (the daemon's logger); none when unset. */
  log?: Logger;
}

export interface ListenOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
}

function engineState(slot: EngineSlot): Pick<RouteContext, "withEngine" | "model"> {
  return {
    async withEngine(reply, fn) {
      const lease = slot.hold();
      if (!lease) {
        if (slot.error) throw slot.error;
        throw new HttpError("MODEL_LOADING", "the model is still loading; retry in a few seconds (GET /readyz answers 200 once it is ready)");
      }
      try {
        reply.header("x-sam-edge-model", lease.engine.model.manifest.name);
        return await fn(lease.engine);
      } finally {
        lease.release();
      }
    },
    model() {
      const engine = slot.engine;
      if (engine) return { loaded: true, name: engine.model.manifest.name };
      if (slot.error) return { loaded: false, error: toApiError(slot.error).body.error };
      return { loaded: false };
    },
  };
}

/** The local SAM API: the hosted API's routes plus the box's own, ready to listen. */
export async function createServer(options: ServerOptions): Promise<FastifyInstance> {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const app = Fastify({
    // Typed as fastify's base logger, so the instance keeps fastify's default generics.
    ...(options.log ? { loggerInstance: options.log as FastifyBaseLogger } : { logger: false }),
    // Requests are counted in /metrics; the log keeps what someone must read.
    disableRequestLogging: true,
    bodyLimit,
    ajv: { plugins: [fileKeyword] },
    requestTimeout,
    // A connection that sends nothing at all is closed sooner than a slow request.
    connectionTimeout: Math.min(requestTimeout, IDLE_TIMEOUT_MS),
    // Node checks the request timeout every this often (its default, 30 s, would let a slow body live that much longer).
    http: { connectionsCheckingInterval: Math.min(1000, requestTimeout) },
  });
  app.server.headersTimeout = Math.min(requestTimeout, app.server.headersTimeout);
  const slot = EngineSlot.from(options.engine);
  const cameras = options.cameras;
  const ctx: RouteContext = {
    ...engineState(slot),
    cameras,
    frameOf(id) {
      if (!cameras?.list().some((c) => c.id === id)) throw new HttpError("CAMERA_NOT_FOUND", `there is no camera "${id}"; GET /v1/cameras lists them`);
      const frame = cameras.latestFrame(id);
      if (!frame) throw new HttpError("CAMERA_NO_FRAME", `camera "${id}" has not delivered a frame yet; retry shortly`);
      return frame;
    },
    metrics: new ApiMetrics(options.registry, () => slot.engine, app),
  };

  app.setErrorHandler((err, request, reply) => {
    const { status, body } = toApiError(err);
    if (status >= 500) request.log.error({ err }, "request failed");
    return reply.status(status).send(body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send(toApiError(new HttpError("NOT_FOUND", `no route ${request.method} ${request.url.split("?")[0]}; /openapi.json lists the routes`)).body),
  );
  // Only multipart and JSON are spoken; anything else is a 415 rather than a schema error.
  app.removeContentTypeParser("text/plain");

  // Counted before auth (auth.ts), so a client guessing tokens is limited too.
  if (options.rateLimitPerMinute) {
    const max = options.rateLimitPerMinute;
    await app.register(rateLimit, {
      max,
      timeWindow: 60_000,
      allowList: (request) => request.routeOptions.url === "/healthz",
      errorResponseBuilder: (_request, context) =>
        new HttpError("RATE_LIMITED", `more than ${max} requests a minute from this address; retry in ${context.after} (the Retry-After header says when)`),
    });
  }
  registerSiteGuard(app, { allowedHosts: options.site?.allowedHosts ?? defaultAllowedHosts(DEFAULT_HOST), allowedOrigins: options.site?.allowedOrigins ?? [] });
  if (options.token) registerBearerAuth(app, options.token);
  registerMultipart(app, bodyLimit);
  await app.register(swagger, {
    openapi: {
      info: { title: "sam-edge local SAM API", version: "1", description: "Speaks the hosted SAM API (same routes, fields and answers) on the box." },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      ...(options.token ? { security: [{ bearer: [] }] } : {}),
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  registerWebRoutes(app);
  registerDeviceRoutes(app, ctx);
  registerSegmentRoutes(app, ctx);
  registerLabelingRoutes(app, bodyLimit);
  if (options.models) registerModelRoutes(app, ctx, options.models.updater, options.models.allowUpdates);
  if (options.datasetDir) registerAnnotationRoutes(app, ctx, new AnnotationStore(options.datasetDir), bodyLimit);
  return app;
}

/** Creates the server and listens: on 127.0.0.1 unless `host` says otherwise. */
export async function startServer(options: ServerOptions & ListenOptions): Promise<{ app: FastifyInstance; url: string }> {
  const app = await createServer(options);
  await app.listen({ host: options.host ?? DEFAULT_HOST, port: options.port ?? 0 });
  const address = app.server.address();
  if (!address || typeof address === "string") throw new Error(`the server is not listening on a TCP port (address: ${String(address)})`);
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return { app, url: `http://${host}:${address.port}` };
}
