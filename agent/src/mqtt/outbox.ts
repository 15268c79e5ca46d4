import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { publishTopicProblem } from "./topic.ts";

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
/** Messages that can never be sent (unreadable, or a topic no broker takes) are moved here, not retried. */
export const REJECTED_DIR = "rejected";

export interface OutboxEvents {
  /** The oldest message was dropped to stay within the limits. */
  onDrop?: (message: { id: number; topic: string }, dropped: number) => void;
  /** A message was moved to `rejected/` because it can never be sent; `reason` says why. */
  onReject?: (file: string, reason: string, rejected: number) => void;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A message file as `append` writes it, or why it is not one. */
function parseMessage(id: number, data: Buffer): OutboxMessage | string {
  if (data.length < 2) return `${data.length} bytes, shorter than the 2-byte topic length`;
  const topicLength = data.readUInt16BE(0);
  if (2 + topicLength > data.length) return `its topic length (${topicLength}) runs past the end of the file (${data.length} bytes)`;
  let topic: string;
  try {
    topic = utf8.decode(data.subarray(2, 2 + topicLength));
  } catch {
    return "its topic is not valid UTF-8";
  }
  const problem = publishTopicProblem(topic);
  if (problem) return problem;
  return { id, topic, payload: data.subarray(2 + topicLength) };
}

/**
 * QoS 1 messages waiting for the broker's PUBACK, one file each in the state dir, named by a
 * sequence number: the order they were queued in is the order they are sent in, so results
 * stay in order per camera across broker outages and restarts of the agent. A file is written
 * under a temporary name and renamed, so a kill -9 leaves whole messages or none. When the
 * limits are reached the oldest message is dropped, and counted. A file that cannot be a
 * message (zero-filled by a power cut, a topic with a wildcard) would block every message
 * behind it, so it is moved to `rejected/`, reported and counted, and delivery goes on.
 */
export class Outbox {
  private readonly index: { id: number; bytes: number }[] = [];
  private nextId = 1;
  private totalBytes = 0;
  dropped = 0;
  rejected = 0;

  private constructor(
    readonly dir: string,
    private readonly limits: OutboxLimits,
    private readonly events: OutboxEvents,
  ) {}

  static async open(dir: string, limits: OutboxLimits, events: OutboxEvents = {}): Promise<Outbox> {
    await mkdir(dir, { recursive: true });
    const box = new Outbox(dir, limits, events);
    for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const file = entry.name;
      if (!entry.isFile()) continue;
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
    const problem = publishTopicProblem(topic);
    if (problem) throw new RangeError(`outbox: not queued, since ${problem}`);
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
      this.events.onDrop?.({ id: oldest.id, topic: typeof message === "object" ? message.topic : "?" }, this.dropped);
    }
    return id;
  }

  /** The oldest message that can be sent, or undefined when the outbox is empty. */
  async oldest(): Promise<OutboxMessage | undefined> {
    while (this.index.length > 0) {
      const id = this.index[0]!.id;
      const message = await this.read(id);
      if (typeof message === "object") return message;
      if (message === undefined) await this.remove(id);
      else await this.reject(id, message);
    }
    return undefined;
  }

  /** Moves a message that can never be sent out of the queue, keeping the file for a person to look at. */
  async reject(id: number, reason: string): Promise<void> {
    const at = this.index.findIndex((m) => m.id === id);
    if (at < 0) return;
    this.totalBytes -= this.index[at]!.bytes;
    this.index.splice(at, 1);
    await mkdir(join(this.dir, REJECTED_DIR), { recursive: true });
    await rename(join(this.dir, name(id)), join(this.dir, REJECTED_DIR, name(id))).catch(() => rm(join(this.dir, name(id)), { force: true }));
    this.rejected++;
    this.events.onReject?.(join(REJECTED_DIR, name(id)), reason, this.rejected);
  }

  async remove(id: number): Promise<void> {
    const at = this.index.findIndex((m) => m.id === id);
    if (at < 0) return;
    this.totalBytes -= this.index[at]!.bytes;
    this.index.splice(at, 1);
    await rm(join(this.dir, name(id)), { force: true });
  }

  /** The message, why its file is not one (a string), or undefined when the file is gone. */
  private async read(id: number): Promise<OutboxMessage | string | undefined> {
    let data: Buffer;
    try {
      data = await readFile(join(this.dir, name(id)));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === "ENOENT" ? undefined : `unreadable (${code ?? (err as Error).message})`;
    }
    return parseMessage(id, data);
  }
}
