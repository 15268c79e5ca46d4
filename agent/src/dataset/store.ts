import { createHash, randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { SamEdgeError } from "../core/errors.ts";
import { decodeRle, encodeRle, maskToPolygons, type CocoRle } from "../segment/formats/index.ts";
import { maskArea, type BinaryMask } from "../segment/mask.ts";
import { inspectImage } from "../segment/preprocess.ts";
import { jsonSyntaxProblem } from "../core/json.ts";

/** One accepted mask, as listed: everything but the mask, which is read one at a time (`mask`). */
export interface AnnotationRecord {
  id: string;
  /** File name under the dataset's images/ folder. */
  image: string;
  width: number;
  height: number;
  class: string;
  createdAt: string;
}

/** One accepted mask, as stored: the mask as COCO RLE, its image by file name. */
export interface StoredAnnotation extends AnnotationRecord {
  rle: CocoRle;
}

/** A file in annotations/ that cannot be listed (torn, hand-edited): exports name it in their report. */
export interface UnreadableAnnotation {
  file: string;
  reason: string;
}

export const MAX_CLASS_NAME = 64;

/**
 * The dataset folder: images/ (each image once, named by its content, turned upright so that
 * every tool sees the pixels the masks were drawn on) and annotations/ (one JSON per accepted
 * mask). Files are written whole and renamed into place, so a crash never leaves half a file.
 */
export class AnnotationStore {
  constructor(readonly dir: string) {}

  private get imagesDir(): string {
    return join(this.dir, "images");
  }

  private get annotationsDir(): string {
    return join(this.dir, "annotations");
  }

  async add(imageBytes: Uint8Array, mask: BinaryMask, className: string): Promise<StoredAnnotation> {
    const name = className.trim();
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses.
    if (!name || name.length > MAX_CLASS_NAME || /[\u0000-\u001f\u007f]/.test(name)) {
      throw new SamEdgeError("REQUEST_INVALID", `class must be 1 to ${MAX_CLASS_NAME} printable characters, got ${JSON.stringify(className.slice(0, 80))}`);
    }
    if (maskArea(mask) === 0) throw new SamEdgeError("MASK_INVALID", "the mask is empty; accept a mask that covers something");
    // Checked at the door with the limits every export traces with: an accepted mask can always be exported.
    maskToPolygons(mask, { tolerance: 0 });
    const info = await inspectImage(imageBytes);
    if (mask.width !== info.width || mask.height !== info.height) {
      throw new SamEdgeError("MASK_INVALID", `the mask is ${mask.width}x${mask.height} but the image is ${info.width}x${info.height}; send the mask of this image`);
    }
    const upright = info.orientation === 1 ? Buffer.from(imageBytes) : await sharp(imageBytes).rotate().toFormat(info.format).toBuffer();
    const image = `${createHash("sha256").update(upright).digest("hex").slice(0, 20)}.${info.format === "jpeg" ? "jpg" : info.format}`;
    await mkdir(this.imagesDir, { recursive: true });
    await mkdir(this.annotationsDir, { recursive: true });
    const imagePath = join(this.imagesDir, image);
    if (!(await exists(imagePath))) await writeAtomically(imagePath, upright);
    const createdAt = new Date().toISOString();
    // Time first, so that names sort in the order the annotations were accepted.
    const id = `${createdAt.replace(/[-:.]/g, "")}-${randomUUID().slice(0, 8)}`;
    const annotation: StoredAnnotation = { id, image, width: info.width, height: info.height, class: name, rle: encodeRle(mask), createdAt };
    await writeAtomically(join(this.annotationsDir, `${id}.json`), Buffer.from(JSON.stringify(annotation)));
    return annotation;
  }

  /**
   * Every annotation, oldest first, without its mask; files that cannot be read are listed
   * apart. Read one file at a time: only the records stay in memory, never all the masks.
   */
  async list(): Promise<{ annotations: AnnotationRecord[]; unreadable: UnreadableAnnotation[] }> {
    const files = await readdir(this.annotationsDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [];
      throw err;
    });
    const annotations: AnnotationRecord[] = [];
    const unreadable: UnreadableAnnotation[] = [];
    for (const file of files.filter((f) => f.endsWith(".json")).sort()) {
      try {
        const { rle: _rle, ...record } = await this.read(file);
        annotations.push(record);
      } catch (err) {
        unreadable.push({ file: `annotations/${file}`, reason: (err as Error).message });
      }
    }
    return { annotations, unreadable };
  }

  /** An annotation's mask. */
  async mask(annotation: AnnotationRecord): Promise<BinaryMask> {
    const { rle } = await this.read(`${annotation.id}.json`);
    return decodeRle(rle);
  }

  private async read(file: string): Promise<StoredAnnotation> {
    let a: Partial<StoredAnnotation> | null;
    try {
      a = JSON.parse(await readFile(join(this.annotationsDir, file), "utf8")) as Partial<StoredAnnotation> | null;
    } catch (err) {
      throw new Error((err as NodeJS.ErrnoException).code ? `unreadable (${(err as NodeJS.ErrnoException).code})` : jsonSyntaxProblem(err));
    }
    const text = ["id", "image", "class", "createdAt"] as const;
    if (!a || typeof a !== "object" || !text.every((k) => typeof a[k] === "string") || !Number.isInteger(a.width) || !Number.isInteger(a.height) || typeof a.rle !== "object") {
      throw new Error("not an annotation record (id, image, class, createdAt, width, height, rle)");
    }
    if (a.id !== file.replace(/\.json$/, "") || /[/\\]|^\.\.?$/.test(a.image!)) throw new Error("its id or image name does not match its file");
    return a as StoredAnnotation;
  }

  async image(annotation: AnnotationRecord): Promise<Buffer> {
    return readFile(join(this.imagesDir, annotation.image));
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function writeAtomically(path: string, data: Buffer): Promise<void> {
  const tmp = `${path}.${randomUUID().slice(0, 8)}.tmp`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}
