import { SamEdgeError } from "../../core/errors.ts";
import type { BinaryMask } from "../mask.ts";

/**
 * Largest mask any format here accepts or produces: the largest image the agent accepts
 * (64 Mi pixels, e.g. 8192x8192), i.e. 64 MiB of mask bytes. Sizes come from untrusted headers
 * (PNG, RLE `size`), so this guards every allocation.
 */
export const MAX_MASK_PIXELS = 64 * 1024 * 1024;

/** Throws MASK_INVALID unless width x height is a size we are willing to allocate. */
export function assertMaskSize(width: number, height: number, source: string): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new SamEdgeError("MASK_INVALID", `${source}: size ${width}x${height} is not valid; width and height must be positive integers`);
  }
  if (width * height > MAX_MASK_PIXELS) {
    throw new SamEdgeError(
      "MASK_INVALID",
      `${source}: size ${width}x${height} is ${width * height} pixels; the limit is ${MAX_MASK_PIXELS} pixels, so send a smaller mask`,
    );
  }
}

/** Throws MASK_INVALID unless the mask's data really holds width x height bytes. */
export function assertValidMask(mask: BinaryMask, source: string): void {
  assertMaskSize(mask.width, mask.height, source);
  if (!(mask.data instanceof Uint8Array) || mask.data.length !== mask.width * mask.height) {
    throw new SamEdgeError(
      "MASK_INVALID",
      `${source}: a ${mask.width}x${mask.height} mask needs ${mask.width * mask.height} data bytes, got ${mask.data?.length ?? "none"}`,
    );
  }
}
