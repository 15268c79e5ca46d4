import { pipeline, Readable } from "node:stream";
import { createGzip } from "node:zlib";

export interface ArchiveEntry {
  /** Path inside the archive, "/"-separated, at most 100 bytes. */
  name: string;
  data: Buffer;
}

const BLOCK = 512;

/** A POSIX ustar header: the format every tar (and Python's tarfile) reads. */
function header(name: string, size: number, mtime: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  if (Buffer.byteLength(name) > 100) throw new RangeError(`archive path ${name} is over 100 bytes`);
  const field = (value: string, offset: number, length: number) => h.write(value, offset, length, "utf8");
  const octal = (value: number, offset: number, length: number) => field(value.toString(8).padStart(length - 1, "0") + "\0", offset, length);
  field(name, 0, 100);
  octal(0o644, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(size, 124, 12);
  octal(mtime, 136, 12);
  field(" ".repeat(8), 148, 8);
  field("0", 156, 1);
  field("ustar\0" + "00", 257, 8);
  let sum = 0;
  for (const byte of h) sum += byte;
  field(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  return h;
}

async function* blocks(entries: AsyncIterable<ArchiveEntry>): AsyncGenerator<Buffer> {
  const mtime = Math.floor(Date.now() / 1000);
  for await (const { name, data } of entries) {
    yield header(name, data.length, mtime);
    yield data;
    const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
    if (pad) yield Buffer.alloc(pad);
  }
  // Two empty blocks end the archive.
  yield Buffer.alloc(2 * BLOCK);
}

/**
 * A .tar.gz of the entries, produced as they come: a large dataset is never whole in memory.
 * An entry that fails mid-way destroys the stream, so the client sees a cut download rather
 * than a truncated archive that looks complete.
 */
export function tarGz(entries: AsyncIterable<ArchiveEntry>): Readable {
  const gzip = createGzip();
  pipeline(Readable.from(blocks(entries)), gzip, () => {});
  return gzip;
}
