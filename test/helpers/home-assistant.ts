import { execFile } from "node:child_process";

/**
 * What Home Assistant's MQTT integration requires of a discovery message, written out as
 * checks (homeassistant/components/mqtt: discovery.py's topic matcher, schemas.py's device,
 * origin and availability schemas, the sensor and camera platform schemas, the entity registry's
 * need for unique_id). Returns the broken rules; empty means HA would set the entity up.
 */

const COMMON_KEYS = [
  "availability",
  "availability_mode",
  "availability_template",
  "availability_topic",
  "payload_available",
  "payload_not_available",
  "default_entity_id",
  "device",
  "enabled_by_default",
  "encoding",
  "entity_category",
  "entity_picture",
  "icon",
  "json_attributes_template",
  "json_attributes_topic",
  "name",
  "object_id",
  "origin",
  "qos",
  "unique_id",
];

/** Every key each component takes, by its full name: an abbreviation or a typo is reported. */
const COMPONENT_KEYS: Record<string, string[]> = {
  sensor: [
    ...COMMON_KEYS,
    "state_topic",
    "value_template",
    "unit_of_measurement",
    "device_class",
    "state_class",
    "expire_after",
    "force_update",
    "last_reset_value_template",
    "suggested_display_precision",
    "options",
  ],
  camera: [...COMMON_KEYS, "topic", "image_encoding"],
};
const REQUIRED: Record<string, string[]> = { sensor: ["state_topic"], camera: ["topic"] };
const DEVICE_KEYS = ["identifiers", "connections", "manufacturer", "model", "model_id", "name", "hw_version", "serial_number", "sw_version", "via_device", "suggested_area", "configuration_url"];
const STATE_CLASSES = ["measurement", "measurement_angle", "total", "total_increasing"];
/** The units HA accepts for sensors of device_class duration. */
const DURATION_UNITS = ["d", "h", "min", "s", "ms", "µs"];

/** HA's valid_subscribe_topic: whole-level wildcards, `#` last, no NUL, at most 65535 bytes. */
function subscribeTopicError(topic: unknown): string | undefined {
  if (typeof topic !== "string" || topic.length === 0) return "must be a non-empty string";
  if (Buffer.byteLength(topic) > 65535) return "is longer than MQTT allows";
  if (topic.includes("\0")) return "contains NUL";
  const levels = topic.split("/");
  for (const [i, level] of levels.entries()) {
    if (level.includes("+") && level !== "+") return `has "+" inside level "${level}"`;
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) return `has "#" other than as the last level`;
  }
  return undefined;
}

export function discoveryProblems(prefix: string, topic: string, payload: Buffer, uniqueIds = new Set<string>()): string[] {
  const problems: string[] = [];
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = new RegExp(`^${escaped}/(\\w+)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config$`).exec(topic);
  if (!match) return [`${topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config with ids of [a-zA-Z0-9_-]`];
  const component = match[1]!;
  const allowed = COMPONENT_KEYS[component];
  if (!allowed) return [`${topic}: component "${component}" is not checked here`];
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
  } catch {
    return [`${topic}: payload is not JSON`];
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) return [`${topic}: payload is not a JSON object`];
  const bad = (what: string) => problems.push(`${topic}: ${what}`);

  for (const key of Object.keys(config)) if (!allowed.includes(key)) bad(`unknown key "${key}" for ${component} (HA's full key names only)`);
  for (const key of REQUIRED[component]!) if (!(key in config)) bad(`"${key}" is required for ${component}`);

  if (typeof config.unique_id !== "string" || config.unique_id === "") bad("unique_id must be a non-empty string (the entity registry and the device link need it)");
  else if (uniqueIds.has(config.unique_id)) bad(`unique_id "${config.unique_id}" is used by another entity`);
  else uniqueIds.add(config.unique_id);

  if (!("device" in config)) bad("no device: the entity would not be grouped under a device");
  else {
    const device = config.device as Record<string, unknown>;
    if (typeof device !== "object" || device === null || Array.isArray(device)) bad("device must be an object");
    else {
      for (const key of Object.keys(device)) if (!DEVICE_KEYS.includes(key)) bad(`unknown device key "${key}"`);
      const ids = device.identifiers;
      const connections = device.connections;
      const hasIds = Array.isArray(ids) ? ids.length > 0 && ids.every((i) => typeof i === "string" && i !== "") : typeof ids === "string" && ids !== "";
      const hasConnections = Array.isArray(connections) && connections.length > 0 && connections.every((c) => Array.isArray(c) && c.length === 2 && c.every((v) => typeof v === "string"));
      if (!hasIds && !hasConnections) bad("device needs at least one identifying value in identifiers and/or connections");
      for (const key of DEVICE_KEYS.filter((k) => k !== "identifiers" && k !== "connections")) if (key in device && typeof device[key] !== "string") bad(`device.${key} must be a string`);
    }
  }

  if ("availability" in config && "availability_topic" in config) bad("availability and availability_topic are exclusive");
  if ("availability_topic" in config) {
    const err = subscribeTopicError(config.availability_topic);
    if (err) bad(`availability_topic ${err}`);
  }
  if ("availability" in config) {
    const list = config.availability;
    if (!Array.isArray(list) || list.length === 0) bad("availability must be a non-empty list");
    else
      list.forEach((a: Record<string, unknown>, i) => {
        const err = subscribeTopicError(a?.topic);
        if (err) bad(`availability[${i}].topic ${err}`);
        for (const key of Object.keys(a ?? {})) if (!["topic", "payload_available", "payload_not_available", "value_template"].includes(key)) bad(`unknown key availability[${i}].${key}`);
        for (const key of ["payload_available", "payload_not_available"]) if (key in a && typeof a[key] !== "string") bad(`availability[${i}].${key} must be a string`);
      });
  }
  if ("availability_mode" in config && !["all", "any", "latest"].includes(config.availability_mode as string)) bad("availability_mode must be all, any or latest");

  if ("origin" in config) {
    const origin = config.origin as Record<string, unknown>;
    if (typeof origin?.name !== "string" || origin.name === "") bad("origin.name is required");
    for (const key of Object.keys(origin ?? {})) if (!["name", "sw_version", "support_url"].includes(key)) bad(`unknown key origin.${key}`);
  }
  if ("name" in config && config.name !== null && typeof config.name !== "string") bad("name must be a string or null");
  if ("qos" in config && ![0, 1, 2].includes(config.qos as number)) bad("qos must be 0, 1 or 2");
  if ("entity_category" in config && !["config", "diagnostic"].includes(config.entity_category as string)) bad("entity_category must be config or diagnostic");

  if (component === "sensor") {
    const err = subscribeTopicError(config.state_topic);
    if (err) bad(`state_topic ${err}`);
    if ("value_template" in config && typeof config.value_template !== "string") bad("value_template must be a string");
    if ("state_class" in config && !STATE_CLASSES.includes(config.state_class as string)) bad(`state_class must be one of ${STATE_CLASSES.join(", ")}`);
    if (config.device_class === "duration" && !DURATION_UNITS.includes(config.unit_of_measurement as string)) bad(`a duration sensor's unit must be one of ${DURATION_UNITS.join(", ")}`);
  }
  if (component === "camera") {
    const err = subscribeTopicError(config.topic);
    if (err) bad(`topic ${err}`);
    if ("image_encoding" in config && config.image_encoding !== "b64") bad('image_encoding must be "b64" or unset (raw image bytes)');
  }
  return problems;
}

/**
 * Renders value templates as HA does for an MQTT message: Jinja2's sandbox with `value` (the
 * payload text) and `value_json` (the payload parsed). Python's jinja2 is HA's template engine.
 */
export function renderValueTemplates(cases: { template: string; payload: Buffer }[]): Promise<string[]> {
  const script = [
    "import json, sys",
    "from jinja2.sandbox import ImmutableSandboxedEnvironment",
    "env = ImmutableSandboxedEnvironment()",
    "cases = json.load(sys.stdin)",
    "print(json.dumps([env.from_string(c['template']).render(value=c['payload'], value_json=json.loads(c['payload'])) for c in cases]))",
  ].join("\n");
  return new Promise((resolve, reject) => {
    const child = execFile("python3", ["-c", script], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`jinja2 rendering failed (pip install -r test/helpers/requirements.txt): ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as string[]);
    });
    child.stdin!.end(JSON.stringify(cases.map((c) => ({ template: c.template, payload: c.payload.toString("utf8") }))));
  });
}
