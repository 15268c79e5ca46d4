import { Busboy, type BusboyHeaders } from "@fastify/busboy";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { HttpError } from "./errors.ts";
import { FIELD_SIZE_LIMIT, MAX_BATCH } from "./limits.ts";

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
 * chunked upload) and then split by busboy in one call, which for the small requests a click
 * sends costs less than a stream per part (the server's own time per request in
 * `bench/http.ts`). A body that cannot be split is the client's error.
 */
export function registerMultipart(app: FastifyInstance, bodyLimit: number): void {
  app.addHook("onRequest", async (request) => {
    if (Number(request.headers["content-length"] ?? 0) > bodyLimit) throw tooLarge(bodyLimit);
  });
  app.addContentTypeParser("multipart/form-data", { parseAs: "buffer", bodyLimit }, (request, body, done) => {
    splitParts(request, body as Buffer).then(
      (fields) => done(null, fields),
      (err: Error) => done(err, undefined),
    );
  });
}

function splitParts(request: FastifyRequest, body: Buffer): Promise<Record<string, unknown>> {
  const fieldSize = request.routeOptions.config.multipartFieldSize ?? FIELD_SIZE_LIMIT;
  return new Promise((resolve, reject) => {
    const values = new Map<string, unknown[]>();
    const add = (name: string, value: unknown) => values.set(name, [...(values.get(name) ?? []), value]);
    // The first problem ends the request; busboy may go on emitting parts (or, once a limit has
    // stopped it, nothing at all), which are then ignored.
    let settled = false;
    const fail = (err: HttpError) => {
      if (!settled) reject(err);
      settled = true;
    };
    const unreadable = (err: unknown) =>
      new HttpError("REQUEST_INVALID", `the multipart body cannot be read (${(err as Error).message}); send well-formed multipart/form-data`);
    let parser: ReturnType<typeof Busboy>;
    try {
      parser = Busboy({
        headers: request.headers as BusboyHeaders,
        limits: { files: MAX_BATCH, fields: MAX_BATCH + 8, fieldSize, parts: 2 * MAX_BATCH + 8 },
      });
    } catch (err) {
      // A multipart Content-Type without a boundary.
      fail(unreadable(err));
      return;
    }
    parser.on("file", (name, stream) => {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", (err) => fail(unreadable(err)));
      stream.on("end", () => add(name, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    });
    parser.on("field", (name, value, _nameTruncated, valueTruncated) => {
      if (valueTruncated) fail(new HttpError("REQUEST_TOO_LARGE", `the form field "${name}" is over ${fieldSize} bytes; send less in it`));
      else add(name, value);
    });
    parser.on("filesLimit", () => fail(new HttpError("REQUEST_INVALID", `too many files: at most ${MAX_BATCH} images per request`)));
    parser.on("fieldsLimit", () => fail(new HttpError("REQUEST_INVALID", "too many form fields")));
    parser.on("partsLimit", () => fail(new HttpError("REQUEST_INVALID", "too many multipart parts")));
    parser.on("error", (err) => fail(unreadable(err)));
    parser.on("finish", () => {
      if (!settled) resolve(Object.fromEntries([...values].map(([name, list]) => [name, list.length === 1 ? list[0] : list])));
      settled = true;
    });
    parser.end(body);
  });
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
