import { describe, expect, it } from "vitest";
import { fieldText, FormDataError, multipartBoundary, splitFormData, type FormPart } from "../agent/src/http/form-data.ts";
import { encodeForm, undiciParts } from "./helpers/form-data.ts";

function split(body: Buffer | string, contentType: string, maxParts = 100): FormPart[] {
  return splitFormData(Buffer.isBuffer(body) ? body : Buffer.from(body, "latin1"), multipartBoundary(contentType), maxParts);
}

/** Names, filenames and bytes (text fields as their UTF-8 bytes), as comparable plain values. */
function plain(parts: FormPart[]): { name: string; filename?: string; data: Buffer }[] {
  return parts.map((p) => ({ name: p.name, ...(p.filename !== undefined ? { filename: p.filename } : {}), data: p.filename === undefined ? Buffer.from(fieldText(p)) : p.data }));
}

function failure(fn: () => unknown): FormDataError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FormDataError);
    return err as FormDataError;
  }
  throw new Error("expected a FormDataError, but nothing was thrown");
}

const binary = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7919) % 256));

describe("splitting multipart/form-data", () => {
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
  ])("%s: the same parts as undici's parser reads", async (_, build) => {
    const { body, contentType } = await encodeForm(build());
    expect(plain(split(body, contentType))).toEqual(await undiciParts(body, contentType));
  });

  it("files are views into the body, not copies", async () => {
    const form = new FormData();
    form.append("image", new Blob([binary]), "a.jpg");
    const { body, contentType } = await encodeForm(form);
    const [part] = split(body, contentType);
    expect(part!.data.buffer).toBe(body.buffer);
    expect(part!.data.equals(binary)).toBe(true);
  });

  it("reads what other clients send: preamble, epilogue, quoted boundary, padding, folded and odd-case headers, escaped quotes", () => {
    const body = [
      "This is a preamble that is ignored.",
      "--a:b c  ",
      'content-disposition: form-data;',
      ' name="say \\"hi\\""',
      "Content-Type: text/plain; charset=ISO-8859-1",
      "",
      "caf\xe9",
      "--a:b c",
      'Content-Disposition: form-data; name=image; filename=""',
      "Content-Type: application/octet-stream",
      "",
      "\r\n--a:b not the boundary\r\n",
      "--a:b c--",
      "epilogue, also ignored",
    ].join("\r\n");
    const parts = split(body, 'multipart/form-data; boundary="a:b c"');
    expect(parts.map((p) => [p.name, p.filename])).toEqual([
      ['say "hi"', undefined],
      ["image", ""],
    ]);
    expect(fieldText(parts[0]!)).toBe("café");
    expect(parts[1]!.data.toString("latin1")).toBe("\r\n--a:b not the boundary\r\n");
  });

  it("reads the boundary from the Content-Type, quoted or not", () => {
    expect(multipartBoundary("multipart/form-data; boundary=----abc")).toBe("----abc");
    expect(multipartBoundary('multipart/form-data; charset=utf-8; BOUNDARY="x y;z"')).toBe("x y;z");
    expect(failure(() => multipartBoundary("multipart/form-data")).message).toMatch(/no boundary parameter/);
    expect(failure(() => multipartBoundary(`multipart/form-data; boundary=${"b".repeat(71)}`)).message).toMatch(/at most 70/);
  });

  it.each<[string, string, RegExp]>([
    ["no boundary anywhere", "just some text", /no part starts with the boundary/],
    ["no closing boundary", '--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nvalue', /ends without the closing boundary/],
    ["the body ending after a boundary line", "--b", /ends without the closing boundary/],
    ["a boundary line with more after it", '--bx\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n--b--', /does not end in CRLF/],
    ["headers that never end", '--b\r\nContent-Disposition: form-data; name="a"\r\n', /headers never end/],
    ["a header line without a name", "--b\r\nno colon here\r\n\r\nv\r\n--b--", /header line without a name/],
    ["a part without Content-Disposition", "--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--", /no Content-Disposition/],
    ["a part without headers", "--b\r\n\r\nv\r\n--b--", /no Content-Disposition/],
    ["a part that is not form-data", '--b\r\nContent-Disposition: attachment; name="a"\r\n\r\nv\r\n--b--', /no Content-Disposition/],
    ["a part without a name", '--b\r\nContent-Disposition: form-data; filename="a.jpg"\r\n\r\nv\r\n--b--', /no Content-Disposition/],
    ["an unreadable disposition", '--b\r\nContent-Disposition: form-data; name="a\r\n\r\nv\r\n--b--', /cannot be read/],
  ])("refuses %s, saying what is wrong", (_, body, message) => {
    expect(failure(() => split(body, "multipart/form-data; boundary=b")).message).toMatch(message);
  });

  it("refuses headers over 16 KB and more parts than allowed, before reading further", () => {
    const longHeader = `--b\r\nContent-Disposition: form-data; name="a"\r\nX-Padding: ${"x".repeat(17 * 1024)}\r\n\r\nv\r\n--b--`;
    expect(failure(() => split(longHeader, "multipart/form-data; boundary=b")).message).toMatch(/headers are over 16384 bytes/);
    const many = `${Array.from({ length: 5 }, (_, i) => `--b\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\nv\r\n`).join("")}--b--`;
    expect(split(many, "multipart/form-data; boundary=b", 5)).toHaveLength(5);
    expect(failure(() => split(many, "multipart/form-data; boundary=b", 4)).message).toMatch(/more than 4 parts/);
  });

  it("decodes a text field in its named charset, and refuses one it cannot decode", () => {
    const part = (contentType: string): FormPart => ({ name: "label", contentType, data: Buffer.from([0x63, 0x61, 0x66, 0xe9]) });
    expect(fieldText(part("text/plain; charset=latin1"))).toBe("café");
    expect(failure(() => fieldText(part("text/plain; charset=klingon"))).message).toMatch(/charset "klingon".*send UTF-8/);
  });
});
