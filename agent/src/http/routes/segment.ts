import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import type { BatchResult, EverythingResult, InteractiveResult } from "../../client/types.ts";
import { EVERYTHING_SCHEMA, type EverythingKey, type EverythingSettings } from "../../config/everything.ts";
import { SamEdgeError } from "../../core/errors.ts";
import { encodeRle, overlayImage } from "../../segment/formats/index.ts";
import { validatePromptShape, type Box, type Point, type Prompt } from "../../segment/prompts.ts";
import { toApiError } from "../errors.ts";
import { requireMultipart } from "../multipart.ts";
import { everythingSchema, interactiveSchema } from "../schemas.ts";
import { apiMask, roundMs } from "../../service/result.ts";
import type { SegmentationResult, SegmentJob } from "../../service/segmentation.ts";
import { sources, type SourceFields } from "./sources.ts";

interface InteractiveBody extends SourceFields {
  points?: unknown;
  box?: unknown;
  multimask?: boolean;
  return_overlay: boolean;
}

interface EverythingBody extends SourceFields, Partial<EverythingSettings> {
  return_overlay: boolean;
}

function promptError(message: string): SamEdgeError {
  return new SamEdgeError("PROMPT_INVALID", message);
}

/** Multipart text fields hold JSON text; a part sent as application/json arrives parsed. */
function parseJsonField(value: unknown, name: string, example: string): unknown {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    throw promptError(`${name} is not valid JSON (got ${JSON.stringify(value.slice(0, 40))}); send e.g. ${example}`);
  }
}

const POINTS_EXAMPLE = '[{"x":320,"y":240,"label":1}]';

/**
 * One prompt per image. `points` is an array of points for every image, or (in a batch) an
 * array with one array of points per image; `box` likewise one box, or one box (or null) per
 * image. Everything but the image bounds is checked here, before any image is decoded; the
 * engine checks the bounds against each image.
 */
function promptsFor(body: InteractiveBody, count: number): Prompt[] {
  const points = body.points === undefined ? [] : parseJsonField(body.points, "points", POINTS_EXAMPLE);
  if (!Array.isArray(points)) throw promptError(`points must be a JSON array of {x, y, label}, e.g. ${POINTS_EXAMPLE}`);
  const box = body.box === undefined ? undefined : parseJsonField(body.box, "box", "[10,20,200,160]");
  const pointsPerImage = perImage(points, "points", count);
  const boxPerImage = Array.isArray(box) && perImage(box, "box", count);
  return Array.from({ length: count }, (_, i) => {
    const b = (boxPerImage ? (box as unknown[])[i] : box) as Box | null | undefined;
    const prompt: Prompt = { points: (pointsPerImage ? points[i] : points) as Point[], ...(b ? { box: b } : {}) };
    validatePromptShape(prompt);
    return prompt;
  });
}

/** Whether a batch field gives one entry per image (arrays, or null for none) rather than one for all. */
function perImage(value: unknown[], name: string, count: number): boolean {
  const split = value.length > 0 && value.every((v) => v === null || Array.isArray(v));
  if (split && value.length !== count) {
    throw promptError(`${name} gives ${value.length} entries but the request has ${count} images; give one per image, or one for all`);
  }
  return split;
}

/**
 * Answers one image with its result, several with `results` in order, each its own result or
 * error. A single image's error is the request's error, as the hosted API answers it.
 */
async function answer<T extends object>(
  items: (() => Buffer)[],
  run: (bytes: Buffer, index: number) => Promise<T>,
  log: { error(obj: object, msg: string): void },
): Promise<T | BatchResult<T>> {
  if (items.length === 1) return run(items[0]!(), 0);
  const results: BatchResult<T>["results"] = [];
  for (const [index, item] of items.entries()) {
    try {
      results.push(await run(item(), index));
    } catch (err) {
      const { status, body } = toApiError(err);
      if (status >= 500) log.error({ err }, "batch item failed");
      results.push(body);
    }
  }
  return { results };
}

/** Aborted when the client hangs up: its images still waiting for the model are then dropped. */
function clientGone(request: FastifyRequest): AbortSignal {
  const controller = new AbortController();
  request.raw.once("close", () => {
    if (!request.raw.complete || request.raw.socket?.destroyed) controller.abort();
  });
  request.raw.socket?.once("close", () => controller.abort());
  return controller.signal;
}

/** The hosted API's segment routes, answered through the segmentation service. */
export const segmentRoutes: FastifyPluginAsync = async (app) => {
  const service = app.segmentation;
  /** One image through the service, timed; the answer names the model that made it. */
  const segment = async (reply: FastifyReply, job: SegmentJob): Promise<SegmentationResult> => {
    const result = await service.segment(job);
    if (result.model) reply.header("x-sam-edge-model", result.model);
    return result;
  };

  app.post<{ Body: InteractiveBody }>("/v1/segment/interactive", { schema: interactiveSchema(), preValidation: requireMultipart }, async (request, reply) => {
    const items = sources(request.body, app.cameras);
    const prompts = promptsFor(request.body, items.length);
    const multimask = request.body.multimask;
    const signal = clientGone(request);
    const result = await answer(
      items,
      async (bytes, index): Promise<InteractiveResult> => {
        const start = performance.now();
        const prompt = prompts[index]!;
        const seg = await segment(reply, {
          source: "http",
          bytes,
          mode: "prompts",
          prompts: [{ ...(prompt.points ? { points: prompt.points } : {}), ...(prompt.box ? { box: prompt.box } : {}) }],
          coordinates: "pixels",
          ...(multimask === undefined ? {} : { multimask }),
          route: "local",
          signal,
          waitForModel: false,
        });
        const t = performance.now();
        // The hosted API's masks carry no prompt index: one image, one prompt.
        const masks = await Promise.all(seg.masks.map(async (m) => apiMask({ ...m, prompt: undefined })));
        const best = seg.masks[0]!;
        const out: InteractiveResult = {
          ...masks[0]!,
          rle: encodeRle(best.mask, best.bbox),
          ...(request.body.return_overlay ? { overlay: (await overlayImage(bytes, [best.mask])).toString("base64") } : {}),
          ...(multimask ? { masks } : {}),
          width: seg.width,
          height: seg.height,
        };
        service.observeStage("format", performance.now() - t);
        return { ...out, latency_ms: roundMs(performance.now() - start), route: "local" };
      },
      request.log,
    );
    return { ...result, latency_ms: roundMs(reply.elapsedTime), route: "local" };
  });

  app.post<{ Body: EverythingBody }>("/v1/segment/everything", { schema: everythingSchema(), preValidation: requireMultipart }, async (request, reply) => {
    const items = sources(request.body, app.cameras);
    const body = request.body;
    const everything = Object.fromEntries(Object.keys(EVERYTHING_SCHEMA).flatMap((k) => (body[k as EverythingKey] === undefined ? [] : [[k, body[k as EverythingKey]]])));
    const signal = clientGone(request);
    const result = await answer(
      items,
      async (bytes): Promise<EverythingResult> => {
        const start = performance.now();
        const seg = await segment(reply, { source: "http", bytes, mode: "everything", prompts: [], coordinates: "pixels", everything, route: "local", signal, waitForModel: false });
        const t = performance.now();
        const masks = await Promise.all(seg.masks.map(apiMask));
        const overlay = body.return_overlay ? { overlay: (await overlayImage(bytes, seg.masks.map((m) => m.mask))).toString("base64") } : {};
        service.observeStage("format", performance.now() - t);
        return { masks, ...overlay, width: seg.width, height: seg.height, latency_ms: roundMs(performance.now() - start), route: "local" };
      },
      request.log,
    );
    return { ...result, latency_ms: roundMs(reply.elapsedTime), route: "local" };
  });
};
