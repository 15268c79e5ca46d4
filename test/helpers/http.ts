import { deflateSync, crc32 } from "node:zlib";
import type { Frame } from "../../agent/src/capture/source.ts";
import type { CameraProvider, CameraResult, CameraStatus } from "../../agent/src/http/cameras.ts";
import { maskFromPng } from "../../agent/src/segment/formats/index.ts";
import type { BinaryMask } from "../../agent/src/segment/mask.ts";

export interface ApiResponse {
  status: number;
  headers: Headers;
  // Answers are JSON of several shapes (or bytes); each test reads the fields it checks.
  body: any;
}

export type FieldValue = string | Uint8Array | { bytes: Uint8Array; filename: string; type?: string };

/** A multipart form as browsers, curl and requests send it: Uint8Arrays become file parts. */
export function form(fields: Record<string, FieldValue | FieldValue[]>): FormData {
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (typeof v === "string") data.append(name, v);
      else if (v instanceof Uint8Array) data.append(name, new Blob([new Uint8Array(v)]), `${name}.bin`);
      else data.append(name, new Blob([new Uint8Array(v.bytes)], v.type ? { type: v.type } : {}), v.filename);
    }
  }
  return data;
}

/** One real HTTP request; the body is parsed as JSON when the answer says it is JSON. */
export async function request(url: string, init: RequestInit & { token?: string } = {}): Promise<ApiResponse> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("Authorization", `Bearer ${init.token}`);
  const res = await fetch(url, { ...init, headers });
  const type = res.headers.get("content-type") ?? "";
  const body = type.includes("json") ? await res.json() : type.startsWith("text/") ? await res.text() : Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body };
}

export async function postForm(url: string, fields: Record<string, FieldValue | FieldValue[]>, token?: string): Promise<ApiResponse> {
  return request(url, { method: "POST", body: form(fields), ...(token ? { token } : {}) });
}

export async function decodeMask(base64: string): Promise<BinaryMask> {
  return maskFromPng(Buffer.from(base64, "base64"));
}

/** Cameras over fixture images: each id delivers one fixed frame; `pending` ones have none yet. */
export class FixtureCameras implements CameraProvider {
  constructor(
    private readonly frames: Record<string, Buffer>,
    private readonly pending: string[] = [],
    private readonly unhealthy: string[] = [],
  ) {}

  list(): CameraStatus[] {
    return [...Object.keys(this.frames), ...this.pending].map((id) => ({ id, healthy: !this.unhealthy.includes(id) }));
  }

  latestFrame(id: string): Frame | undefined {
    const bytes = this.frames[id];
    return bytes ? { cameraId: id, seq: 0, capturedAt: new Date(0), bytes } : undefined;
  }

  /** Fixture cameras have no model behind them: nothing is ever segmented. */
  latestResult(): CameraResult | undefined {
    return undefined;
  }
}

function chunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/**
 * A complete, valid 1-bit greyscale PNG of side x side black pixels: a few hundred KB on the
 * wire that would decode to side² pixels (a decompression bomb at 30000).
 */
export function pngBomb(side: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(side, 0);
  ihdr.writeUInt32BE(side, 4);
  ihdr.set([1, 0, 0, 0, 0], 8); // bit depth 1, greyscale
  // Each row: filter byte 0, then side/8 bytes of zeros.
  const raw = Buffer.alloc((Math.ceil(side / 8) + 1) * side);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
