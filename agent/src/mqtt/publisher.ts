import { connect, type IClientOptions, type IClientPublishOptions, type MqttClient } from "mqtt";
import type { Logger } from "../core/log.ts";
import type { Outbox } from "./outbox.ts";
import { publishTopicProblem, requestIdOf } from "./topic.ts";

/** What the agent says on its `status` topic; Home Assistant's availability uses the same words. */
export const STATUS_ONLINE = "online";
export const STATUS_OFFLINE = "offline";

/**
 * The agent's topics, under `<base>/<device>/`:
 *   status                      retained `online` / `offline` (the offline one is the last will)
 *   cameras/<camera>/result     one JSON result per processed frame (QoS 1, through the outbox)
 *   cameras/<camera>/overlay    retained JPEG of the latest masks, when configured
 *   stats                       periodic JSON counters
 *   request                     segment requests in
 *   model/update                model update commands in (when model.update.mqtt is on)
 *   response/<id>               answers for MQTT 3.1.1 clients (MQTT 5 ones name a response topic)
 */
export class Topics {
  readonly root: string;

  constructor(baseTopic: string, deviceId: string) {
    this.root = `${baseTopic.replace(/\/+$/, "")}/${deviceId}`;
  }

  get status(): string {
    return `${this.root}/status`;
  }
  get stats(): string {
    return `${this.root}/stats`;
  }
  get request(): string {
    return `${this.root}/request`;
  }
  get modelUpdate(): string {
    return `${this.root}/model/update`;
  }
  response(id?: string): string {
    return id ? `${this.root}/response/${id}` : `${this.root}/response`;
  }
  result(camera: string): string {
    return `${this.root}/cameras/${camera}/result`;
  }
  overlay(camera: string): string {
    return `${this.root}/cameras/${camera}/overlay`;
  }
}

export interface IncomingRequest {
  payload: Buffer;
  /** MQTT 5's response topic and correlation data, when the client sent them. */
  responseTopic?: string;
  correlationData?: Buffer;
  /** Epoch ms when MQTT 5's message expiry runs out: nobody waits for the answer after that. */
  expiresAt?: number;
}

export interface PublisherOptions {
  url: string;
  client: IClientOptions;
  topics: Topics;
  outbox: Outbox;
  log: Logger;
  /** Answers segment requests; unset leaves the request topic unsubscribed. */
  onRequest?: RequestAnswerer;
  /** Answers model update commands; unset leaves their topic unsubscribed. */
  onModelUpdate?: RequestAnswerer;
  /**
   * The only topics an MQTT 5 client may name as its response topic (mqtt.response_topic_prefix;
   * default `<base>/<device>/response/`): without it any client could make the agent publish
   * anywhere, over its own results too.
   */
  responsePrefix?: string;
}

export type RequestAnswerer = (request: IncomingRequest) => Promise<{ topic?: string; payload: object }>;

/**
 * The broker connection: status with last will, results through the durable outbox (one in
 * flight at a time, so they reach the broker in the order they were queued), and
 * fire-and-forget messages (stats, overlays) only while connected.
 */
export class MqttPublisher {
  private client: MqttClient | undefined;
  private sending: Promise<void> | undefined;
  private closing = false;
  private drained: (() => void)[] = [];
  private readonly connectListeners: (() => void)[] = [];

  constructor(private readonly options: PublisherOptions) {}

  /** Runs `listener` on every connect, after `online` is published (Home Assistant's discovery is sent again then). */
  onConnect(listener: () => void): void {
    this.connectListeners.push(listener);
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  start(): void {
    const { topics, log } = this.options;
    // Each topic the agent answers on, with its answerer; both answer alike (response topic or response/<id>).
    const answerers = new Map<string, RequestAnswerer>();
    if (this.options.onRequest) answerers.set(topics.request, this.options.onRequest);
    if (this.options.onModelUpdate) answerers.set(topics.modelUpdate, this.options.onModelUpdate);
    const client = connect(this.options.url, {
      ...this.options.client,
      will: { topic: topics.status, payload: Buffer.from(STATUS_OFFLINE), qos: 1, retain: true },
    });
    this.client = client;
    let wasConnected = false;
    // Reconnect attempts fail the same way every second during an outage: each reason is logged once.
    let lastError: string | undefined;
    client.on("connect", () => {
      lastError = undefined;
      log.info(`mqtt: connected to ${this.options.url}${wasConnected ? " again" : ""}`);
      wasConnected = true;
      client.publish(topics.status, STATUS_ONLINE, { qos: 1, retain: true });
      if (answerers.size > 0) client.subscribe([...answerers.keys()], { qos: 1 });
      for (const listener of this.connectListeners) listener();
      this.kick();
    });
    client.on("offline", () => log.warn(`mqtt: ${this.options.url} unreachable; results wait in the outbox (${this.options.outbox.depth} queued)`));
    client.on("error", (err) => {
      if (err.message !== lastError) log.warn(`mqtt: ${err.message}`);
      lastError = err.message;
    });
    client.on("message", (topic, payload, packet) => {
      const answer = answerers.get(topic);
      if (!answer) return;
      const props = packet.properties;
      const request: IncomingRequest = {
        payload,
        ...(props?.responseTopic ? { responseTopic: props.responseTopic } : {}),
        ...(props?.correlationData ? { correlationData: props.correlationData } : {}),
        ...(props?.messageExpiryInterval !== undefined ? { expiresAt: Date.now() + props.messageExpiryInterval * 1000 } : {}),
      };
      const opts: IClientPublishOptions = { qos: 1, ...(request.correlationData ? { properties: { correlationData: request.correlationData } } : {}) };
      const refused = request.responseTopic === undefined ? undefined : this.responseTopicProblem(request.responseTopic);
      if (refused) {
        // Not run at all: the answer goes where an MQTT 3.1.1 client's would.
        const id = requestIdOf(payload);
        log.warn(`mqtt: a request${id ? ` (${id})` : ""} named the response topic ${JSON.stringify(request.responseTopic!.slice(0, 200))}: refused, ${refused}`);
        client.publish(topics.response(id), JSON.stringify({ ...(id ? { id } : {}), error: { code: "REQUEST_INVALID", message: `the response topic is refused: ${refused}` } }), opts);
        return;
      }
      void answer(request).then(({ topic, payload: reply }) => {
        const to = request.responseTopic ?? topic ?? topics.response();
        client.publish(to, JSON.stringify(reply), opts);
      });
    });
  }

  private responseTopicProblem(topic: string): string | undefined {
    const prefix = this.options.responsePrefix ?? `${this.options.topics.response()}/`;
    const problem = publishTopicProblem(topic);
    if (problem) return problem.replace(/^its topic/, "the topic");
    if (!topic.startsWith(prefix) || topic.length === prefix.length) return `response topics must start with ${JSON.stringify(prefix)} (mqtt.response_topic_prefix) and name a topic below it`;
    return undefined;
  }

  /** Queues a QoS 1 message durably; it is sent when the broker is reachable, in order. */
  async publishDurable(topic: string, payload: Buffer): Promise<void> {
    await this.options.outbox.append(topic, payload);
    this.kick();
  }

  /** QoS 1, retained; resolves on the broker's PUBACK and rejects when not connected. */
  async publishRetained(topic: string, payload: string): Promise<void> {
    if (!this.client?.connected) throw new Error(`not connected to ${this.options.url}`);
    await this.client.publishAsync(topic, payload, { qos: 1, retain: true });
  }

  /** Sends now if connected (QoS 0); a message that would be stale after an outage is not kept. */
  publishVolatile(topic: string, payload: string | Buffer, retain = false): boolean {
    if (!this.client?.connected) return false;
    this.client.publish(topic, payload, { qos: 0, retain });
    return true;
  }

  private kick(): void {
    if (this.sending || !this.client) return;
    this.sending = this.drain().finally(() => {
      this.sending = undefined;
      if (this.options.outbox.depth === 0) for (const resolve of this.drained.splice(0)) resolve();
      else if (this.client?.connected && !this.closing) this.kick();
    });
  }

  private async drain(): Promise<void> {
    const { outbox } = this.options;
    const client = this.client!;
    while (client.connected) {
      const message = await outbox.oldest();
      if (!message) return;
      try {
        // mqtt.js keeps an unacknowledged message and sends it again after a reconnect.
        await client.publishAsync(message.topic, message.payload, { qos: 1 });
      } catch (err) {
        if (!this.closing) this.options.log.warn(`mqtt: publishing ${message.topic} failed: ${(err as Error).message}; it stays in the outbox`);
        return;
      }
      await outbox.remove(message.id);
    }
  }

  /** Waits until the outbox is empty, or `timeoutMs`; true when it emptied. */
  async flush(timeoutMs: number): Promise<boolean> {
    if (this.options.outbox.depth === 0) return true;
    this.kick();
    let timer: NodeJS.Timeout | undefined;
    const emptied = await Promise.race([
      new Promise<boolean>((resolve) => this.drained.push(() => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return emptied;
  }

  /** Flushes what it can, says `offline` (retained), and disconnects; what was not sent stays on disk. */
  async stop(flushTimeoutMs: number): Promise<void> {
    const client = this.client;
    if (!client) return;
    const flushed = client.connected ? await this.flush(flushTimeoutMs) : false;
    this.closing = true;
    if (!flushed && this.options.outbox.depth > 0) this.options.log.warn(`mqtt: ${this.options.outbox.depth} results stay in the outbox for the next start`);
    if (client.connected) await client.publishAsync(this.options.topics.status, STATUS_OFFLINE, { qos: 1, retain: true }).catch(() => undefined);
    await client.endAsync(!client.connected);
    this.client = undefined;
  }
}
