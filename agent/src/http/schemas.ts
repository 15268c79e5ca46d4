/**
 * JSON schemas of the API: fastify validates requests and serialises answers with them, and
 * /openapi.json is generated from them. Builders return fresh objects because the `isFile`
 * keyword rewrites its schema in place when it is compiled.
 */
import { MAX_BATCH } from "./limits.ts";
import { everythingObjectSchema } from "../config/everything.ts";

const file = (description: string) => ({ isFile: true, description });

const oneOrMoreFiles = (description: string) => ({
  description,
  anyOf: [file(description), { type: "array", items: file(description), minItems: 1, maxItems: MAX_BATCH }],
});

const cameras = (max = MAX_BATCH) => ({
  type: "array",
  items: { type: "string", minLength: 1, maxLength: 128 },
  maxItems: max,
  description: `Instead of image: a camera id, meaning its latest frame${max > 1 ? ` (repeat for a batch of up to ${max})` : ""}.`,
});

const jsonText = (description: string) => ({ anyOf: [{ type: "string" }, { type: "array" }], description });

const bbox = { type: "array", items: { type: "number" }, minItems: 4, maxItems: 4, description: "[x, y, width, height] in pixels" };

const rle = {
  type: "object",
  required: ["size", "counts"],
  properties: {
    size: { type: "array", items: { type: "integer" }, minItems: 2, maxItems: 2, description: "[height, width]" },
    counts: { anyOf: [{ type: "string" }, { type: "array", items: { type: "integer", minimum: 0 } }] },
  },
  description: "COCO RLE, as pycocotools' mask.encode writes it",
};

const maskProperties = {
  mask: { type: "string", description: "base64 PNG, 255 inside the mask" },
  bbox,
  confidence: { type: "number", description: "the model's predicted IoU" },
  stability: { type: "number" },
  area: { type: "integer" },
};

const common = {
  width: { type: "integer" },
  height: { type: "integer" },
  latency_ms: { type: "number", description: "time spent on the request inside the agent" },
  route: { type: "string", enum: ["local", "cloud"] },
};

// `required` also steers serialisation: the first anyOf branch an answer matches is the one used.
const interactiveResult = {
  type: "object",
  required: ["mask", "bbox", "confidence"],
  properties: {
    ...maskProperties,
    overlay: { type: "string", description: "base64 JPEG of the mask over the image (return_overlay=true)" },
    masks: { type: "array", items: { type: "object", properties: maskProperties }, description: "every candidate, best first (multimask=true)" },
    rle: { ...rle, properties: { ...rle.properties, counts: { type: "string" } } },
    ...common,
  },
};

const everythingResult = {
  type: "object",
  required: ["masks"],
  properties: {
    masks: {
      type: "array",
      items: { type: "object", properties: { ...maskProperties, point: { type: "array", items: { type: "number" }, description: "the grid point that produced it" } } },
    },
    overlay: { type: "string", description: "base64 JPEG of every mask over the image (return_overlay=true)" },
    ...common,
  },
};

export const errorSchema = {
  type: "object",
  required: ["error"],
  properties: {
    error: { type: "object", required: ["code", "message"], properties: { code: { type: "string" }, message: { type: "string" } } },
  },
};

const errors = { "4xx": errorSchema, "5xx": errorSchema };

/** A single image answers with its result; several answer `results` in request order. */
const singleOrBatch = (result: object) => ({
  anyOf: [
    result,
    {
      type: "object",
      required: ["results"],
      properties: { results: { type: "array", items: { anyOf: [errorSchema, result] } }, latency_ms: common.latency_ms, route: common.route },
    },
  ],
});

export const interactiveSchema = () => ({
  summary: "Segment what the points (and box) show",
  description: `Multipart form. Several \`image\` parts (or \`camera\` fields), up to ${MAX_BATCH}, make a batch: the answer is then \`{results: [...]}\` in request order, each a result or an error.`,
  consumes: ["multipart/form-data"],
  body: {
    type: "object",
    properties: {
      image: oneOrMoreFiles("JPEG, PNG or WebP, at most 25 MB"),
      camera: cameras(),
      points: jsonText('JSON array of {"x", "y", "label"}: label 1 = foreground, 0 = background; a batch may give one array per image'),
      box: jsonText("JSON [x0, y0, x1, y1] in pixels; a batch may give one box (or null) per image"),
      multimask: { type: "boolean", description: "also answer every candidate mask (`masks`); default: SAM's rule, several candidates for a lone click, best returned" },
      return_overlay: { type: "boolean", default: false },
    },
  },
  response: { 200: singleOrBatch(interactiveResult), ...errors },
});

export const everythingSchema = () => ({
  summary: "Every distinct mask of the image (a grid of prompts)",
  consumes: ["multipart/form-data"],
  body: {
    type: "object",
    properties: {
      image: oneOrMoreFiles("JPEG, PNG or WebP, at most 25 MB"),
      camera: cameras(),
      // Left out: the model's calibrated values (its manifest), else config/everything.ts's defaults.
      ...everythingObjectSchema().properties,
      return_overlay: { type: "boolean", default: false },
    },
  },
  response: { 200: singleOrBatch(everythingResult), ...errors },
});

const maskFields = () => ({
  mask: { anyOf: [file("PNG, 255 (or > 127) inside the mask"), { type: "string", description: "base64 PNG" }] },
  rle: { anyOf: [{ type: "string", description: "JSON text of a COCO RLE" }, rle] },
});

export const maskToPolygonSchema = () => ({
  summary: "Polygons (with holes) of a mask",
  description: "Multipart (`mask` as a PNG file or base64 text, or `rle` as JSON text) or a JSON body (`mask` base64 PNG or `rle` object).",
  consumes: ["multipart/form-data", "application/json"],
  body: {
    type: "object",
    properties: {
      ...maskFields(),
      tolerance: { type: "number", minimum: 0, maximum: 1000, default: 1, description: "Douglas-Peucker tolerance in pixels; 0 keeps every pixel corner" },
    },
  },
  response: {
    200: {
      type: "object",
      properties: {
        width: { type: "integer" },
        height: { type: "integer" },
        polygons: {
          type: "array",
          items: {
            type: "object",
            properties: {
              exterior: { type: "array", items: { type: "array", items: { type: "number" } } },
              holes: { type: "array", items: { type: "array", items: { type: "array", items: { type: "number" } } } },
            },
          },
        },
        segmentation: { type: "array", items: { type: "array", items: { type: "number" } }, description: "COCO polygons (exteriors only)" },
        has_holes: { type: "boolean" },
        rle: { ...rle, properties: { ...rle.properties, counts: { type: "string" } } },
        bbox,
        area: { type: "integer" },
      },
    },
    ...errors,
  },
});

export const annotationSchema = (maxClassName: number) => ({
  summary: "Store an accepted mask with its image and class in the dataset",
  description: "Multipart: the image (`image` file or `camera`), the mask (`mask` PNG file or base64 text, or `rle` JSON text) at the image's size, and `class`.",
  consumes: ["multipart/form-data"],
  body: {
    type: "object",
    properties: {
      image: file("the image the mask was drawn on: JPEG, PNG or WebP"),
      camera: cameras(1),
      ...maskFields(),
      class: { type: "string", minLength: 1, maxLength: maxClassName, default: "object" },
    },
  },
  response: {
    201: {
      type: "object",
      properties: {
        id: { type: "string" },
        image: { type: "string", description: "the image's file name in the dataset" },
        class: { type: "string" },
        width: { type: "integer" },
        height: { type: "integer" },
        bbox,
        area: { type: "integer" },
      },
    },
    ...errors,
  },
});

export const exportSchema = (formats: readonly string[]) => ({
  summary: "The dataset as a .tar.gz: COCO JSON, YOLO segmentation labels or Pascal VOC",
  querystring: { type: "object", required: ["format"], properties: { format: { type: "string", enum: [...formats] } } },
  produces: ["application/gzip"],
  response: errors,
});

export const healthSchema = () => ({
  summary: "Liveness: the process answers (open without a token)",
  response: { 200: { type: "object", properties: { status: { type: "string" } } } },
});

export const readySchema = () => {
  const body = {
    type: "object",
    properties: {
      ready: { type: "boolean" },
      model: { type: "object", properties: { loaded: { type: "boolean" }, name: { type: "string" }, error: errorSchema.properties.error } },
      cameras: { type: "array", items: { type: "object", properties: { id: { type: "string" }, healthy: { type: "boolean" } } } },
    },
  };
  return { summary: "Readiness: model loaded and camera sources healthy (503 otherwise)", response: { 200: body, 503: body, "4xx": errorSchema } };
};

export const metricsSchema = () => ({ summary: "Prometheus metrics (text exposition format)", produces: ["text/plain"], response: errors });

export const camerasSchema = () => ({
  summary: "The cameras the box knows",
  response: {
    200: {
      type: "object",
      properties: {
        cameras: {
          type: "array",
          items: { type: "object", properties: { id: { type: "string" }, healthy: { type: "boolean" }, last_frame_at: { type: "string" } } },
        },
      },
    },
    ...errors,
  },
});

export const cameraFrameSchema = () => ({
  summary: "The latest frame of a camera as JPEG",
  params: { type: "object", required: ["id"], properties: { id: { type: "string", minLength: 1, maxLength: 128 } } },
  produces: ["image/jpeg"],
  response: errors,
});

export const cameraOverlaySchema = () => ({
  ...cameraFrameSchema(),
  summary: "The latest segmented frame of a camera with its masks drawn over it, as JPEG",
});

const modelStatus = () => {
  const error = errorSchema.properties.error;
  return {
    type: "object",
    properties: {
      model: {
        type: "object",
        nullable: true,
        description: "the model new requests run on; null while none is loaded",
        properties: {
          name: { type: "string" },
          id: { type: "string", description: "identifies the weights (the encoder's sha256)" },
          dir: { type: "string" },
          source: { type: "string", description: "where the weights came from, as the manifest says" },
          input_size: { type: "integer" },
          sha256: { type: "object", additionalProperties: { type: "string" } },
        },
      },
      error: { ...error, description: "why no model is loaded" },
      update: {
        type: "object",
        properties: {
          running: { type: "string", nullable: true, description: "the source of the update in progress" },
          last: {
            type: "object",
            nullable: true,
            properties: {
              source: { type: "string" },
              result: { type: "string", enum: ["swapped", "refused"] },
              model: { type: "string" },
              error,
              self_test: {
                type: "object",
                properties: { frame: { type: "string" }, ious: { type: "array", items: { type: "number" } }, box_ious: { type: "array", items: { type: "number" } }, ms: { type: "number" } },
              },
              in_flight_at_swap: { type: "integer", description: "requests running on the old model at the swap; they finished on it" },
              started_at: { type: "string" },
              finished_at: { type: "string" },
            },
          },
        },
      },
    },
  };
};

export const modelStatusSchema = () => ({
  summary: "The model serving requests, and the last model update",
  response: { 200: modelStatus(), ...errors },
});

export const modelUpdateSchema = () => ({
  summary: "Update the model: fetch, verify, self-test, swap",
  description:
    "JSON `{\"source\": ...}`: an absolute folder path on the box, or an http(s) URL of a folder, each holding `manifest.json` with the sha256 of every file it names. Answers once the new model serves new requests (requests running meanwhile finish on the old one), or with the reason it was refused; the old model keeps serving then.",
  consumes: ["application/json"],
  body: {
    type: "object",
    required: ["source"],
    properties: { source: { type: "string", minLength: 1, maxLength: 4096, description: "a folder path or an http(s) URL" } },
  },
  response: { 200: modelStatus(), ...errors },
});
