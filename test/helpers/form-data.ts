/** A body as undici (Node's fetch) encodes a FormData, with its Content-Type. */
export async function encodeForm(form: FormData): Promise<{ body: Buffer; contentType: string }> {
  const response = new Response(form);
  return { body: Buffer.from(await response.arrayBuffer()), contentType: response.headers.get("content-type")! };
}

/** The parts as undici's own multipart parser reads them: the reference the agent's split is compared with. */
export async function undiciParts(body: Buffer, contentType: string): Promise<{ name: string; filename?: string; data: Buffer }[]> {
  const form = await new Response(new Uint8Array(body), { headers: { "content-type": contentType } }).formData();
  const out: { name: string; filename?: string; data: Buffer }[] = [];
  for (const [name, value] of form) {
    if (typeof value === "string") out.push({ name, data: Buffer.from(value) });
    else out.push({ name, filename: value.name, data: Buffer.from(await value.arrayBuffer()) });
  }
  return out;
}
