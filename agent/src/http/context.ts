import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { CameraProvider } from "../capture/cameras.ts";
import type { AnnotationStore } from "../dataset/store.ts";
import type { ModelUpdater } from "../service/model-updater.ts";
import type { SegmentationService } from "../service/segmentation.ts";
import type { ApiMetrics } from "./metrics.ts";

/** What the routes find on the server (fastify decorators), set once by `contextPlugin`. */
declare module "fastify" {
  interface FastifyInstance {
    /** The one way to segment: every route's images go through it. */
    segmentation: SegmentationService;
    /** The daemon's cameras; undefined when the server runs without them. */
    cameras: CameraProvider | undefined;
    apiMetrics: ApiMetrics;
    /** Model status and updates; undefined when the server runs without them. */
    modelUpdates: { updater: ModelUpdater; allowUpdates: boolean } | undefined;
    /** The annotation dataset; undefined when the server runs without one. */
    dataset: AnnotationStore | undefined;
  }
}

export interface ApiContext {
  segmentation: SegmentationService;
  cameras?: CameraProvider;
  apiMetrics: ApiMetrics;
  modelUpdates?: { updater: ModelUpdater; allowUpdates: boolean };
  dataset?: AnnotationStore;
}

/** Decorates the server (not encapsulated: the route plugins registered after it see the decorators). */
export const contextPlugin = fp(
  async (app: FastifyInstance, ctx: ApiContext) => {
    app.decorate("segmentation", ctx.segmentation);
    app.decorate("cameras", ctx.cameras);
    app.decorate("apiMetrics", ctx.apiMetrics);
    app.decorate("modelUpdates", ctx.modelUpdates);
    app.decorate("dataset", ctx.dataset);
  },
  { name: "sam-edge-context", fastify: "5.x" },
);
