import type { FastifyInstance } from "fastify";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CacheStats, Engine } from "../service/engine.ts";

/**
 * The API's Prometheus metrics, in a registry of their own (with the process metrics) unless the
 * daemon passes its registry: that is how frames dropped, outbox depth and cloud calls left join
 * the same /metrics, and the process metrics are then the daemon's to collect. Per-stage times
 * are the segmentation service's (sam_edge_stage_duration_seconds), whoever asked.
 */
export class ApiMetrics {
  constructor(
    readonly registry: Registry,
    engine: () => Engine | undefined,
    app: FastifyInstance,
    ownRegistry: boolean,
  ) {
    const registers = [registry];
    if (ownRegistry) collectDefaultMetrics({ register: registry });
    const requests = new Counter({
      name: "sam_edge_http_requests_total",
      help: "HTTP requests answered, by route and status",
      labelNames: ["method", "route", "status"],
      registers,
    });
    const duration = new Histogram({
      name: "sam_edge_http_request_duration_seconds",
      help: "Time from receiving a request to answering it",
      labelNames: ["method", "route"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    const cache = (name: string, help: string, read: (s: CacheStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const e = engine();
          if (e) this.set(read(e.cacheStats));
        },
      });
    // The engine keeps the counts; gauges read them at scrape time rather than mirroring them.
    cache("sam_edge_embedding_cache_hits", "Segment calls that found their image's embedding cached", (s) => s.hits);
    cache("sam_edge_embedding_cache_misses", "Segment calls that had to run the encoder", (s) => s.misses);
    cache("sam_edge_embedding_cache_entries", "Embeddings held in the cache", (s) => s.entries);
    cache("sam_edge_embedding_cache_bytes", "Bytes of embeddings held in the cache", (s) => s.bytes);

    app.addHook("onResponse", async (request, reply) => {
      const route = request.routeOptions.url ?? "unmatched";
      requests.inc({ method: request.method, route, status: String(reply.statusCode) });
      duration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
    });
  }
}
