import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface OutboxLimits {
  maxMessages: number;
  maxBytes: number;
  /** fsync each message: survives power loss, not only a crash of the agent, at an SD card's cost. */
  fsync: boolean;
}

export interface OutboxMessage {
  id: number;
  topic: string;
  payload: Buffer;
}

const SUFFIX = ".msg";
const name = (id: number) => `${String(id).padStart(16, "0")}${SUFFIX}`;

/**
 * QoS 1 messages waiting for the broker's PUBACK, one file each in the state dir, named by a
 * sequence number: the order they were queued in is the order they are sent in, so results
 * stay in order per camera across broker outages and restarts of the agent. A file is written
 * under a temporary name and renamed, so a kill -9 leaves whole messages or none. When the
 * limits are reached the oldest message is dropped, and counted.
 */
export class Outbox {
  private readonly index: { id: number; bytes: number }[] = [];
  private nextId = 1;
  private totalBytes = 0;
  dropped = 0;

  private constructor(
    readonly dir: string,
    private readonly limits: OutboxLimits,
    private readonly onDrop: (message: { id: number; topic: string }, dropped: number) => void,
  ) {}

  static async open(dir: string, limits: OutboxLimits, onDrop: (message: { id: number; topic: string }, dropped: number) => void = () => {}): Promise<Outbox> {
    await mkdir(dir, { recursive: true });
    const box = new Outbox(dir, limits, onDrop);
    for (const file of (await readdir(dir)).sort()) {
      if (!file.endsWith(SUFFIX)) {
        // A write cut short by a crash: never renamed, so never queued.
        await rm(join(dir, file), { force: true });
        continue;
      }
      const id = Number(file.slice(0, -SUFFIX.length));
      if (!Number.isSafeInteger(id)) continue;
      const { size } = await stat(join(dir, file));
      box.index.push({ id, bytes: size });
      box.totalBytes += size;
      box.nextId = id + 1;
    }
    return box;
  }

  get depth(): number {
    return this.index.length;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  async append(topic: string, payload: Buffer): Promise<number> {
    const id = this.nextId++;
    const t = Buffer.from(topic);
    const header = Buffer.alloc(2);
    header.writeUInt16BE(t.length);
    const data = Buffer.concat([header, t, payload]);
    const tmp = join(this.dir, `${name(id)}.tmp`);
    if (this.limits.fsync) {
      const fh = await open(tmp, "w");
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
    } else {
      await writeFile(tmp, data);
    }
    await rename(tmp, join(this.dir, name(id)));
    // Appends from several cameras may finish their writes out of order: the index stays in id order.
    let at = this.index.length;
    while (at > 0 && this.index[at - 1]!.id > id) at--;
    this.index.splice(at, 0, { id, bytes: data.length });
    this.totalBytes += data.length;
    while (this.index.length > this.limits.maxMessages || (this.totalBytes > this.limits.maxBytes && this.index.length > 1)) {
      const oldest = this.index[0]!;
      const message = await this.read(oldest.id);
      await this.remove(oldest.id);
      this.dropped++;
      this.onDrop({ id: oldest.id, topic: message?.topic ?? "?" }, this.dropped);
    }
    return id;
  }

  /** The oldest message, or undefined when the outbox is empty. */
  async oldest(): Promise<OutboxMessage | undefined> {
    while (this.index.length > 0) {
      const message = await this.read(this.index[0]!.id);
      if (message) return message;
      await this.remove(this.index[0]!.id);
    }
    return undefined;
  }

  async remove(id: number): Promise<void> {
    const at = this.index.findIndex((m) => m.id === id);
    if (at < 0) return;
    this.totalBytes -= this.index[at]!.bytes;
    this.index.splice(at, 1);
    await rm(join(this.dir, name(id)), { force: true });
  }

  private async read(id: number): Promise<OutboxMessage | undefined> {
    let data: Buffer;
    try {
      data = await readFile(join(this.dir, name(id)));
    } catch {
      return undefined;
    }
    if (data.length < 2) return undefined;
    const topicLength = data.readUInt16BE(0);
    return { id, topic: data.toString("utf8", 2, 2 + topicLength), payload: data.subarray(2 + topicLength) };
  }
}
