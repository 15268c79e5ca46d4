import { Ajv } from "ajv";
import type { CameraConfig, Config, RouteMode } from "../config/schema.ts";
import { configSchema } from "../config/schema.ts";
import { isSamEdgeError } from "../core/errors.ts";
import { REQUEST_ID } from "./topic.ts";
import { CloudError } from "../service/cloud-errors.ts";
import type { SegmentationService } from "../service/segmentation.ts";
import type { CameraProvider } from "../capture/cameras.ts";
import { encodeResult, resultEncoding } from "../service/result.ts";

/**
 * A segment request over MQTT, published to `<base>/<device>/request`:
 *   { "id": "req-1", "camera": "door" | "image": "<base64 JPEG/PNG/WebP>",
 *     "prompts": [{ "points": [{ "x": 320, "y": 240, "label": 1 }], "box": [x0, y0, x1, y1] }],
 *     "coordinates": "pixels" | "normalized", "mode": "prompts" | "everything",
 *     "everything": { "points_per_side": 16, ... }, "multimask": false, "route": "local" | "cloud" | "auto" }
 * A camera request takes that camera's latest frame and, for what it leaves out, the camera's
 * settings; an image request's coordinates are pixels unless it says otherwise.
 */
export interface SegmentRequest {
  id?: string;
  camera?: string;
  image?: string;
  prompts?: CameraConfig["prompts"];
  coordinates?: CameraConfig["coordinates"];
  mode?: CameraConfig["mode"];
  everything?: Partial<CameraConfig["everything"]>;
  multimask?: boolean;
  route?: RouteMode;
}


type Reply = { topic?: string; payload: Record<string, unknown> };

interface Props {
  properties: Record<string, Record<string, unknown>>;
}

/** The request schema is built from the camera schema's own pieces, so the two never disagree. */
function compileRequestSchema(): { validate: (data: unknown) => boolean } {
  const camera = ((configSchema().properties as Record<string, { items: Props }>).cameras!.items as Props).properties;
  const pick = (key: string) => {
    const { default: _default, ...rest } = camera[key]!;
    return rest;
  };
  const everything = camera.everything as unknown as Props;
  const schema = {
    type: "object",
    additionalProperties: false,
    properties: {
      id: { type: "string", pattern: REQUEST_ID.source },
      camera: camera.id,
      image: { type: "string", minLength: 1 },
      prompts: pick("prompts"),
      coordinates: pick("coordinates"),
      mode: pick("mode"),
      everything: { ...everything, default: undefined },
      multimask: pick("multimask"),
      route: camera.route,
    },
  };
  return { validate: new Ajv({ allErrors: true, strict: false }).compile(schema) };
}

export class RequestHandler {
  private readonly schema = compileRequestSchema();

  constructor(
    private readonly deps: { service: SegmentationService; cameras: CameraProvider; config: Config; topicFor: (id?: string) => string },
  ) {}

  /** `expiresAt`: when the request's MQTT 5 message expiry runs out (a job still waiting then is dropped). */
  async answer(payload: Buffer, expiresAt?: number): Promise<Reply> {
    let request: SegmentRequest;
    try {
      request = JSON.parse(payload.toString("utf8")) as SegmentRequest;
    } catch {
      return this.error(undefined, "REQUEST_INVALID", "the request is not JSON; send {\"camera\" or \"image\", \"prompts\", ...}");
    }
    // An id that may not be a topic level is not answered on: the error goes to the plain response topic.
    const id = typeof request?.id === "string" && REQUEST_ID.test(request.id) ? request.id : undefined;
    if (typeof request !== "object" || request === null || !this.schema.validate(request)) {
      const errors = (this.schema.validate as unknown as { errors?: { instancePath: string; message?: string; params: Record<string, unknown> }[] }).errors ?? [];
      const text = errors.map((e) => `${e.instancePath.slice(1).replace(/\//g, ".") || "request"} ${e.message}${e.params.additionalProperty ? ` (${String(e.params.additionalProperty)})` : ""}`).join("; ");
      return this.error(id, "REQUEST_INVALID", text || "the request must be a JSON object");
    }
    if (!!request.camera === !!request.image) return this.error(id, "REQUEST_INVALID", 'give either "camera" (a camera id) or "image" (base64), not both or neither');
    let bytes: Buffer;
    let base: Omit<CameraConfig, "id" | "type" | "enabled" | "max_fps" | "max_frame_bytes"> | undefined;
    if (request.camera) {
      const settings = this.deps.cameras.settingsOf(request.camera);
      if (!settings) return this.error(id, "CAMERA_NOT_FOUND", `there is no camera "${request.camera}"`);
      const frame = this.deps.cameras.latestFrame(request.camera);
      if (!frame) return this.error(id, "CAMERA_NO_FRAME", `camera "${request.camera}" has not delivered a frame yet`);
      bytes = frame.bytes;
      base = settings;
    } else {
      bytes = Buffer.from(request.image!, "base64");
    }
    const mode = request.mode ?? base?.mode ?? "prompts";
    const prompts = request.prompts ?? base?.prompts;
    if (mode === "prompts" && !prompts) return this.error(id, "REQUEST_INVALID", 'give "prompts", or "mode": "everything"');
    const start = performance.now();
    try {
      const result = await this.deps.service.segment({
        source: "mqtt",
        ...(expiresAt !== undefined ? { expiresAt } : {}),
        bytes,
        mode,
        prompts: prompts ?? [],
        coordinates: request.coordinates ?? (request.prompts ? "pixels" : (base?.coordinates ?? "pixels")),
        multimask: request.multimask ?? base?.multimask ?? false,
        // What both leave out comes from the model (its manifest), then the defaults.
        everything: { ...base?.everything, ...request.everything },
        route: request.route ?? base?.route ?? this.deps.config.routing.default_route,
      });
      const body = await encodeResult(result, resultEncoding(this.deps.config.results), { totalMs: performance.now() - start });
      return { topic: this.deps.topicFor(id), payload: { ...(id ? { id } : {}), ...(request.camera ? { camera: request.camera } : {}), ...body } };
    } catch (err) {
      if (isSamEdgeError(err) || err instanceof CloudError) return this.error(id, err.code, err.message);
      return this.error(id, "INTERNAL", (err as Error).message);
    }
  }

  private error(id: string | undefined, code: string, message: string): Reply {
    return { topic: this.deps.topicFor(id), payload: { ...(id ? { id } : {}), error: { code, message } } };
  }
}
