import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { Mosquitto } from "./helpers/mosquitto.ts";

/**
 * The outage is 20 s; TEST_OUTAGE_MS shortens it on a busy machine. (Not SAM_EDGE_*:
 * the agent, which inherits the environment, refuses SAM_EDGE_ variables that are no setting.)
 */
const OUTAGE_MS = Number(process.env.TEST_OUTAGE_MS ?? 20_000);

interface Result {
  camera: string;
  frame: number;
  frame_id: string;
}

/** Results in arrival order without QoS 1's duplicates (the first copy of each frame id counts). */
function deduplicated(results: Result[]): string[] {
  const seen = new Set<string>();
  return results.map((r) => r.frame_id).filter((id) => !seen.has(id) && seen.add(id));
}

function config(tmp: string, broker: Mosquitto, cameras: object[]) {
  return {
    device_id: "box",
    state_dir: join(tmp, "state"),
    log_level: "debug",
    http: { enabled: false },
    mqtt: { url: broker.url, embedded_broker: "never", stats_interval_s: 60 },
    cameras,
  };
}

const pattern = { id: "pattern", type: "ffmpeg", input: "testsrc=size=160x120:rate=10", input_args: ["-f", "lavfi", "-re"], fps: 4, max_fps: 2 };

// The outbox is what makes QoS 1 results durable: a broker outage and a kill -9 of the agent
// lose nothing, and what was queued arrives in order. The agent's --print lines are the
// ground truth of what it produced.
describe("durable results", () => {
  let tmp: string;
  let broker: Mosquitto;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-outage-"));
    broker = await Mosquitto.start();
  });
  afterAll(async () => {
    await broker.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it(`broker stopped ${OUTAGE_MS / 1000} s mid-stream and restarted: every result arrives, in order`, async () => {
    // A persistent session: the broker keeps what arrives for the subscriber while it reconnects.
    const sub = await Subscriber.connect(broker.url, ["sam-edge/box/cameras/+/result"], { clientId: "outage-watcher", clean: false });
    const agent = await AgentProcess.start(tmp, "outage", config(join(tmp, "a"), broker, [pattern]));
    try {
      await sub.waitFor(() => sub.messages.length >= 3, "results before the outage");
      await broker.stop();
      const producedBefore = agent.printed.length;
      await new Promise((r) => setTimeout(r, OUTAGE_MS));
      // The agent went on segmenting while the broker was away.
      expect(agent.printed.length).toBeGreaterThan(producedBefore);
      await agent.waitFor(() => /mqtt: .*unreachable|ECONNREFUSED/.test(agent.stderr), "the agent noticing the outage");
      await broker.run();
      const lastDuringOutage = agent.printed.at(-1)!.frame_id;
      await sub.waitFor(() => sub.json<Result>(/result$/).some((r) => r.frame_id === lastDuringOutage), "the outage's results", 120_000);
      expect((await agent.stop("SIGTERM")).code).toBe(0);
      await sub.waitFor(() => deduplicated(sub.json<Result>(/result$/)).length >= agent.printed.length, "every result", 30_000);

      const produced = agent.printed.map((p) => p.frame_id);
      expect(deduplicated(sub.json<Result>(/result$/))).toEqual(produced);
      // Nothing arrives more than twice: at most QoS 1's redelivery of the message in flight.
      const counts = new Map<string, number>();
      for (const r of sub.json<Result>(/result$/)) counts.set(r.frame_id, (counts.get(r.frame_id) ?? 0) + 1);
      expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
    } finally {
      await agent.stop("SIGKILL");
      await sub.close();
    }
  }, OUTAGE_MS + 180_000);

  it("agent killed with SIGKILL while the broker is down: the next start replays its outbox, in order", async () => {
    const dir = join(tmp, "b");
    await broker.stop();
    const first = await AgentProcess.start(tmp, "killed", config(dir, broker, [pattern]));
    await first.waitFor(() => first.printed.length >= 4, "results queued while the broker is down");
    expect((await first.stop("SIGKILL")).signal).toBe("SIGKILL");
    const produced = first.printed.map((p) => p.frame_id);
    const queued = (await readdir(join(dir, "state", "outbox"))).filter((f) => f.endsWith(".msg"));
    expect(queued.length).toBeGreaterThanOrEqual(produced.length);

    await broker.run();
    const sub = await Subscriber.connect(broker.url, ["sam-edge/box/cameras/+/result"]);
    // Restarted with no cameras: whatever arrives now can only come from the outbox.
    const second = await AgentProcess.start(tmp, "restarted", config(dir, broker, []));
    try {
      await second.waitFor(() => /outbox: \d+ results from an earlier run/.test(second.stderr), "the outbox being found");
      await sub.waitFor(() => deduplicated(sub.json<Result>(/result$/)).length >= produced.length, "the replayed results", 60_000);
      const replayed = deduplicated(sub.json<Result>(/result$/));
      // Results are queued on disk before they are printed: every printed one is replayed, first and in order.
      expect(replayed.slice(0, produced.length)).toEqual(produced);
      expect((await second.stop("SIGTERM")).code).toBe(0);
      expect((await readdir(join(dir, "state", "outbox"))).filter((f) => f.endsWith(".msg"))).toEqual([]);
    } finally {
      await second.stop("SIGKILL");
      await sub.close();
    }
  }, 180_000);
});
