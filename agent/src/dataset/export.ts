import { randomUUID } from "node:crypto";
import { createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { join, parse } from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { createGzip } from "node:zlib";
import sharp from "sharp";
import { pack as tarPack } from "tar-stream";
import { encodeRle, maskToPolygons, toCocoSegmentation, toYoloSegmentation } from "../segment/formats/index.ts";
import { maskArea, maskBBox, type BinaryMask } from "../segment/mask.ts";
import type { AnnotationRecord, AnnotationStore, UnreadableAnnotation } from "./store.ts";

export const EXPORT_FORMATS = ["coco", "yolo", "voc"] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** A file of the archive: bytes in memory, or a file on disk streamed into it. */
type ArchiveEntry = { name: string; data: Buffer } | { name: string; file: string };

/** `export-report.json`: what the archive holds, and every annotation left out with the reason. */
export const REPORT_FILE = "export-report.json";

interface Report {
  format: ExportFormat;
  exported: number;
  skipped: { annotation: string; reason: string }[];
}

/** What every format needs: classes and images numbered in a stable order, each image's annotations. */
interface Dataset {
  classes: string[];
  images: { file: string; width: number; height: number; annotations: AnnotationRecord[] }[];
}

function dataset(annotations: AnnotationRecord[]): Dataset {
  const classes = [...new Set(annotations.map((a) => a.class))].sort();
  const images = new Map<string, Dataset["images"][number]>();
  for (const a of annotations) {
    const image = images.get(a.image) ?? { file: a.image, width: a.width, height: a.height, annotations: [] };
    image.annotations.push(a);
    images.set(a.image, image);
  }
  return { classes, images: [...images.values()] };
}

/** What a writer is given: one annotation's mask at a time, and a place to record what it leaves out. */
interface Context {
  store: AnnotationStore;
  data: Dataset;
  report: Report;
  tmpDir: string;
}

/**
 * Each annotation's mask in turn (only one is held at a time), or its failure in the report:
 * an annotation that cannot be exported must not fail the rest of the archive.
 */
async function* masks(ctx: Context, annotations: AnnotationRecord[]): AsyncGenerator<{ a: AnnotationRecord; mask: BinaryMask }> {
  for (const a of annotations) {
    let mask: BinaryMask;
    try {
      mask = await ctx.store.mask(a);
      if (mask.width !== a.width || mask.height !== a.height) throw new Error(`its mask is ${mask.width}x${mask.height}, its image ${a.width}x${a.height}`);
    } catch (err) {
      ctx.report.skipped.push({ annotation: a.id, reason: (err as Error).message });
      continue;
    }
    yield { a, mask };
  }
}

/** Runs `fn` for one annotation; a failure (e.g. MASK_TOO_COMPLEX) is recorded and the annotation skipped. */
function tryEach<T>(ctx: Context, a: AnnotationRecord, fn: () => T): T | undefined {
  try {
    const out = fn();
    ctx.report.exported++;
    return out;
  } catch (err) {
    ctx.report.skipped.push({ annotation: a.id, reason: (err as Error).message });
    return undefined;
  }
}

const json = (name: string, value: unknown): ArchiveEntry => ({ name, data: Buffer.from(JSON.stringify(value, null, 1)) });

function write(out: WriteStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => (out.write(text) ? resolve() : out.once("drain", () => resolve()).once("error", reject)));
}

/**
 * COCO instance segmentation: annotations.json plus images/. A mask without holes is stored as
 * polygons (what most tools expect); one with holes as RLE, since COCO polygons cannot carry
 * holes. Polygons are the exact pixel outline (tolerance 0). annotations.json is written to a
 * temporary file one annotation at a time, so a large dataset is never whole in memory.
 */
async function* coco(ctx: Context): AsyncGenerator<ArchiveEntry> {
  const { data } = ctx;
  const path = join(ctx.tmpDir, `coco-${randomUUID()}.json`);
  const out = createWriteStream(path);
  const closed = new Promise<void>((resolve, reject) => out.once("close", () => resolve()).once("error", reject));
  try {
    const head = {
      info: { description: "sam-edge annotations", date_created: new Date().toISOString() },
      images: data.images.map((image, i) => ({ id: i + 1, file_name: `images/${image.file}`, width: image.width, height: image.height })),
      categories: data.classes.map((name, i) => ({ id: i + 1, name, supercategory: "object" })),
    };
    await write(out, JSON.stringify(head).slice(0, -1) + ',"annotations":[\n');
    let annotationId = 0;
    for (const [i, image] of data.images.entries()) {
      for await (const { a, mask } of masks(ctx, image.annotations)) {
        const entry = tryEach(ctx, a, () => {
          const polygons = maskToPolygons(mask, { tolerance: 0 });
          const holes = polygons.some((p) => p.holes.length > 0);
          return {
            id: annotationId + 1,
            image_id: i + 1,
            category_id: data.classes.indexOf(a.class) + 1,
            segmentation: holes ? encodeRle(mask) : toCocoSegmentation(polygons),
            area: maskArea(mask),
            bbox: maskBBox(mask),
            iscrowd: 0,
          };
        });
        if (!entry) continue;
        await write(out, `${annotationId++ ? ",\n" : ""}${JSON.stringify(entry)}`);
      }
    }
    await write(out, "\n]}\n");
    out.end();
    await closed;
    yield { name: "annotations.json", file: path };
    for (const image of data.images) yield { name: `images/${image.file}`, data: await ctx.store.image(image.annotations[0]!) };
  } finally {
    out.destroy();
    await rm(path, { force: true });
  }
}

/** Ultralytics YOLO segmentation: images/, labels/ (one .txt per image) and data.yaml. Holes are not representable. */
async function* yolo(ctx: Context): AsyncGenerator<ArchiveEntry> {
  const { data } = ctx;
  // JSON strings are valid YAML scalars: class names need no further escaping.
  const names = data.classes.map((name, i) => `  ${i}: ${JSON.stringify(name)}`).join("\n");
  yield { name: "data.yaml", data: Buffer.from(`path: .\ntrain: images\nval: images\nnames:\n${names}\n`) };
  for (const image of data.images) {
    const lines: string[] = [];
    for await (const { a, mask } of masks(ctx, image.annotations)) {
      const cls = data.classes.indexOf(a.class);
      lines.push(...(tryEach(ctx, a, () => toYoloSegmentation(maskToPolygons(mask, { tolerance: 0 }), image.width, image.height, cls)) ?? []));
    }
    yield { name: `images/${image.file}`, data: await ctx.store.image(image.annotations[0]!) };
    yield { name: `labels/${parse(image.file).name}.txt`, data: Buffer.from(lines.join("\n") + "\n") };
  }
}

const xmlEscape = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A greyscale PNG whose pixel values are indices (VOC's SegmentationObject / SegmentationClass). */
function indexPng(width: number, height: number, pixels: Buffer): Promise<Buffer> {
  return sharp(pixels, { raw: { width, height, channels: 1 } }).toColourspace("b-w").png().toBuffer();
}

/**
 * Pascal VOC: JPEGImages/, Annotations/ (XML with 1-based inclusive boxes), SegmentationObject/
 * (pixel = instance number in the image's XML order) and SegmentationClass/ (pixel = class
 * number, 1-based in labels.txt order), ImageSets/Segmentation/default.txt. Where masks
 * overlap, the later annotation wins, as VOC has one label per pixel. Masks are painted into
 * the two index images one at a time.
 */
async function* voc(ctx: Context): AsyncGenerator<ArchiveEntry> {
  const { data } = ctx;
  yield { name: "labels.txt", data: Buffer.from(["background", ...data.classes].join("\n") + "\n") };
  const stems: string[] = [];
  for (const image of data.images) {
    const stem = parse(image.file).name;
    stems.push(stem);
    const bytes = await ctx.store.image(image.annotations[0]!);
    yield { name: `JPEGImages/${stem}.jpg`, data: image.file.endsWith(".jpg") ? bytes : await sharp(bytes).flatten({ background: "#ffffff" }).jpeg({ quality: 95 }).toBuffer() };
    const objects = Buffer.alloc(image.width * image.height);
    const classes = Buffer.alloc(image.width * image.height);
    const xmlObjects: string[] = [];
    for await (const { a, mask } of masks(ctx, image.annotations)) {
      // VOC keeps 255 for "void"; more instances than that cannot be written in one byte.
      const instance = xmlObjects.length + 1;
      const box = tryEach(ctx, a, () => {
        if (instance > 254) throw new RangeError(`VOC index PNGs hold at most 254 instances per image; this is number ${instance}`);
        return maskBBox(mask);
      });
      if (!box) continue;
      const cls = data.classes.indexOf(a.class) + 1;
      for (let i = 0; i < objects.length; i++) {
        if (mask.data[i]) {
          objects[i] = instance;
          classes[i] = cls;
        }
      }
      const [x, y, w, h] = box;
      xmlObjects.push(
        [
          "  <object>",
          `    <name>${xmlEscape(a.class)}</name>`,
          "    <pose>Unspecified</pose>",
          "    <truncated>0</truncated>",
          "    <difficult>0</difficult>",
          `    <bndbox><xmin>${x + 1}</xmin><ymin>${y + 1}</ymin><xmax>${x + w}</xmax><ymax>${y + h}</ymax></bndbox>`,
          "  </object>",
        ].join("\n"),
      );
    }
    const xml = [
      "<annotation>",
      "  <folder>JPEGImages</folder>",
      `  <filename>${stem}.jpg</filename>`,
      `  <size><width>${image.width}</width><height>${image.height}</height><depth>3</depth></size>`,
      "  <segmented>1</segmented>",
      ...xmlObjects,
      "</annotation>",
    ].join("\n");
    yield { name: `Annotations/${stem}.xml`, data: Buffer.from(xml + "\n") };
    yield { name: `SegmentationObject/${stem}.png`, data: await indexPng(image.width, image.height, objects) };
    yield { name: `SegmentationClass/${stem}.png`, data: await indexPng(image.width, image.height, classes) };
  }
  yield { name: "ImageSets/Segmentation/default.txt", data: Buffer.from(stems.join("\n") + "\n") };
}

const WRITERS: Record<ExportFormat, (ctx: Context) => AsyncGenerator<ArchiveEntry>> = { coco, yolo, voc };

/** The dataset's files in one format, then the report of what was left out. */
async function* entries(store: AnnotationStore, format: ExportFormat, tmpDir: string): AsyncGenerator<ArchiveEntry> {
  const { annotations, unreadable } = await store.list();
  const report: Report = { format, exported: 0, skipped: unreadable.map((u: UnreadableAnnotation) => ({ annotation: u.file, reason: u.reason })) };
  await mkdir(tmpDir, { recursive: true });
  yield* WRITERS[format]({ store, data: dataset(annotations), report, tmpDir });
  yield json(REPORT_FILE, report);
}

/**
 * A .tar.gz of the dataset in `format`, produced as it is read: at most one annotation's mask
 * and one image are in memory at a time. An entry that fails mid-way destroys the stream, so
 * the client sees a cut download rather than a truncated archive that looks complete.
 */
export function exportArchive(store: AnnotationStore, format: ExportFormat, tmpDir: string): Readable {
  const tar = tarPack();
  const gzip = createGzip();
  const fill = async () => {
    for await (const entry of entries(store, format, tmpDir)) {
      if ("data" in entry) {
        await new Promise<void>((resolve, reject) => tar.entry({ name: entry.name, size: entry.data.length }, entry.data, (err) => (err ? reject(err) : resolve())));
      } else {
        const { size } = await stat(entry.file);
        await pipeline(createReadStream(entry.file), tar.entry({ name: entry.name, size }));
      }
    }
    tar.finalize();
  };
  fill().catch((err: unknown) => tar.destroy(err as Error));
  pipeline(tar, gzip).catch((err: unknown) => gzip.destroy(err as Error));
  return gzip;
}
