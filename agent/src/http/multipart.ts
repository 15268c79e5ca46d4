import type { FastifyInstance, FastifyRequest } from "fastify";
import { HttpError } from "./errors.ts";
import { fieldText, FormDataError, multipartBoundary, splitFormData, type FormPart } from "./form-data.ts";
import { FIELD_SIZE_LIMIT, MAX_BATCH, MAX_FORM_FIELDS } from "./limits.ts";

declare module "fastify" {
  interface FastifyContextConfig {
    /** A route's own limit on multipart text fields (mask-to-polygon's RLE can be large). */
    multipartFieldSize?: number;
  }
}

/** What ajv needs to offer for the `isFile` keyword: its addKeyword, as fastify's ajv has it. */
interface KeywordHost {
  addKeyword(definition: {
    keyword: string;
    compile: (schema: unknown, parent: Record<string, unknown>) => (value: unknown) => boolean;
    error: { message: string };
  }): unknown;
}

/**
 * ajv keyword `isFile`: the value is an uploaded file (a Buffer, as the multipart parser puts it
 * in the body). Compiling rewrites the schema to OpenAPI's binary string, so /openapi.json
 * documents the field as a file upload; the validator itself checks for a Buffer.
 */
export function fileKeyword<T extends KeywordHost>(ajv: T): T {
  ajv.addKeyword({
    keyword: "isFile",
    compile: (_schema: unknown, parent: Record<string, unknown>) => {
      parent.type = "string";
      parent.format = "binary";
      delete parent.isFile;
      return (value: unknown) => Buffer.isBuffer(value);
    },
    error: { message: "must be a file part (multipart/form-data with a filename)" },
  });
  return ajv;
}

function tooLarge(limit: number): HttpError {
  return new HttpError("REQUEST_TOO_LARGE", `the request is larger than ${limit} bytes; send at most ${Math.round(limit / 1024 / 1024)} MB in all`);
}

function isMultipart(request: FastifyRequest): boolean {
  return /^multipart\/form-data(;|$)/i.test(request.headers["content-type"]?.trim() ?? "");
}

/**
 * Multipart bodies become plain key/values before validation (files as Buffers, repeated names
 * as arrays in the order sent), so route schemas validate them as they would JSON. The body is
 * read whole under fastify's bodyLimit (from Content-Length up front, and while reading a
 * chunked upload) and then split in place (form-data.ts). A body that cannot be split is the
 * client's error.
 */
export function registerMultipart(app: FastifyInstance, bodyLimit: number): void {
  app.addHook("onRequest", async (request) => {
    if (Number(request.headers["content-length"] ?? 0) > bodyLimit) throw tooLarge(bodyLimit);
  });
  app.addContentTypeParser("multipart/form-data", { parseAs: "buffer", bodyLimit }, (request, body, done) => {
    try {
      done(null, formFields(request, body as Buffer));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
}

function formFields(request: FastifyRequest, body: Buffer): Record<string, unknown> {
  const fieldSize = request.routeOptions.config.multipartFieldSize ?? FIELD_SIZE_LIMIT;
  let parts: FormPart[];
  try {
    parts = splitFormData(body, multipartBoundary(request.headers["content-type"] ?? ""), MAX_BATCH + MAX_FORM_FIELDS);
  } catch (err) {
    if (!(err instanceof FormDataError)) throw err;
    throw new HttpError(
      "REQUEST_INVALID",
      `the multipart body cannot be used (${err.message}); send well-formed multipart/form-data with at most ${MAX_BATCH} images and their fields`,
    );
  }
  const files = parts.filter((p) => p.filename !== undefined);
  if (files.length > MAX_BATCH) throw new HttpError("REQUEST_INVALID", `too many files: at most ${MAX_BATCH} images per request`);
  if (parts.length - files.length > MAX_FORM_FIELDS) throw new HttpError("REQUEST_INVALID", `too many form fields: at most ${MAX_FORM_FIELDS}`);
  const values = new Map<string, unknown[]>();
  for (const part of parts) {
    if (part.filename === undefined && part.data.length > fieldSize) {
      throw new HttpError("REQUEST_TOO_LARGE", `the form field "${part.name}" is over ${fieldSize} bytes; send less in it`);
    }
    let value: unknown;
    try {
      value = part.filename === undefined ? fieldText(part) : part.data;
    } catch (err) {
      if (!(err instanceof FormDataError)) throw err;
      throw new HttpError("REQUEST_INVALID", err.message);
    }
    values.set(part.name, [...(values.get(part.name) ?? []), value]);
  }
  return Object.fromEntries([...values].map(([name, list]) => [name, list.length === 1 ? list[0] : list]));
}

/** For routes that only take multipart: anything else is a 415, not a confusing schema error. */
export async function requireMultipart(request: FastifyRequest): Promise<void> {
  if (!isMultipart(request)) {
    throw new HttpError(
      "REQUEST_UNSUPPORTED",
      `this route takes multipart/form-data, not ${request.headers["content-type"] ?? "a body without a Content-Type"}; send the image as a file part named "image"`,
    );
  }
}
