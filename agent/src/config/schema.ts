import { hostname } from "node:os";
import { BUNDLED_MODEL_DIR, defaultStateDir, SAMPLES_DIR } from "./paths.ts";
import { everythingObjectSchema, type EverythingSettings } from "./everything.ts";

/**
 * The one description of the agent's settings: every key, its type, its default. The config
 * file, SAM_EDGE_* variables and CLI flags are all validated against it, so a key that is not
 * here is an error wherever it comes from. Keys are snake_case, as in the file.
 */

export type RouteMode = "local" | "cloud" | "auto";
export const CAMERA_TYPES = ["folder", "mjpeg", "snapshot", "mqtt", "ffmpeg", "webcam"] as const;
export type CameraType = (typeof CAMERA_TYPES)[number];
export type MaskFormat = "rle" | "polygon";

export interface PromptPoint {
  x: number;
  y: number;
  label: 0 | 1;
}

/** One object to segment: clicks and/or a box, all in the camera's `coordinates`. */
export interface CameraPrompt {
  points?: PromptPoint[];
  box?: [number, number, number, number];
}

export type { EverythingSettings } from "./everything.ts";

export interface CameraConfig {
  id: string;
  type: CameraType;
  enabled: boolean;
  /** Most frames per second this camera gets from the engine; newer frames replace waiting ones. */
  max_fps: number;
  route?: RouteMode;
  mode: "prompts" | "everything";
  prompts: CameraPrompt[];
  coordinates: "pixels" | "normalized";
  everything: Partial<EverythingSettings>;
  multimask: boolean;
  max_frame_bytes: number;
  // Source-specific: which apply to which type is in TYPE_KEYS.
  dir?: string;
  loop?: boolean;
  interval_ms?: number;
  url?: string;
  headers?: Record<string, string>;
  username?: string;
  password?: string;
  timeout_ms?: number;
  topic?: string;
  input?: string;
  input_args?: string[];
  fps?: number;
  device?: string;
  width?: number;
  height?: number;
}

export interface Config {
  device_id: string;
  state_dir: string;
  log_level: "debug" | "info" | "warn" | "error";
  /** One JSON line per result on stdout (masks left out): for demos and debugging. */
  print_results: boolean;
  model: {
    dir: string;
    threads: number;
    graph_optimization: "disabled" | "basic" | "extended" | "all";
    /** onnxruntime execution providers in order of preference; the CPU is always the last resort. */
    execution_providers: string[];
    /** Let onnxruntime's threads busy-wait between operators (faster on an otherwise idle machine, but CPU the capture and HTTP work could use). */
    spin_wait: boolean;
    /** Model updates: POST /v1/model, the MQTT `model/update` command, the limits of a download. */
    update: { http: boolean; mqtt: boolean; max_bytes: number; timeout_ms: number; allowed_hosts: string[] };
  };
  mqtt: {
    enabled: boolean;
    url: string;
    embedded_broker: "auto" | "always" | "never";
    base_topic: string;
    client_id?: string;
    username?: string;
    password?: string;
    ca?: string;
    cert?: string;
    key?: string;
    reject_unauthorized: boolean;
    protocol_version: 4 | 5;
    keepalive_s: number;
    stats_interval_s: number;
    requests: boolean;
    response_topic_prefix?: string;
    outbox: { max_messages: number; max_bytes: number; fsync: boolean };
    home_assistant: { enabled: boolean; discovery_prefix: string };
  };
  results: { mask_formats: MaskFormat[]; polygon_tolerance: number; overlay: boolean };
  http: {
    enabled: boolean;
    host: string;
    port: number;
    token?: string;
    rate_limit_per_minute: number;
    allowed_hosts: string[];
    allowed_origins: string[];
    request_timeout_ms: number;
  };
  cloud: {
    base_url: string;
    token?: string;
    timeout_ms: number;
    retries: number;
    retry_base_ms: number;
    monthly_budget: number;
    breaker_failures: number;
    breaker_reset_ms: number;
  };
  routing: { default_route: RouteMode; latency_budget_ms: number };
  cameras: CameraConfig[];
}

/** The source keys each camera type takes; the others are refused for it, naming the key. */
export const TYPE_KEYS: Record<CameraType, { required: string[]; optional: string[] }> = {
  folder: { required: ["dir"], optional: ["loop", "interval_ms"] },
  mjpeg: { required: ["url"], optional: ["headers", "username", "password", "timeout_ms"] },
  snapshot: { required: ["url"], optional: ["headers", "username", "password", "timeout_ms", "interval_ms"] },
  mqtt: { required: ["topic"], optional: ["url", "username", "password"] },
  ffmpeg: { required: ["input"], optional: ["input_args", "fps"] },
  webcam: { required: [], optional: ["device", "width", "height", "interval_ms"] },
};

const ID = { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" };
const HTTP_URL = { type: "string", format: "uri", pattern: "^https?://" };
const MQTT_URL = { type: "string", format: "uri", pattern: "^(mqtts?|wss?|tcp|ssl)://" };
const ROUTE = { enum: ["local", "cloud", "auto"] };

const point = {
  type: "object",
  additionalProperties: false,
  required: ["x", "y"],
  properties: { x: { type: "number", minimum: 0 }, y: { type: "number", minimum: 0 }, label: { enum: [0, 1], default: 1 } },
};

// No defaults: what a camera leaves out comes from its model's manifest, then EVERYTHING_DEFAULTS.
const everything = { ...everythingObjectSchema(), default: {} };

/** Defaults of source keys: given in each type's branch, since a key may not appear on other types. */
const SOURCE_DEFAULTS: Record<string, unknown> = { loop: true, interval_ms: 1000, timeout_ms: 10_000, device: "/dev/video0", width: 1280, height: 720 };

const sourceKeySchemas: Record<string, object> = {
  dir: { type: "string", minLength: 1 },
  loop: { type: "boolean" },
  interval_ms: { type: "integer", minimum: 0 },
  url: { type: "string", format: "uri" },
  headers: { type: "object", additionalProperties: { type: "string" } },
  username: { type: "string" },
  password: { type: "string" },
  timeout_ms: { type: "integer", minimum: 100 },
  topic: { type: "string", minLength: 1 },
  input: { type: "string", minLength: 1 },
  input_args: { type: "array", items: { type: "string" } },
  fps: { type: "number", exclusiveMinimum: 0 },
  // node-webcam hands the device to a shell: only characters a device path needs.
  device: { type: "string", pattern: "^[A-Za-z0-9_./:-]+$" },
  width: { type: "integer", minimum: 1 },
  height: { type: "integer", minimum: 1 },
};

function cameraSchema(): object {
  return {
    type: "object",
    additionalProperties: false,
    required: ["id", "type"],
    properties: {
      id: ID,
      type: { enum: [...CAMERA_TYPES] },
      enabled: { type: "boolean", default: true },
      max_fps: { type: "number", exclusiveMinimum: 0, default: 2 },
      route: ROUTE,
      mode: { enum: ["prompts", "everything"], default: "prompts" },
      prompts: {
        type: "array",
        minItems: 1,
        default: [{ points: [{ x: 0.5, y: 0.5, label: 1 }] }],
        items: {
          type: "object",
          additionalProperties: false,
          minProperties: 1,
          properties: {
            points: { type: "array", minItems: 1, maxItems: 64, items: point },
            box: { type: "array", minItems: 4, maxItems: 4, items: { type: "number", minimum: 0 } },
          },
        },
      },
      coordinates: { enum: ["pixels", "normalized"], default: "normalized" },
      everything,
      multimask: { type: "boolean", default: false },
      max_frame_bytes: { type: "integer", minimum: 1024, default: 8 * 1024 * 1024 },
      ...sourceKeySchemas,
    },
    // Per type: its required keys, a URL scheme that fits it, and `false` for keys of other types.
    allOf: CAMERA_TYPES.map((type) => {
      const own = [...TYPE_KEYS[type].required, ...TYPE_KEYS[type].optional];
      const foreign = Object.keys(sourceKeySchemas).filter((k) => !own.includes(k));
      const url = type === "mqtt" ? MQTT_URL : HTTP_URL;
      return {
        if: { properties: { type: { const: type } }, required: ["type"] },
        then: {
          required: TYPE_KEYS[type].required,
          properties: {
            ...Object.fromEntries(own.filter((k) => k in SOURCE_DEFAULTS).map((k) => [k, { default: SOURCE_DEFAULTS[k] }])),
            ...(own.includes("url") ? { url } : {}),
            ...Object.fromEntries(foreign.map((k) => [k, false])),
          },
        },
      };
    }),
  };
}

/** Topic levels may not hold wildcards or separators; a hostname may. */
function topicSafe(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64) || "sam-edge";
}

/** Built at start: some defaults (device id, state dir, bundled paths) depend on the machine. */
export function configSchema(env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const obj = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    type: "object",
    additionalProperties: false,
    default: {},
    properties,
    ...extra,
  });
  return obj({
    device_id: { ...ID, default: topicSafe(hostname()) },
    state_dir: { type: "string", minLength: 1, default: defaultStateDir(env) },
    log_level: { enum: ["debug", "info", "warn", "error"], default: "info" },
    print_results: { type: "boolean", default: false },
    model: obj({
      dir: { type: "string", minLength: 1, default: BUNDLED_MODEL_DIR },
      threads: { type: "integer", minimum: 0, default: 0 },
      graph_optimization: { enum: ["disabled", "basic", "extended", "all"], default: "all" },
      execution_providers: { type: "array", items: { enum: ["cpu", "cuda"] }, minItems: 1, uniqueItems: true, default: ["cpu"] },
      spin_wait: { type: "boolean", default: false },
      update: obj({
        http: { type: "boolean", default: true },
        // Off by default: anyone who can publish on the broker could replace the model.
        mqtt: { type: "boolean", default: false },
        // Per file: room for SAM ViT-L (1.2 GB); a Pi's MobileSAM / EdgeSAM is a few tens of MB.
        max_bytes: { type: "integer", minimum: 1024, default: 2 * 1024 * 1024 * 1024 },
        timeout_ms: { type: "integer", minimum: 1000, default: 600_000 },
        // Updates fetch https only, never from this box's networks, except from these hosts (http too).
        allowed_hosts: { type: "array", items: { type: "string", minLength: 1 }, default: [] },
      }),
    }),
    mqtt: obj({
      enabled: { type: "boolean", default: true },
      url: { ...MQTT_URL, default: "mqtt://127.0.0.1:1883" },
      embedded_broker: { enum: ["auto", "always", "never"], default: "auto" },
      base_topic: { type: "string", pattern: "^[^#+]+$", default: "sam-edge" },
      client_id: { type: "string", minLength: 1 },
      username: { type: "string" },
      password: { type: "string" },
      ca: { type: "string", minLength: 1 },
      cert: { type: "string", minLength: 1 },
      key: { type: "string", minLength: 1 },
      reject_unauthorized: { type: "boolean", default: true },
      protocol_version: { enum: [4, 5], default: 5 },
      keepalive_s: { type: "integer", minimum: 5, default: 30 },
      stats_interval_s: { type: "number", exclusiveMinimum: 0, default: 30 },
      requests: { type: "boolean", default: true },
      // Unset: <base_topic>/<device_id>/response/ (computed at start, as it depends on both).
      response_topic_prefix: { type: "string", minLength: 1, pattern: "^[^#+]+$" },
      outbox: obj({
        max_messages: { type: "integer", minimum: 1, default: 10_000 },
        max_bytes: { type: "integer", minimum: 1024, default: 64 * 1024 * 1024 },
        fsync: { type: "boolean", default: false },
      }),
      home_assistant: obj({
        enabled: { type: "boolean", default: false },
        // Topic levels without wildcards, no empty level: HA's own check on its discovery prefix.
        discovery_prefix: { type: "string", maxLength: 256, pattern: "^[^#+/]+(/[^#+/]+)*$", default: "homeassistant" },
      }),
    }),
    results: obj({
      mask_formats: { type: "array", minItems: 1, uniqueItems: true, items: { enum: ["rle", "polygon"] }, default: ["rle"] },
      polygon_tolerance: { type: "number", minimum: 0, default: 1 },
      overlay: { type: "boolean", default: false },
    }),
    http: obj({
      enabled: { type: "boolean", default: true },
      host: { type: "string", minLength: 1, default: "127.0.0.1" },
      port: { type: "integer", minimum: 0, maximum: 65535, default: 8080 },
      token: { type: "string", minLength: 1 },
      rate_limit_per_minute: { type: "integer", minimum: 0, default: 0 },
      // Besides loopback names and, listening on all interfaces, the machine's own names and addresses.
      allowed_hosts: { type: "array", items: { type: "string", minLength: 1 }, default: [] },
      allowed_origins: { type: "array", items: { type: "string", format: "uri", pattern: "^https?://[^/]+/?$" }, default: [] },
      request_timeout_ms: { type: "integer", minimum: 1000, default: 60_000 },
    }),
    cloud: obj({
      base_url: { ...HTTP_URL, default: "https://api.msightflow.ai" },
      token: { type: "string", minLength: 1 },
      timeout_ms: { type: "integer", minimum: 100, default: 10_000 },
      retries: { type: "integer", minimum: 0, maximum: 10, default: 2 },
      retry_base_ms: { type: "integer", minimum: 0, default: 250 },
      monthly_budget: { type: "integer", minimum: 0, default: 300 },
      breaker_failures: { type: "integer", minimum: 1, default: 3 },
      breaker_reset_ms: { type: "integer", minimum: 0, default: 30_000 },
    }),
    routing: obj({ default_route: { ...ROUTE, default: "local" }, latency_budget_ms: { type: "number", exclusiveMinimum: 0, default: 2000 } }),
    cameras: {
      type: "array",
      items: cameraSchema(),
      default: [{ id: "demo", type: "folder", dir: SAMPLES_DIR, interval_ms: 1000 }],
    },
  });
}
