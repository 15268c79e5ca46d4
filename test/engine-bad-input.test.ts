import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SamEdgeError } from "../agent/src/core/errors.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { pngHeader } from "./helpers/png.ts";
import { loadScene, TINY_SAM_DIR, type Scene } from "./helpers/scenes.ts";

const run = promisify(execFile);

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(SamEdgeError);
    expect((err as SamEdgeError).message.length).toBeGreaterThan(10);
    return (err as SamEdgeError).code;
  }
  throw new Error("expected the call to fail");
}

describe("bad input to the engine gets a typed error, and the engine keeps serving", () => {
  let model: SamModel;
  let engine: SegmentEngine;
  let scene: Scene;
  let tmp: string;

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    engine = new SegmentEngine(model);
    scene = await loadScene("portrait");
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-bad-"));
  });
  afterAll(async () => {
    await model.release();
    await rm(tmp, { recursive: true, force: true });
  });

  const click = [{ x: 100, y: 100, label: 1 as const }];

  it.each([
    ["an empty file", () => Buffer.alloc(0), "IMAGE_EMPTY"],
    ["a truncated JPEG", (s: Scene) => s.bytes.subarray(0, Math.floor(s.bytes.length / 2)), "IMAGE_CORRUPT"],
    ["a text file named .png", () => Buffer.from("this is not an image, whatever its name says\n"), "IMAGE_UNSUPPORTED"],
    ["a PNG that declares 30000x30000 pixels", () => pngHeader(30000, 30000), "IMAGE_TOO_LARGE"],
    ["a PNG header with no pixel data", () => pngHeader(64, 64), "IMAGE_CORRUPT"],
    ["a 26 MB upload", () => Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(26 * 1024 * 1024)]), "IMAGE_TOO_LARGE"],
  ])("%s", async (_, make, code) => {
    expect(await codeOf(engine.segment(make(scene), { points: click }))).toBe(code);
    // The engine still answers a good request after the bad one.
    const ok = await engine.segment(scene.bytes, { points: click });
    expect(ok.masks[0]!.mask.width).toBe(scene.width);
  });

  it.each([
    ["a point outside the image", { points: [{ x: 481, y: 10, label: 1 }] }],
    ["a negative coordinate", { points: [{ x: -1, y: 10, label: 1 }] }],
    ["NaN", { points: [{ x: Number.NaN, y: 10, label: 1 }] }],
    ["a label other than 0/1", { points: [{ x: 10, y: 10, label: 2 }] }],
    ["more than 64 points", { points: Array.from({ length: 65 }, () => ({ x: 10, y: 10, label: 1 })) }],
    ["a box with x1 < x0", { box: [100, 10, 50, 60] }],
    ["a box of three numbers", { box: [1, 2, 3] }],
    ["no prompt at all", {}],
    ["a mask input of the wrong size", { points: click, maskInput: new Float32Array(10) }],
  ])("a prompt with %s", async (_, prompt) => {
    expect(await codeOf(engine.segment(scene.bytes, prompt as never))).toBe("PROMPT_INVALID");
  });

  it("a missing model folder or file", async () => {
    expect(await codeOf(SamModel.load(join(tmp, "nowhere")))).toBe("MODEL_NOT_FOUND");
    const dir = join(tmp, "missing-decoder");
    await mkdir(dir);
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ encoder: "m.encoder.onnx", decoder: "m.decoder.onnx" }));
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.encoder.onnx"), join(dir, "m.encoder.onnx"));
    expect(await codeOf(SamModel.load(dir))).toBe("MODEL_NOT_FOUND");
  });

  it("graphs are told apart by what they take, not by their file names", async () => {
    const dir = join(tmp, "swapped");
    await mkdir(dir);
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.decoder.onnx"), join(dir, "x.encoder.onnx"));
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.encoder.onnx"), join(dir, "x.decoder.onnx"));
    const model = await SamModel.load(dir);
    try {
      expect([model.manifest.encoder, model.manifest.decoder]).toEqual(["x.decoder.onnx", "x.encoder.onnx"]);
      const scene = await loadScene("small");
      const { masks } = await new SegmentEngine(model).segment(scene.bytes, { box: [10, 10, 120, 90] });
      expect(masks[0]!.area).toBeGreaterThan(0);
    } finally {
      await model.release();
    }
  });

  it("a manifest naming a decoder as the encoder says what the file is", async () => {
    const dir = join(tmp, "swapped-manifest");
    await mkdir(dir);
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.decoder.onnx"), join(dir, "d.onnx"));
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.encoder.onnx"), join(dir, "e.onnx"));
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ encoder: "d.onnx", decoder: "e.onnx" }));
    const err = (await SamModel.load(dir).catch((e: SamEdgeError) => e)) as SamEdgeError;
    expect(err.code).toBe("MODEL_INVALID");
    expect(err.message).toMatch(/d\.onnx is named as the encoder but is a SAM mask decoder/);
  });

  it("a decoder with the wrong input names lists the names found and expected", async () => {
    const dir = join(tmp, "renamed");
    await mkdir(dir);
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.encoder.onnx"), join(dir, "r.encoder.onnx"));
    const script = [
      "import onnx, sys",
      "m = onnx.load(sys.argv[1])",
      "for n in m.graph.node:",
      "    n.input[:] = ['coords' if i == 'point_coords' else i for i in n.input]",
      "for i in m.graph.input:",
      "    i.name = 'coords' if i.name == 'point_coords' else i.name",
      "onnx.save(m, sys.argv[2])",
    ].join("\n");
    await run("python3", ["-c", script, join(TINY_SAM_DIR, "tiny-sam.decoder.onnx"), join(dir, "r.decoder.onnx")]);
    const err = (await SamModel.load(dir).catch((e: SamEdgeError) => e)) as SamEdgeError;
    expect(err.code).toBe("MODEL_INVALID");
    expect(err.message).toMatch(/r\.decoder\.onnx: neither a SAM-family encoder nor decoder: inputs image_embeddings \[1,256,64,64\], coords/);
    expect(err.message).toMatch(/a decoder takes image_embeddings .*point_coords/);
  });

  it("a corrupt ONNX file, and a file whose sha256 is not the manifest's", async () => {
    const dir = join(tmp, "corrupt");
    await mkdir(dir);
    await writeFile(join(dir, "c.encoder.onnx"), Buffer.from("not a protobuf at all"));
    await copyFile(join(TINY_SAM_DIR, "tiny-sam.decoder.onnx"), join(dir, "c.decoder.onnx"));
    expect(await codeOf(SamModel.load(dir))).toBe("MODEL_INVALID");

    const sums = join(tmp, "checksum");
    await mkdir(sums);
    const manifest = JSON.parse(await readFile(join(TINY_SAM_DIR, "manifest.json"), "utf8"));
    for (const f of [manifest.encoder, manifest.decoder]) await copyFile(join(TINY_SAM_DIR, f), join(sums, f));
    manifest.sha256[manifest.encoder] = "0".repeat(64);
    delete manifest.decoderBatch;
    await writeFile(join(sums, "manifest.json"), JSON.stringify(manifest));
    const err = (await SamModel.load(sums).catch((e: SamEdgeError) => e)) as SamEdgeError;
    expect(err.code).toBe("MODEL_INVALID");
    expect(err.message).toContain("sha256");
  });

  it("a manifest that is not JSON, or names files outside its folder", async () => {
    const dir = join(tmp, "manifest");
    await mkdir(dir);
    await writeFile(join(dir, "manifest.json"), "{ not json");
    expect(await codeOf(SamModel.load(dir))).toBe("MODEL_INVALID");
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ encoder: "../../etc/passwd.onnx", decoder: "d.onnx" }));
    expect(await codeOf(SamModel.load(dir))).toBe("MODEL_INVALID");
  });
});
