import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectAsync, type MqttClient } from "mqtt";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../agent/src/config/load.ts";
import { SAMPLES_DIR } from "../agent/src/config/paths.ts";
import { HOME_ASSISTANT_STATE_FILE, HomeAssistantDiscovery } from "../agent/src/daemon/features/home-assistant.ts";
import { createLogger } from "../agent/src/core/log.ts";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { discoveryProblems, renderValueTemplates } from "./helpers/home-assistant.ts";
import { Mosquitto } from "./helpers/mosquitto.ts";
import { rejection } from "./helpers/config.ts";

const base = "site1";
const device = "box1";
const prefix = "homeassistant";
const node = `sam-edge_${device}`;
const statusTopic = `${base}/${device}/status`;
const discoveryTopics = (camera: string) => [`sensor/${node}/${camera}_objects`, `sensor/${node}/${camera}_latency`, `camera/${node}/${camera}_overlay`].map((t) => `${prefix}/${t}/config`);

/** Connects, collects the retained messages under `filter`, and leaves. */
async function retained(url: string, filter: string, count: number): Promise<Map<string, Buffer>> {
  const late = await Subscriber.connect(url, [filter]);
  try {
    if (count > 0) await late.waitFor(() => late.messages.length >= count, `${count} retained messages on ${filter}`, 10_000);
    // A marker published after subscribing arrives after every retained message the broker had.
    await late.client.subscribeAsync("test/marker", { qos: 1 });
    await late.client.publishAsync("test/marker", "m", { qos: 1 });
    await late.waitFor(() => late.messages.some((m) => m.topic === "test/marker"), "the marker", 10_000);
    // The broker sends a topic's retained message first; a live publish can follow it before the
    // marker (a camera's overlay is published again with every frame), so only the first counts.
    const first = new Map<string, { retain: boolean; payload: Buffer }>();
    for (const m of late.messages) if (m.topic !== "test/marker" && !first.has(m.topic)) first.set(m.topic, m);
    expect([...first.values()].every((m) => m.retain)).toBe(true);
    return new Map([...first].map(([topic, m]) => [topic, m.payload]));
  } finally {
    await late.close();
  }
}

// The daemon as a child process on the bundled model and the sample frames, against a real
// Mosquitto, with a subscriber that sees everything the agent publishes.
describe("Home Assistant MQTT discovery", () => {
  let broker: Mosquitto;
  let sub: Subscriber;
  let tmp: string;
  let agent: AgentProcess | undefined;
  const stateFile = () => join(tmp, "state", HOME_ASSISTANT_STATE_FILE);

  const config = (cameras: object[], homeAssistant?: object) => ({
    device_id: device,
    state_dir: join(tmp, "state"),
    mqtt: { url: broker.url, base_topic: base, stats_interval_s: 600, ...(homeAssistant ? { home_assistant: homeAssistant } : {}) },
    results: { overlay: true },
    http: { enabled: false },
    cameras,
  });
  const folder = (id: string, extra: object = {}) => ({ id, type: "folder", dir: SAMPLES_DIR, interval_ms: 200, ...extra });
  const resultsOf = (camera: string) => sub.on(new RegExp(`^${base}/${device}/cameras/${camera}/result$`));
  /** One agent at a time: two with the same client id would take the connection from each other. */
  const start = async (name: string, settings: object) => {
    await agent?.stop("SIGKILL");
    agent = await AgentProcess.start(tmp, name, settings);
    return agent;
  };
  const stop = async () => {
    expect(await agent!.stop("SIGTERM")).toEqual({ code: 0, signal: null });
    agent = undefined;
  };

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-ha-"));
    broker = await Mosquitto.start();
    sub = await Subscriber.connect(broker.url, ["#"]);
  });

  afterAll(async () => {
    await agent?.stop("SIGKILL");
    await sub?.close();
    await broker?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it("is off by default: nothing outside the agent's own topics, no state file", async () => {
    await start("default", config([folder("door")]));
    await sub.waitFor(() => resultsOf("door").length >= 2, "door results");
    await stop();
    // Discovery would go out on connect, before any result: none came.
    expect(sub.messages.filter((m) => !m.topic.startsWith(`${base}/`)).map((m) => m.topic)).toEqual([]);
    await expect(stat(stateFile())).rejects.toMatchObject({ code: "ENOENT" });
    sub.messages.length = 0;
  });

  describe("enabled", () => {
    let configs: Map<string, Buffer>;
    const payload = (topic: string) => JSON.parse(configs.get(topic)!.toString()) as Record<string, any>;

    beforeAll(async () => {
      await start("ha", config([folder("door"), folder("yard"), folder("attic", { enabled: false })], { enabled: true }));
      await sub.waitFor(() => ["door", "yard"].every((c) => resultsOf(c).length >= 2 && sub.on(new RegExp(`/cameras/${c}/overlay$`)).length > 0), "results and overlays of door and yard");
      configs = await retained(broker.url, `${prefix}/#`, 6);
    });

    it("announces each running camera as a device with two sensors and a camera, retained, passing HA's rules", () => {
      expect([...configs.keys()].sort()).toEqual([...discoveryTopics("door"), ...discoveryTopics("yard")].sort());
      const ids = new Set<string>();
      for (const [topic, body] of configs) expect(discoveryProblems(prefix, topic, body, ids)).toEqual([]);
      expect(ids.size).toBe(6);
      // One device per camera, all of the camera's entities on it.
      for (const camera of ["door", "yard"]) {
        const devices = discoveryTopics(camera).map((t) => payload(t).device);
        expect(devices[0]).toMatchObject({ identifiers: [`${node}_${camera}`], name: `${device} ${camera}`, manufacturer: "sam-edge", model: "folder camera" });
        expect(devices[1]).toEqual(devices[0]);
        expect(devices[2]).toEqual(devices[0]);
      }
      expect(payload(discoveryTopics("door")[0]!).device.identifiers).not.toEqual(payload(discoveryTopics("yard")[0]!).device.identifiers);
      expect(agent!.stderr).toMatch(/home assistant: announced 6 entities/);
    });

    it("a disabled camera is not announced", () => {
      expect([...configs.keys()].filter((t) => t.includes("attic"))).toEqual([]);
    });

    it("availability follows the agent's status topic: online now is payload_available", () => {
      const status = sub.on(new RegExp(`^${statusTopic}$`)).at(-1)!.payload.toString();
      for (const topic of configs.keys()) {
        const [availability] = payload(topic).availability;
        expect(availability.topic).toBe(statusTopic);
        expect(availability.payload_available).toBe(status);
      }
    });

    it("the sensors read the camera's results: the object count and the latency HA's templates render from them", async () => {
      for (const camera of ["door", "yard"]) {
        const [objects, latency] = discoveryTopics(camera).map(payload);
        expect(objects!.state_topic).toBe(`${base}/${device}/cameras/${camera}/result`);
        expect(latency!.state_topic).toBe(objects!.state_topic);
        expect(latency).toMatchObject({ unit_of_measurement: "ms", device_class: "duration", state_class: "measurement" });
        expect(objects!.state_class).toBe("measurement");
        const results = resultsOf(camera);
        const rendered = await renderValueTemplates(results.flatMap((r) => [{ template: objects!.value_template, payload: r.payload }, { template: latency!.value_template, payload: r.payload }]));
        results.forEach((r, i) => {
          const body = JSON.parse(r.payload.toString()) as { masks: { area: number }[]; latency_ms: { total: number } };
          expect(Number(rendered[2 * i])).toBe(body.masks.filter((m) => m.area > 0).length);
          expect(Number(rendered[2 * i + 1])).toBe(body.latency_ms.total);
        });
        // The sample frames have something at the centre click: the count is not trivially 0.
        expect(rendered.filter((_, i) => i % 2 === 0).some((v) => Number(v) > 0)).toBe(true);
      }
    });

    it("the camera entity shows the retained overlay JPEG (raw bytes, no image_encoding)", async () => {
      const camera = payload(discoveryTopics("door")[2]!);
      expect(camera.topic).toBe(`${base}/${device}/cameras/door/overlay`);
      expect(camera).not.toHaveProperty("state_topic");
      expect(camera).not.toHaveProperty("image_encoding");
      const image = await retained(broker.url, camera.topic, 1);
      expect((await sharp(image.get(camera.topic)!).metadata()).format).toBe("jpeg");
    });

    it("the state file lists what was announced", async () => {
      expect(JSON.parse(await readFile(stateFile(), "utf8"))).toEqual({ announced: [...configs.keys()].sort() });
    });

    it("on stop the entities go unavailable: the status says payload_not_available", async () => {
      await stop();
      const status = (await retained(broker.url, statusTopic, 1)).get(statusTopic)!.toString();
      expect(status).toBe(payload(discoveryTopics("door")[0]!).availability[0].payload_not_available);
    });

    it("restarted with a camera deleted from the config: its entities are removed (empty retained configs), the others stay", async () => {
      sub.messages.length = 0;
      const restarted = await start("ha-without-yard", config([folder("door")], { enabled: true }));
      await sub.waitFor(() => discoveryTopics("yard").every((t) => sub.on(new RegExp(`^${t}$`)).some((m) => m.payload.length === 0)), "empty configs for yard");
      await sub.waitFor(() => discoveryTopics("door").every((t) => sub.on(new RegExp(`^${t}$`)).length > 0), "door announced again");
      expect([...(await retained(broker.url, `${prefix}/#`, 3)).keys()].sort()).toEqual(discoveryTopics("door").sort());
      // Logged once the broker has acknowledged every message and the state file is rewritten.
      await restarted.waitFor(() => /home assistant: removed 3 entities announced before/.test(restarted.stderr), "the removal logged");
      expect(JSON.parse(await readFile(stateFile(), "utf8"))).toEqual({ announced: discoveryTopics("door").sort() });
      await stop();
    });

    it("restarted with discovery turned off: what was announced is removed, and the state file with it", async () => {
      sub.messages.length = 0;
      const off = await start("ha-off", config([folder("door")], { enabled: false }));
      await sub.waitFor(() => discoveryTopics("door").every((t) => sub.on(new RegExp(`^${t}$`)).some((m) => m.payload.length === 0)), "empty configs for door");
      expect((await retained(broker.url, `${prefix}/#`, 0)).size).toBe(0);
      await off.waitFor(() => /removed 3 entities/.test(off.stderr), "the removal logged");
      await expect(stat(stateFile())).rejects.toMatchObject({ code: "ENOENT" });
      await stop();
    });
  });

  describe("the state file", () => {
    let client: MqttClient;
    const warnings: string[] = [];
    const log = createLogger("info", (line) => warnings.push(line));
    const file = () => join(tmp, "announced.json");
    const run = (configs: { topic: string; payload: Record<string, unknown> }[]) =>
      new HomeAssistantDiscovery({ configs, stateFile: file(), publish: (topic, p) => client.publishAsync(topic, p, { qos: 1, retain: true }).then(() => undefined), log }).sync();

    beforeAll(async () => {
      client = await connectAsync(broker.url);
    });
    afterAll(async () => client?.endAsync());

    it("torn (not JSON): reported, and the configs are announced anyway", async () => {
      warnings.length = 0;
      await writeFile(file(), '{"announced": ["homeassistant/sensor/x');
      const topic = `${prefix}/sensor/sam-edge_torn/cam_objects/config`;
      await run([{ topic, payload: { unique_id: "torn" } }]);
      expect(warnings.join("\n")).toMatch(/announced\.json is not valid JSON .*cannot be cleared/);
      const kept = (await readdir(tmp)).filter((f) => f.startsWith("announced.json.corrupt-"));
      expect(kept).toHaveLength(1);
      expect(await readFile(join(tmp, kept[0]!), "utf8")).toBe('{"announced": ["homeassistant/sensor/x');
      expect(JSON.parse((await retained(broker.url, topic, 1)).get(topic)!.toString())).toEqual({ unique_id: "torn" });
      expect(JSON.parse(await readFile(file(), "utf8"))).toEqual({ announced: [topic] });
    });

    it("hostile entries (the status topic, wildcards, not strings, not a list) are never published to", async () => {
      warnings.length = 0;
      await client.publishAsync(statusTopic, "offline", { qos: 1, retain: true });
      const own = `${prefix}/sensor/sam-edge_torn/cam_objects/config`;
      await writeFile(file(), JSON.stringify({ announced: [statusTopic, "#", `${prefix}/+/x/y/config`, 42, { topic: "a" }, own] }));
      await run([]);
      expect(warnings.join("\n")).toMatch(/lists 5 entries that are not discovery config topics; left alone: "site1\/box1\/status", "#"/);
      expect((await retained(broker.url, statusTopic, 1)).get(statusTopic)!.toString()).toBe("offline");
      // The one real discovery topic in the list was cleared.
      expect((await retained(broker.url, `${prefix}/#`, 0)).size).toBe(0);
      await expect(stat(file())).rejects.toMatchObject({ code: "ENOENT" });

      warnings.length = 0;
      await writeFile(file(), JSON.stringify(["not", "an", "object"]));
      await run([]);
      expect(warnings.join("\n")).toMatch(/has no "announced" list/);
    });

    it("oversized: reported and not read, so nothing it lists is cleared", async () => {
      warnings.length = 0;
      const listed = `${prefix}/sensor/n/o0/config`;
      await client.publishAsync(listed, "{}", { qos: 1, retain: true });
      await writeFile(file(), JSON.stringify({ announced: Array.from({ length: 40_000 }, (_, i) => `${prefix}/sensor/n/o${i}/config`) }));
      await run([]);
      expect(warnings.join("\n")).toMatch(/announced\.json is \d+ bytes, more than the agent writes .* ignored/);
      expect([...(await retained(broker.url, `${prefix}/#`, 1)).keys()]).toEqual([listed]);
      await client.publishAsync(listed, "", { qos: 1, retain: true });
    });
  });
});

describe("Home Assistant discovery settings", () => {

  it("defaults: off, prefix homeassistant; SAM_EDGE_ variables and --set reach them", async () => {
    expect((await loadConfig({ env: {} })).mqtt.home_assistant).toEqual({ enabled: false, discovery_prefix: "homeassistant" });
    const c = await loadConfig({ env: { SAM_EDGE_MQTT_HOME_ASSISTANT_ENABLED: "true" }, sets: ["mqtt.home_assistant.discovery_prefix=ha/site1"] });
    expect(c.mqtt.home_assistant).toEqual({ enabled: true, discovery_prefix: "ha/site1" });
  });

  it("bad values are refused, naming the key and where it came from", async () => {
    for (const prefix of ["home/#", "home/+/x", "homeassistant/", "/homeassistant", "a//b", "", "p".repeat(300)]) {
      expect(await rejection({ sets: [`mqtt.home_assistant.discovery_prefix=${prefix}`] })).toMatch(/mqtt\.home_assistant\.discovery_prefix must .* \[from --set mqtt\.home_assistant\.discovery_prefix\]/);
    }
    expect(await rejection({ env: { SAM_EDGE_MQTT_HOME_ASSISTANT_ENABLED: "yes" } })).toMatch(/SAM_EDGE_MQTT_HOME_ASSISTANT_ENABLED: "yes" is not valid JSON; this setting takes boolean/);
    const both = await rejection({ sets: ['mqtt.home_assistant={"enabled":1,"prefix":"ha"}'] });
    expect(both).toMatch(/mqtt\.home_assistant\.prefix is not a setting/);
    expect(both).toMatch(/mqtt\.home_assistant\.enabled must be boolean/);
    expect(await rejection({ sets: ["mqtt.home_assistant.enabled=true", "mqtt.enabled=false"] })).toMatch(/mqtt\.home_assistant\.enabled: Home Assistant discovery goes over MQTT; set mqtt\.enabled to true/);
  });

  it("the validator the tests rely on catches what HA refuses", () => {
    const check = (topic: string, config: object) => discoveryProblems(prefix, topic, Buffer.from(JSON.stringify(config))).join("\n");
    const ok = { unique_id: "u1", state_topic: "s/t", device: { identifiers: ["d1"] }, availability: [{ topic: "s/status" }] };
    expect(check(`${prefix}/sensor/n/o/config`, ok)).toBe("");
    expect(check(`${prefix}/sensor/n.1/o/config`, ok)).toMatch(/not <prefix>/);
    expect(check(`${prefix}/sensor/n/o/config`, { ...ok, unique_id: undefined })).toMatch(/unique_id must be a non-empty string/);
    expect(check(`${prefix}/sensor/n/o/config`, { ...ok, device: { name: "x" } })).toMatch(/at least one identifying value/);
    expect(check(`${prefix}/sensor/n/o/config`, { ...ok, stat_t: "s/t", state_topic: undefined })).toMatch(/unknown key "stat_t"[\s\S]*"state_topic" is required/);
    expect(check(`${prefix}/sensor/n/o/config`, { ...ok, availability_topic: "s/status" })).toMatch(/exclusive/);
    expect(check(`${prefix}/sensor/n/o/config`, { ...ok, state_topic: "s/#/t" })).toMatch(/state_topic has "#"/);
    expect(check(`${prefix}/sensor/n/o/config`, { ...ok, device_class: "duration", unit_of_measurement: "msec" })).toMatch(/duration sensor's unit/);
    expect(check(`${prefix}/camera/n/o/config`, { ...ok })).toMatch(/unknown key "state_topic" for camera[\s\S]*"topic" is required/);
    const ids = new Set<string>();
    expect(discoveryProblems(prefix, `${prefix}/sensor/n/a/config`, Buffer.from(JSON.stringify(ok)), ids)).toEqual([]);
    expect(discoveryProblems(prefix, `${prefix}/sensor/n/b/config`, Buffer.from(JSON.stringify(ok)), ids).join()).toMatch(/used by another entity/);
  });
});
