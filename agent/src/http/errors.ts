import type { FastifyError } from "fastify";
import { isSamEdgeError, type ErrorCode } from "../core/errors.ts";
import type { ApiErrorBody } from "../client/types.ts";

/**
 * Codes only the HTTP layer raises: problems with the request itself rather than with an image,
 * a prompt or the model.
 */
export type HttpErrorCode =
  | "REQUEST_TOO_LARGE"
  | "REQUEST_UNSUPPORTED"
  | "UNAUTHORIZED"
  | "HOST_NOT_ALLOWED"
  | "CROSS_SITE_REQUEST"
  | "RATE_LIMITED"
  | "NOT_FOUND"
  | "MODEL_UPDATE_DISABLED"
  | "INTERNAL";

export type ApiErrorCode = ErrorCode | HttpErrorCode;

/** The one place where an error code becomes an HTTP status. */
export const HTTP_STATUS: Readonly<Record<ApiErrorCode, number>> = {
  IMAGE_NOT_FOUND: 400,
  IMAGE_EMPTY: 400,
  IMAGE_CORRUPT: 400,
  IMAGE_UNSUPPORTED: 415,
  IMAGE_TOO_LARGE: 413,
  PROMPT_INVALID: 400,
  MASK_INVALID: 400,
  // Valid, but over what the agent traces: the mask itself must change, so not a 413.
  MASK_TOO_COMPLEX: 422,
  REQUEST_INVALID: 400,
  REQUEST_TOO_LARGE: 413,
  REQUEST_UNSUPPORTED: 415,
  UNAUTHORIZED: 401,
  // 421 Misdirected Request: the name is not this server's (a DNS-rebinding site's, say).
  HOST_NOT_ALLOWED: 421,
  CROSS_SITE_REQUEST: 403,
  RATE_LIMITED: 429,
  NOT_FOUND: 404,
  CAMERA_NOT_FOUND: 404,
  CAMERA_NO_FRAME: 503,
  CAMERA_NO_RESULT: 503,
  MODEL_LOADING: 503,
  MODEL_NOT_FOUND: 503,
  MODEL_INVALID: 503,
  MODEL_FAILED: 500,
  // A refused update is about the new model set: the agent itself keeps serving the old one.
  MODEL_UPDATE_SOURCE_INVALID: 400,
  MODEL_UPDATE_DISABLED: 403,
  MODEL_UPDATE_BUSY: 409,
  MODEL_UPDATE_CHECKSUM: 422,
  MODEL_UPDATE_INVALID: 422,
  MODEL_UPDATE_SELF_TEST: 422,
  MODEL_UPDATE_FETCH_FAILED: 502,
  MODEL_UPDATE_FAILED: 500,
  CONFIG_INVALID: 500,
  BUSY: 503,
  // The client is gone or its request outlived its expiry: nobody reads these answers.
  REQUEST_CANCELLED: 499,
  REQUEST_EXPIRED: 408,
  INTERNAL: 500,
};

/** An error about the request itself, raised by the HTTP layer (it may use any code, its own or the agent's). */
export class HttpError extends Error {
  override readonly name = "HttpError";

  constructor(
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Fastify's own errors, by their `code`, as ours with a message that says what to fix. */
const FASTIFY_CODES: Readonly<Record<string, [ApiErrorCode, string]>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ["REQUEST_UNSUPPORTED", "this Content-Type is not accepted; send multipart/form-data (or JSON where the route says so)"],
  FST_ERR_CTP_BODY_TOO_LARGE: ["REQUEST_TOO_LARGE", "the request body is over the size limit"],
};

export interface ApiErrorReply {
  status: number;
  body: ApiErrorBody;
}

/**
 * Any thrown value as the status and JSON body to send. Messages of our own errors and of
 * request validation go out as they are; anything unexpected becomes a bare 500, so no stack
 * trace or internal detail ever reaches a client.
 */
export function toApiError(err: unknown): ApiErrorReply {
  const reply = (code: ApiErrorCode, message: string): ApiErrorReply => ({ status: HTTP_STATUS[code], body: { error: { code, message } } });
  if (isSamEdgeError(err) || err instanceof HttpError) return reply(err.code, err.message);
  const fe = err as Partial<FastifyError>;
  if (fe.validation) return reply("REQUEST_INVALID", `${fe.message}; see /openapi.json for the request format`);
  const mapped = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return reply(...mapped);
  // Fastify's other client errors (malformed JSON, bad multipart framing) carry a 4xx status.
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) return reply("REQUEST_INVALID", fe.message ?? "bad request");
  return reply("INTERNAL", "internal error; the agent's log has the details");
}
