import { describeTensor, type GraphSignature, type TensorInfo } from "./onnx-io.ts";

/**
 * What the graphs of SAM-family exports take and give, told apart by their inputs and outputs
 * (names, ranks, shapes), never by file names. Each kind is one publisher's export code:
 *
 * - `sam`: SAM's reference layout. Encoders from samexporter (ViT-B/L/H, MobileSAM), EdgeSAM and
 *   this project take one normalised, padded [1,3,1024,1024] image; decoders take
 *   image_embeddings, point_coords, point_labels (+ mask_input, has_mask_input, orig_im_size).
 * - `sam-hwc`: samexporter's encoder exported --use-preprocess: the resized image as [H,W,3]
 *   pixels, normalised and padded inside the graph.
 * - `sam2`: SAM 2 / 2.1 image mode. The encoder gives three feature maps (samexporter:
 *   high_res_feats_0/1 + image_embed; onnx-community: image_embeddings.0/.1/.2) of a 1024x1024
 *   image resized without keeping its aspect ratio; the decoder takes all three.
 * - `hf-sam`: optimum / transformers.js SAM and SlimSAM: the encoder also gives
 *   image_positional_embeddings; the decoder takes input_points [B,P,N,2] and int64 input_labels.
 * - `efficient-sam`: EfficientSAM's export: the encoder takes the image in 0..1 and resizes it
 *   inside; the decoder takes points in original pixels and orig_im_size.
 */
export type Family = "sam" | "sam2" | "hf-sam" | "efficient-sam";

/** The image tensors an encoder gives and a decoder takes, by what they are. */
export type FeatureRole = "embed" | "highRes0" | "highRes1" | "positional";

export interface EncoderSpec {
  role: "encoder";
  family: Family;
  /** In words, for listings and errors. */
  label: string;
  input: TensorInfo;
  /** How the image becomes the input tensor. */
  pixels: "normalized-chw" | "raw-hwc" | "unit-chw";
  /**
   * SAM resizes the longest side to 1024 and pads; SAM 2 stretches to 1024x1024; EfficientSAM
   * takes the image as it is and stretches it in its graph.
   */
  fit: "longest-side" | "stretch" | "none";
  outputs: Partial<Record<FeatureRole, TensorInfo>>;
}

export interface DecoderSpec {
  role: "decoder";
  family: Family;
  label: string;
  features: Partial<Record<FeatureRole, TensorInfo>>;
  points: TensorInfo;
  labels: TensorInfo;
  boxes?: TensorInfo;
  maskInput?: TensorInfo;
  hasMaskInput?: TensorInfo;
  origSize?: TensorInfo;
  scores: string;
  /** Logits at the decoder's low resolution (256x256). */
  lowRes: string;
  /** The graph appends SAM's padding point itself (callers must not). */
  padsInGraph: boolean;
  /**
   * How many prompt sets one call takes: `prompts` is the first dimension of the point input,
   * `point-batch` the second (transformers' point_batch_size), `one` when neither is dynamic.
   */
  batch: "prompts" | "point-batch" | "one";
  /** Points the graph reads (EfficientSAM pads or cuts to 6); a box counts as two. */
  maxPoints?: number;
}

export type GraphRole = EncoderSpec | DecoderSpec | { role: "combined" | "unknown"; label: string };

const isDynamic = (d: number | string | undefined): boolean => typeof d !== "number" || d < 0;

function byName(list: TensorInfo[], ...names: string[]): TensorInfo | undefined {
  for (const name of names) {
    const found = list.find((t) => t.name === name);
    if (found) return found;
  }
  return undefined;
}

function classifyEncoder(sig: GraphSignature): EncoderSpec | undefined {
  if (sig.inputs.length !== 1) return undefined;
  const input = sig.inputs[0]!;
  const outs = sig.outputs;
  const shape = input.shape;
  if (shape.length === 3 && shape[2] === 3) {
    const embed = byName(outs, "image_embeddings") ?? outs[0]!;
    return { role: "encoder", family: "sam", label: "SAM image encoder with in-graph preprocessing (samexporter --use-preprocess)", input, pixels: "raw-hwc", fit: "longest-side", outputs: { embed } };
  }
  if (shape.length !== 4 || shape[1] !== 3) return undefined;
  const sam2 = [
    ["high_res_feats_0", "high_res_feats_1", "image_embed"],
    ["image_embeddings.0", "image_embeddings.1", "image_embeddings.2"],
  ].find((names) => names.every((n) => byName(outs, n)));
  if (sam2) {
    const [h0, h1, embed] = sam2.map((n) => byName(outs, n)!);
    return {
      role: "encoder",
      family: "sam2",
      label: `SAM 2 image encoder (three feature maps: ${sam2.join(", ")})`,
      input,
      pixels: "normalized-chw",
      fit: "stretch",
      outputs: { embed, highRes0: h0, highRes1: h1 },
    };
  }
  if (isDynamic(shape[2]) && isDynamic(shape[3])) {
    // Any height and width: the graph resizes (EfficientSAM takes the image as it is, in 0..1).
    const embed = byName(outs, "image_embeddings") ?? outs[0]!;
    return { role: "encoder", family: "efficient-sam", label: "EfficientSAM image encoder (resizes and normalises in the graph)", input, pixels: "unit-chw", fit: "none", outputs: { embed } };
  }
  const positional = byName(outs, "image_positional_embeddings");
  if (positional) {
    const embed = byName(outs, "image_embeddings") ?? outs.find((o) => o !== positional)!;
    return { role: "encoder", family: "hf-sam", label: "transformers SAM vision encoder (image_embeddings + image_positional_embeddings)", input, pixels: "normalized-chw", fit: "longest-side", outputs: { embed, positional } };
  }
  if (outs.length !== 1) return undefined;
  return { role: "encoder", family: "sam", label: "SAM image encoder (normalised 1024x1024 input)", input, pixels: "normalized-chw", fit: "longest-side", outputs: { embed: outs[0]! } };
}

function classifyDecoder(sig: GraphSignature): DecoderSpec | { role: "combined"; label: string } | undefined {
  const ins = sig.inputs;
  const outs = sig.outputs;
  const names = new Set(ins.map((i) => i.name));
  const out = (...n: string[]) => byName(outs, ...n)?.name;
  if ((names.has("batched_images") && names.has("batched_point_coords")) || (names.has("pixel_values") && names.has("input_points"))) {
    return { role: "combined", label: "encoder and decoder in one graph (it re-encodes the image for every prompt)" };
  }
  const pointDim = (t: TensorInfo, dim: number) => isDynamic(t.shape[dim]);
  if (names.has("point_coords") && names.has("point_labels")) {
    const points = byName(ins, "point_coords")!;
    const labels = byName(ins, "point_labels")!;
    const optional = { maskInput: byName(ins, "mask_input"), hasMaskInput: byName(ins, "has_mask_input") };
    if (names.has("image_embed") && names.has("high_res_feats_0") && names.has("high_res_feats_1")) {
      const scores = out("iou_predictions", "scores");
      const lowRes = out("low_res_masks", "masks");
      if (!scores || !lowRes) return undefined;
      return {
        role: "decoder",
        family: "sam2",
        label: "SAM 2 mask decoder (samexporter: image_embed, high_res_feats_0/1)",
        features: { embed: byName(ins, "image_embed")!, highRes0: byName(ins, "high_res_feats_0")!, highRes1: byName(ins, "high_res_feats_1")! },
        points,
        labels,
        ...optional,
        scores,
        lowRes,
        padsInGraph: true,
        // Its point inputs' first dimension is dynamic, but the graph was traced with one prompt
        // and reshapes the image to batch 1 (onnxruntime refuses 16 prompts at Reshape_6).
        batch: "one",
      };
    }
    if (!names.has("image_embeddings")) return undefined;
    const origSize = byName(ins, "orig_im_size");
    const scores = out("iou_predictions", "scores");
    // Without orig_im_size, `masks` can only be the low-res logits (EdgeSAM's export).
    const lowRes = out("low_res_masks") ?? (origSize ? undefined : out("masks"));
    if (!scores || !lowRes) return undefined;
    return {
      role: "decoder",
      family: "sam",
      label: `SAM mask decoder (${[optional.maskInput ? "mask input" : "no mask input", origSize ? "original-size masks" : "low-res masks only"].join(", ")})`,
      features: { embed: byName(ins, "image_embeddings")! },
      points,
      labels,
      ...(optional.maskInput ? optional : {}),
      ...(origSize ? { origSize } : {}),
      scores,
      lowRes,
      padsInGraph: false,
      batch: pointDim(points, 0) ? "prompts" : "one",
    };
  }
  if (names.has("input_points") && names.has("input_labels")) {
    const points = byName(ins, "input_points")!;
    const labels = byName(ins, "input_labels")!;
    const boxes = byName(ins, "input_boxes");
    const scores = out("iou_scores");
    const lowRes = out("pred_masks");
    if (!scores || !lowRes) return undefined;
    const common = {
      role: "decoder" as const,
      points,
      labels,
      ...(boxes ? { boxes } : {}),
      scores,
      lowRes,
      // transformers pads only when no box tensor is given: a graph traced with one never does.
      padsInGraph: !boxes,
      batch: pointDim(points, 1) ? ("point-batch" as const) : ("one" as const),
    };
    if (["image_embeddings.0", "image_embeddings.1", "image_embeddings.2"].every((n) => names.has(n))) {
      return {
        ...common,
        family: "sam2",
        label: "transformers SAM 2 prompt encoder + mask decoder (image_embeddings.0/.1/.2)",
        features: { embed: byName(ins, "image_embeddings.2")!, highRes0: byName(ins, "image_embeddings.0")!, highRes1: byName(ins, "image_embeddings.1")! },
      };
    }
    if (names.has("image_embeddings") && names.has("image_positional_embeddings")) {
      return {
        ...common,
        family: "hf-sam",
        label: `transformers SAM prompt encoder + mask decoder (${boxes ? "with" : "no"} box input)`,
        features: { embed: byName(ins, "image_embeddings")!, positional: byName(ins, "image_positional_embeddings")! },
      };
    }
    return undefined;
  }
  if (names.has("batched_point_coords") && names.has("batched_point_labels") && names.has("image_embeddings")) {
    const scores = out("iou_predictions");
    // Its full-size `output_masks` is never fetched; the low-res logits are the export's third output, which it left unnamed.
    const full = out("output_masks");
    const lowRes = outs.find((o) => o.name !== scores && o.name !== full && o.shape.length === 4)?.name;
    if (!scores || !full || !lowRes) return undefined;
    return {
      role: "decoder",
      family: "efficient-sam",
      label: "EfficientSAM mask decoder (points in original pixels, orig_im_size)",
      features: { embed: byName(ins, "image_embeddings")! },
      points: byName(ins, "batched_point_coords")!,
      labels: byName(ins, "batched_point_labels")!,
      ...(byName(ins, "orig_im_size") ? { origSize: byName(ins, "orig_im_size")! } : {}),
      scores,
      lowRes,
      padsInGraph: true,
      batch: "one",
      maxPoints: 6,
    };
  }
  return undefined;
}

/** What one graph is, from its inputs and outputs. */
export function classifyGraph(sig: GraphSignature): GraphRole {
  const decoder = classifyDecoder(sig);
  if (decoder) return decoder;
  const encoder = classifyEncoder(sig);
  if (encoder) return encoder;
  return {
    role: "unknown",
    label:
      `neither a SAM-family encoder nor decoder: inputs ${sig.inputs.map(describeTensor).join(", ")}; outputs ${sig.outputs.map(describeTensor).join(", ")}. ` +
      "An encoder takes one image ([1,3,1024,1024] or [H,W,3]); a decoder takes image_embeddings (or SAM 2's image_embed and high_res_feats_0/1), point_coords and point_labels " +
      "(optionally mask_input, has_mask_input, orig_im_size), or transformers' input_points and input_labels",
  };
}

const ROLE_WORDS: Record<FeatureRole, string> = {
  embed: "the image embedding",
  highRes0: "SAM 2's first high-resolution feature map",
  highRes1: "SAM 2's second high-resolution feature map",
  positional: "transformers' image_positional_embeddings",
};

/**
 * Why this encoder cannot feed this decoder, or undefined when it can: every tensor the decoder
 * takes must come from the encoder with the same channels and size, every feature map the
 * encoder makes must be used (a SAM 2 encoder's next to a SAM decoder would give masks from half
 * a model), and both must see the image in the same frame.
 */
export function mismatch(encoder: EncoderSpec, decoder: DecoderSpec): string | undefined {
  const problems: string[] = [];
  for (const [role, input] of Object.entries(decoder.features) as [FeatureRole, TensorInfo][]) {
    const given = encoder.outputs[role];
    if (!given) {
      problems.push(`the decoder takes ${ROLE_WORDS[role]} (${describeTensor(input)}), which this encoder does not give`);
      continue;
    }
    for (let d = 1; d < Math.min(given.shape.length, input.shape.length); d++) {
      const [a, b] = [given.shape[d], input.shape[d]];
      if (typeof a === "number" && typeof b === "number" && a !== b) {
        problems.push(`the encoder's ${describeTensor(given)} does not fit the decoder's ${describeTensor(input)}`);
        break;
      }
    }
  }
  for (const role of ["highRes0", "highRes1"] as const) {
    if (encoder.outputs[role] && !decoder.features[role]) {
      problems.push(`the encoder gives ${ROLE_WORDS[role]} (${describeTensor(encoder.outputs[role]!)}), which this decoder does not take: it needs SAM 2's own decoder`);
    }
  }
  const frame = (f: Family) => (f === "sam2" || f === "efficient-sam" ? f : "sam");
  if (problems.length === 0 && frame(encoder.family) !== frame(decoder.family)) {
    problems.push(`the encoder sees the image as ${encoder.fit === "longest-side" ? "a 1024 longest side, padded" : "a 1024x1024 stretch"}, the decoder expects ${decoder.family}'s frame`);
  }
  return problems.length ? `${encoder.label} next to ${decoder.label}: ${problems.join("; ")}` : undefined;
}
