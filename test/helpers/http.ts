import type { Frame } from "../../agent/src/capture/source.ts";
import type { CameraProvider, CameraResult, CameraStatus } from "../../agent/src/capture/cameras.ts";
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
  settingsOf(): undefined {
    return undefined;
  }

  latestResult(): CameraResult | undefined {
    return undefined;
  }
}
