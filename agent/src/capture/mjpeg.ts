import { authHeaders, reconnecting, SourceState } from "./health.ts";
import type { Frame, FrameSource, SourceHealth } from "./source.ts";

export interface HttpCameraOptions {
  cameraId: string;
  url: string;
  headers?: Record<string, string>;
  username?: string;
  password?: string;
  /** For connecting and for each read: a stream that goes quiet this long is reconnected. */
  timeoutMs: number;
  maxFrameBytes: number;
}

const CRLF2 = Buffer.from("\r\n\r\n");

/**
 * Splits a `multipart/x-mixed-replace` body into its parts' bodies. A part's Content-Length is
 * used when given (ESP32-CAM sends it); otherwise the part runs to the next boundary. Parts
 * larger than the limit are skipped and counted.
 */
export class MultipartSplitter {
  private buf: Buffer = Buffer.alloc(0);
  private readonly delimiter: Buffer;
  dropped = 0;

  constructor(
    boundary: string,
    private readonly maxPartBytes: number,
  ) {
    // Cameras differ on whether the header's boundary already carries the leading "--".
    this.delimiter = Buffer.from(boundary.startsWith("--") ? boundary : `--${boundary}`);
  }

  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const parts: Buffer[] = [];
    for (;;) {
      const start = this.buf.indexOf(this.delimiter);
      if (start < 0) {
        this.keepTail(this.delimiter.length);
        break;
      }
      const headersEnd = this.buf.indexOf(CRLF2, start);
      if (headersEnd < 0) {
        this.buf = this.buf.subarray(start);
        if (this.buf.length > 64 * 1024) this.skip(this.delimiter.length);
        break;
      }
      const headers = this.buf.toString("latin1", start + this.delimiter.length, headersEnd);
      const bodyStart = headersEnd + 4;
      const declared = /content-length:\s*(\d+)/i.exec(headers);
      let bodyEnd: number;
      if (declared) {
        bodyEnd = bodyStart + Number(declared[1]);
        if (Number(declared[1]) > this.maxPartBytes) {
          this.skip(start + this.delimiter.length);
          continue;
        }
        if (bodyEnd > this.buf.length) {
          this.buf = this.buf.subarray(start);
          break;
        }
      } else {
        const nextDelimiter = this.buf.indexOf(this.delimiter, bodyStart);
        if (nextDelimiter < 0) {
          this.buf = this.buf.subarray(start);
          if (this.buf.length > this.maxPartBytes) this.skip(this.delimiter.length);
          break;
        }
        bodyEnd = nextDelimiter;
        while (bodyEnd > bodyStart && (this.buf[bodyEnd - 1] === 0x0a || this.buf[bodyEnd - 1] === 0x0d)) bodyEnd--;
      }
      parts.push(Buffer.from(this.buf.subarray(bodyStart, bodyEnd)));
      this.buf = this.buf.subarray(bodyEnd);
    }
    return parts;
  }

  /** Drops an oversized part: resumes at the next delimiter after `from`. */
  private skip(from: number): void {
    this.dropped++;
    const next = this.buf.indexOf(this.delimiter, from);
    this.buf = next < 0 ? Buffer.alloc(0) : this.buf.subarray(next);
  }

  private keepTail(n: number): void {
    if (this.buf.length > n) this.buf = this.buf.subarray(this.buf.length - n);
  }
}

/** Reads a response body, failing when no bytes arrive for `timeoutMs`. */
export async function* readWithIdleTimeout(body: ReadableStream<Uint8Array>, timeoutMs: number, what: string): AsyncIterable<Buffer> {
  const reader = body.getReader();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no data for ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        const { done, value } = await Promise.race([reader.read(), idle]);
        if (done) return;
        yield Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** An MJPEG stream over HTTP, e.g. an ESP32-CAM's `http://CAM:81/stream`. */
export class MjpegSource implements FrameSource {
  readonly cameraId: string;
  readonly live = true;
  private readonly state = new SourceState();
  private seq = 0;

  constructor(private readonly options: HttpCameraOptions) {
    this.cameraId = options.cameraId;
  }

  health(): SourceHealth {
    return this.state.snapshot();
  }

  frames(signal: AbortSignal): AsyncIterable<Frame> {
    return reconnecting(this.state, signal, (s) => this.connect(s));
  }

  private async *connect(signal: AbortSignal): AsyncIterable<Frame> {
    const o = this.options;
    // The timeout covers connecting only: the body is a stream that never ends by design.
    const connecting = new AbortController();
    const timer = setTimeout(() => connecting.abort(new Error(`no answer in ${o.timeoutMs} ms`)), o.timeoutMs);
    const res = await fetch(o.url, { headers: authHeaders(o.headers, o.username, o.password), signal: AbortSignal.any([signal, connecting.signal]) })
      .catch((err: Error) => {
        throw new Error(`GET ${o.url}: ${(err.cause as Error | undefined)?.message ?? err.message}`);
      })
      .finally(() => clearTimeout(timer));
    if (!res.ok || !res.body) throw new Error(`GET ${o.url} answered ${res.status} ${res.statusText}`);
    const type = res.headers.get("content-type") ?? "";
    const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
    if (!/^multipart\//i.test(type) || !boundary) {
      await res.body.cancel();
      throw new Error(`GET ${o.url} is not an MJPEG stream (Content-Type "${type}", want multipart/x-mixed-replace with a boundary)`);
    }
    this.state.connected = true;
    const splitter = new MultipartSplitter(boundary, o.maxFrameBytes);
    let dropped = 0;
    for await (const chunk of readWithIdleTimeout(res.body, o.timeoutMs, `GET ${o.url}`)) {
      const parts = splitter.push(chunk);
      this.state.badFrames += splitter.dropped - dropped;
      dropped = splitter.dropped;
      for (const bytes of parts) yield { cameraId: this.cameraId, seq: this.seq++, capturedAt: new Date(), bytes };
    }
  }
}
