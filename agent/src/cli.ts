import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { FolderSource } from "./capture/folder.ts";
import { BUNDLED_MODEL_DIR, SAMPLES_DIR } from "./config/paths.ts";
import { isSamEdgeError, SamEdgeError } from "./errors.ts";
import { SamModel } from "./model/sam-model.ts";
import { SegmentEngine, type MaskResult } from "./segment/engine.ts";
import { segmentEverything, type EverythingMask } from "./segment/everything.ts";
import { encodeRle, maskToPng, maskToPngBase64, maskToPolygons, overlayImage } from "./segment/formats/index.ts";
import type { Box, Point, Prompt } from "./segment/prompts.ts";

export { BUNDLED_MODEL_DIR, SAMPLES_DIR };

const USAGE = `usage:
  sam-edge run [--model DIR] [--frames DIR] [--interval-ms N] [--once]
      segments each frame of a folder (default: the bundled samples) and prints one JSON line per frame
  sam-edge segment IMAGE (--point x,y[,label] ... [--box x0,y0,x1,y1] [--multimask] | --everything [--points-per-side N])
                   [--model DIR] [--format json|rle|polygon|png|overlay] [--tolerance PX] [--out FILE]
      prints the result as JSON with each mask as a base64 PNG (json), COCO RLE (rle) or polygons
      with holes (polygon); png writes the best mask as a PNG, overlay a JPEG of the masks on the image`;

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

const round = (v: number): number => Math.round(v * 1e4) / 1e4;

async function maskJson(m: MaskResult | EverythingMask, format: Format, tolerance: number): Promise<Record<string, unknown>> {
  const encoded =
    format === "rle" ? { rle: encodeRle(m.mask) } : format === "polygon" ? { polygons: maskToPolygons(m.mask, { tolerance }) } : { mask: await maskToPngBase64(m.mask) };
  return {
    bbox: m.bbox,
    area: m.area,
    confidence: round(m.confidence),
    stability: round(m.stability),
    ...("point" in m ? { point: m.point } : {}),
    ...encoded,
  };
}

async function segmentCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      point: { type: "string", multiple: true },
      box: { type: "string" },
      multimask: { type: "boolean" },
      everything: { type: "boolean" },
      "points-per-side": { type: "string", default: "32" },
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
  let bytes: Buffer;
  try {
    bytes = await readFile(positionals[0]!);
  } catch (err) {
    throw new SamEdgeError("IMAGE_NOT_FOUND", `cannot read ${positionals[0]}: ${(err as Error).message}`);
  }
  const model = await SamModel.load(values.model ?? BUNDLED_MODEL_DIR);
  try {
    const engine = new SegmentEngine(model);
    const result = values.everything
      ? await segmentEverything(engine, bytes, { pointsPerSide: Number(values["points-per-side"]) })
      : await engine.segment(bytes, prompt, values.multimask ? { multimask: true } : {});
    let output: string | Buffer;
    if (format === "png") output = await maskToPng(result.masks[0]!.mask);
    else if (format === "overlay") output = await overlayImage(bytes, result.masks.map((m) => m.mask));
    else {
      const masks = await Promise.all(result.masks.map((m) => maskJson(m, format, tolerance)));
      output = JSON.stringify({ width: result.width, height: result.height, masks, timings: result.timings }) + "\n";
    }
    if (values.out) await writeFile(values.out, output);
    else process.stdout.write(output);
  } finally {
    await model.release();
  }
}

async function runCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      frames: { type: "string" },
      "interval-ms": { type: "string", default: "1000" },
      once: { type: "boolean" },
    },
  });
  const interval = Number(values["interval-ms"]);
  if (!Number.isInteger(interval) || interval < 0) throw usageError(`--interval-ms must be a whole number of milliseconds`);
  const model = await SamModel.load(values.model ?? BUNDLED_MODEL_DIR);
  const engine = new SegmentEngine(model);
  const source = new FolderSource({ cameraId: "demo", dir: values.frames ?? SAMPLES_DIR, intervalMs: interval, loop: !values.once });
  const stop = new AbortController();
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => stop.abort());
  console.error(`sam-edge: model ${model.manifest.name} from ${model.dir}; segmenting frames of camera "${source.cameraId}" (Ctrl-C stops)`);
  try {
    for await (const frame of source.frames(stop.signal)) {
      try {
        // Until prompts come from configuration, a click at the frame's centre.
        const { embedding } = await engine.embed(frame.bytes);
        const point: Point = { x: embedding.width / 2, y: embedding.height / 2, label: 1 };
        const result = await engine.segment(embedding, { points: [point] });
        const best = result.masks[0]!;
        console.log(
          JSON.stringify({
            camera: frame.cameraId,
            frame: frame.seq,
            captured_at: frame.capturedAt.toISOString(),
            width: result.width,
            height: result.height,
            prompt: point,
            bbox: best.bbox,
            area: best.area,
            confidence: round(best.confidence),
            stability: round(best.stability),
          }),
        );
      } catch (err) {
        if (!isSamEdgeError(err)) throw err;
        console.error(`sam-edge: camera ${frame.cameraId} frame ${frame.seq} skipped: ${err.code}: ${err.message}`);
      }
    }
  } finally {
    await model.release();
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "run") await runCommand(rest);
    else if (command === "segment") await segmentCommand(rest);
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
