import { createHash, randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { SamEdgeError } from "../../errors.ts";
import { encodeRle, type CocoRle } from "../../segment/formats/index.ts";
import { maskArea, type BinaryMask } from "../../segment/mask.ts";
import { inspectImage } from "../../segment/preprocess.ts";
import { HttpError } from "../errors.ts";

/** One accepted mask, as stored: the mask as COCO RLE, its image by file name. */
export interface StoredAnnotation {
  id: string;
  /** File name under the dataset's images/ folder. */
  image: string;
  width: number;
  height: number;
  class: string;
  rle: CocoRle;
  createdAt: string;
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
    if (!name || name.length > MAX_CLASS_NAME || /[\u0000-\u001f\u007f]/.test(name)) {
      throw new HttpError("REQUEST_INVALID", `class must be 1 to ${MAX_CLASS_NAME} printable characters, got ${JSON.stringify(className.slice(0, 80))}`);
    }
    if (maskArea(mask) === 0) throw new SamEdgeError("MASK_INVALID", "the mask is empty; accept a mask that covers something");
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

  /** Every annotation, oldest first. */
  async list(): Promise<StoredAnnotation[]> {
    const files = await readdir(this.annotationsDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [];
      throw err;
    });
    const names = files.filter((f) => f.endsWith(".json")).sort();
    return Promise.all(names.map(async (f) => JSON.parse(await readFile(join(this.annotationsDir, f), "utf8")) as StoredAnnotation));
  }

  async image(annotation: StoredAnnotation): Promise<Buffer> {
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
