import type { BBox, BinaryMask } from "../mask.ts";

/**
 * The zlib stream (RFC 1950/1951) of a mask PNG's image data, written straight from the mask's
 * runs. The data is each row's filter byte (0) followed by one byte per pixel, 0 or 255: runs of
 * two values, which deflate holds as the byte once and then copies of the byte before it
 * (distance 1), as zlib's run-length strategy would. Written here because a run costs a few
 * symbols while a general deflater reads every byte: outside the mask's box everything is 0,
 * so only the box is read (a word at a time), no image-sized buffer is made, and the Adler-32
 * checksum is summed per run in closed form.
 */
export function deflateMaskRows(mask: BinaryMask, [bx, by, bw, bh]: BBox): Buffer {
  const { width, height, data } = mask;
  const stride = width + 1;
  const scan = new RowScanner(data);
  const runs = new Runs();
  // Where the current run of zeros began: background and the next row's filter byte join it.
  let zerosFrom = 0;
  for (let y = by; y < by + bh; y++) {
    const row = y * width;
    // A pixel's index in the mask plus this is its byte's position in the data (after the filter byte).
    const toData = y * stride + 1 - row;
    for (let i = row + bx, end = row + bx + bw; i < end; ) {
      const from = scan.nextSet(i, end);
      if (from === end) break;
      i = scan.nextClear(from, end);
      runs.add(0, toData + from - zerosFrom);
      runs.add(255, i - from);
      zerosFrom = toData + i;
    }
  }
  runs.add(0, stride * height - zerosFrom);
  return runs.deflate();
}

/**
 * Finds where runs of set (non-zero) and clear pixels end, four pixels at a time where the
 * mask's data is 4-byte aligned: most of a box is whole words of one or the other.
 */
class RowScanner {
  private readonly words?: Uint32Array;

  constructor(private readonly data: Uint8Array) {
    if (data.byteOffset % 4 === 0) this.words = new Uint32Array(data.buffer, data.byteOffset, data.length >> 2);
  }

  /** The first index in [i, end) whose pixel is set, or end. */
  nextSet(i: number, end: number): number {
    const { data, words } = this;
    if (words) {
      for (; i < end && i & 3; i++) if (data[i]) return i;
      while (i + 4 <= end && words[i >> 2] === 0) i += 4;
    }
    while (i < end && !data[i]) i++;
    return i;
  }

  /** The first index in [i, end) whose pixel is clear, or end. */
  nextClear(i: number, end: number): number {
    const { data, words } = this;
    if (words) {
      for (; i < end && i & 3; i++) if (!data[i]) return i;
      // A word has a zero byte when subtracting 1 from each byte borrows into a byte's top bit that was clear.
      while (i + 4 <= end && ((words[i >> 2]! - 0x01010101) & ~words[i >> 2]! & 0x80808080) === 0) i += 4;
    }
    while (i < end && data[i]) i++;
    return i;
  }
}

const ADLER_BASE = 65521;
const END_OF_BLOCK = 256;
const MAX_CODE_BITS = 15;
/** Copy lengths: the first length of each length symbol 257..285, and how many extra bits follow it (RFC 1951 3.2.5). */
const COPY_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const COPY_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
/** The length symbol of every copy length 3..258. */
const COPY_SYMBOL = (() => {
  const symbols = new Uint16Array(259);
  for (let i = 0; i < COPY_BASE.length; i++) for (let n = COPY_BASE[i]!; n < (COPY_BASE[i + 1] ?? 259); n++) symbols[n] = 257 + i;
  return symbols;
})();
/** The order code-length code lengths are sent in. */
const LENGTH_CODE_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/**
 * A mask's data as deflate tokens (0 and 255 for the byte, 256 + n for a copy of n bytes), then
 * written as one block with Huffman codes fitted to them: masks repeat a few run lengths, which
 * then get short codes.
 */
class Runs {
  private tokens = new Uint16Array(1024);
  private count = 0;
  private adlerA = 1;
  private adlerB = 0;

  /** `length` bytes of `value`: the byte once, then copies of the byte before, 258 at most each. */
  add(value: 0 | 255, length: number): void {
    if (length <= 0) return;
    this.sum(value, length);
    this.push(value);
    let left = length - 1;
    while (left >= 3) {
      let n = left > 258 ? 258 : left;
      // A copy is at least 3 bytes: never leave 1 or 2 behind.
      if (left - n > 0 && left - n < 3) n -= 3;
      this.push(256 + n);
      left -= n;
    }
    for (; left > 0; left--) this.push(value);
  }

  deflate(): Buffer {
    const frequencies = new Array<number>(286).fill(0);
    for (let i = 0; i < this.count; i++) {
      const t = this.tokens[i]!;
      frequencies[t < 256 ? t : COPY_SYMBOL[t - 256]!]!++;
    }
    frequencies[END_OF_BLOCK] = 1;
    const lengths = huffmanLengths(frequencies);
    const codes = canonicalCodes(lengths);
    const out = new BitWriter();
    // zlib header: deflate with a 32 KB window, no dictionary, check bits making it a multiple of 31.
    out.write(0x78, 8);
    out.write(0x01, 8);
    writeBlockHeader(out, lengths);
    // Every copy length's bits in one: the length's code, its extra bits, then distance 1's code
    // (the only one: 1 bit, 0).
    const copyCode = new Uint32Array(259);
    const copyBits = new Uint8Array(259);
    for (let n = 3; n <= 258; n++) {
      const symbol = COPY_SYMBOL[n]!;
      copyCode[n] = codes[symbol]! | ((n - COPY_BASE[symbol - 257]!) << lengths[symbol]!);
      copyBits[n] = lengths[symbol]! + COPY_EXTRA[symbol - 257]! + 1;
    }
    for (let i = 0; i < this.count; i++) {
      const t = this.tokens[i]!;
      if (t < 256) out.write(codes[t]!, lengths[t]!);
      else out.write(copyCode[t - 256]!, copyBits[t - 256]!);
    }
    out.write(codes[END_OF_BLOCK]!, lengths[END_OF_BLOCK]!);
    out.align();
    out.write(this.adlerB >> 8, 8);
    out.write(this.adlerB & 0xff, 8);
    out.write(this.adlerA >> 8, 8);
    out.write(this.adlerA & 0xff, 8);
    return out.bytes();
  }

  private push(token: number): void {
    if (this.count === this.tokens.length) {
      const grown = new Uint16Array(this.tokens.length * 2);
      grown.set(this.tokens);
      this.tokens = grown;
    }
    this.tokens[this.count++] = token;
  }

  /** Adler-32 over `length` bytes of `value`: a grows by length*value, b by length*a plus value*length(length+1)/2. */
  private sum(value: number, length: number): void {
    const n = length % ADLER_BASE;
    const triangle = length % 2 === 0 ? ((length / 2) % ADLER_BASE) * ((length + 1) % ADLER_BASE) : n * (((length + 1) / 2) % ADLER_BASE);
    this.adlerB = (this.adlerB + n * this.adlerA + value * (triangle % ADLER_BASE)) % ADLER_BASE;
    this.adlerA = (this.adlerA + n * value) % ADLER_BASE;
  }
}

/**
 * BFINAL, BTYPE 10 (dynamic codes), then the literal/length code lengths and the one distance
 * code's (RFC 1951 3.2.7), run-length coded: 16 repeats the previous length 3-6 times, 17 and 18
 * write 3-10 and 11-138 zeros.
 */
function writeBlockHeader(out: BitWriter, literalLengths: number[]): void {
  const all = [...literalLengths, 1];
  const tokens: [symbol: number, extra: number, extraBits: number][] = [];
  for (let i = 0; i < all.length; ) {
    const length = all[i]!;
    let run = 1;
    while (i + run < all.length && all[i + run] === length) run++;
    if (length === 0 && run >= 11) {
      run = Math.min(run, 138);
      tokens.push([18, run - 11, 7]);
    } else if (length === 0 && run >= 3) {
      run = Math.min(run, 10);
      tokens.push([17, run - 3, 3]);
    } else if (length !== 0 && run >= 4) {
      run = Math.min(run, 7);
      tokens.push([length, 0, 0], [16, run - 4, 2]);
    } else {
      run = 1;
      tokens.push([length, 0, 0]);
    }
    i += run;
  }
  const codeLengths = new Array<number>(19).fill(0);
  for (const [symbol] of tokens) codeLengths[symbol]!++;
  const lengthLengths = huffmanLengths(codeLengths, 7);
  const lengthCodes = canonicalCodes(lengthLengths);
  let sent = LENGTH_CODE_ORDER.length;
  while (lengthLengths[LENGTH_CODE_ORDER[sent - 1]!] === 0) sent--;
  out.write(1 | (2 << 1), 3);
  out.write(literalLengths.length - 257, 5);
  out.write(0, 5); // one distance code
  out.write(sent - 4, 4);
  for (const symbol of LENGTH_CODE_ORDER.slice(0, sent)) out.write(lengthLengths[symbol]!, 3);
  for (const [symbol, extra, extraBits] of tokens) {
    out.write(lengthCodes[symbol]!, lengthLengths[symbol]!);
    out.write(extra, extraBits);
  }
}

/**
 * Huffman code lengths for the symbols' frequencies, none over `maxBits`: the tree is built by
 * merging the two lightest nodes (leaves in weight order, merged nodes in the order made, so the
 * lightest is at the head of one of the two), and the frequencies are halved until it is shallow
 * enough. A lone symbol gets 1 bit, as the RFC wants.
 */
function huffmanLengths(frequencies: number[], maxBits = MAX_CODE_BITS): number[] {
  const symbols: number[] = [];
  for (let symbol = 0; symbol < frequencies.length; symbol++) if (frequencies[symbol]! > 0) symbols.push(symbol);
  symbols.sort((a, b) => frequencies[a]! - frequencies[b]!);
  const lengths = new Array<number>(frequencies.length).fill(0);
  const n = symbols.length;
  if (n === 1) lengths[symbols[0]!] = 1;
  if (n <= 1) return lengths;
  for (let shift = 0; ; shift++) {
    // Nodes 0..n-1 are the leaves, n..2n-2 the merged nodes; the last is the root.
    const weight = symbols.map((s) => Math.max(1, frequencies[s]! >> shift));
    const parent = new Array<number>(2 * n - 1).fill(0);
    let leaf = 0;
    let merged = n;
    const lightest = (): number => (leaf < n && (merged === weight.length || weight[leaf]! <= weight[merged]!) ? leaf++ : merged++);
    while (weight.length < 2 * n - 1) {
      const a = lightest();
      const b = lightest();
      parent[a] = parent[b] = weight.length;
      weight.push(weight[a]! + weight[b]!);
    }
    const depth = new Array<number>(2 * n - 1).fill(0);
    for (let i = 2 * n - 3; i >= 0; i--) depth[i] = depth[parent[i]!]! + 1;
    if (Math.max(...depth) > maxBits) continue;
    symbols.forEach((s, i) => (lengths[s] = depth[i]!));
    return lengths;
  }
}

/** Canonical Huffman codes for the given lengths (RFC 1951 3.2.2), bit-reversed for the LSB-first stream. */
function canonicalCodes(lengths: number[]): number[] {
  const count = new Array<number>(MAX_CODE_BITS + 1).fill(0);
  for (const l of lengths) if (l) count[l]!++;
  const next = new Array<number>(MAX_CODE_BITS + 1).fill(0);
  for (let bits = 1, code = 0; bits <= MAX_CODE_BITS; bits++) {
    code = (code + count[bits - 1]!) << 1;
    next[bits] = code;
  }
  return lengths.map((l) => {
    if (!l) return 0;
    const code = next[l]!++;
    let reversed = 0;
    for (let i = 0; i < l; i++) reversed |= ((code >> i) & 1) << (l - 1 - i);
    return reversed;
  });
}

/** Bits least significant first, into a buffer that grows as needed. */
class BitWriter {
  private buf = Buffer.allocUnsafe(2048);
  private pos = 0;
  private acc = 0;
  private accBits = 0;

  /** `bits` (at most 24) bits of `value`, so the accumulator stays within 32. */
  write(value: number, bits: number): void {
    this.acc |= value << this.accBits;
    this.accBits += bits;
    if (this.pos + 3 > this.buf.length) {
      const grown = Buffer.allocUnsafe(this.buf.length * 2);
      this.buf.copy(grown, 0, 0, this.pos);
      this.buf = grown;
    }
    while (this.accBits >= 8) {
      this.buf[this.pos++] = this.acc & 0xff;
      this.acc >>>= 8;
      this.accBits -= 8;
    }
  }

  /** Pads to a whole byte with zeros. */
  align(): void {
    if (this.accBits > 0) this.write(0, 8 - this.accBits);
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
