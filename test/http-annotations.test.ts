import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { FastifyInstance } from "fastify";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../agent/src/http/server.ts";
import type { SegmentEngine } from "../agent/src/segment/engine.ts";
import { decodeRle, encodeRle, maskToPng, polygonsToMask } from "../agent/src/segment/formats/index.ts";
import { maskBBox, maskIoU, type BinaryMask } from "../agent/src/segment/mask.ts";
import { FixtureCameras, postForm, request, type FieldValue } from "./helpers/http.ts";
import { loadScene } from "./helpers/scenes.ts";

const exec = promisify(execFile);
const COCO_HELPER = fileURLToPath(new URL("./helpers/coco_export.py", import.meta.url));

interface Accepted {
  class: string;
  truth: BinaryMask;
  /** The image's file name in the dataset, from the POST answer. */
  image: string;
  holes: boolean;
}

// Annotations are ground-truth masks of the fixture scenes, so what each export must contain is
// known exactly, whatever the model. No segmentation runs here: the engine never loads.
describe("annotations and dataset export (COCO, YOLO, VOC)", () => {
  let app: FastifyInstance;
  let url: string;
  let dataset: string;
  let work: string;
  const accepted: Accepted[] = [];

  async function extract(format: string): Promise<string> {
    const res = await fetch(`${url}/v1/export?format=${format}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/gzip");
    expect(res.headers.get("content-disposition")).toContain(`sam-edge-${format}.tar.gz`);
    const dir = join(work, format);
    await mkdir(dir);
    await writeFile(join(dir, "export.tar.gz"), Buffer.from(await res.arrayBuffer()));
    await exec("tar", ["-xzf", "export.tar.gz"], { cwd: dir });
    return dir;
  }

  beforeAll(async () => {
    dataset = await mkdtemp(join(tmpdir(), "sam-edge-dataset-"));
    work = await mkdtemp(join(tmpdir(), "sam-edge-export-"));
    const small = await loadScene("small");
    ({ app, url } = await startServer({ engine: new Promise<SegmentEngine>(() => {}), datasetDir: dataset, cameras: new FixtureCameras({ yard: small.bytes }) }));

    const landscape = await loadScene("landscape");
    const rotated = await loadScene("portrait-exif6");
    const add = async (cls: string, truth: BinaryMask, holes: boolean, fields: Record<string, FieldValue>) => {
      const res = await postForm(`${url}/v1/annotations`, { ...fields, class: cls });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body).toMatchObject({ class: cls, width: truth.width, height: truth.height, bbox: maskBBox(truth) });
      accepted.push({ class: cls, truth, image: res.body.image, holes });
    };
    // A mask with a hole (as a PNG file), one without (as base64 text), on the same image.
    await add("circle", landscape.truth(1), true, { image: landscape.bytes, mask: { bytes: await maskToPng(landscape.truth(1)), filename: "mask.png" } });
    await add("star", landscape.truth(3), false, { image: landscape.bytes, mask: (await maskToPng(landscape.truth(3))).toString("base64") });
    // As RLE, with a class name that XML and YAML must escape.
    await add('box & "lid"', small.truth(3), true, { image: small.bytes, rle: JSON.stringify(encodeRle(small.truth(3))) });
    // The camera's latest frame is the same image: stored once.
    await add("irregular", small.truth(1), false, { camera: "yard", mask: (await maskToPng(small.truth(1))).toString("base64") });
    // An EXIF-rotated JPEG: masks are upright, so the stored image must be too.
    await add("polygon", rotated.truth(2), false, { image: rotated.bytes, mask: (await maskToPng(rotated.truth(2))).toString("base64") });
  });
  afterAll(async () => {
    await app.close();
    await rm(dataset, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it("stores each image once, upright, and one JSON per annotation", async () => {
    expect((await readdir(join(dataset, "annotations"))).filter((f) => f.endsWith(".json"))).toHaveLength(5);
    const images = await readdir(join(dataset, "images"));
    expect(images.sort()).toEqual([...new Set(accepted.map((a) => a.image))].sort());
    expect(images).toHaveLength(3);
    const upright = await sharp(join(dataset, "images", accepted[4]!.image)).metadata();
    expect([upright.width, upright.height, upright.orientation ?? 1]).toEqual([480, 640, 1]);
  });

  it("COCO: loads in pycocotools; masks with holes are RLE, the others polygons, and each decodes to the stored mask", async () => {
    const dir = await extract("coco");
    const { stdout } = await exec("python3", [COCO_HELPER, dir]);
    const coco = JSON.parse(stdout) as {
      images: { file_name: string; width: number; height: number; exists: boolean }[];
      annotations: { file_name: string; category: string; kind: string; area: number; bbox: number[]; rle: { size: [number, number]; counts: string } }[];
    };
    expect(coco.images).toHaveLength(3);
    expect(coco.images.every((i) => i.exists)).toBe(true);
    expect(coco.annotations).toHaveLength(accepted.length);
    for (const a of accepted) {
      const ann = coco.annotations.find((x) => x.category === a.class)!;
      expect(ann.file_name).toBe(`images/${a.image}`);
      expect(ann.kind).toBe(a.holes ? "rle" : "polygon");
      expect(ann.bbox).toEqual(maskBBox(a.truth));
      // Polygons are the exact pixel outline, which pycocotools rasterises back to the same pixels.
      expect(decodeRle(ann.rle).data, a.class).toEqual(a.truth.data);
    }
  });

  it("YOLO: data.yaml names every class; each image's labels rasterise back to its masks", async () => {
    const dir = await extract("yolo");
    const yaml = await readFile(join(dir, "data.yaml"), "utf8");
    const names = [...yaml.matchAll(/^ {2}(\d+): (".*")$/gm)].map((m) => JSON.parse(m[2]!) as string);
    expect(names.sort()).toEqual(accepted.map((a) => a.class).sort());
    for (const a of accepted.filter((x) => !x.holes)) {
      const stem = a.image.replace(/\.\w+$/, "");
      const lines = (await readFile(join(dir, "labels", `${stem}.txt`), "utf8")).trim().split("\n");
      const line = lines.find((l) => names.indexOf(a.class) === Number(l.split(" ")[0]))!;
      const coords = line.split(" ").slice(1).map(Number);
      expect(coords.every((v) => v >= 0 && v <= 1)).toBe(true);
      const exterior = Array.from({ length: coords.length / 2 }, (_, i) => [coords[2 * i]! * a.truth.width, coords[2 * i + 1]! * a.truth.height] as [number, number]);
      expect(maskIoU(polygonsToMask([{ exterior, holes: [] }], a.truth.width, a.truth.height), a.truth)).toBeGreaterThanOrEqual(0.99);
      await readFile(join(dir, "images", a.image));
    }
  });

  it("VOC: JPEGs, XML objects with 1-based boxes, SegmentationObject PNGs whose pixels are instance numbers", async () => {
    const dir = await extract("voc");
    const stems = (await readFile(join(dir, "ImageSets/Segmentation/default.txt"), "utf8")).trim().split("\n");
    expect(stems).toHaveLength(3);
    for (const stem of stems) {
      expect((await sharp(join(dir, "JPEGImages", `${stem}.jpg`)).metadata()).format).toBe("jpeg");
      const xml = await readFile(join(dir, "Annotations", `${stem}.xml`), "utf8");
      const objects = [...xml.matchAll(/<name>(.*?)<\/name>[\s\S]*?<xmin>(\d+)<\/xmin><ymin>(\d+)<\/ymin><xmax>(\d+)<\/xmax><ymax>(\d+)<\/ymax>/g)];
      const mine = accepted.filter((a) => a.image.startsWith(stem));
      expect(objects.map((o) => o[1])).toEqual(mine.map((a) => a.class.replace(/&/g, "&#38;").replace(/"/g, "&#34;")));
      const pixels = await sharp(join(dir, "SegmentationObject", `${stem}.png`)).extractChannel(0).raw().toBuffer();
      mine.forEach((a, i) => {
        const [x, y, w, h] = maskBBox(a.truth);
        expect(objects[i]!.slice(2).map(Number)).toEqual([x + 1, y + 1, x + w, y + h]);
        const instance = Uint8Array.from(pixels, (v) => (v === i + 1 ? 1 : 0));
        expect(instance).toEqual(a.truth.data);
      });
    }
  });

  it("refuses a mask of another size, an empty mask, a class name that is too long, an unknown format", async () => {
    const small = await loadScene("small");
    const empty = { width: small.width, height: small.height, data: new Uint8Array(small.width * small.height) };
    const cases: [Record<string, FieldValue>, number, string][] = [
      [{ image: small.bytes, rle: JSON.stringify(encodeRle({ width: 10, height: 10, data: new Uint8Array(100).fill(1) })) }, 400, "MASK_INVALID"],
      [{ image: small.bytes, rle: JSON.stringify(encodeRle(empty)) }, 400, "MASK_INVALID"],
      [{ image: small.bytes, rle: JSON.stringify(encodeRle(small.truth(1))), class: "x".repeat(65) }, 400, "REQUEST_INVALID"],
      [{ rle: JSON.stringify(encodeRle(small.truth(1))) }, 400, "REQUEST_INVALID"],
    ];
    for (const [fields, status, code] of cases) {
      const res = await postForm(`${url}/v1/annotations`, fields);
      expect([res.status, res.body.error?.code]).toEqual([status, code]);
    }
    const bad = await request(`${url}/v1/export?format=bmp`);
    expect([bad.status, bad.body.error.code]).toEqual([400, "REQUEST_INVALID"]);
    expect((await readdir(join(dataset, "annotations"))).filter((f) => f.endsWith(".json"))).toHaveLength(5);
  });

  it("without a dataset folder the annotation routes do not exist", async () => {
    const bare = await startServer({ engine: new Promise<SegmentEngine>(() => {}) });
    try {
      expect((await request(`${bare.url}/v1/export?format=coco`)).status).toBe(404);
    } finally {
      await bare.app.close();
    }
  });
});
