import { join } from "node:path";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../core/log.ts";
import { isLoopbackHost } from "../core/net.ts";
import { isListening, startEmbeddedBroker, type EmbeddedBroker } from "../mqtt/broker.ts";
import { brokerOptions } from "../mqtt/options.ts";
import { Outbox } from "../mqtt/outbox.ts";
import { MqttPublisher, type RequestAnswerer, type Topics } from "../mqtt/publisher.ts";

/** The broker side of the daemon: the outbox and the publisher over it. */
export interface MqttLink {
  url: string;
  publisher: MqttPublisher;
  outbox: Outbox;
}

/** The client options sources subscribing to MQTT frames use too; `protocolVersion` 4 when the broker is the embedded aedes. */
export type ClientOptions = ReturnType<typeof brokerOptions> & { clientId: string };

/**
 * Starts an embedded broker (aedes) when the config asks for one or, by default, when the URL
 * is loopback and nothing listens there; the client options then speak MQTT 3.1.1, as aedes does.
 */
export async function brokerFor(config: Config, log: Logger): Promise<{ broker: EmbeddedBroker | undefined; client: ClientOptions }> {
  let protocol = config.mqtt.protocol_version;
  let broker: EmbeddedBroker | undefined;
  if (config.mqtt.enabled) {
    const url = new URL(config.mqtt.url);
    const port = Number(url.port || (url.protocol === "mqtts:" ? 8883 : 1883));
    const embedded = config.mqtt.embedded_broker;
    if (embedded === "always" || (embedded === "auto" && isLoopbackHost(url.hostname) && !(await isListening(url.hostname, port)))) {
      broker = await startEmbeddedBroker(url.hostname, port);
      // aedes speaks MQTT 3.1.1: requests are answered on the reply topic rather than MQTT 5's response topic.
      protocol = 4;
      log.info(`mqtt: no broker listened on ${url.hostname}:${port}; started an embedded one (aedes, MQTT 3.1.1)`);
    }
  }
  return { broker, client: { ...brokerOptions(config.mqtt, protocol), clientId: config.mqtt.client_id ?? `sam-edge-${config.device_id}` } };
}

/** The outbox in the state dir and a publisher over it, not yet connected. */
export async function mqttLink(
  config: Config,
  log: Logger,
  topics: Topics,
  client: ClientOptions,
  answerers: { onRequest?: RequestAnswerer; onModelUpdate?: RequestAnswerer },
): Promise<MqttLink> {
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
  const publisher = new MqttPublisher({
    url: config.mqtt.url,
    client,
    topics,
    outbox,
    log,
    ...(config.mqtt.response_topic_prefix ? { responsePrefix: config.mqtt.response_topic_prefix } : {}),
    ...answerers,
  });
  return { url: config.mqtt.url, publisher, outbox };
}
