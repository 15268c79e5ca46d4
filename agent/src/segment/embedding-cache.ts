/**
 * A least-recently-used cache bounded both in entries and in bytes: embeddings of big models
 * are large (SAM ViT-B: 4 MiB each), and a Pi has little memory to spare.
 */
export class EmbeddingCache<V> {
  private readonly items = new Map<string, { value: V; bytes: number }>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {}

  get(key: string): V | undefined {
    const item = this.items.get(key);
    if (!item) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    // Re-insert: a Map iterates in insertion order, so the first key is the least recent.
    this.items.delete(key);
    this.items.set(key, item);
    return item.value;
  }

  set(key: string, value: V, bytes: number): void {
    if (this.maxEntries <= 0 || bytes > this.maxBytes) return;
    const old = this.items.get(key);
    if (old) {
      this.bytes -= old.bytes;
      this.items.delete(key);
    }
    this.items.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [k, item] of this.items) {
      if (this.items.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      this.items.delete(k);
      this.bytes -= item.bytes;
    }
  }

  get stats(): { entries: number; bytes: number; hits: number; misses: number } {
    return { entries: this.items.size, bytes: this.bytes, hits: this.hits, misses: this.misses };
  }
}
