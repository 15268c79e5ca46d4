import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { EVERYTHING_SCHEMA, everythingProblem, type EverythingKey, type EverythingSettings } from "./config/everything.ts";
import { loadConfig, type ConfigInputs } from "./config/load.ts";
import { BUNDLED_FP32_MODEL_DIR, BUNDLED_MODEL_DIR, SAMPLES_DIR } from "./config/paths.ts";
import { Controller } from "./daemon/controller.ts";
import { createLogger } from "./core/log.ts";
import { SystemdNotifier } from "./daemon/systemd-notify.ts";
import { isSamEdgeError, SamEdgeError } from "./core/errors.ts";
import { maskToPng, overlayImage } from "./segment/formats/index.ts";
import { validatePromptShape, type Box, type Point, type Prompt } from "./segment/prompts.ts";
import { InProcessEngine } from "./service/engine.ts";
import { encodeResult, type MaskEncoding } from "./service/result.ts";
import { SegmentationService } from "./service/segmentation.ts";
import { MODEL_USAGE, modelCommand } from "./commands/model.ts";

export { BUNDLED_FP32_MODEL_DIR, BUNDLED_MODEL_DIR, SAMPLES_DIR };

const USAGE = `usage:
  sam-edge run [--config FILE] [--set key.path=value ...] [--model DIR] [--frames DIR] [--interval-ms N] [--once] [--print]
      the agent: cameras in, masks out over MQTT, the HTTP API; with no config, a demo on the bundled
      samples. --frames/--interval-ms/--once replace the cameras with one folder camera (--once: one
      pass, then exit); --print writes one JSON line per result on stdout
  sam-edge segment IMAGE (--point x,y[,label] ... [--box x0,y0,x1,y1] [--multimask] | --everything [--points-per-side N]
                   [--pred-iou-thresh X] [--stability-score-thresh X] [--box-nms-thresh X] [--points-per-batch N] [--min-mask-region-area N])
                   [--model DIR] [--format json|rle|polygon|png|overlay] [--tolerance PX] [--out FILE]
      prints the result as JSON with each mask as a base64 PNG (json), COCO RLE (rle) or polygons
      with holes (polygon); png writes the best mask as a PNG, overlay a JPEG of the masks on the image
      (--model DIR#NAME picks one model of a folder holding several)
${MODEL_USAGE}`;

const FORMATS = ["json", "rle", "polygon", "png", "overlay"] as const;
type Format = (typeof FORMATS)[number];

function usageError(message: string): SamEdgeError {
  return new SamEdgeError("PROMPT_INVALID", `${message}\n${USAGE}`);
}

function numbers(text: string, what: string, count: number[]): number[] {
  const parts = text.split(",").map((s) => Number(s.trim()));
  if (!count.includes(parts.length) || parts.some((n) => !Number.isFinite(n))) {
    throw usageError(`${what} "${text}" must be ${count.join(" or ")} comma-separated numbers`);
  }
  return parts;
}

export function parsePoint(text: string): Point {
  const [x, y, label = 1] = numbers(text, "--point", [2, 3]);
  if (label !== 0 && label !== 1) throw usageError(`--point "${text}": the label must be 1 (foreground) or 0 (background)`);
  return { x: x!, y: y!, label };
}

export function parseBox(text: string): Box {
  return numbers(text, "--box", [4]) as Box;
}

/** --points-per-side, --pred-iou-thresh, ...: one flag per Everything setting (config/everything.ts), its own name with dashes. */
const flagOf = (key: string) => key.replace(/_/g, "-");
const EVERYTHING_FLAGS = Object.fromEntries(Object.keys(EVERYTHING_SCHEMA).map((k) => [flagOf(k), { type: "string" as const }]));

function everythingFlags(values: Record<string, unknown>): Partial<EverythingSettings> {
  const settings: Partial<Record<EverythingKey, number>> = {};
  for (const key of Object.keys(EVERYTHING_SCHEMA) as EverythingKey[]) {
    const text = values[flagOf(key)];
    if (text === undefined) continue;
    const value = Number(text);
    const problem = everythingProblem(key, value);
    if (problem) throw usageError(`--${flagOf(key)}: ${problem.replace(/, got .*$/, `, got ${JSON.stringify(text)}`)}`);
    settings[key] = value;
  }
  return settings;
}

const ENCODINGS: Record<Exclude<Format, "png" | "overlay">, (tolerance: number) => MaskEncoding> = {
  json: () => ({ png: true }),
  rle: () => ({ rle: true }),
  polygon: (tolerance) => ({ polygonTolerance: tolerance }),
};

async function segmentCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      point: { type: "string", multiple: true },
      box: { type: "string" },
      multimask: { type: "boolean" },
      everything: { type: "boolean" },
      ...EVERYTHING_FLAGS,
      model: { type: "string" },
      format: { type: "string", default: "json" },
      tolerance: { type: "string", default: "1" },
      out: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw usageError("segment takes exactly one IMAGE");
  const format = values.format as Format;
  if (!FORMATS.includes(format)) throw usageError(`--format must be one of ${FORMATS.join(", ")}, not "${values.format}"`);
  const tolerance = Number(values.tolerance);
  if (!(tolerance >= 0)) throw usageError(`--tolerance must be a number of pixels >= 0`);
  if (values.everything && (values.point || values.box)) throw usageError("--everything takes no --point or --box");
  if (values.everything && format === "png") throw usageError("--format png writes one mask; with --everything use json, rle, polygon or overlay");
  const prompt: Prompt = { points: (values.point ?? []).map(parsePoint), ...(values.box ? { box: parseBox(values.box) } : {}) };
  if (!values.everything) validatePromptShape(prompt);
  let bytes: Buffer;
  try {
    bytes = await readFile(positionals[0]!);
  } catch (err) {
    throw new SamEdgeError("IMAGE_NOT_FOUND", `cannot read ${positionals[0]}: ${(err as Error).message}`);
  }
  // One image, one run: the model runs in this thread, through the same service as the daemon's.
  const service = new SegmentationService({ engine: await InProcessEngine.load(values.model ?? BUNDLED_MODEL_DIR), latencyBudgetMs: Number.POSITIVE_INFINITY });
  try {
    const everything = everythingFlags(values as Record<string, unknown>);
    const result = await service.segment({
      source: "cli",
      bytes,
      mode: values.everything ? "everything" : "prompts",
      prompts: values.everything ? [] : [prompt],
      coordinates: "pixels",
      ...(values.multimask ? { multimask: true } : {}),
      everything,
      route: "local",
    });
    let output: string | Buffer;
    if (format === "png") output = await maskToPng(result.masks[0]!.mask);
    else if (format === "overlay") output = await overlayImage(bytes, result.masks.map((m) => m.mask));
    else {
      const message = await encodeResult(result, ENCODINGS[format](tolerance));
      output = JSON.stringify({ width: message.width, height: message.height, masks: message.masks, latency_ms: message.latency_ms }) + "\n";
    }
    if (values.out) await writeFile(values.out, output);
    else process.stdout.write(output);
  } finally {
    await service.close();
  }
}

async function runCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string" },
      set: { type: "string", multiple: true },
      model: { type: "string" },
      frames: { type: "string" },
      "interval-ms": { type: "string" },
      once: { type: "boolean" },
      print: { type: "boolean" },
    },
  });
  // The shortcut flags are settings like any other: validated by the schema, named in its errors.
  const overrides: NonNullable<ConfigInputs["overrides"]> = [];
  if (values.model) overrides.push({ path: ["model", "dir"], value: values.model, origin: "--model" });
  if (values.print) overrides.push({ path: ["print_results"], value: true, origin: "--print" });
  const demo = values.frames !== undefined || values["interval-ms"] !== undefined || values.once;
  if (demo) {
    const interval = values["interval-ms"] === undefined ? 1000 : Number(values["interval-ms"]);
    overrides.push({
      path: ["cameras"],
      value: [{ id: "demo", type: "folder", dir: values.frames ?? SAMPLES_DIR, interval_ms: interval, loop: !values.once }],
      origin: "--frames/--interval-ms/--once",
    });
  }
  const config = await loadConfig({ ...(values.config ? { file: values.config } : {}), sets: values.set ?? [], overrides });
  const log = createLogger(config.log_level);
  const controller = await Controller.start(config, log);
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  const cameras = config.cameras.filter((c) => c.enabled).map((c) => `${c.id} (${c.type})`);
  log.info(`device ${config.device_id}: ${cameras.length ? `cameras ${cameras.join(", ")}` : "no cameras"}; state in ${config.state_dir}`);
  if (controller.mqttUrl) {
    const url = new URL(controller.mqttUrl);
    const where = url.hostname === "127.0.0.1" && (url.port || "1883") === "1883" ? "" : `-h ${url.hostname} -p ${url.port || 1883} `;
    log.info(`results over MQTT at ${controller.mqttUrl}; watch them with: mosquitto_sub ${where}-v -t '${config.mqtt.base_topic}/#'`);
  }
  if (controller.httpUrl) log.info(`HTTP API at ${controller.httpUrl} (OpenAPI at ${controller.httpUrl}/docs)`);
  const notifier = SystemdNotifier.fromEnv(process.env, log);
  if (notifier) void controller.modelSettled().then(() => notifier.ready(`${cameras.length} cameras${controller.httpUrl ? `, HTTP API at ${controller.httpUrl}` : ""}`));
  const signal = await Promise.race([signalled, values.once ? controller.finished().then(() => undefined) : new Promise<never>(() => {})]);
  if (signal) {
    log.info(`${signal}: finishing the frames in flight, flushing the outbox (${signal} again quits at once)`);
    process.once(signal, () => process.exit(130));
  }
  notifier?.stopping();
  await controller.stop();
  log.info("stopped");
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "run") await runCommand(rest);
    else if (command === "segment") await segmentCommand(rest);
    else if (command === "model") await modelCommand(rest);
    else {
      console.error(command ? `unknown command "${command}"\n${USAGE}` : USAGE);
      return 2;
    }
    return 0;
  } catch (err) {
    if (isSamEdgeError(err)) {
      console.error(`sam-edge: ${err.code}: ${err.message}`);
      return 1;
    }
    if (err instanceof TypeError && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS")) {
      console.error(`sam-edge: ${err.message}\n${USAGE}`);
      return 2;
    }
    throw err;
  }
}
