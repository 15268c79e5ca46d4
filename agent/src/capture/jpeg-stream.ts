/**
 * Cuts a byte stream of back-to-back JPEGs (ffmpeg's image2pipe) into frames by walking the
 * JPEG markers: segment lengths are skipped, entropy-coded data is scanned for the next real
 * marker (0xFF not followed by a stuffed 0x00 or a restart marker), so an 0xFFD9 inside an
 * EXIF thumbnail or segment payload never ends a frame early.
 */
export class JpegSplitter {
  private buf: Buffer = Buffer.alloc(0);
  /** Where parsing resumes in `buf`; frames start at 0 once found. */
  private pos = 0;
  private phase: "seek" | "marker" | "entropy" = "seek";
  /** Bytes skipped or frames cut off: too large, or restarted by a new SOI before their end. */
  dropped = 0;

  constructor(private readonly maxFrameBytes: number) {}

  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    for (;;) {
      const frame = this.next();
      if (frame === undefined) break;
      out.push(frame);
    }
    if (this.phase !== "seek" && this.buf.length > this.maxFrameBytes) this.restart(this.buf.length, true);
    return out;
  }

  private restart(at: number, drop: boolean): void {
    if (drop) this.dropped++;
    this.buf = this.buf.subarray(at);
    this.pos = 0;
    this.phase = "seek";
  }

  private next(): Buffer | undefined {
    const b = this.buf;
    if (this.phase === "seek") {
      const soi = b.indexOf(Buffer.from([0xff, 0xd8]), this.pos);
      if (soi < 0) {
        // Keep a trailing 0xFF: it may be the first half of the next SOI.
        this.restart(b.length > 0 && b[b.length - 1] === 0xff ? b.length - 1 : b.length, false);
        return undefined;
      }
      this.buf = b.subarray(soi);
      this.pos = 2;
      this.phase = "marker";
      return this.next();
    }
    if (this.phase === "entropy") {
      let i = this.pos;
      for (;;) {
        i = b.indexOf(0xff, i);
        if (i < 0 || i + 1 >= b.length) {
          this.pos = i < 0 ? b.length : i;
          return undefined;
        }
        const m = b[i + 1]!;
        if (m === 0x00 || (m >= 0xd0 && m <= 0xd7) || m === 0xff) {
          i += m === 0xff ? 1 : 2;
          continue;
        }
        this.pos = i;
        this.phase = "marker";
        break;
      }
    }
    // phase "marker": b[pos] should be 0xFF starting a marker.
    let p = this.pos;
    while (p < b.length && b[p] === 0xff && b[p + 1] === 0xff) p++; // fill bytes
    if (p + 1 >= b.length) return undefined;
    if (b[p] !== 0xff) {
      // Not a JPEG after all (or corrupt): look for the next SOI after this one.
      this.restart(1, true);
      return this.next();
    }
    const m = b[p + 1]!;
    if (m === 0xd9) {
      if (p + 2 > this.maxFrameBytes) {
        this.restart(p + 2, true);
        return this.next();
      }
      const frame = Buffer.from(b.subarray(0, p + 2));
      this.restart(p + 2, false);
      return frame;
    }
    if (m === 0xd8) {
      // A new image began before this one ended: this one was cut off.
      this.restart(p, true);
      return this.next();
    }
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) {
      this.pos = p + 2;
      return this.next();
    }
    if (p + 4 > b.length) return undefined;
    const length = b.readUInt16BE(p + 2);
    if (p + 2 + length > b.length) {
      this.pos = p;
      return undefined;
    }
    this.pos = p + 2 + length;
    if (m === 0xda) this.phase = "entropy";
    return this.next();
  }
}
