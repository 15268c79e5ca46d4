import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbeddedBroker, type EmbeddedBroker } from "../agent/src/publish/broker.ts";
import { MqttPublisher, Topics } from "../agent/src/publish/mqtt.ts";
import { Outbox } from "../agent/src/publish/outbox.ts";
import { createLogger } from "../agent/src/pipeline/log.ts";
import { Subscriber } from "./helpers/agent.ts";

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
    const box = await Outbox.open(join(dir, "bounded"), { maxMessages: 3, maxBytes: 1 << 20, fsync: false }, (m, n) => drops.push(`${m.topic}#${n}`));
    for (let n = 1; n <= 5; n++) await box.append(`t/${n}`, Buffer.from("x"));
    expect([box.depth, box.dropped, drops]).toEqual([3, 2, ["t/1#1", "t/2#2"]]);
    expect((await box.oldest())!.topic).toBe("t/3");

    const bytes = await Outbox.open(join(dir, "bytes"), { maxMessages: 100, maxBytes: 2500, fsync: false });
    for (let n = 1; n <= 5; n++) await bytes.append(`t/${n}`, Buffer.alloc(1000));
    expect(bytes.bytes).toBeLessThanOrEqual(2500);
    expect([bytes.depth, bytes.dropped]).toEqual([2, 3]);
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
