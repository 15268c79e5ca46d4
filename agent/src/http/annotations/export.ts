import { parse } from "node:path";
import sharp from "sharp";
import { decodeRle, maskToPolygons, toCocoSegmentation, toYoloSegmentation } from "../../segment/formats/index.ts";
import { maskArea, maskBBox, type BinaryMask } from "../../segment/mask.ts";
import type { AnnotationStore, StoredAnnotation } from "./store.ts";
import type { ArchiveEntry } from "./tar.ts";

export const EXPORT_FORMATS = ["coco", "yolo", "voc"] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** What every format needs: classes and images numbered in a stable order, each image's annotations. */
interface Dataset {
  classes: string[];
  images: { file: string; width: number; height: number; annotations: StoredAnnotation[] }[];
}

function dataset(annotations: StoredAnnotation[]): Dataset {
  const classes = [...new Set(annotations.map((a) => a.class))].sort();
  const images = new Map<string, Dataset["images"][number]>();
  for (const a of annotations) {
    const image = images.get(a.image) ?? { file: a.image, width: a.width, height: a.height, annotations: [] };
    image.annotations.push(a);
    images.set(a.image, image);
  }
  return { classes, images: [...images.values()] };
}

const json = (name: string, value: unknown): ArchiveEntry => ({ name, data: Buffer.from(JSON.stringify(value, null, 1)) });

/**
 * COCO instance segmentation: annotations.json plus images/. A mask without holes is stored as
 * polygons (what most tools expect); one with holes as RLE, since COCO polygons cannot carry
 * holes. Polygons are the exact pixel outline (tolerance 0).
 */
async function* coco(store: AnnotationStore, data: Dataset): AsyncGenerator<ArchiveEntry> {
  let annotationId = 0;
  const annotations = data.images.flatMap((image, i) =>
    image.annotations.map((a) => {
      const mask = decodeRle(a.rle);
      const polygons = maskToPolygons(mask, { tolerance: 0 });
      const holes = polygons.some((p) => p.holes.length > 0);
      return {
        id: ++annotationId,
        image_id: i + 1,
        category_id: data.classes.indexOf(a.class) + 1,
        segmentation: holes ? a.rle : toCocoSegmentation(polygons),
        area: maskArea(mask),
        bbox: maskBBox(mask),
        iscrowd: 0,
      };
    }),
  );
  yield json("annotations.json", {
    info: { description: "sam-edge annotations", date_created: new Date().toISOString() },
    images: data.images.map((image, i) => ({ id: i + 1, file_name: `images/${image.file}`, width: image.width, height: image.height })),
    annotations,
    categories: data.classes.map((name, i) => ({ id: i + 1, name, supercategory: "object" })),
  });
  for (const image of data.images) yield { name: `images/${image.file}`, data: await store.image(image.annotations[0]!) };
}

/** Ultralytics YOLO segmentation: images/, labels/ (one .txt per image) and data.yaml. Holes are not representable. */
async function* yolo(store: AnnotationStore, data: Dataset): AsyncGenerator<ArchiveEntry> {
  // JSON strings are valid YAML scalars: class names need no further escaping.
  const names = data.classes.map((name, i) => `  ${i}: ${JSON.stringify(name)}`).join("\n");
  yield { name: "data.yaml", data: Buffer.from(`path: .\ntrain: images\nval: images\nnames:\n${names}\n`) };
  for (const image of data.images) {
    const lines = image.annotations.flatMap((a) =>
      toYoloSegmentation(maskToPolygons(decodeRle(a.rle), { tolerance: 0 }), image.width, image.height, data.classes.indexOf(a.class)),
    );
    yield { name: `images/${image.file}`, data: await store.image(image.annotations[0]!) };
    yield { name: `labels/${parse(image.file).name}.txt`, data: Buffer.from(lines.join("\n") + "\n") };
  }
}

const xmlEscape = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A greyscale PNG whose pixel values are indices (VOC's SegmentationObject / SegmentationClass). */
async function indexPng(width: number, height: number, layers: { mask: BinaryMask; index: number }[]): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height);
  for (const { mask, index } of layers) {
    // VOC keeps 255 for "void"; more instances than that cannot be written in one byte.
    if (index > 254) throw new RangeError(`VOC index PNGs hold at most 254 instances or classes per image, not ${index}`);
    for (let i = 0; i < pixels.length; i++) if (mask.data[i]) pixels[i] = index;
  }
  return sharp(pixels, { raw: { width, height, channels: 1 } }).toColourspace("b-w").png().toBuffer();
}

/**
 * Pascal VOC: JPEGImages/, Annotations/ (XML with 1-based inclusive boxes), SegmentationObject/
 * (pixel = instance number in the image's XML order) and SegmentationClass/ (pixel = class
 * number, 1-based in labels.txt order), ImageSets/Segmentation/default.txt. Where masks
 * overlap, the later annotation wins, as VOC has one label per pixel.
 */
async function* voc(store: AnnotationStore, data: Dataset): AsyncGenerator<ArchiveEntry> {
  yield { name: "labels.txt", data: Buffer.from(["background", ...data.classes].join("\n") + "\n") };
  const stems: string[] = [];
  for (const image of data.images) {
    const stem = parse(image.file).name;
    stems.push(stem);
    const bytes = await store.image(image.annotations[0]!);
    yield { name: `JPEGImages/${stem}.jpg`, data: image.file.endsWith(".jpg") ? bytes : await sharp(bytes).flatten({ background: "#ffffff" }).jpeg({ quality: 95 }).toBuffer() };
    const masks = image.annotations.map((a) => decodeRle(a.rle));
    const objects = image.annotations.map((a, i) => {
      const [x, y, w, h] = maskBBox(masks[i]!);
      return [
        "  <object>",
        `    <name>${xmlEscape(a.class)}</name>`,
        "    <pose>Unspecified</pose>",
        "    <truncated>0</truncated>",
        "    <difficult>0</difficult>",
        `    <bndbox><xmin>${x + 1}</xmin><ymin>${y + 1}</ymin><xmax>${x + w}</xmax><ymax>${y + h}</ymax></bndbox>`,
        "  </object>",
      ].join("\n");
    });
    const xml = [
      "<annotation>",
      "  <folder>JPEGImages</folder>",
      `  <filename>${stem}.jpg</filename>`,
      `  <size><width>${image.width}</width><height>${image.height}</height><depth>3</depth></size>`,
      "  <segmented>1</segmented>",
      ...objects,
      "</annotation>",
    ].join("\n");
    yield { name: `Annotations/${stem}.xml`, data: Buffer.from(xml + "\n") };
    yield { name: `SegmentationObject/${stem}.png`, data: await indexPng(image.width, image.height, masks.map((mask, i) => ({ mask, index: i + 1 }))) };
    const classLayers = masks.map((mask, i) => ({ mask, index: data.classes.indexOf(image.annotations[i]!.class) + 1 }));
    yield { name: `SegmentationClass/${stem}.png`, data: await indexPng(image.width, image.height, classLayers) };
  }
  yield { name: "ImageSets/Segmentation/default.txt", data: Buffer.from(stems.join("\n") + "\n") };
}

const WRITERS: Record<ExportFormat, (store: AnnotationStore, data: Dataset) => AsyncGenerator<ArchiveEntry>> = { coco, yolo, voc };

/** The files of the dataset in one format, one after another, for an archive. */
export function exportEntries(store: AnnotationStore, annotations: StoredAnnotation[], format: ExportFormat): AsyncGenerator<ArchiveEntry> {
  return WRITERS[format](store, dataset(annotations));
}
