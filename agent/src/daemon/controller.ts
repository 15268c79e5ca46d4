import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { createSource } from "../capture/create.ts";
import { SamClient } from "../client/client.ts";
import type { Config } from "../config/schema.ts";
import { SamEdgeError } from "../core/errors.ts";
import { createServer } from "../http/server.ts";
import { defaultAllowedHosts } from "../http/site-guard.ts";
import { generatedToken, isLoopbackHost } from "../http/token.ts";
import type { SessionConfig } from "../model/sam-model.ts";
import { loadStartModel, ModelUpdater } from "../service/model-updater.ts";
import { brokerOptions } from "../mqtt/options.ts";
import { isListening, startEmbeddedBroker, type EmbeddedBroker } from "../mqtt/broker.ts";
import { discoveryConfigs, HOME_ASSISTANT_STATE_FILE, HomeAssistantDiscovery } from "../mqtt/home-assistant.ts";
import { MqttPublisher, Topics } from "../mqtt/publisher.ts";
import { Outbox } from "../mqtt/outbox.ts";
import { CircuitBreaker } from "../service/breaker.ts";
import { CloudBudget } from "../service/budget.ts";
import { SegmentationService } from "../service/segmentation.ts";
import { WorkerEngine } from "../service/worker-engine.ts";
import { EngineSlot } from "../service/engine-slot.ts";
import { overlayImage } from "../segment/formats/index.ts";
import type { Logger } from "../core/log.ts";
import { answerModelUpdate } from "../mqtt/model-command.ts";
import { Pipeline, type ProcessedFrame } from "./camera-scheduler.ts";
import { RequestHandler } from "../mqtt/requests.ts";
import { encodeResult, printable, resultEncoding, roundMs } from "../service/result.ts";

export interface ControllerOptions {
  /** Where --print lines go. */
  print?: (line: string) => void;
}

/** How long a stop waits for the broker to take the outbox before leaving it for the next start. */
const FLUSH_TIMEOUT_MS = 5000;

/**
 * The daemon: one of each part, wired once. Sources feed the pipeline, the pipeline runs jobs
 * through the router on the one engine, results go to the publisher (and stdout with --print);
 * the HTTP API shares the engine and the cameras. The engine lives in a slot that model updates
 * (HTTP or MQTT) swap a new one into.
 */
export class Controller {
  readonly runId = Date.now().toString(36);
  readonly registry = new Registry();
  mqttUrl: string | undefined;
  httpUrl: string | undefined;
  private broker: EmbeddedBroker | undefined;
  private publisher: MqttPublisher | undefined;
  private http: FastifyInstance | undefined;
  private statsTimer: NodeJS.Timeout | undefined;
  private pipeline!: Pipeline;
  private service!: SegmentationService;
  private topics: Topics;
  private slot: EngineSlot | undefined;
  /** The first model's load (a later update does not change it). */
  private firstModel: Promise<unknown> = Promise.resolve();
  private updater!: ModelUpdater;
  private outbox: Outbox | undefined;
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly config: Config,
    private readonly log: Logger,
    private readonly options: ControllerOptions,
  ) {
    this.topics = new Topics(config.mqtt.base_topic, config.device_id);
  }

  static async start(config: Config, log: Logger, options: ControllerOptions = {}): Promise<Controller> {
    const c = new Controller(config, log, options);
    try {
      await c.startParts();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  private async startParts(): Promise<void> {
    const { config, log } = this;
    await mkdir(config.state_dir, { recursive: true });
    const session: SessionConfig = {
      intraOpThreads: config.model.threads,
      graphOptimizationLevel: config.model.graph_optimization,
      executionProviders: config.model.execution_providers,
      spinWait: config.model.spin_wait,
    };
    // The model runs in a worker thread: HTTP, MQTT and the watchdog stay live while it works.
    const engine = loadStartModel(config.state_dir, config.model.dir, session, log, WorkerEngine.load);
    engine.then(
      (e) => log.info(`model ${e.model.manifest.name} loaded from ${e.model.dir}`),
      (err: Error) =>
        log.error(`the model did not load (${(err as { code?: string }).code ?? "error"}: ${err.message}); cameras routed local will fail, cloud/auto ones use the cloud, until a model update succeeds`),
    );
    this.firstModel = engine;
    const slot = new EngineSlot(engine);
    this.slot = slot;
    const update = config.model.update;
    this.updater = new ModelUpdater({
      slot,
      stateDir: config.state_dir,
      configDir: config.model.dir,
      session,
      limits: { maxBytes: update.max_bytes, timeoutMs: update.timeout_ms },
      fetchPolicy: { allowedHosts: update.allowed_hosts },
      log,
      registry: this.registry,
      load: WorkerEngine.load,
    });
    const cloud = config.cloud;
    this.service = new SegmentationService({
      engine: slot,
      registry: this.registry,
      latencyBudgetMs: config.routing.latency_budget_ms,
      ...(cloud.token
        ? {
            cloud: {
              client: new SamClient({ baseUrl: cloud.base_url, token: cloud.token, timeoutMs: cloud.timeout_ms }),
              budget: new CloudBudget(config.state_dir, cloud.monthly_budget, undefined, (m) => log.warn(m)),
              breaker: new CircuitBreaker(cloud.breaker_failures, cloud.breaker_reset_ms),
              retries: cloud.retries,
              retryBaseMs: cloud.retry_base_ms,
            },
          }
        : {}),
    });

    let protocol = config.mqtt.protocol_version;
    if (config.mqtt.enabled) {
      const url = new URL(config.mqtt.url);
      const port = Number(url.port || (url.protocol === "mqtts:" ? 8883 : 1883));
      const local = isLoopbackHost(url.hostname);
      const embedded = config.mqtt.embedded_broker;
      if (embedded === "always" || (embedded === "auto" && local && !(await isListening(url.hostname, port)))) {
        this.broker = await startEmbeddedBroker(url.hostname, port);
        // aedes speaks MQTT 3.1.1: requests are answered on the reply topic rather than MQTT 5's response topic.
        protocol = 4;
        log.info(`mqtt: no broker listened on ${url.hostname}:${port}; started an embedded one (aedes, MQTT 3.1.1)`);
      }
      this.mqttUrl = config.mqtt.url;
    }
    const client = { ...brokerOptions(config.mqtt, protocol), clientId: config.mqtt.client_id ?? `sam-edge-${config.device_id}` };

    this.pipeline = new Pipeline(
      config.cameras.filter((c) => c.enabled).map((settings) => ({ settings, source: createSource(settings, { url: config.mqtt.url, client }) })),
      { service: this.service, defaultRoute: config.routing.default_route, log, onResult: (p) => this.onResult(p) },
    );

    if (config.mqtt.enabled) {
      const outbox = await Outbox.open(
        join(config.state_dir, "outbox"),
        { maxMessages: config.mqtt.outbox.max_messages, maxBytes: config.mqtt.outbox.max_bytes, fsync: config.mqtt.outbox.fsync },
        {
          onDrop: (message, dropped) => {
            if (dropped <= 5 || dropped % 100 === 0) log.warn(`outbox full: dropped the oldest message (${message.topic}); ${dropped} dropped since start`);
          },
          onReject: (file, reason, rejected) => log.warn(`outbox: ${file} can never be sent (${reason}); moved aside, delivery goes on (${rejected} rejected since start)`),
        },
      );
      if (outbox.depth > 0) log.info(`outbox: ${outbox.depth} results from an earlier run wait to be sent`);
      const requests = new RequestHandler({ service: this.service, cameras: this.pipeline, config, topicFor: (id) => this.topics.response(id) });
      // Also when discovery is off: what an earlier run announced is then removed.
      const discovery = new HomeAssistantDiscovery({
        configs: discoveryConfigs(config, this.topics),
        stateFile: join(config.state_dir, HOME_ASSISTANT_STATE_FILE),
        publish: (topic, payload) => this.publisher!.publishRetained(topic, payload),
        log,
      });
      if (config.mqtt.home_assistant.enabled && !config.results.overlay) log.info("home assistant: no camera entities, since results.overlay is off");
      this.publisher = new MqttPublisher({
        url: config.mqtt.url,
        client,
        topics: this.topics,
        outbox,
        log,
        onConnect: () => void discovery.sync(),
        ...(config.mqtt.response_topic_prefix ? { responsePrefix: config.mqtt.response_topic_prefix } : {}),
        ...(config.mqtt.requests ? { onRequest: (r) => requests.answer(r.payload, r.expiresAt) } : {}),
        ...(update.mqtt ? { onModelUpdate: (r) => answerModelUpdate(this.updater, r.payload, (id) => this.topics.response(id)) } : {}),
      });
      this.outbox = outbox;
      this.publisher.start();
      this.statsTimer = setInterval(() => this.publishStats(), config.mqtt.stats_interval_s * 1000);
      this.statsTimer.unref();
    }
    this.registerMetrics();

    if (config.http.enabled) {
      const generated = config.http.token ? undefined : await generatedToken(config.state_dir, config.http.host);
      const token = config.http.token ?? generated?.token;
      this.http = await createServer({
        service: this.service,
        models: { updater: this.updater, allowUpdates: update.http },
        cameras: this.pipeline,
        registry: this.registry,
        datasetDir: join(config.state_dir, "dataset"),
        ...(token ? { token } : {}),
        rateLimitPerMinute: config.http.rate_limit_per_minute,
        site: { allowedHosts: [...defaultAllowedHosts(config.http.host), ...config.http.allowed_hosts], allowedOrigins: config.http.allowed_origins },
        requestTimeoutMs: config.http.request_timeout_ms,
        log,
      });
      try {
        await this.http.listen({ host: config.http.host, port: config.http.port });
      } catch (err) {
        throw new SamEdgeError(
          "CONFIG_INVALID",
          `http.port: the HTTP API cannot listen on ${config.http.host}:${config.http.port} (${(err as Error).message}); set another http.port (SAM_EDGE_HTTP_PORT) or http.enabled=false`,
        );
      }
      const address = this.http.server.address();
      if (address && typeof address === "object") this.httpUrl = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
      if (generated?.created) {
        log.info(`http: the API is reachable from the network and no http.token is set, so it wants this one (kept in ${generated.file}): open ${this.httpUrl}/#token=${generated.token}`);
      } else if (generated) log.info(`http: the API wants the token kept in ${generated.file} (no http.token is set)`);
    }
    this.pipeline.start();
  }

  /** Resolves once the model has loaded or failed to: its load blocks the event loop, so systemd's READY waits for it. */
  modelSettled(): Promise<void> {
    return this.firstModel.then(
      () => undefined,
      () => undefined,
    );
  }

  /** Resolves when every source has ended (only finite sources do: folders without loop). */
  finished(): Promise<void> {
    return this.pipeline.finished();
  }

  stats(): Record<string, unknown> {
    return {
      device: this.config.device_id,
      at: new Date().toISOString(),
      cameras: this.pipeline.stats(),
      router: this.service.stats,
      // Left out while the model loads, or when it failed to.
      engine: this.slot?.engine?.cacheStats,
      model: this.modelStats(),
      mqtt: this.publisher && this.outbox ? { connected: this.publisher.connected, outbox: { depth: this.outbox.depth, bytes: this.outbox.bytes, dropped: this.outbox.dropped, rejected: this.outbox.rejected } } : undefined,
      memory_mb: Math.round(process.memoryUsage().rss / 1048576),
    };
  }


  private modelStats(): Record<string, unknown> {
    const { model, update } = this.updater.status();
    return { name: model?.name, id: model?.id, ...(update.last ? { last_update: { result: update.last.result, at: update.last.finished_at, error: update.last.error } } : {}) };
  }

  private publishStats(): void {
    this.publisher?.publishVolatile(this.topics.stats, JSON.stringify(this.stats()));
  }

  private registerMetrics(): void {
    const outbox = this.outbox;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const pipeline = this.pipeline;
    const service = this.service;
    const perCamera = (name: string, help: string, read: (s: ReturnType<Pipeline["stats"]>[string]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ["camera"],
        registers,
        collect() {
          for (const [camera, s] of Object.entries(pipeline.stats())) this.set({ camera }, read(s));
        },
      });
    perCamera("sam_edge_frames_received_total", "Frames delivered by each camera", (s) => s.frames);
    perCamera("sam_edge_frames_processed_total", "Frames segmented and published", (s) => s.processed);
    perCamera("sam_edge_frames_dropped_total", "Frames replaced by a newer one before the engine got to them", (s) => s.dropped);
    perCamera("sam_edge_frames_corrupt_total", "Frames skipped as corrupt, truncated or too large", (s) => s.corrupt);
    new Gauge({
      name: "sam_edge_outbox_depth",
      help: "Results waiting on disk for the broker",
      registers,
      collect() {
        this.set(outbox?.depth ?? 0);
      },
    });
    new Gauge({
      name: "sam_edge_outbox_rejected_total",
      help: "Outbox files moved to outbox/rejected since start: unreadable, or a topic no broker takes",
      registers,
      collect() {
        this.set(outbox?.rejected ?? 0);
      },
    });
    new Gauge({
      name: "sam_edge_cloud_calls_left",
      help: "Cloud calls left in this month's budget (-1: no cloud configured)",
      registers,
      collect() {
        this.set(service.stats.cloudCallsLeft ?? -1);
      },
    });
  }

  private async onResult({ frame, result, queueMs }: ProcessedFrame): Promise<void> {
    const started = performance.now();
    // Waiting for the scheduler and then in the service's queue, together.
    const body = await encodeResult(result, resultEncoding(this.config.results), { queueMs: queueMs + (result.timings.queueMs ?? 0) });
    const formatMs = performance.now() - started;
    this.service.observeStage("format", formatMs);
    body.latency_ms.format = roundMs(formatMs);
    body.latency_ms.total = Date.now() - frame.capturedAt.getTime();
    const message = {
      device: this.config.device_id,
      camera: frame.cameraId,
      frame: frame.seq,
      frame_id: `${this.runId}-${frame.seq}`,
      captured_at: frame.capturedAt.toISOString(),
      ...body,
    };
    // Queued before printed: a printed result is on disk, whatever happens to the process next.
    await this.publisher?.publishDurable(this.topics.result(frame.cameraId), Buffer.from(JSON.stringify(message)));
    if (this.config.print_results) (this.options.print ?? ((l: string) => process.stdout.write(l + "\n")))(printable(message));
    if (!this.publisher) return;
    if (this.config.results.overlay && this.publisher.connected) {
      const jpeg = await overlayImage(frame.bytes, result.masks.map((m) => m.mask));
      this.publisher.publishVolatile(this.topics.overlay(frame.cameraId), jpeg, true);
    }
  }

  /** Drains in-flight frames, flushes the outbox, says offline, closes everything. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.statsTimer);
      await this.pipeline?.stop();
      await this.publisher?.stop(FLUSH_TIMEOUT_MS);
      await this.http?.close();
      await this.broker?.close();
      await this.service?.close().catch((err: Error) => this.log.warn(`releasing the model failed: ${err.message}`));
    })();
    return this.stopping;
  }
}
