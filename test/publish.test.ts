import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbeddedBroker, type EmbeddedBroker } from "../agent/src/mqtt/broker.ts";
import { MqttPublisher, Topics } from "../agent/src/mqtt/publisher.ts";
import { Outbox, REJECTED_DIR } from "../agent/src/mqtt/outbox.ts";
import { createLogger } from "../agent/src/core/log.ts";
import { Subscriber } from "./helpers/agent.ts";
import { Mosquitto } from "./helpers/mosquitto.ts";

/** A message file as the outbox writes it: 2-byte topic length, topic, payload. */
function messageFile(topic: string, payload: string): Buffer {
  const t = Buffer.from(topic);
  const header = Buffer.alloc(2);
  header.writeUInt16BE(t.length);
  return Buffer.concat([header, t, Buffer.from(payload)]);
}

describe("outbox", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sam-edge-outbox-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("keeps messages in order across reopening; a write cut short by a crash is discarded", async () => {
    const path = join(dir, "order");
    const a = await Outbox.open(path, { maxMessages: 100, maxBytes: 1 << 20, fsync: true });
    for (const n of [1, 2, 3]) await a.append(`t/${n}`, Buffer.from(`payload ${n}`));
    await a.remove((await a.oldest())!.id);
    await writeFile(join(path, "0000000000000009.msg.tmp"), "half a messa");
    const b = await Outbox.open(path, { maxMessages: 100, maxBytes: 1 << 20, fsync: false });
    expect(b.depth).toBe(2);
    await b.append("t/4", Buffer.from("payload 4"));
    const seen: string[] = [];
    for (let m = await b.oldest(); m; m = await b.oldest()) {
      seen.push(`${m.topic}=${m.payload.toString()}`);
      await b.remove(m.id);
    }
    expect(seen).toEqual(["t/2=payload 2", "t/3=payload 3", "t/4=payload 4"]);
    expect(await readdir(path)).toEqual([]);
  });

  it("is bounded by count and bytes: the oldest are dropped, counted and reported", async () => {
    const drops: string[] = [];
    const box = await Outbox.open(join(dir, "bounded"), { maxMessages: 3, maxBytes: 1 << 20, fsync: false }, { onDrop: (m, n) => drops.push(`${m.topic}#${n}`) });
    for (let n = 1; n <= 5; n++) await box.append(`t/${n}`, Buffer.from("x"));
    expect([box.depth, box.dropped, drops]).toEqual([3, 2, ["t/1#1", "t/2#2"]]);
    expect((await box.oldest())!.topic).toBe("t/3");

    const bytes = await Outbox.open(join(dir, "bytes"), { maxMessages: 100, maxBytes: 2500, fsync: false });
    for (let n = 1; n <= 5; n++) await bytes.append(`t/${n}`, Buffer.alloc(1000));
    expect(bytes.bytes).toBeLessThanOrEqual(2500);
    expect([bytes.depth, bytes.dropped]).toEqual([2, 3]);
  });
});

describe("outbox files that can never be sent", () => {
  let broker: Mosquitto;
  let dir: string;
  beforeAll(async () => {
    broker = await Mosquitto.start();
    dir = await mkdtemp(join(tmpdir(), "sam-edge-rejected-"));
  });
  afterAll(async () => {
    await broker.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("a zero-filled file, a wildcard topic, a torn header and bad UTF-8 are moved to rejected/, logged once each, counted; the rest is delivered in order", async () => {
    const path = join(dir, "outbox");
    const topics = new Topics("sam-edge", "rejects");
    const good = (n: number) => messageFile(topics.result("cam"), `good ${n}`);
    const files: [string, Buffer][] = [
      ["0000000000000001.msg", good(1)],
      ["0000000000000002.msg", Buffer.alloc(4096)],
      ["0000000000000003.msg", messageFile("sam-edge/rejects/cameras/+/result", "wildcard")],
      ["0000000000000004.msg", good(4)],
      ["0000000000000005.msg", Buffer.from([0x00, 0x40, 0x61])],
      ["0000000000000006.msg", Buffer.concat([Buffer.from([0x00, 0x02, 0xc3, 0x28]), Buffer.from("x")])],
      ["0000000000000007.msg", good(7)],
    ];
    await mkdir(path, { recursive: true });
    for (const [file, data] of files) await writeFile(join(path, file), data);
    const warnings: string[] = [];
    const outbox = await Outbox.open(path, { maxMessages: 100, maxBytes: 1 << 20, fsync: false }, { onReject: (file, reason) => warnings.push(`${file}: ${reason}`) });
    const sub = await Subscriber.connect(broker.url, [topics.result("cam")], { protocolVersion: 5 });
    const publisher = new MqttPublisher({ url: broker.url, client: { protocolVersion: 5, reconnectPeriod: 200 }, topics, outbox, log: createLogger("error") });
    publisher.start();
    try {
      await sub.waitFor(() => sub.messages.length >= 3, "the three good messages", 10_000);
      expect(await publisher.flush(2000)).toBe(true);
      expect(sub.messages.map((m) => m.payload.toString())).toEqual(["good 1", "good 4", "good 7"]);
      expect(outbox.rejected).toBe(4);
      expect(warnings).toHaveLength(4);
      expect(warnings[0]).toMatch(/rejected\/0000000000000002\.msg: its topic is empty/);
      expect(warnings[1]).toMatch(/wildcard/);
      expect(warnings[2]).toMatch(/runs past the end/);
      expect(warnings[3]).toMatch(/not valid UTF-8/);
      expect((await readdir(join(path, REJECTED_DIR))).sort()).toEqual(["0000000000000002.msg", "0000000000000003.msg", "0000000000000005.msg", "0000000000000006.msg"]);
      expect((await readdir(path)).filter((f) => f.endsWith(".msg"))).toEqual([]);
      // Reopened: the rejected/ folder is neither a message nor in the way.
      const again = await Outbox.open(path, { maxMessages: 100, maxBytes: 1 << 20, fsync: false });
      expect([again.depth, await again.oldest()]).toEqual([0, undefined]);
    } finally {
      await publisher.stop(100);
      await sub.close();
    }
  });

  it("refuses to queue a message whose topic no broker would take", async () => {
    const outbox = await Outbox.open(join(dir, "append"), { maxMessages: 10, maxBytes: 1 << 20, fsync: false });
    await expect(outbox.append("a/#", Buffer.from("x"))).rejects.toThrow(/wildcard/);
    await expect(outbox.append("", Buffer.from("x"))).rejects.toThrow(/empty/);
    expect(outbox.depth).toBe(0);
  });
});

describe("MQTT publisher", () => {
  let broker: EmbeddedBroker;
  let url: string;
  let dir: string;
  beforeAll(async () => {
    broker = await startEmbeddedBroker("127.0.0.1", 0);
    url = `mqtt://127.0.0.1:${broker.port}`;
    dir = await mkdtemp(join(tmpdir(), "sam-edge-publisher-"));
  });
  afterAll(async () => {
    await broker.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("status online (retained) on connect; the broker publishes the offline last will when the agent dies", async () => {
    const topics = new Topics("sam-edge/", "lwt-box");
    const sub = await Subscriber.connect(url, [topics.status], { protocolVersion: 4 });
    const publisher = new MqttPublisher({ url, client: { protocolVersion: 4, keepalive: 5, reconnectPeriod: 0 }, topics, outbox: await Outbox.open(join(dir, "lwt"), { maxMessages: 10, maxBytes: 1 << 20, fsync: false }), log: createLogger("error") });
    publisher.start();
    try {
      await sub.waitFor(() => sub.messages.some((m) => m.payload.toString() === "online"), "online");
      expect(topics.status).toBe("sam-edge/lwt-box/status");
      // A crash: the connection drops without a DISCONNECT, so the broker sends the will.
      (publisher as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
      await sub.waitFor(() => sub.messages.at(-1)?.payload.toString() === "offline", "the last will");
      const late = await Subscriber.connect(url, [topics.status], { protocolVersion: 4 });
      await late.waitFor(() => late.messages.length > 0, "the retained status");
      expect([late.messages[0]!.payload.toString(), late.messages[0]!.retain]).toEqual(["offline", true]);
      await late.close();
    } finally {
      await publisher.stop(100);
      await sub.close();
    }
  });

  it("results queued while the broker is unreachable go out in order once it is there", async () => {
    const topics = new Topics("sam-edge", "late-box");
    const outbox = await Outbox.open(join(dir, "late"), { maxMessages: 100, maxBytes: 1 << 20, fsync: false });
    const other = await startEmbeddedBroker("127.0.0.1", 0);
    const port = other.port;
    await other.close();
    const lateUrl = `mqtt://127.0.0.1:${port}`;
    const publisher = new MqttPublisher({ url: lateUrl, client: { protocolVersion: 4, reconnectPeriod: 1000 }, topics, outbox, log: createLogger("error") });
    publisher.start();
    for (let n = 0; n < 5; n++) await publisher.publishDurable(topics.result("cam"), Buffer.from(String(n)));
    expect(outbox.depth).toBe(5);
    const revived = await startEmbeddedBroker("127.0.0.1", port);
    const sub = await Subscriber.connect(lateUrl, [topics.result("cam")], { protocolVersion: 4 });
    try {
      // Subscribed well before the publisher gets through: it retries once a second.
      await sub.waitFor(() => sub.messages.length >= 5, "the queued results", 10_000);
      expect(sub.messages.map((m) => m.payload.toString())).toEqual(["0", "1", "2", "3", "4"]);
      expect(await publisher.flush(2000)).toBe(true);
      expect(outbox.depth).toBe(0);
    } finally {
      await publisher.stop(100);
      await sub.close();
      await revived.close();
    }
  });
});
