import type {
  ApiErrorBody,
  ApiPoint,
  ApiRle,
  BatchResult,
  EverythingResult,
  InteractiveResult,
  MaskToPolygonResult,
} from "./types.ts";

export interface SamClientOptions {
  /** The hosted service (https://api.msightflow.ai) or a box (http://127.0.0.1:8080): nothing else changes. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Per request; Everything mode on a slow box takes seconds. Default 60 s. */
  timeoutMs?: number;
}

/** An image file's bytes (JPEG, PNG or WebP), or a camera of the box (local API only). */
export type ImageInput = Uint8Array | { camera: string };

export interface Prompt {
  points?: ApiPoint[];
  /** [x0, y0, x1, y1] in pixels. */
  box?: [number, number, number, number];
}

export interface InteractiveOptions {
  /** Also answer every candidate mask; unset leaves the choice to the server. */
  multimask?: boolean;
  returnOverlay?: boolean;
}

export interface EverythingOptions {
  /** 4 (coarse) to 64 (fine). */
  pointsPerSide?: number;
  returnOverlay?: boolean;
}

/** A mask to outline: PNG bytes, base64 PNG (as `mask` in an answer), or COCO RLE. */
export type MaskInput = { png: Uint8Array } | { base64: string } | { rle: ApiRle };

/** A non-2xx answer, with the API's stable error code when the body carried one. */
export class SamApiError extends Error {
  override readonly name = "SamApiError";

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Fields = [string, string | Uint8Array][];

/**
 * The SAM API, hosted or on a box: the same calls, answers and errors either way. Errors come
 * back as SamApiError; a batch's items each carry their own result or `{error}`.
 */
export class SamClient {
  private readonly baseUrl: string;

  constructor(private readonly options: SamClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
  }

  async interactive(image: ImageInput, prompt: Prompt, options: InteractiveOptions = {}): Promise<InteractiveResult> {
    return this.post("/v1/segment/interactive", [...imageFields(image), ...promptFields(prompt.points, prompt.box), ...interactiveFields(options)]);
  }

  /** Up to 10 images (all bytes, or all cameras); one prompt for all, or one per image. */
  async interactiveBatch(images: ImageInput[], prompts: Prompt | Prompt[], options: InteractiveOptions = {}): Promise<BatchResult<InteractiveResult>> {
    const fields = Array.isArray(prompts)
      ? promptFields(
          prompts.map((p) => p.points ?? []),
          prompts.some((p) => p.box) ? prompts.map((p) => p.box ?? null) : undefined,
        )
      : promptFields(prompts.points, prompts.box);
    return this.post("/v1/segment/interactive", [...images.flatMap(imageFields), ...fields, ...interactiveFields(options)]);
  }

  async everything(image: ImageInput, options: EverythingOptions = {}): Promise<EverythingResult> {
    return this.post("/v1/segment/everything", [...imageFields(image), ...everythingFields(options)]);
  }

  /** Up to 10 images (all bytes, or all cameras). */
  async everythingBatch(images: ImageInput[], options: EverythingOptions = {}): Promise<BatchResult<EverythingResult>> {
    return this.post("/v1/segment/everything", [...images.flatMap(imageFields), ...everythingFields(options)]);
  }

  /** Polygons with holes; `tolerance` in pixels (0 keeps every pixel corner). */
  async maskToPolygon(mask: MaskInput, options: { tolerance?: number } = {}): Promise<MaskToPolygonResult> {
    const source: Fields = "png" in mask ? [["mask", mask.png]] : "base64" in mask ? [["mask", mask.base64]] : [["rle", JSON.stringify(mask.rle)]];
    return this.post("/v1/labeling/mask-to-polygon", [...source, ...(options.tolerance !== undefined ? [["tolerance", String(options.tolerance)] as [string, string]] : [])]);
  }

  private async post<T>(path: string, fields: Fields): Promise<T> {
    const form = new FormData();
    for (const [name, value] of fields) {
      // Bytes go as file parts, as curl's -F name=@file and requests' files= send them.
      if (typeof value === "string") form.append(name, value);
      else form.append(name, new Blob([new Uint8Array(value)]), name);
    }
    const res = await fetch(this.baseUrl + path, {
      method: "POST",
      body: form,
      headers: this.options.token ? { Authorization: `Bearer ${this.options.token}` } : {},
      signal: AbortSignal.timeout(this.options.timeoutMs ?? 60_000),
    });
    const text = await res.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new SamApiError(res.status, "RESPONSE_INVALID", `${path} answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    if (!res.ok) {
      const error = (body as Partial<ApiErrorBody>).error;
      throw new SamApiError(res.status, error?.code ?? `HTTP_${res.status}`, error?.message ?? `${path} answered ${res.status}`);
    }
    return body as T;
  }
}

function imageFields(image: ImageInput): Fields {
  return image instanceof Uint8Array ? [["image", image]] : [["camera", image.camera]];
}

type Box = NonNullable<Prompt["box"]>;

function promptFields(points: ApiPoint[] | ApiPoint[][] | undefined, box: Box | (Box | null)[] | undefined): Fields {
  return [...(points ? [["points", JSON.stringify(points)] as [string, string]] : []), ...(box ? [["box", JSON.stringify(box)] as [string, string]] : [])];
}

function interactiveFields(options: InteractiveOptions): Fields {
  const fields: Fields = [];
  if (options.multimask !== undefined) fields.push(["multimask", String(options.multimask)]);
  if (options.returnOverlay) fields.push(["return_overlay", "true"]);
  return fields;
}

function everythingFields(options: EverythingOptions): Fields {
  const fields: Fields = [];
  if (options.pointsPerSide !== undefined) fields.push(["points_per_side", String(options.pointsPerSide)]);
  if (options.returnOverlay) fields.push(["return_overlay", "true"]);
  return fields;
}
