import { createHash } from "node:crypto";
import type { DecoderOutputs, ImageFeatures, SamModel } from "../model/sam-model.ts";
import type { BBox, BinaryMask } from "./mask.ts";
import { lowResRows, thresholdRows } from "./postprocess.ts";
import { DEFAULT_IMAGE_LIMITS, loadForModel, type ImageLimits, type RawImage } from "./preprocess.ts";
import { encodePrompt, LOW_RES, validatePrompt, type Prompt } from "./prompts.ts";
import { EmbeddingCache } from "./embedding-cache.ts";

/** An image after the encoder: everything a prompt needs, so re-prompts skip the encoder. */
export interface ImageEmbedding {
  key: string;
  width: number;
  height: number;
  resizedWidth: number;
  resizedHeight: number;
  /** What the model's decoder takes (opaque: one tensor or several, by layout). */
  features: ImageFeatures;
}

export interface MaskResult {
  mask: BinaryMask;
  bbox: BBox;
  area: number;
  /** The decoder's predicted IoU: the hosted API's `confidence`. */
  confidence: number;
  stability: number;
  /** Low-res logits, to pass back as `maskInput` when refining this mask. */
  lowRes: Float32Array;
}

export interface Timings {
  preprocessMs: number;
  encodeMs: number;
  decodeMs: number;
  postprocessMs: number;
}

export interface SegmentResult {
  width: number;
  height: number;
  /** Best first. One mask unless the prompt was a lone click (or `multimask` was asked), and one with `bestOnly`. */
  masks: MaskResult[];
  cached: boolean;
  timings: Timings;
}

export interface SegmentOptions {
  /**
   * Return SAM's three multimask outputs instead of the single-mask output. Defaults to SAM's
   * rule: multimask for a lone click (it is ambiguous), single mask for anything more.
   */
  multimask?: boolean;
  /**
   * Threshold and return only the best candidate (by predicted IoU), for callers that use
   * masks[0] alone: the others' full-size passes are skipped.
   */
  bestOnly?: boolean;
}

export interface EngineOptions {
  limits: ImageLimits;
  cacheEntries: number;
  cacheBytes: number;
}

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = { limits: DEFAULT_IMAGE_LIMITS, cacheEntries: 8, cacheBytes: 64 * 1024 * 1024 };

const now = (): number => performance.now();

/** Runs SAM: image bytes + prompts in, masks at the original size out. */
export class SegmentEngine {
  private readonly cache: EmbeddingCache<ImageEmbedding>;
  private readonly options: EngineOptions;

  constructor(
    readonly model: SamModel,
    options: Partial<EngineOptions> = {},
  ) {
    this.options = { ...DEFAULT_ENGINE_OPTIONS, ...options };
    this.cache = new EmbeddingCache(this.options.cacheEntries, this.options.cacheBytes);
  }

  get cacheStats(): { entries: number; bytes: number; hits: number; misses: number } {
    return this.cache.stats;
  }

  /** Encodes an image, or returns its cached embedding (keyed by the bytes and the model). */
  async embed(input: Uint8Array | RawImage): Promise<{ embedding: ImageEmbedding; cached: boolean; timings: Pick<Timings, "preprocessMs" | "encodeMs"> }> {
    const hash = createHash("sha256");
    if (input instanceof Uint8Array) hash.update(input);
    else hash.update(`${input.width}x${input.height}:`).update(input.rgb);
    const key = `${this.model.id}:${hash.digest("hex")}`;
    const hit = this.cache.get(key);
    if (hit) return { embedding: hit, cached: true, timings: { preprocessMs: 0, encodeMs: 0 } };

    const t0 = now();
    const image = await loadForModel(input, this.model.input, this.options.limits);
    const t1 = now();
    const features = await this.model.encode(image);
    const t2 = now();
    const embedding: ImageEmbedding = {
      key,
      width: image.width,
      height: image.height,
      resizedWidth: features.frame.width,
      resizedHeight: features.frame.height,
      features,
    };
    this.cache.set(key, embedding, features.bytes);
    return { embedding, cached: false, timings: { preprocessMs: t1 - t0, encodeMs: t2 - t1 } };
  }

  async segment(image: Uint8Array | ImageEmbedding, prompt: Prompt, options: SegmentOptions = {}): Promise<SegmentResult> {
    const embedded = image instanceof Uint8Array ? await this.embed(image) : { embedding: image, cached: true, timings: { preprocessMs: 0, encodeMs: 0 } };
    const emb = embedded.embedding;
    validatePrompt(prompt, emb.width, emb.height);
    const multimask = options.multimask ?? ((prompt.points?.length ?? 0) === 1 && !prompt.box && !prompt.maskInput);

    const t0 = now();
    const { coords, labels } = encodePrompt(prompt, emb.resizedWidth / emb.width, emb.resizedHeight / emb.height);
    const out = await this.model.decode({
      embedding: emb.features,
      coords: Float32Array.from(coords),
      labels: Float32Array.from(labels),
      batch: 1,
      points: labels.length,
      ...(prompt.maskInput ? { maskInput: prompt.maskInput } : {}),
    });
    const t1 = now();
    const masks = this.pickMasks(emb, out, 0, multimask, options.bestOnly);
    const t2 = now();
    return {
      width: emb.width,
      height: emb.height,
      masks,
      cached: embedded.cached,
      timings: { ...embedded.timings, decodeMs: t1 - t0, postprocessMs: t2 - t1 },
    };
  }

  /**
   * The masks of prompt set `b` of a decoder output. With four outputs (SAM's 1 + 3 tokens),
   * index 0 is the single-mask answer and 1..3 the multimask answers; exports that return one
   * mask have only index 0. Exports that return only the three multimask answers (SAM 2's,
   * transformers', EfficientSAM's) have no single-mask answer: the best of the three stands in.
   */
  pickMasks(emb: ImageEmbedding, out: DecoderOutputs, b: number, multimask: boolean, bestOnly = false): MaskResult[] {
    const m = out.masksPerPrompt;
    const best = (ks: number[]) => ks.reduce((top, k) => (out.scores[b * m + k]! > out.scores[b * m + top]! ? k : top));
    const multi = Array.from({ length: m - out.multimaskFrom }, (_, i) => i + out.multimaskFrom);
    let candidates = multimask && m > 1 ? multi : out.multimaskFrom > 0 || m === 1 ? [0] : [best(multi)];
    if (bestOnly) candidates = [best(candidates)];
    const lowSide = out.lowRes.dims[3] ?? LOW_RES;
    const lowData = out.lowRes.data as Float32Array;
    const results = candidates.map((k) => {
      const idx = b * m + k;
      const lowRes = lowData.slice(idx * lowSide * lowSide, (idx + 1) * lowSide * lowSide);
      const rows = lowResRows(lowRes, lowSide, out.upsample, this.model.input.size, { width: emb.resizedWidth, height: emb.resizedHeight }, emb);
      const t = thresholdRows(rows, emb.width, emb.height);
      return { mask: t.mask, bbox: t.bbox, area: t.area, confidence: out.scores[idx]!, stability: t.stability, lowRes };
    });
    return results.sort((a, c) => c.confidence - a.confidence);
  }
}
