import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import { Registry } from "prom-client";
import type { Logger } from "../core/log.ts";
import { BusyError, SamEdgeError } from "../core/errors.ts";
import { AnnotationStore } from "../dataset/store.ts";
import type { EngineSlot, EngineSource } from "../service/engine-slot.ts";
import type { ModelUpdater } from "../service/model-updater.ts";
import { SegmentationService } from "../service/segmentation.ts";
import { registerBearerAuth } from "./auth.ts";
import type { CameraProvider } from "../capture/cameras.ts";
import { HttpError, toApiError } from "./errors.ts";
import { DEFAULT_BODY_LIMIT } from "./limits.ts";
import { ApiMetrics } from "./metrics.ts";
import { defaultAllowedHosts, registerSiteGuard, type SiteGuardOptions } from "./site-guard.ts";
import { fileKeyword, registerMultipart } from "./multipart.ts";
import { contextPlugin } from "./context.ts";
import { annotationRoutes } from "./routes/annotations.ts";
import { deviceRoutes } from "./routes/device.ts";
import { labelingRoutes } from "./routes/labeling.ts";
import { modelRoutes } from "./routes/model.ts";
import { segmentRoutes } from "./routes/segment.ts";
import { webRoutes } from "./routes/web.ts";

/** Only this machine can reach the API unless the configuration says otherwise. */
export const DEFAULT_HOST = "127.0.0.1";

/** A 25 MB image over a slow Wi-Fi link arrives well within this; a stalled upload does not hold a socket longer. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;

export interface ServerOptions {
  /**
   * The segmentation service every route's images go through (the daemon's, shared with the
   * cameras and MQTT); or, for a server of its own, an engine or its pending load, from which
   * the server makes one (the server then answers /healthz and 503s while the model loads).
   */
  service?: SegmentationService;
  engine?: EngineSource | EngineSlot;
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

/** The local SAM API: the hosted API's routes plus the box's own, ready to listen. */
export async function createServer(options: ServerOptions): Promise<FastifyInstance> {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const app = Fastify({
    // Typed as fastify's base logger, so the instance keeps fastify's default generics.
    // Warnings and errors only: the daemon says where it listens in its own words.
    ...(options.log ? { loggerInstance: options.log.child({}, { level: "warn" }) as FastifyBaseLogger } : { logger: false }),
    // Requests are counted in /metrics; the log keeps what someone must read.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    ajv: { plugins: [fileKeyword] },
    // Until the request has arrived; the answer may take as long as the model needs.
    requestTimeout,
    // On a busy 2-core box, plugins (the docs page's static files) can take more than fastify's 10 s to register.
    pluginTimeout: 60_000,
    // Node checks the request timeout every this often (its default, 30 s, would let a slow body live that much longer).
    http: { connectionsCheckingInterval: Math.min(1000, requestTimeout) },
  });
  app.server.headersTimeout = Math.min(requestTimeout, app.server.headersTimeout);
  const registry = options.registry ?? new Registry();
  const service = options.service ?? new SegmentationService({ engine: options.engine ?? Promise.reject(new SamEdgeError("MODEL_NOT_FOUND", "the server was started without a model")), latencyBudgetMs: Number.POSITIVE_INFINITY, registry });

  app.setErrorHandler((err, request, reply) => {
    const { status, body } = toApiError(err);
    if (status >= 500 && status !== 503) request.log.error({ err }, "request failed");
    if (err instanceof BusyError) reply.header("Retry-After", String(err.retryAfterS));
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

  await app.register(contextPlugin, {
    segmentation: service,
    apiMetrics: new ApiMetrics(registry, () => service.engine, app, !options.registry),
    ...(options.cameras ? { cameras: options.cameras } : {}),
    ...(options.models ? { modelUpdates: options.models } : {}),
    ...(options.datasetDir ? { dataset: new AnnotationStore(options.datasetDir) } : {}),
  });
  await app.register(webRoutes);
  await app.register(deviceRoutes);
  await app.register(segmentRoutes);
  await app.register(labelingRoutes, { fieldLimit: bodyLimit });
  if (options.models) await app.register(modelRoutes);
  if (options.datasetDir) await app.register(annotationRoutes, { fieldLimit: bodyLimit });
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
