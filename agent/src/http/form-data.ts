/**
 * multipart/form-data (RFC 7578 over RFC 2046 5.1) split from a body already read whole. The
 * body is in memory under the request size limit before this runs, so a streaming parser's
 * byte-by-byte search buys nothing: parts are found with Buffer.indexOf, and files are views
 * into the body, not copies.
 */

export interface FormPart {
  name: string;
  /** Present (possibly empty) when the part is a file upload. */
  filename?: string;
  /** The part's Content-Type, when it has one. */
  contentType?: string;
  data: Buffer;
}

/** Why a body is not multipart/form-data; the message says what is wrong for the client to fix. */
export class FormDataError extends Error {}

/** Upper bound of one part's header block: form parts carry two short headers. */
const MAX_HEADER_BYTES = 16 * 1024;

/** The boundary parameter of a multipart Content-Type, unquoted. */
export function multipartBoundary(contentType: string): string {
  const match = /;\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))/i.exec(contentType);
  const boundary = match?.[1]?.replace(/\\(.)/g, "$1") ?? match?.[2];
  if (!boundary) throw new FormDataError("the Content-Type has no boundary parameter; send multipart/form-data; boundary=...");
  if (boundary.length > 70) throw new FormDataError(`the boundary is ${boundary.length} characters; RFC 2046 allows at most 70`);
  return boundary;
}

/**
 * The parts in the order sent. `maxParts` ends the split as soon as the body has more parts
 * than that, before any of them is read.
 */
export function splitFormData(body: Buffer, boundary: string, maxParts: number): FormPart[] {
  const dashBoundary = Buffer.from(`--${boundary}`, "latin1");
  const delimiter = Buffer.from(`\r\n--${boundary}`, "latin1");
  // The first boundary opens the body, or ends a preamble that is ignored.
  let at = 0;
  if (!body.subarray(0, dashBoundary.length).equals(dashBoundary)) {
    at = body.indexOf(delimiter) + 2;
    if (at < 2) throw new FormDataError(`no part starts with the boundary "${boundary}" given in the Content-Type`);
  }
  const parts: FormPart[] = [];
  for (;;) {
    let lineEnd = at + dashBoundary.length;
    if (body[lineEnd] === 0x2d && body[lineEnd + 1] === 0x2d) return parts; // "--": the close delimiter
    while (body[lineEnd] === 0x20 || body[lineEnd] === 0x09) lineEnd++;
    if (body[lineEnd] !== 0x0d || body[lineEnd + 1] !== 0x0a) {
      throw new FormDataError(lineEnd >= body.length ? "the body ends without the closing boundary" : "a boundary line does not end in CRLF");
    }
    if (parts.length === maxParts) throw new FormDataError(`it has more than ${maxParts} parts`);
    const headersAt = lineEnd + 2;
    // A part without headers starts with the empty line that ends them.
    const headersEnd = body[headersAt] === 0x0d && body[headersAt + 1] === 0x0a ? headersAt - 2 : body.indexOf("\r\n\r\n", headersAt);
    if (headersEnd < 0) throw new FormDataError(`part ${parts.length + 1}'s headers never end (no empty line after them)`);
    if (headersEnd - headersAt > MAX_HEADER_BYTES) throw new FormDataError(`part ${parts.length + 1}'s headers are over ${MAX_HEADER_BYTES} bytes`);
    const dataAt = headersEnd + 4;
    const next = body.indexOf(delimiter, dataAt);
    if (next < 0) throw new FormDataError(`part ${parts.length + 1} has no boundary after it; the body ends without the closing boundary`);
    parts.push({ ...readHeaders(body.toString("utf8", headersAt, Math.max(headersAt, headersEnd)), parts.length + 1), data: body.subarray(dataAt, next) });
    at = next + 2;
  }
}

/** A part's Content-Disposition (form-data with a name) and Content-Type. */
function readHeaders(block: string, index: number): Omit<FormPart, "data"> {
  const headers = new Map<string, string>();
  let last = "";
  for (const line of block.split("\r\n")) {
    if (!line) continue;
    // A line starting with whitespace continues the one before (obsolete folding).
    if ((line[0] === " " || line[0] === "\t") && last) {
      headers.set(last, `${headers.get(last)} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new FormDataError(`part ${index} has a header line without a name: ${JSON.stringify(line.slice(0, 60))}`);
    last = line.slice(0, colon).trim().toLowerCase();
    headers.set(last, line.slice(colon + 1).trim());
  }
  const disposition = headers.get("content-disposition");
  const params = disposition === undefined ? undefined : dispositionParams(disposition, index);
  const name = params?.get("name");
  if (!params || name === undefined) throw new FormDataError(`part ${index} has no Content-Disposition: form-data; name="..."; name every part`);
  const filename = params.get("filename") ?? params.get("filename*");
  const contentType = headers.get("content-type");
  return { name, ...(filename !== undefined ? { filename } : {}), ...(contentType ? { contentType } : {}) };
}

/** `form-data; name="a"; filename="b"`: the parameters of a form-data disposition, or undefined for another type. */
function dispositionParams(value: string, index: number): Map<string, string> | undefined {
  const type = /^\s*([^\s;]+)\s*/.exec(value);
  if (type?.[1]?.toLowerCase() !== "form-data") return undefined;
  const params = new Map<string, string>();
  const param = /;\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]*))\s*/y;
  param.lastIndex = type[0].length;
  while (param.lastIndex < value.length) {
    const match = param.exec(value);
    if (!match) throw new FormDataError(`part ${index}'s Content-Disposition cannot be read: ${JSON.stringify(value.slice(0, 80))}`);
    params.set(match[1]!.toLowerCase(), match[2] !== undefined ? match[2].replace(/\\(.)/g, "$1") : match[3]!);
  }
  return params;
}

/** A text part's value, in the charset its Content-Type names (UTF-8 when it names none). */
export function fieldText(part: FormPart): string {
  const charset = /;\s*charset\s*=\s*"?([^\s;"]+)/i.exec(part.contentType ?? "")?.[1] ?? "utf-8";
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(charset);
  } catch {
    throw new FormDataError(`the form field "${part.name}" names charset ${JSON.stringify(charset)}, which is not one this agent decodes; send UTF-8`);
  }
  return decoder.decode(part.data);
}
