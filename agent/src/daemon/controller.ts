import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { Registry } from "prom-client";
import { createSource } from "../capture/create.ts";
import { SamClient } from "../client/client.ts";
import type { Config } from "../config/schema.ts";
import { SamEdgeError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { createServer } from "../http/server.ts";
import { defaultAllowedHosts } from "../http/site-guard.ts";
import { generatedToken } from "../http/token.ts";
import type { SessionConfig } from "../model/sam-model.ts";
import { answerModelUpdate } from "../mqtt/model-command.ts";
import { Topics } from "../mqtt/publisher.ts";
import { RequestHandler } from "../mqtt/requests.ts";
import { CircuitBreaker } from "../service/breaker.ts";
import { CloudBudget } from "../service/budget.ts";
import type { EngineLoader } from "../service/engine.ts";
import { EngineSlot } from "../service/engine-slot.ts";
import { loadStartModel, ModelUpdater } from "../service/model-updater.ts";
import { encodeResult, resultEncoding, roundMs } from "../service/result.ts";
import { SegmentationService } from "../service/segmentation.ts";
import { WorkerEngine } from "../service/worker-engine.ts";
import { CameraScheduler, type ProcessedFrame } from "./camera-scheduler.ts";
import type { Feature } from "./features/feature.ts";
import { HOME_ASSISTANT_STATE_FILE, homeAssistant } from "./features/home-assistant.ts";
import { daemonMetrics } from "./features/metrics.ts";
import { mqttResults } from "./features/mqtt-results.ts";
import { overlays } from "./features/overlays.ts";
import { printResults } from "./features/print.ts";
import { statsPublisher } from "./features/stats.ts";
import type { EmbeddedBroker } from "../mqtt/broker.ts";
import { brokerFor, mqttLink, type MqttLink } from "./mqtt-link.ts";
import { ResultBus, type ResultEvent } from "./results.ts";

export interface ControllerOptions {
  /** Where --print lines go (stdout unless set). */
  print?: (line: string) => void;
  /** How models are loaded: in a worker thread (the default), or in this thread (tests). */
  load?: EngineLoader;
}

/** How long a stop waits for the broker to take the outbox before leaving it for the next start. */
const FLUSH_TIMEOUT_MS = 5000;

/**
 * The daemon's composition root, as Zigbee2MQTT's controller: it builds the core parts once
 * (the segmentation service with its model and updater, the camera scheduler, the MQTT link,
 * the HTTP API) and starts the features, which listen to results and report them (MQTT
 * results, --print, overlays, stats, Prometheus, Home Assistant). A camera frame's way:
 * source -> scheduler -> service -> ResultBus -> features.
 */
export class Controller {
  readonly runId = Date.now().toString(36);
  readonly registry = new Registry();
  readonly results = new ResultBus();
  mqttUrl: string | undefined;
  httpUrl: string | undefined;
  private service!: SegmentationService;
  private updater!: ModelUpdater;
  private scheduler!: CameraScheduler;
  private mqtt: MqttLink | undefined;
  private broker: EmbeddedBroker | undefined;
  private http: FastifyInstance | undefined;
  private features: Feature[] = [];
  private topics: Topics;
  /** The first model's load (a later update does not change it). */
  private firstModel: Promise<unknown> = Promise.resolve();
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
    this.startModel();
    const { broker, client } = await brokerFor(config, log);
    this.broker = broker;
    const sources = config.cameras.filter((c) => c.enabled).map((settings) => ({ settings, source: createSource(settings, { url: config.mqtt.url, client }) }));
    this.scheduler = new CameraScheduler(sources, { service: this.service, defaultRoute: config.routing.default_route, log, onResult: (p) => this.onResult(p) });
    if (config.mqtt.enabled) {
      const requests = new RequestHandler({ service: this.service, cameras: this.scheduler, config, topicFor: (id) => this.topics.response(id) });
      this.mqtt = await mqttLink(config, log, this.topics, client, {
        ...(config.mqtt.requests ? { onRequest: (r) => requests.answer(r.payload, r.expiresAt) } : {}),
        ...(config.model.update.mqtt ? { onModelUpdate: (r) => answerModelUpdate(this.updater, r.payload, (id) => this.topics.response(id)) } : {}),
      });
      this.mqttUrl = config.mqtt.url;
    }
    this.features = this.featuresFor(config);
    for (const feature of this.features) await feature.start();
    this.mqtt?.publisher.start();
    if (config.http.enabled) await this.startHttp();
    this.scheduler.start();
  }

  /** The model (in a worker thread), the slot updates swap models into, the updater and the service in front. */
  private startModel(): void {
    const { config, log } = this;
    const session: SessionConfig = {
      intraOpThreads: config.model.threads,
      graphOptimizationLevel: config.model.graph_optimization,
      executionProviders: config.model.execution_providers,
      spinWait: config.model.spin_wait,
    };
    const load = this.options.load ?? WorkerEngine.load;
    const engine = loadStartModel(config.state_dir, config.model.dir, session, log, load);
    engine.then(
      (e) => log.info(`model ${e.model.manifest.name} loaded from ${e.model.dir}`),
      (err: Error) =>
        log.error(`the model did not load (${(err as { code?: string }).code ?? "error"}: ${err.message}); cameras routed local will fail, cloud/auto ones use the cloud, until a model update succeeds`),
    );
    this.firstModel = engine;
    const slot = new EngineSlot(engine);
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
      load,
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
  }

  /** In the order results reach them: on disk for MQTT before printed. */
  private featuresFor(config: Config): Feature[] {
    const mqtt = this.mqtt;
    const features: Feature[] = [];
    if (mqtt) features.push(mqttResults(this.results, mqtt.publisher, this.topics));
    if (config.print_results) features.push(printResults(this.results, this.options.print));
    if (mqtt && config.results.overlay) features.push(overlays(this.results, mqtt.publisher, this.topics));
    if (mqtt) {
      features.push(statsPublisher(mqtt.publisher, this.topics, config.mqtt.stats_interval_s, () => this.stats()));
      features.push(homeAssistant(config, this.topics, mqtt.publisher, join(config.state_dir, HOME_ASSISTANT_STATE_FILE), this.log));
    }
    features.push(daemonMetrics(this.registry, this.scheduler, this.service, mqtt?.outbox));
    return features;
  }

  private async startHttp(): Promise<void> {
    const { config, log } = this;
    const generated = config.http.token ? undefined : await generatedToken(config.state_dir, config.http.host);
    const token = config.http.token ?? generated?.token;
    this.http = await createServer({
      service: this.service,
      models: { updater: this.updater, allowUpdates: config.model.update.http },
      cameras: this.scheduler,
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

  /** Resolves once the model has loaded or failed to (systemd's READY waits for it). */
  modelSettled(): Promise<void> {
    return this.firstModel.then(
      () => undefined,
      () => undefined,
    );
  }

  /** Resolves when every source has ended (only finite sources do: folders without loop). */
  finished(): Promise<void> {
    return this.scheduler.finished();
  }

  /** What the `stats` topic carries. */
  stats(): Record<string, unknown> {
    const { model, update } = this.updater.status();
    const outbox = this.mqtt?.outbox;
    return {
      device: this.config.device_id,
      at: new Date().toISOString(),
      cameras: this.scheduler.stats(),
      router: this.service.stats,
      // Left out while the model loads, or when it failed to.
      engine: this.service.engine?.cacheStats,
      model: { name: model?.name, id: model?.id, ...(update.last ? { last_update: { result: update.last.result, at: update.last.finished_at, error: update.last.error } } : {}) },
      mqtt: this.mqtt && outbox ? { connected: this.mqtt.publisher.connected, outbox: { depth: outbox.depth, bytes: outbox.bytes, dropped: outbox.dropped, rejected: outbox.rejected } } : undefined,
      memory_mb: Math.round(process.memoryUsage().rss / 1048576),
    };
  }

  /** A camera frame's result, encoded once and handed to the features. */
  private async onResult({ frame, settings, result, queueMs, overlay }: ProcessedFrame): Promise<void> {
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
    const event: ResultEvent = { frame, settings, result, message, overlay };
    await this.results.emit(event);
  }

  /** Drains in-flight frames, flushes the outbox, says offline, closes everything. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.scheduler?.stop();
      for (const feature of [...this.features].reverse()) await feature.stop();
      await this.mqtt?.publisher.stop(FLUSH_TIMEOUT_MS);
      await this.http?.close();
      await this.broker?.close();
      await this.service?.close().catch((err: Error) => this.log.warn(`releasing the model failed: ${err.message}`));
    })();
    return this.stopping;
  }
}
