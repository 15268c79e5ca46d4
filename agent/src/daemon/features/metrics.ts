import { collectDefaultMetrics, Gauge, type Registry } from "prom-client";
import type { Outbox } from "../../mqtt/outbox.ts";
import type { SegmentationService } from "../../service/segmentation.ts";
import type { CameraScheduler, CameraStats } from "../camera-scheduler.ts";
import type { Feature } from "./feature.ts";

/**
 * The daemon's own Prometheus gauges, read at scrape time from the parts that keep the counts
 * (the process metrics too); the service and the HTTP API register theirs in the same registry.
 */
export function daemonMetrics(registry: Registry, scheduler: CameraScheduler, service: SegmentationService, outbox: Outbox | undefined): Feature {
  return {
    name: "metrics",
    start() {
      const registers = [registry];
      collectDefaultMetrics({ register: registry });
      const perCamera = (name: string, help: string, read: (s: CameraStats) => number) =>
        new Gauge({
          name,
          help,
          labelNames: ["camera"],
          registers,
          collect() {
            for (const [camera, s] of Object.entries(scheduler.stats())) this.set({ camera }, read(s));
          },
        });
      perCamera("sam_edge_frames_received_total", "Frames delivered by each camera", (s) => s.frames);
      perCamera("sam_edge_frames_processed_total", "Frames segmented and published", (s) => s.processed);
      perCamera("sam_edge_frames_dropped_total", "Frames replaced by a newer one before the engine got to them", (s) => s.dropped);
      perCamera("sam_edge_frames_corrupt_total", "Frames skipped as corrupt, truncated or too large", (s) => s.corrupt);
      const gauge = (name: string, help: string, read: () => number) =>
        new Gauge({
          name,
          help,
          registers,
          collect() {
            this.set(read());
          },
        });
      gauge("sam_edge_outbox_depth", "Results waiting on disk for the broker", () => outbox?.depth ?? 0);
      gauge("sam_edge_outbox_rejected_total", "Outbox files moved to outbox/rejected since start: unreadable, or a topic no broker takes", () => outbox?.rejected ?? 0);
      gauge("sam_edge_cloud_calls_left", "Cloud calls left in this month's budget (-1: no cloud configured)", () => service.stats.cloudCallsLeft ?? -1);
    },
    stop() {},
  };
}
