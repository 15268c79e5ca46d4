import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../agent/src/config/load.ts";
import { BUNDLED_MODEL_DIR, SAMPLES_DIR } from "../agent/src/config/paths.ts";
import { rejection } from "./helpers/config.ts";

describe("configuration", () => {
  let dir: string;
  const file = (name: string) => join(dir, name);
  const withFile = async (name: string, value: unknown): Promise<string> => {
    await writeFile(file(name), typeof value === "string" ? value : JSON.stringify(value));
    return file(name);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sam-edge-config-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("no config at all is the demo: bundled model, sample frames, MQTT on 127.0.0.1:1883, HTTP on 127.0.0.1:8080", async () => {
    const c = await loadConfig({ env: { XDG_STATE_HOME: dir } });
    expect(c.model.dir).toBe(BUNDLED_MODEL_DIR);
    // The agent runs the int8 build by default, as the edge boxes want.
    expect(BUNDLED_MODEL_DIR).toMatch(/models\/quantized\/tiny-sam-int8\/$/);
    expect(c.cameras).toHaveLength(1);
    expect(c.cameras[0]).toMatchObject({ id: "demo", type: "folder", dir: SAMPLES_DIR, loop: true, coordinates: "normalized", mode: "prompts", enabled: true });
    expect(c.mqtt).toMatchObject({ enabled: true, url: "mqtt://127.0.0.1:1883", embedded_broker: "auto", base_topic: "sam-edge", protocol_version: 5 });
    expect(c.mqtt.outbox.max_messages).toBeGreaterThan(0);
    expect(c.http).toMatchObject({ enabled: true, host: "127.0.0.1", port: 8080 });
    expect(c.cloud).toMatchObject({ monthly_budget: 300, base_url: "https://api.msightflow.ai" });
    expect(c.state_dir).toBe(join(dir, "sam-edge"));
    expect(c.device_id).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it("fills each camera type's own defaults and no other type's keys", async () => {
    const path = await withFile("types.json", {
      cameras: [
        { id: "door", type: "mjpeg", url: "http://10.0.0.20:81/stream", headers: { Authorization: "Basic YTpi" } },
        { id: "yard", type: "snapshot", url: "http://10.0.0.21/capture" },
        { id: "usb", type: "webcam" },
        { id: "relay", type: "mqtt", topic: "$share/sam/esp32/+/jpeg" },
      ],
    });
    const c = await loadConfig({ file: path, env: {} });
    expect(c.cameras[0]).toMatchObject({ timeout_ms: 10_000, headers: { Authorization: "Basic YTpi" } });
    expect(c.cameras[0]).not.toHaveProperty("interval_ms");
    expect(c.cameras[1]).toMatchObject({ interval_ms: 1000, timeout_ms: 10_000 });
    expect(c.cameras[2]).toMatchObject({ device: "/dev/video0", width: 1280, height: 720, interval_ms: 1000 });
    expect(c.cameras[3]).not.toHaveProperty("loop");
  });

  it("environment overrides the file, flags override both; values are typed by the schema", async () => {
    const path = await withFile("layers.json", { mqtt: { base_topic: "from-file", keepalive_s: 10 }, device_id: "from-file" });
    const c = await loadConfig({
      file: path,
      env: { SAM_EDGE_MQTT_BASE_TOPIC: "from-env", SAM_EDGE_MQTT_KEEPALIVE_S: "20", SAM_EDGE_DEVICE_ID: "123", MSF_API_KEY: "k-env" },
      sets: ["mqtt.keepalive_s=40", "routing.default_route=auto"],
    });
    expect(c.mqtt.base_topic).toBe("from-env");
    expect(c.mqtt.keepalive_s).toBe(40);
    // A string key keeps digits as text rather than turning them into a number.
    expect(c.device_id).toBe("123");
    expect(c.routing.default_route).toBe("auto");
    expect(c.cloud.token).toBe("k-env");
  });

  it("SAM_EDGE_CONFIG names the file; array items are set by index", async () => {
    const path = await withFile("env-file.json", { cameras: [{ id: "a", type: "folder", dir: "/tmp" }] });
    const c = await loadConfig({ env: { SAM_EDGE_CONFIG: path, SAM_EDGE_CAMERAS_0_MAX_FPS: "0.5" }, sets: ["cameras[0].mode=everything"] });
    // Everything settings left out stay out: the model's manifest, then the defaults, fill them.
    expect(c.cameras[0]).toMatchObject({ id: "a", max_fps: 0.5, mode: "everything", everything: {} });
  });

  it("an unknown key fails, naming it", async () => {
    const path = await withFile("unknown.json", { mqtt: { url: "mqtt://127.0.0.1:1883", retain_results: true } });
    expect(await rejection({ file: path })).toMatch(/mqtt\.retain_results is not a setting \(unknown key\)/);
    const cam = await withFile("unknown-cam.json", { cameras: [{ id: "a", type: "folder", dir: "/tmp", fps_limit: 3 }] });
    expect(await rejection({ file: cam })).toMatch(/cameras\[0\]\.fps_limit is not a setting/);
  });

  it("a wrong type fails, naming the key and the value", async () => {
    const path = await withFile("type.json", { http: { port: "eighty" }, cameras: [{ id: "a", type: "folder", dir: "/tmp", max_fps: -1 }] });
    const message = await rejection({ file: path });
    expect(message).toContain(path);
    expect(message).toMatch(/http\.port must be integer \(got "eighty"\)/);
    expect(message).toMatch(/cameras\[0\]\.max_fps must be > 0 \(got -1\)/);
  });

  it("onnxruntime's session options come from the config, checked against the providers the agent knows", async () => {
    const c = await loadConfig({ env: { SAM_EDGE_MODEL_SPIN_WAIT: "true" }, sets: ['model.execution_providers=["cuda","cpu"]', "model.graph_optimization=basic"] });
    expect(c.model).toMatchObject({ spin_wait: true, execution_providers: ["cuda", "cpu"], graph_optimization: "basic", threads: 0 });
    expect(await rejection({ sets: ['model.execution_providers=["tpu"]'] })).toMatch(/model\.execution_providers\/0 must be equal to one of the allowed values|model\.execution_providers\[0\]/);
    expect(await rejection({ sets: ["model.graph_optimization=max"] })).toMatch(/model\.graph_optimization/);
  });

  it("a bad URL fails, naming the key, wherever the value came from", async () => {
    const path = await withFile("url.json", { cameras: [{ id: "door", type: "mjpeg", url: "rtsp://10.0.0.20/stream" }] });
    expect(await rejection({ file: path })).toMatch(/cameras\[0\]\.url must match pattern "\^https\?:\/\/" \(got "rtsp:\/\/10\.0\.0\.20\/stream"\)/);
    expect(await rejection({ env: { SAM_EDGE_MQTT_URL: "not a url" } })).toMatch(/mqtt\.url must match format "uri".*\[from SAM_EDGE_MQTT_URL\]/);
    expect(await rejection({ sets: ["cloud.base_url=ftp://x"] })).toMatch(/cloud\.base_url must match pattern.*\[from --set cloud\.base_url\]/);
  });

  it("keys of another camera type, and missing required ones, are named with the type", async () => {
    const path = await withFile("foreign.json", { cameras: [{ id: "door", type: "mjpeg", url: "http://h/stream", dir: "/tmp" }, { id: "usb", type: "ffmpeg" }] });
    const message = await rejection({ file: path });
    expect(message).toMatch(/cameras\[0\]\.dir does not apply to cameras of type "mjpeg"/);
    expect(message).toMatch(/cameras\[1\]\.input is required for cameras of type "ffmpeg"/);
  });

  it("deploy/config.example.json (a Pi with a USB webcam and two ESP32-CAMs) is valid as shipped", async () => {
    const example = fileURLToPath(new URL("../deploy/config.example.json", import.meta.url));
    const c = await loadConfig({ file: example, env: {} });
    expect(c.cameras.map((cam) => `${cam.id}:${cam.type}`)).toEqual(["workbench:webcam", "driveway:mjpeg", "mailbox:snapshot"]);
    expect(c.cameras[1]).toMatchObject({ route: "auto", timeout_ms: 10_000 });
    expect(c.mqtt).toMatchObject({ username: "sam-edge", embedded_broker: "never", protocol_version: 5 });
  });

  it("unknown SAM_EDGE_ variables, bad JSON, duplicate ids and pixel prompts marked normalized fail", async () => {
    expect(await rejection({ env: { SAM_EDGE_MQTT_SERVER: "x" } })).toMatch(/SAM_EDGE_MQTT_SERVER is not a setting/);
    expect(await rejection({ file: await withFile("broken.json", "{ mqtt: ") })).toMatch(/broken\.json is not valid JSON/);
    expect(await rejection({ file: join(dir, "missing.json") })).toMatch(/cannot read the config file .*missing\.json/);
    expect(await rejection({ sets: ["mqtt.keepalive_s=soon"] })).toMatch(/--set mqtt\.keepalive_s: "soon" is not valid JSON/);
    const dup = await withFile("dup.json", { cameras: [{ id: "a", type: "folder", dir: "/tmp" }, { id: "a", type: "webcam" }] });
    expect(await rejection({ file: dup })).toMatch(/cameras\[1\]\.id "a" is used by another camera/);
    const px = await withFile("px.json", { cameras: [{ id: "a", type: "folder", dir: "/tmp", prompts: [{ points: [{ x: 320, y: 240 }] }] }] });
    expect(await rejection({ file: px })).toMatch(/cameras\[0\]\.prompts\[0\] has coordinates above 1.*"pixels"/);
  });
});
