/**
 * Everything mode's settings, defined once: the config's camera settings, the HTTP API's
 * fields, MQTT requests, the CLI's flags and a model's manifest (its calibrated values) are all
 * read against this. What a request or camera leaves out comes from the model's manifest, and
 * what that leaves out from EVERYTHING_DEFAULTS.
 */
export interface EverythingSettings {
  points_per_side: number;
  points_per_batch: number;
  pred_iou_thresh: number;
  stability_score_thresh: number;
  box_nms_thresh: number;
  min_mask_region_area: number;
}

export type EverythingKey = keyof EverythingSettings;

/** JSON Schema of each setting, with what it means: fastify, ajv and the CLI's help read these. */
export const EVERYTHING_SCHEMA: Record<EverythingKey, { type: "integer" | "number"; minimum: number; maximum?: number; description: string }> = {
  points_per_side: { type: "integer", minimum: 1, maximum: 64, description: "grid density: prompts per side of the image (the grid has its square)" },
  points_per_batch: { type: "integer", minimum: 1, maximum: 1024, description: "grid prompts per decoder call, when the decoder takes a batch" },
  pred_iou_thresh: { type: "number", minimum: 0, maximum: 1, description: "keep masks whose predicted IoU is at least this" },
  stability_score_thresh: { type: "number", minimum: 0, maximum: 1, description: "keep masks whose stability score is at least this" },
  box_nms_thresh: { type: "number", minimum: 0, maximum: 1, description: "drop a mask whose box overlaps a better one's by more than this IoU" },
  min_mask_region_area: { type: "integer", minimum: 0, description: "fill holes and drop islands smaller than this many pixels (0: off)" },
};

/**
 * SAM's automatic mask generator's values, but 16 points per side (a quarter of SAM's decoder
 * work, which is what a Pi can afford per frame) and 4 prompts per decoder call: onnxruntime's
 * buffers grow with the batch (the bundled decoder: about +75 MB at 4, +270 at 16, +990 at
 * SAM's 64, on 2026-12-07) while a batch of 4 ran as fast as 16 here. bench/memory.ts measures
 * the agent's peak; a model's manifest may set its own.
 */
export const EVERYTHING_DEFAULTS: EverythingSettings = {
  points_per_side: 16,
  points_per_batch: 4,
  pred_iou_thresh: 0.88,
  stability_score_thresh: 0.95,
  box_nms_thresh: 0.7,
  min_mask_region_area: 0,
};

/** The settings as a JSON Schema object with no defaults: left-out keys stay left out, for the model's defaults to fill. */
export function everythingObjectSchema(keys: readonly EverythingKey[] = Object.keys(EVERYTHING_SCHEMA) as EverythingKey[]): {
  type: "object";
  additionalProperties: false;
  properties: Record<string, unknown>;
} {
  return { type: "object", additionalProperties: false, properties: Object.fromEntries(keys.map((k) => [k, EVERYTHING_SCHEMA[k]])) };
}

/** Why a value is not a valid setting (for hand-written parsers: manifests, CLI flags), or undefined. */
export function everythingProblem(key: string, value: unknown): string | undefined {
  const spec = EVERYTHING_SCHEMA[key as EverythingKey];
  if (!spec) return `"${key}" is not an Everything setting; known: ${Object.keys(EVERYTHING_SCHEMA).join(", ")}`;
  const ok = typeof value === "number" && Number.isFinite(value) && (spec.type === "number" || Number.isInteger(value)) && value >= spec.minimum && (spec.maximum === undefined || value <= spec.maximum);
  if (ok) return undefined;
  const range = spec.maximum === undefined ? `${spec.minimum} or more` : `from ${spec.minimum} to ${spec.maximum}`;
  return `"${key}" must be ${spec.type === "integer" ? "an integer" : "a number"} ${range}, got ${JSON.stringify(value)}`;
}

/** A model's or a request's settings over the defaults, later ones winning. */
export function everythingSettings(...layers: (Partial<EverythingSettings> | undefined)[]): EverythingSettings {
  return Object.assign({ ...EVERYTHING_DEFAULTS }, ...layers.map((l) => Object.fromEntries(Object.entries(l ?? {}).filter(([, v]) => v !== undefined))));
}
