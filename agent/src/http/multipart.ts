import multipart from "@fastify/multipart";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { HttpError } from "./errors.ts";
import { FIELD_SIZE_LIMIT, MAX_BATCH } from "./limits.ts";

/** The ajv instance fastify validates with (typed through multipart's own ajv plugin). */
type Ajv = Parameters<typeof multipart.ajvFilePlugin>[0];

/**
 * ajv keyword `isFile`: the value is an uploaded file (a Buffer, as registerMultipart puts it
 * in the body). Compiling rewrites the schema to OpenAPI's binary string, so
 * /openapi.json documents the field as a file upload; the validator itself checks for a Buffer.
 */
export function fileKeyword(ajv: Ajv): Ajv {
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

/**
 * Multipart bodies become plain key/values before validation (files as Buffers, repeated names
 * as arrays in the order sent), so route schemas validate them as they would JSON.
 * @fastify/multipart does not apply fastify's bodyLimit, so it is enforced here twice: up front
 * from Content-Length, and while reading, on the sum of all files of a request (chunked uploads
 * declare no length). A body that cannot be parsed is the client's error, whatever the parser
 * throws.
 */
export async function registerMultipart(app: FastifyInstance, bodyLimit: number): Promise<void> {
  app.addHook("onRequest", async (request) => {
    if (Number(request.headers["content-length"] ?? 0) > bodyLimit) throw tooLarge(bodyLimit);
  });
  await app.register(multipart, {
    limits: { fileSize: bodyLimit, files: MAX_BATCH, fields: MAX_BATCH + 8, fieldSize: FIELD_SIZE_LIMIT, parts: 2 * MAX_BATCH + 8 },
  });
  app.addHook("preValidation", async (request) => {
    if (!request.isMultipart()) return;
    const values = new Map<string, unknown[]>();
    let total = 0;
    try {
      for await (const part of request.parts(request.routeOptions.config.multipartOptions)) {
        let value: unknown;
        if (part.type === "file") {
          const chunks: Buffer[] = [];
          for await (const chunk of part.file as AsyncIterable<Buffer>) {
            total += chunk.length;
            if (total > bodyLimit) throw tooLarge(bodyLimit);
            chunks.push(chunk);
          }
          value = Buffer.concat(chunks);
        } else value = part.value;
        values.set(part.fieldname, [...(values.get(part.fieldname) ?? []), value]);
      }
    } catch (err) {
      // Limits (ours and the parser's FST_* errors) keep their own codes.
      if (err instanceof HttpError || String((err as { code?: unknown }).code).startsWith("FST_")) throw err;
      throw new HttpError("REQUEST_INVALID", `the multipart body cannot be read (${(err as Error).message}); send well-formed multipart/form-data`);
    }
    request.body = Object.fromEntries([...values].map(([name, list]) => [name, list.length === 1 ? list[0] : list]));
  });
}

/** For routes that only take multipart: anything else is a 415, not a confusing schema error. */
export async function requireMultipart(request: FastifyRequest): Promise<void> {
  if (!request.isMultipart()) {
    throw new HttpError(
      "REQUEST_UNSUPPORTED",
      `this route takes multipart/form-data, not ${request.headers["content-type"] ?? "a body without a Content-Type"}; send the image as a file part named "image"`,
    );
  }
}
