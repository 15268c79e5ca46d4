import { readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { setAsideCorrupt } from "../../core/state-file.ts";
import type { Config } from "../../config/schema.ts";
import type { Logger } from "../../core/log.ts";
import { VERSION } from "../../version.ts";
import { type MqttPublisher, STATUS_OFFLINE, STATUS_ONLINE, type Topics } from "../../mqtt/publisher.ts";
import type { Feature } from "./feature.ts";
import { jsonSyntaxProblem } from "../../core/json.ts";

/** In the state dir: the discovery topics this agent may have left retained on the broker. */
export const HOME_ASSISTANT_STATE_FILE = "home-assistant.json";

/**
 * Home Assistant subscribes to `<prefix>/+/+/config` and `<prefix>/+/+/+/config` and accepts
 * node and object ids of `[a-zA-Z0-9_-]`; only topics of that shape are ever cleared.
 */
const DISCOVERY_TOPIC = /^[^#+]+\/\w+\/[A-Za-z0-9_-]+\/[A-Za-z0-9_-]+\/config$/;
/** Three topics a camera: a list this long is no list the agent wrote. */
const MAX_STATE_BYTES = 1024 * 1024;

/** How the object-count sensor reads a result: masks with at least one pixel. */
export const OBJECT_COUNT_TEMPLATE = "{{ value_json.masks | selectattr('area', 'gt', 0) | list | length }}";
export const LATENCY_TEMPLATE = "{{ value_json.latency_ms.total }}";

export interface DiscoveryConfig {
  topic: string;
  payload: Record<string, unknown>;
}

/**
 * One Home Assistant device per running camera, with an object-count sensor, a latency sensor
 * and (with `results.overlay`) a camera entity on the overlay JPEG. All are available while the
 * agent's status is `online`. Keys are HA's full names, not its abbreviations.
 */
export function discoveryConfigs(config: Config, topics: Topics): DiscoveryConfig[] {
  const ha = config.mqtt.home_assistant;
  if (!ha.enabled) return [];
  const node = `sam-edge_${config.device_id}`;
  const shared = {
    availability: [{ topic: topics.status, payload_available: STATUS_ONLINE, payload_not_available: STATUS_OFFLINE }],
    origin: { name: "sam-edge", sw_version: VERSION },
  };
  return config.cameras
    .filter((camera) => camera.enabled)
    .flatMap((camera) => {
      const device = {
        identifiers: [`${node}_${camera.id}`],
        // HA prefixes entity names with the device's: "box1 door Objects".
        name: `${config.device_id} ${camera.id}`,
        manufacturer: "sam-edge",
        model: `${camera.type} camera`,
        sw_version: VERSION,
      };
      const entity = (component: "sensor" | "camera", kind: string, fields: Record<string, unknown>): DiscoveryConfig => ({
        topic: `${ha.discovery_prefix}/${component}/${node}/${camera.id}_${kind}/config`,
        payload: { unique_id: `${node}_${camera.id}_${kind}`, ...fields, ...shared, device },
      });
      const result = topics.result(camera.id);
      return [
        entity("sensor", "objects", { name: "Objects", state_topic: result, qos: 1, value_template: OBJECT_COUNT_TEMPLATE, state_class: "measurement", icon: "mdi:shape-outline" }),
        entity("sensor", "latency", {
          name: "Latency",
          state_topic: result,
          qos: 1,
          value_template: LATENCY_TEMPLATE,
          unit_of_measurement: "ms",
          device_class: "duration",
          state_class: "measurement",
          entity_category: "diagnostic",
        }),
        // A null name makes the camera the device's main entity, named as the device.
        ...(config.results.overlay ? [entity("camera", "overlay", { name: null, topic: topics.overlay(camera.id) })] : []),
      ];
    });
}

export interface DiscoveryOptions {
  configs: DiscoveryConfig[];
  /** The state file listing what earlier runs announced. */
  stateFile: string;
  /** Retained, QoS 1, resolved on the broker's acknowledgement. */
  publish: (topic: string, payload: string) => Promise<void>;
  log: Logger;
}

/**
 * Keeps the broker's retained discovery configs equal to `configs`. What earlier runs announced
 * is read from the state file, not from the broker: retained messages come with no end marker,
 * so reading them back would hang on a timeout and miss topics under an earlier prefix or
 * device id. Topics announced before and not now (a camera deleted or disabled, discovery
 * turned off) get an empty retained payload, which is how HA is told to remove an entity.
 */
export class HomeAssistantDiscovery {
  private announced: Set<string> | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: DiscoveryOptions) {}

  /** Run on every connect, one at a time: a broker that lost its retained messages gets them back. */
  sync(): Promise<void> {
    this.queue = this.queue
      .then(() => this.syncOnce())
      .catch((err: Error) => this.options.log.warn(`home assistant: discovery not published (${err.message}); retried on the next connect`));
    return this.queue;
  }

  private async syncOnce(): Promise<void> {
    const { configs, publish, log } = this.options;
    const previous = (this.announced ??= await this.readState());
    const wanted = new Set(configs.map((c) => c.topic));
    const stale = [...previous].filter((topic) => !wanted.has(topic));
    if (wanted.size === 0 && stale.length === 0) return;
    // Listed before they are published: a crash in between leaves the next start knowing them.
    const union = new Set([...previous, ...wanted]);
    if (union.size > previous.size) await this.writeState(union);
    this.announced = union;
    await Promise.all([...stale.map((topic) => publish(topic, "")), ...configs.map((c) => publish(c.topic, JSON.stringify(c.payload)))]);
    await this.writeState(wanted);
    this.announced = wanted;
    if (stale.length > 0) log.info(`home assistant: removed ${stale.length} entities announced before (${stale.join(", ")})`);
    if (wanted.size > 0) log.info(`home assistant: announced ${wanted.size} entities`);
  }

  /** A missing file is a first start; a torn or hand-edited one is reported and what is usable kept. */
  private async readState(): Promise<Set<string>> {
    const { stateFile, log } = this.options;
    let text: string;
    try {
      const { size } = await stat(stateFile);
      if (size > MAX_STATE_BYTES) {
        log.warn(`home assistant: ${stateFile} is ${size} bytes, more than the agent writes (at most ${MAX_STATE_BYTES}); ignored, so entities of cameras removed before this start cannot be cleared`);
        return new Set();
      }
      text = await readFile(stateFile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return new Set();
      throw err;
    }
    let announced: unknown;
    try {
      announced = (JSON.parse(text) as { announced?: unknown } | null)?.announced;
    } catch (err) {
      const kept = await setAsideCorrupt(stateFile);
      log.warn(`home assistant: ${stateFile} is ${jsonSyntaxProblem(err)}; kept as ${kept}; entities of cameras removed before this start cannot be cleared`);
      return new Set();
    }
    if (!Array.isArray(announced)) {
      const kept = await setAsideCorrupt(stateFile);
      log.warn(`home assistant: ${stateFile} has no "announced" list of topics; kept as ${kept}; entities of cameras removed before this start cannot be cleared`);
      return new Set();
    }
    const topics = announced.filter((t): t is string => typeof t === "string" && DISCOVERY_TOPIC.test(t));
    const skipped = announced.filter((t) => !topics.includes(t as string));
    if (skipped.length > 0) log.warn(`home assistant: ${stateFile} lists ${skipped.length} entries that are not discovery config topics; left alone: ${skipped.map((t) => JSON.stringify(t)).join(", ").slice(0, 300)}`);
    return new Set(topics);
  }

  private async writeState(topics: Set<string>): Promise<void> {
    const { stateFile } = this.options;
    if (topics.size === 0) {
      await rm(stateFile, { force: true });
      return;
    }
    // Written whole and renamed into place: a crash leaves the old list or the new one.
    const tmp = `${stateFile}.tmp`;
    await writeFile(tmp, JSON.stringify({ announced: [...topics].sort() }, null, 2) + "\n");
    await rename(tmp, stateFile);
  }
}

/**
 * The discovery as a daemon feature: synced on every connect. Also when discovery is off, so
 * that what an earlier run announced is removed.
 */
export function homeAssistant(config: Config, topics: Topics, publisher: MqttPublisher, stateFile: string, log: Logger): Feature {
  const discovery = new HomeAssistantDiscovery({ configs: discoveryConfigs(config, topics), stateFile, publish: (topic, payload) => publisher.publishRetained(topic, payload), log });
  return {
    name: "home-assistant",
    start() {
      if (config.mqtt.home_assistant.enabled && !config.results.overlay) log.info("home assistant: no camera entities, since results.overlay is off");
      publisher.onConnect(() => void discovery.sync());
    },
    stop() {},
  };
}
