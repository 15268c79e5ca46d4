import { describe, expect, it } from "vitest";
import { HttpError } from "../agent/src/http/errors.ts";
import { MAX_BATCH, MAX_FORM_FIELDS } from "../agent/src/http/limits.ts";
import { parseForm } from "../agent/src/http/multipart.ts";
import { encodeForm, undiciParts } from "./helpers/form-data.ts";

const FIELD_SIZE = 1024 * 1024;
const binary = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7919) % 256));

/** The parsed fields as undici's parts look: one entry per part, text as UTF-8 bytes. */
function asParts(fields: Record<string, unknown>): { name: string; data: Buffer; file: boolean }[] {
  return Object.entries(fields).flatMap(([name, value]) =>
    (Array.isArray(value) ? value : [value]).map((v) => ({ name, data: Buffer.isBuffer(v) ? v : Buffer.from(v as string), file: Buffer.isBuffer(v) })),
  );
}

async function refusal(body: string | Buffer, contentType = "multipart/form-data; boundary=b", fieldSize = FIELD_SIZE): Promise<HttpError> {
  const err = await parseForm(Buffer.isBuffer(body) ? body : Buffer.from(body, "latin1"), contentType, fieldSize).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HttpError);
  return err as HttpError;
}

// busboy (fastify's) parses the bodies; these check how the agent uses it: the same parts as
// undici's own parser reads, and every limit and malformed body refused with a 4xx that says why.
describe("multipart/form-data bodies", () => {
  it.each<[string, () => FormData]>([
    [
      "a click: an image and its points",
      () => {
        const form = new FormData();
        form.append("image", new Blob([binary]), "portrait.jpg");
        form.append("points", '[{"x":240,"y":320,"label":1}]');
        return form;
      },
    ],
    [
      "a batch: repeated names, empty file and field, UTF-8 and CRLF in values, boundary-like bytes in a file",
      () => {
        const form = new FormData();
        for (let i = 0; i < 3; i++) form.append("image", new Blob([binary.subarray(i * 100)]), `frame-${i}.jpg`);
        form.append("image", new Blob([]), "empty.jpg");
        form.append("note", "");
        form.append("label", "größe \u{1F600}\r\nline two");
        form.append("tricky", new Blob([Buffer.from("\r\n--\r\n-----formdata\r\n\r\n--")]), "tricky.bin");
        return form;
      },
    ],
  ])("%s: the same parts, in the same order, as undici's parser reads", async (_, build) => {
    const { body, contentType } = await encodeForm(build());
    const ours = asParts(await parseForm(body, contentType, FIELD_SIZE));
    const theirs = await undiciParts(body, contentType);
    // Grouped by name: repeated names keep their order.
    const byName = (parts: { name: string; data: Buffer }[]) => parts.map((p) => `${p.name}=${p.data.toString("base64")}`).sort();
    expect(byName(ours)).toEqual(byName(theirs));
    expect(ours.filter((p) => p.name === "image").map((p) => p.data.length)).toEqual(theirs.filter((p) => p.name === "image").map((p) => p.data.length));
  });

  it("reads what other clients send: preamble, epilogue, quoted boundary, a latin1 field", async () => {
    const body = [
      "This is a preamble that is ignored.",
      "--a:b c",
      'Content-Disposition: form-data; name="label"',
      "Content-Type: text/plain; charset=ISO-8859-1",
      "",
      "caf\xe9",
      "--a:b c",
      'Content-Disposition: form-data; name=image; filename="x.jpg"',
      "Content-Type: application/octet-stream",
      "",
      "\r\n--a:b not the boundary\r\n",
      "--a:b c--",
      "epilogue, also ignored",
    ].join("\r\n");
    const fields = await parseForm(Buffer.from(body, "latin1"), 'multipart/form-data; boundary="a:b c"', FIELD_SIZE);
    expect(fields.label).toBe("café");
    expect((fields.image as Buffer).toString("latin1")).toBe("\r\n--a:b not the boundary\r\n");
  });

  it.each<[string, string, string, number, RegExp]>([
    ["no boundary parameter", "--b--", "multipart/form-data", 400, /boundary/i],
    ["a part without a name", '--b\r\nContent-Disposition: form-data; filename="a.jpg"\r\n\r\nv\r\n--b--', "multipart/form-data; boundary=b", 400, /no form-data name/],
    ["a field over the route's limit", '--b\r\nContent-Disposition: form-data; name="points"\r\n\r\n' + "x".repeat(2000) + "\r\n--b--", "multipart/form-data; boundary=b", 413, /"points" is over 1000 bytes/],
    [
      `more than ${MAX_BATCH} files`,
      Array.from({ length: MAX_BATCH + 1 }, (_, i) => `--b\r\nContent-Disposition: form-data; name="image"; filename="${i}.jpg"\r\n\r\nv\r\n`).join("") + "--b--",
      "multipart/form-data; boundary=b",
      400,
      new RegExp(`at most ${MAX_BATCH} images`),
    ],
    [
      `more than ${MAX_FORM_FIELDS} fields`,
      Array.from({ length: MAX_FORM_FIELDS + 1 }, (_, i) => `--b\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\nv\r\n`).join("") + "--b--",
      "multipart/form-data; boundary=b",
      400,
      new RegExp(`at most ${MAX_FORM_FIELDS}`),
    ],
  ])("refuses %s, saying what is wrong", async (_, body, contentType, status, message) => {
    const err = await refusal(body, contentType, 1000);
    expect(err.code === "REQUEST_TOO_LARGE" ? 413 : 400).toBe(status);
    expect(err.message).toMatch(message);
  });
});
