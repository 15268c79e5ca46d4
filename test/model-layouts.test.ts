import { copyFile, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSamEdgeError, SamEdgeError } from "../agent/src/core/errors.ts";
import { resolveModel, scanFolder } from "../agent/src/model/folder.ts";
import { isModelPath, parseManifest } from "../agent/src/model/manifest.ts";
import { readGraphSignature } from "../agent/src/model/onnx-io.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { LAYOUTS_DIR, PARITY_DIR } from "./helpers/parity.ts";
import { TINY_SAM_DIR } from "./helpers/scenes.ts";

const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => (isSamEdgeError(e) ? e : Promise.reject(e)));

describe("model layouts: found by signature, paired, checked at load", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-layouts-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  /** A folder holding the given fixture files under new names. */
  async function folder(name: string, files: Record<string, string>): Promise<string> {
    const dir = join(tmp, name);
    await mkdir(dir, { recursive: true });
    for (const [to, from] of Object.entries(files)) await copyFile(from, join(dir, to));
    return dir;
  }

  it("a SAM 2 encoder beside a SAM decoder fails at load, naming both and what is missing", async () => {
    const dir = await folder("sam2-enc-sam1-dec", {
      "model.encoder.onnx": join(LAYOUTS_DIR, "sam2-samexporter/output_models/sam2.1_hiera_t16.encoder.onnx"),
      "model.decoder.onnx": join(LAYOUTS_DIR, "sam-official/sam_onnx_example.onnx"),
    });
    const err = await errorOf(SamModel.load(dir));
    expect(err?.code).toBe("MODEL_INVALID");
    expect(err?.message).toMatch(/SAM 2 image encoder \(three feature maps: high_res_feats_0, high_res_feats_1, image_embed\) next to SAM mask decoder/);
    expect(err?.message).toMatch(/the encoder gives SAM 2's first high-resolution feature map \(high_res_feats_0 \[.*\]\), which this decoder does not take: it needs SAM 2's own decoder/);
    // The same pair named in a manifest is refused the same way.
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ encoder: "model.encoder.onnx", decoder: "model.decoder.onnx" }));
    expect((await errorOf(SamModel.load(dir)))?.message).toMatch(/needs SAM 2's own decoder/);
  });

  it("a SAM encoder beside a SAM 2 decoder, and an encoder and decoder of different widths, fail at load", async () => {
    const dir = await folder("sam1-enc-sam2-dec", {
      "model.encoder.onnx": join(LAYOUTS_DIR, "sam-official/sam_vit_t16.encoder.onnx"),
      "model.decoder.onnx": join(LAYOUTS_DIR, "sam2-samexporter/output_models/sam2.1_hiera_t16.decoder.onnx"),
    });
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ encoder: "model.encoder.onnx", decoder: "model.decoder.onnx" }));
    expect((await errorOf(SamModel.load(dir)))?.message).toMatch(/the decoder takes SAM 2's first high-resolution feature map \(high_res_feats_0 \[1,2,256,256\]\), which this encoder does not give/);

    // The fixture's 16-channel encoder with the bundled model's 256-channel decoder.
    const widths = await folder("widths", {
      "w.encoder.onnx": join(LAYOUTS_DIR, "sam-official/sam_vit_t16.encoder.onnx"),
      "w.decoder.onnx": join(TINY_SAM_DIR, "tiny-sam.decoder.onnx"),
    });
    const err = await errorOf(SamModel.load(widths));
    expect(err?.code).toBe("MODEL_INVALID");
    expect(err?.message).toMatch(/the encoder's image_embeddings \[.*,16,.*\] does not fit the decoder's image_embeddings \[1,256,64,64\]/);
  });

  it("a folder with several models lists them and asks which; DIR#NAME picks one", async () => {
    const dir = join(LAYOUTS_DIR, "sam-samexporter/output_models");
    const err = await errorOf(resolveModel(dir));
    expect(err?.code).toBe("MODEL_NOT_FOUND");
    expect(err?.message).toContain("holds 2 models: sam_vit_t16 (sam_vit_t16.encoder.onnx + sam_vit_t16.decoder.onnx), sam_vit_t16.quant (sam_vit_t16.encoder.quant.onnx + sam_vit_t16.decoder.quant.onnx)");
    expect(err?.message).toContain(`choose one as ${dir}#NAME`);
    expect((await resolveModel(`${dir}#sam_vit_t16.quant`)).manifest.encoder).toBe("sam_vit_t16.encoder.quant.onnx");
    // The encoder's file name picks it too.
    expect((await resolveModel(`${dir}#sam_vit_t16.encoder.quant.onnx`)).manifest.decoder).toBe("sam_vit_t16.decoder.quant.onnx");
    expect((await errorOf(resolveModel(`${dir}#vit_h`)))?.message).toMatch(/has no model "vit_h"; it holds sam_vit_t16 /);
    // The parent folder finds the same two under samexporter's output_models/.
    expect((await scanFolder(join(LAYOUTS_DIR, "sam-samexporter"))).candidates.map((c) => c.encoder)).toEqual([
      "output_models/sam_vit_t16.encoder.onnx",
      "output_models/sam_vit_t16.encoder.quant.onnx",
    ]);
    // transformers.js: the unsuffixed files are the fp32 default, `_quantized` the 8-bit ones.
    expect((await scanFolder(join(LAYOUTS_DIR, "hf-sam"))).candidates.map((c) => [c.name, c.encoder, c.decoder])).toEqual([
      ["fp32", "onnx/vision_encoder.onnx", "onnx/prompt_encoder_mask_decoder.onnx"],
      ["quantized", "onnx/vision_encoder_quantized.onnx", "onnx/prompt_encoder_mask_decoder_quantized.onnx"],
    ]);
  });

  it("EfficientSAM's folder: its one-graph model is listed as such, beside the encoder-decoder pair that loads", async () => {
    const scan = await scanFolder(join(LAYOUTS_DIR, "efficient-sam"));
    expect(scan.candidates.map((c) => c.name)).toEqual(["efficient_sam_vitt"]);
    expect(scan.others).toEqual([{ file: "weights/efficient_sam_vitt.onnx", what: "encoder and decoder in one graph (it re-encodes the image for every prompt)" }]);
    expect((await resolveModel(join(LAYOUTS_DIR, "efficient-sam"))).manifest.encoder).toBe("weights/efficient_sam_vitt_encoder.onnx");
  });

  it("a manifest may name files under onnx/, never outside its folder", () => {
    for (const ok of ["onnx/vision_encoder.onnx", "a.onnx", "weights/efficient_sam_vitt_encoder.onnx"]) expect(isModelPath(ok), ok).toBe(true);
    for (const bad of ["../x.onnx", "/etc/x.onnx", "a/../b.onnx", "a//b.onnx", "./a.onnx", "a\\b.onnx", "a\0.onnx", "", "x".repeat(300)]) expect(isModelPath(bad), bad).toBe(false);
    expect(() => parseManifest("m", { encoder: "onnx/../../e.onnx", decoder: "d.onnx" })).toThrow(/"encoder" must name an .onnx file inside the model folder/);
    expect(() => parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", data: ["../w.bin"] })).toThrow(/"data" must list files inside the model folder/);
  });

  it("a manifest's Everything settings are checked and typed", () => {
    const m = parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", everything: { points_per_side: 16, points_per_batch: 32, pred_iou_thresh: 0.6, stability_score_thresh: 0.8, box_nms_thresh: 0.5 } });
    expect(m.everything).toEqual({ points_per_side: 16, points_per_batch: 32, pred_iou_thresh: 0.6, stability_score_thresh: 0.8, box_nms_thresh: 0.5 });
    expect(parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", everything: { pred_iou_thresh: 0.5 } }).everything).toEqual({ pred_iou_thresh: 0.5 });
    expect(() => parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", everything: { points_per_side: 0 } })).toThrow(/"points_per_side" must be an integer from 1 to 64/);
    expect(() => parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", everything: { pred_iou_thresh: 1.5 } })).toThrow(/"pred_iou_thresh" must be a number from 0 to 1/);
    expect(() => parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", everything: { crop_n_layers: 1 } })).toThrow(/"crop_n_layers" is not an Everything setting/);
    expect(() => parseManifest("m", { encoder: "e.onnx", decoder: "d.onnx", everything: [] })).toThrow(/"everything" must be an object/);
  });

  it("the graph reader refuses what is not a whole ONNX model, without reading it all", async () => {
    const real = join(LAYOUTS_DIR, "edge-sam/edge_sam_3x_decoder.onnx");
    const sig = await readGraphSignature(real);
    expect(sig.inputs.map((i) => `${i.name}:${i.type}[${i.shape.join(",")}]`)).toEqual(["image_embeddings:float32[1,16,64,64]", "point_coords:float32[1,num_points,2]", "point_labels:float32[1,num_points]"]);
    expect(sig.outputs.map((o) => o.name)).toEqual(["scores", "masks"]);
    expect(sig.externalData).toEqual([]);
    const cut = join(tmp, "cut.onnx");
    await copyFile(real, cut);
    await truncate(cut, 5000);
    const hostile: [string, Buffer | string][] = [
      ["empty.onnx", Buffer.alloc(0)],
      ["html.onnx", "<html><body>404</body></html>"],
      // A length of 2^56: must be refused, not allocated.
      ["huge-length.onnx", Buffer.from([0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])],
      ["random.onnx", Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256))],
    ];
    for (const [name, bytes] of hostile) await writeFile(join(tmp, name), bytes);
    for (const file of [cut, ...hostile.map(([n]) => join(tmp, n))]) {
      const err = await errorOf(readGraphSignature(file));
      expect(err, file).toBeInstanceOf(SamEdgeError);
      expect(err?.code, file).toBe("MODEL_INVALID");
      expect(err?.message, file).toMatch(/is not an ONNX model: (the file is empty|it is not a complete ONNX protobuf|it holds no graph|its graph has no inputs)/);
    }
    expect((await errorOf(readGraphSignature(join(tmp, "missing.onnx"))))?.code).toBe("MODEL_NOT_FOUND");
  });

  it("prompts a layout's export cannot take are refused with what it takes", async () => {
    const image = await readFile(join(PARITY_DIR, "images/wide.png"));
    const cases: [string, Parameters<SegmentEngine["segment"]>[1], RegExp][] = [
      [join(LAYOUTS_DIR, "hf-sam#fp32"), { box: [10, 10, 200, 200] }, /takes no box: its export has no input_boxes/],
      [join(LAYOUTS_DIR, "efficient-sam"), { points: Array.from({ length: 7 }, (_, i) => ({ x: 10 + i, y: 10, label: 1 as const })) }, /reads at most 6 points, a box counting as two; got 7/],
      [join(LAYOUTS_DIR, "edge-sam"), { points: [{ x: 10, y: 10, label: 1 }], maskInput: new Float32Array(256 * 256) }, /takes no mask input/],
    ];
    for (const [spec, prompt, message] of cases) {
      const model = await SamModel.load(spec);
      try {
        const err = await errorOf(new SegmentEngine(model).segment(image, prompt));
        expect(err?.code, spec).toBe("PROMPT_INVALID");
        expect(err?.message, spec).toMatch(message);
      } finally {
        await model.release();
      }
    }
  });
});
