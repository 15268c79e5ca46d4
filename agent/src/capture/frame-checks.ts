import { SamEdgeError } from "../core/errors.ts";
import { sniffFormat } from "../segment/preprocess.ts";

/** Cheap checks before any decoder sees the bytes: a frame that fails one is counted and skipped. */
export function frameProblem(bytes: Buffer, maxBytes: number): SamEdgeError | undefined {
  if (bytes.length === 0) return new SamEdgeError("IMAGE_EMPTY", "the frame is empty");
  if (bytes.length > maxBytes) return new SamEdgeError("IMAGE_TOO_LARGE", `the frame is ${bytes.length} bytes; max_frame_bytes is ${maxBytes}`);
  const format = sniffFormat(bytes);
  if (!format) return new SamEdgeError("IMAGE_UNSUPPORTED", `the frame is not a JPEG, PNG or WebP image`);
  if (format === "jpeg") {
    let end = bytes.length;
    // Some cameras pad frames; only the end-of-image marker before the padding counts.
    while (end > 2 && (bytes[end - 1] === 0x00 || bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
    if (bytes[end - 2] !== 0xff || bytes[end - 1] !== 0xd9) return new SamEdgeError("IMAGE_CORRUPT", "the JPEG is truncated (no end-of-image marker)");
  }
  return undefined;
}
