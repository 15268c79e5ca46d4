import { readFile } from "node:fs/promises";
import { Ajv, type ErrorObject } from "ajv";
import addFormatsModule from "ajv-formats";
import { SamEdgeError } from "../core/errors.ts";
import { configSchema, type Config } from "./schema.ts";

/** Where settings come from, lowest precedence first: schema defaults, file, environment, flags. */
export interface ConfigInputs {
  /** A JSON file; SAM_EDGE_CONFIG names one when this is unset. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** `path=value` pairs (`--set mqtt.url=mqtt://box:1883`, `--set cameras[0].max_fps=1`). */
  sets?: string[];
  /** Values the CLI's shortcut flags stand for, as path -> value, with the flag for messages. */
  overrides?: { path: (string | number)[]; value: unknown; origin: string }[];
}

export const ENV_PREFIX = "SAM_EDGE_";
const FILE_VARIABLE = "SAM_EDGE_CONFIG";

type Schema = Record<string, unknown> & { properties?: Record<string, Schema>; items?: Schema; type?: string; enum?: unknown[] };
type Path = (string | number)[];

function invalid(message: string): SamEdgeError {
  return new SamEdgeError("CONFIG_INVALID", message);
}

/** `cameras[0].url`: how people write a key's path, and how errors name it. */
export function formatPath(path: readonly (string | number)[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

function parsePath(text: string): Path {
  const path: Path = [];
  for (const part of text.split(".")) {
    const m = /^([^[\]]*)((?:\[\d+\])*)$/.exec(part);
    if (!m || (!m[1] && !m[2])) throw invalid(`"${text}" is not a setting path; write it as e.g. mqtt.url or cameras[0].max_fps`);
    if (m[1]) path.push(/^\d+$/.test(m[1]) ? Number(m[1]) : m[1]);
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) path.push(Number(idx[1]));
  }
  return path;
}

function schemaAt(schema: Schema, path: Path): Schema | undefined {
  let s: Schema | undefined = schema;
  for (const p of path) s = typeof p === "number" ? s?.items : s?.properties?.[p];
  return s;
}

/**
 * Environment names flatten the path with `_`, which keys also contain (`MQTT_BASE_TOPIC`);
 * the schema decides where one key ends. Array items are indices: `CAMERAS_0_MAX_FPS`.
 */
function envPath(schema: Schema | undefined, tokens: string[]): Path | undefined {
  if (tokens.length === 0) return [];
  if (!schema) return undefined;
  if (schema.items && /^\d+$/.test(tokens[0]!)) {
    const rest = envPath(schema.items, tokens.slice(1));
    return rest && [Number(tokens[0]), ...rest];
  }
  const keys = Object.keys(schema.properties ?? {}).sort((a, b) => b.length - a.length);
  for (const key of keys) {
    const parts = key.split("_");
    if (parts.every((p, i) => tokens[i] === p)) {
      const rest = envPath(schema.properties![key], tokens.slice(parts.length));
      if (rest) return [key, ...rest];
    }
  }
  return undefined;
}

/** Text from a variable or flag: JSON where the key takes non-strings, as-is where it takes strings. */
function parseValue(text: string, schema: Schema | undefined, origin: string): unknown {
  if (schema?.type === "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    const takesStrings = schema === undefined || schema.enum?.some((v) => typeof v === "string");
    if (takesStrings) return text;
    throw invalid(`${origin}: "${text}" is not valid JSON; this setting takes ${schema?.type ?? "a JSON value"}`);
  }
}

function setAt(root: Record<string, unknown>, path: Path, value: unknown, origin: string): void {
  let node: Record<string | number, unknown> = root;
  path.forEach((key, i) => {
    if (i === path.length - 1) {
      node[key] = value;
      return;
    }
    const next = node[key];
    if (next === undefined) node[key] = typeof path[i + 1] === "number" ? [] : {};
    else if (typeof next !== "object" || next === null) throw invalid(`${origin}: ${formatPath(path.slice(0, i + 1))} is not an object, so ${formatPath(path)} cannot be set`);
    node = node[key] as Record<string | number, unknown>;
  });
}

async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw invalid(`cannot read the config file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalid(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(`${file} must hold a JSON object of settings`);
  return value as Record<string, unknown>;
}

const addFormats = addFormatsModule as unknown as (ajv: Ajv, formats: string[]) => Ajv;

function describe(err: ErrorObject, data: unknown, origins: Map<string, string>): string {
  const path: Path = err.instancePath
    .split("/")
    .slice(1)
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p.replace(/~1/g, "/").replace(/~0/g, "~")));
  const key = (extra?: string) => formatPath(extra === undefined ? path : [...path, extra]) || "the configuration";
  const value = path.reduce<unknown>((v, p) => (v as Record<string | number, unknown> | undefined)?.[p], data);
  const cameraType = path[0] === "cameras" && typeof path[1] === "number" ? (value as { type?: string } | undefined)?.type : undefined;
  let text: string;
  switch (err.keyword) {
    case "additionalProperties":
      text = `${key(String(err.params.additionalProperty))} is not a setting (unknown key)`;
      break;
    case "required":
      text = `${key(String(err.params.missingProperty))} is required${cameraType ? ` for cameras of type "${cameraType}"` : ""}`;
      break;
    case "false schema": {
      const owner = formatPath(path.slice(0, -1));
      const type = (path.slice(0, -1).reduce<unknown>((v, p) => (v as Record<string | number, unknown>)?.[p], data) as { type?: string }).type;
      text = `${key()} does not apply to cameras of type "${type}" (${owner})`;
      break;
    }
    case "enum":
      text = `${key()} must be one of ${(err.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")} (got ${JSON.stringify(value)})`;
      break;
    default:
      text = `${key()} ${err.message ?? "is invalid"} (got ${JSON.stringify(value)})`;
  }
  const origin = [...origins].find(([p]) => formatPath(path).startsWith(p));
  return origin ? `${text} [from ${origin[1]}]` : text;
}

/**
 * Reads, merges and validates the settings; fills every default. Any problem raises
 * CONFIG_INVALID naming the key (and the variable or flag it came from), so a box with a
 * typo in its config refuses to start instead of running with something else.
 */
export async function loadConfig(inputs: ConfigInputs = {}): Promise<Config> {
  const env = inputs.env ?? process.env;
  const schema = configSchema(env) as Schema;
  const file = inputs.file ?? env[FILE_VARIABLE];
  const data: Record<string, unknown> = file ? await readConfigFile(file) : {};
  const origins = new Map<string, string>();
  const put = (path: Path, value: unknown, origin: string) => {
    setAt(data, path, value, origin);
    origins.set(formatPath(path), origin);
  };

  for (const [name, text] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || name === FILE_VARIABLE || text === undefined) continue;
    const path = envPath(schema, name.slice(ENV_PREFIX.length).toLowerCase().split("_"));
    if (!path || path.length === 0) throw invalid(`${name} is not a setting: ${ENV_PREFIX} variables name a key path, e.g. SAM_EDGE_MQTT_URL or SAM_EDGE_CAMERAS_0_MAX_FPS`);
    put(path, parseValue(text, schemaAt(schema, path), name), name);
  }
  // The hosted API's own variable, as its examples use it; a configured token wins.
  if (env.MSF_API_KEY && (data.cloud as { token?: unknown } | undefined)?.token === undefined) put(["cloud", "token"], env.MSF_API_KEY, "MSF_API_KEY");
  for (const set of inputs.sets ?? []) {
    const eq = set.indexOf("=");
    if (eq <= 0) throw invalid(`--set "${set}": write it as key.path=value`);
    const path = parsePath(set.slice(0, eq));
    put(path, parseValue(set.slice(eq + 1), schemaAt(schema, path), `--set ${set.slice(0, eq)}`), `--set ${set.slice(0, eq)}`);
  }
  for (const o of inputs.overrides ?? []) put(o.path, o.value, o.origin);

  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
  addFormats(ajv, ["uri"]);
  const validate = ajv.compile(schema);
  if (!validate(data)) {
    const errors = (validate.errors ?? []).filter((e) => e.keyword !== "if");
    const lines = [...new Set(errors.map((e) => describe(e, data, origins)))];
    throw invalid(`${file ? `${file}: ` : ""}invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  const config = data as unknown as Config;
  checkMeaning(config);
  return config;
}

/** What one schema cannot say: unique ids, coordinates that fit their unit, settings that need MQTT. */
function checkMeaning(config: Config): void {
  if (config.mqtt.home_assistant.enabled && !config.mqtt.enabled) throw invalid("mqtt.home_assistant.enabled: Home Assistant discovery goes over MQTT; set mqtt.enabled to true or turn discovery off");
  const seen = new Set<string>();
  config.cameras.forEach((cam, i) => {
    if (seen.has(cam.id)) throw invalid(`cameras[${i}].id "${cam.id}" is used by another camera; camera ids must be unique`);
    seen.add(cam.id);
    if (cam.type === "mqtt" && !config.mqtt.enabled && !cam.url) throw invalid(`cameras[${i}] relays frames over MQTT: give cameras[${i}].url or enable mqtt`);
    if (cam.coordinates !== "normalized") return;
    cam.prompts.forEach((p, j) => {
      const values = [...(p.points ?? []).flatMap((pt) => [pt.x, pt.y]), ...(p.box ?? [])];
      if (values.some((v) => v > 1)) {
        throw invalid(`cameras[${i}].prompts[${j}] has coordinates above 1, but cameras[${i}].coordinates is "normalized" (0..1 of the frame); set it to "pixels" for pixel coordinates`);
      }
    });
  });
}
