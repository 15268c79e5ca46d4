import { Busboy, type BusboyInstance } from "@fastify/busboy";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { HttpError } from "./errors.ts";
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

/** Upper bound of one part's header block: form parts carry two short headers. */
const MAX_PART_HEADER_BYTES = 16 * 1024;

function isMultipart(request: FastifyRequest): boolean {
  return /^multipart\/form-data(;|$)/i.test(request.headers["content-type"]?.trim() ?? "");
}

/**
 * Multipart bodies become plain key/values before validation (files as Buffers, repeated names
 * as arrays in the order sent), so route schemas validate them as they would JSON. The body is
 * read whole under fastify's bodyLimit (from Content-Length up front, and while reading a
 * chunked upload) and then parsed by busboy (fastify's own). A body that cannot be parsed is
 * the client's error.
 */
export function registerMultipart(app: FastifyInstance, bodyLimit: number): void {
  app.addHook("onRequest", async (request) => {
    if (Number(request.headers["content-length"] ?? 0) > bodyLimit) throw tooLarge(bodyLimit);
  });
  app.addContentTypeParser("multipart/form-data", { parseAs: "buffer", bodyLimit }, (request, body, done) => {
    const fieldSize = request.routeOptions.config.multipartFieldSize ?? FIELD_SIZE_LIMIT;
    parseForm(body as Buffer, request.headers["content-type"] ?? "", fieldSize).then(
      (fields) => done(null, fields),
      (err: Error) => done(err, undefined),
    );
  });
}

const invalid = (what: string) =>
  new HttpError("REQUEST_INVALID", `the multipart body cannot be used (${what}); send well-formed multipart/form-data with at most ${MAX_BATCH} images and their fields`);

/**
 * A multipart body's fields: text fields as strings, file parts as Buffers, a name sent more
 * than once as an array in the order sent. Limits end the parse at once: at most MAX_BATCH
 * files and MAX_FORM_FIELDS text fields, each at most `fieldSize` bytes.
 */
export function parseForm(body: Buffer, contentType: string, fieldSize: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let parser: BusboyInstance;
    try {
      parser = new Busboy({
        headers: { "content-type": contentType },
        limits: { fieldSize, fields: MAX_FORM_FIELDS, files: MAX_BATCH, parts: MAX_BATCH + MAX_FORM_FIELDS, headerSize: MAX_PART_HEADER_BYTES },
      });
    } catch (err) {
      reject(invalid((err as Error).message));
      return;
    }
    // Each part takes its place when it starts: a file's bytes end after later text fields start.
    const values = new Map<string, unknown[]>();
    const slot = (name: string): ((value: unknown) => void) => {
      const list = values.get(name) ?? [];
      values.set(name, list);
      const at = list.push(undefined) - 1;
      return (value) => (list[at] = value);
    };
    let failed = false;
    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      reject(err);
    };
    parser.on("file", (name, stream, filename) => {
      if (!name) {
        stream.resume();
        return fail(invalid(`a part${filename ? ` (file ${JSON.stringify(filename.slice(0, 60))})` : ""} has no form-data name`));
      }
      const set = slot(name);
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", (err: Error) => fail(invalid(err.message)));
      stream.on("end", () => set(Buffer.concat(chunks)));
    });
    parser.on("field", (name, value, _nameTruncated, valueTruncated) => {
      if (!name) return fail(invalid("a text part has no form-data name"));
      if (valueTruncated) return fail(new HttpError("REQUEST_TOO_LARGE", `the form field "${name.slice(0, 60)}" is over ${fieldSize} bytes; send less in it`));
      slot(name)(value);
    });
    parser.on("filesLimit", () => fail(new HttpError("REQUEST_INVALID", `too many files: at most ${MAX_BATCH} images per request`)));
    parser.on("fieldsLimit", () => fail(new HttpError("REQUEST_INVALID", `too many form fields: at most ${MAX_FORM_FIELDS}`)));
    parser.on("partsLimit", () => fail(new HttpError("REQUEST_INVALID", `too many parts: at most ${MAX_BATCH} images and ${MAX_FORM_FIELDS} fields`)));
    parser.on("error", (err: unknown) => fail(invalid((err as Error).message)));
    parser.on("finish", () => {
      if (!failed) resolve(Object.fromEntries([...values].map(([name, list]) => [name, list.length === 1 ? list[0] : list])));
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
