import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeRle, type CocoRle } from "../agent/src/segment/formats/index.ts";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { Mosquitto } from "./helpers/mosquitto.ts";
import { SCENES_DIR } from "./helpers/scenes.ts";

// A broker that takes only TLS and known users, as one on a LAN should.
describe("MQTT over TLS with a username and password", () => {
  let tmp: string;
  let broker: Mosquitto;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-tls-"));
    broker = await Mosquitto.start({ tls: true, users: { "sam-edge": "s3cret", watcher: "w4tch" } });
  });
  afterAll(async () => {
    await broker.close();
    await rm(tmp, { recursive: true, force: true });
  });

  const config = (name: string, password: string) => ({
    device_id: name,
    state_dir: join(tmp, name),
    http: { enabled: false },
    mqtt: { url: broker.url, ca: broker.ca, username: "sam-edge", password, embedded_broker: "never" },
    cameras: [{ id: "scene", type: "folder", dir: SCENES_DIR, interval_ms: 200 }],
  });

  it("the agent trusts the configured CA, logs in, and its results arrive", async () => {
    const sub = await Subscriber.connect(broker.url, ["sam-edge/tls-box/#"], { ca: readFileSync(broker.ca), username: "watcher", password: "w4tch" });
    const agent = await AgentProcess.start(tmp, "tls", config("tls-box", "s3cret"));
    try {
      await sub.waitFor(() => sub.on(/\/result$/).length >= 2, "results over TLS");
      const result = sub.json<{ width: number; height: number; masks: { rle: CocoRle }[] }>(/\/result$/)[0]!;
      expect(decodeRle(result.masks[0]!.rle).width).toBe(result.width);
      expect(sub.on(/\/status$/).at(-1)?.payload.toString()).toBe("online");
    } finally {
      expect((await agent.stop()).code).toBe(0);
      await sub.close();
    }
  });

  it("a wrong password is logged and the results wait in the outbox", async () => {
    const agent = await AgentProcess.start(tmp, "denied", config("denied-box", "wrong"));
    try {
      await agent.waitFor(() => agent.printed.length >= 2 && /mqtt: .*(Not authorized|Bad username or password)/i.test(agent.stderr), "the refusal and some results");
    } finally {
      expect((await agent.stop()).code).toBe(0);
    }
    expect(agent.stderr).toMatch(/results stay in the outbox for the next start/);
  });
});
