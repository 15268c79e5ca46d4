import type { FastifyInstance } from "fastify";
import type { ApiMask, BatchResult, EverythingResult, InteractiveResult } from "../../client/types.ts";
import { SamEdgeError } from "../../core/errors.ts";
import type { MaskResult } from "../../segment/engine.ts";
import { segmentEverything, type EverythingMask, type EverythingOptions } from "../../segment/everything.ts";
import { encodeRle, maskToPngBase64, overlayImage } from "../../segment/formats/index.ts";
import { validatePromptShape, type Box, type Point, type Prompt } from "../../segment/prompts.ts";
import { toApiError } from "../errors.ts";
import { requireMultipart } from "../multipart.ts";
import { everythingSchema, interactiveSchema } from "../schemas.ts";
import type { RouteContext } from "./context.ts";
import { sources, type SourceFields } from "./sources.ts";

interface InteractiveBody extends SourceFields {
  points?: unknown;
  box?: unknown;
  multimask?: boolean;
  return_overlay: boolean;
}

interface EverythingBody extends SourceFields {
  points_per_side?: number;
  pred_iou_thresh?: number;
  stability_score_thresh?: number;
  box_nms_thresh?: number;
  min_mask_region_area?: number;
  return_overlay: boolean;
}

const round = (v: number): number => Math.round(v * 1e4) / 1e4;

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

async function maskJson(m: MaskResult): Promise<ApiMask> {
  return { mask: await maskToPngBase64(m.mask, m.bbox), bbox: m.bbox, confidence: round(m.confidence), stability: round(m.stability), area: m.area };
}

export function registerSegmentRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.post<{ Body: InteractiveBody }>("/v1/segment/interactive", { schema: interactiveSchema(), preValidation: requireMultipart }, async (request, reply) => {
    const items = sources(request.body, ctx);
    const prompts = promptsFor(request.body, items.length);
    const multimask = request.body.multimask;
    const result = await ctx.withEngine(reply, (engine) =>
      answer(
        items,
        async (bytes, index): Promise<InteractiveResult> => {
          const start = performance.now();
          // Without multimask=true the answer is the best candidate alone.
          const seg = await engine.segment(bytes, prompts[index]!, { ...(multimask === undefined ? {} : { multimask }), bestOnly: !multimask });
          ctx.metrics.observeTimings(seg.timings);
          const t = performance.now();
          const best = seg.masks[0]!;
          const masks = multimask ? await Promise.all(seg.masks.map(maskJson)) : [await maskJson(best)];
          const rle = encodeRle(best.mask, best.bbox);
          const out: InteractiveResult = {
            ...masks[0]!,
            rle,
            ...(request.body.return_overlay ? { overlay: (await overlayImage(bytes, [best.mask])).toString("base64") } : {}),
            ...(multimask ? { masks } : {}),
            width: seg.width,
            height: seg.height,
          };
          ctx.metrics.observeStage("respond", performance.now() - t);
          return { ...out, latency_ms: round(performance.now() - start), route: "local" };
        },
        request.log,
      ),
    );
    return { ...result, latency_ms: round(reply.elapsedTime), route: "local" };
  });

  app.post<{ Body: EverythingBody }>("/v1/segment/everything", { schema: everythingSchema(), preValidation: requireMultipart }, async (request, reply) => {
    const items = sources(request.body, ctx);
    const body = request.body;
    const options: Partial<EverythingOptions> = {
      ...(body.points_per_side !== undefined ? { pointsPerSide: body.points_per_side } : {}),
      ...(body.pred_iou_thresh !== undefined ? { predIouThresh: body.pred_iou_thresh } : {}),
      ...(body.stability_score_thresh !== undefined ? { stabilityScoreThresh: body.stability_score_thresh } : {}),
      ...(body.box_nms_thresh !== undefined ? { boxNmsThresh: body.box_nms_thresh } : {}),
      ...(body.min_mask_region_area !== undefined ? { minMaskRegionArea: body.min_mask_region_area } : {}),
    };
    const result = await ctx.withEngine(reply, (engine) =>
      answer(
        items,
        async (bytes): Promise<EverythingResult> => {
          const start = performance.now();
          const seg = await segmentEverything(engine, bytes, options);
          ctx.metrics.observeTimings(seg.timings);
          const t = performance.now();
          const masks = await Promise.all(seg.masks.map(async (m: EverythingMask) => ({ ...(await maskJson(m)), point: m.point })));
          const overlay = body.return_overlay ? { overlay: (await overlayImage(bytes, seg.masks.map((m) => m.mask))).toString("base64") } : {};
          ctx.metrics.observeStage("respond", performance.now() - t);
          return { masks, ...overlay, width: seg.width, height: seg.height, latency_ms: round(performance.now() - start), route: "local" };
        },
        request.log,
      ),
    );
    return { ...result, latency_ms: round(reply.elapsedTime), route: "local" };
  });
}
