import { DEFAULT_IMAGE_LIMITS } from "../segment/preprocess.ts";

/** Most images one request may carry: the hosted Standard tier's batch size. */
export const MAX_BATCH = 10;

/** Text fields one multipart request may carry: a batch's prompts and flags, with room to spare. */
export const MAX_FORM_FIELDS = MAX_BATCH + 8;

/** An image at the engine's size limit, plus room for the multipart framing and fields around it. */
export const DEFAULT_BODY_LIMIT = DEFAULT_IMAGE_LIMITS.maxBytes + 64 * 1024;

/** Text fields of segment requests (points, box, flags) are small; mask-to-polygon lifts this for RLE. */
export const FIELD_SIZE_LIMIT = 1024 * 1024;
