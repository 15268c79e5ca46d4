import { latestFrameOf, type CameraProvider } from "../../capture/cameras.ts";
import { HttpError } from "../errors.ts";

/** The image fields every image route takes: uploaded files, or camera ids. */
export interface SourceFields {
  image?: Buffer | Buffer[];
  camera?: string[];
}

/** The images of a request, in order: uploaded files, or the latest frames of named cameras. */
export function sources(body: SourceFields, cameras: CameraProvider | undefined): (() => Buffer)[] {
  const images = body.image === undefined ? [] : Array.isArray(body.image) ? body.image : [body.image];
  const ids = body.camera ?? [];
  if (images.length && ids.length) throw new HttpError("REQUEST_INVALID", "send image parts or camera fields, not both");
  if (!images.length && !ids.length) {
    throw new HttpError("REQUEST_INVALID", 'no image: send the image as a multipart file part named "image", or a camera id in a "camera" field');
  }
  if (images.length) return images.map((bytes) => () => bytes);
  // Unknown cameras fail their own item: in a batch the other images are still answered.
  return ids.map((id) => () => latestFrameOf(cameras, id).bytes);
}
