import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectAsync } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { sceneJpeg } from "./helpers/frames.ts";
import { Mosquitto } from "./helpers/mosquitto.ts";

/** The 200 frames; TEST_SHARED_FRAMES lowers it on a busy machine. */
const FRAMES = Number(process.env.TEST_SHARED_FRAMES ?? 200);
/** Cameras the gateway relays for: each round sends one frame of each. */
const CAMERAS = 10;

// Two agents on one MQTT 5 shared subscription split the frames a gateway relays: each frame is
// processed by exactly one of them. Every frame is a JPEG of its own width, so a result names
// the frame it came from.
describe("relayed frames on a shared subscription", () => {
  let tmp: string;
  let broker: Mosquitto;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-shared-"));
    broker = await Mosquitto.start();
  });
  afterAll(async () => {
    for (const a of agents) await a.stop("SIGKILL");
    await broker.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it(`two agents split ${FRAMES} frames: each processed exactly once, both did work`, async () => {
    const sub = await Subscriber.connect(broker.url, ["edge/+/cameras/+/result"]);
    for (const device of ["box-a", "box-b"]) {
      agents.push(
        await AgentProcess.start(tmp, device, {
          device_id: device,
          state_dir: join(tmp, device),
          http: { enabled: false },
          mqtt: { url: broker.url, base_topic: "edge", embedded_broker: "never" },
          cameras: [{ id: "relay", type: "mqtt", topic: "$share/sam/gateway/+/jpeg", max_fps: 50 }],
        }),
      );
    }
    for (const a of agents) await a.waitFor(() => /mqtt: connected/.test(a.stderr), "the agent's connection");
    // Both agents' frame subscriptions must be in place before the first frame is relayed.
    await new Promise((r) => setTimeout(r, 1000));
    const gateway = await connectAsync(broker.url, { protocolVersion: 5 });
    try {
      const widths = Array.from({ length: FRAMES }, (_, i) => 64 + i);
      const jpegs = await Promise.all(widths.map((w) => sceneJpeg(w)));
      // Rounds of one frame per camera: a camera's next frame follows its last result, so
      // latest-frame-wins never has a reason to drop one and every frame must be processed.
      for (let start = 0; start < FRAMES; start += CAMERAS) {
        const round = jpegs.slice(start, start + CAMERAS);
        await Promise.all(round.map((jpeg, i) => gateway.publishAsync(`gateway/esp${i}/jpeg`, jpeg, { qos: 1 })));
        await sub.waitFor(() => sub.messages.length >= start + round.length, `round ${start / CAMERAS + 1}`, 120_000);
      }
    } finally {
      await gateway.endAsync();
    }
    await new Promise((r) => setTimeout(r, 500)); // a duplicate, if any, would arrive now
    const results = sub.json<{ device: string; camera: string; width: number }>(/result$/);
    expect(results).toHaveLength(FRAMES);
    expect(results.map((r) => r.width).sort((a, b) => a - b)).toEqual(Array.from({ length: FRAMES }, (_, i) => 64 + i));
    const perDevice: Record<string, number> = {};
    for (const r of results) perDevice[r.device] = (perDevice[r.device] ?? 0) + 1;
    expect(perDevice["box-a"]).toBeGreaterThan(0);
    expect(perDevice["box-b"]).toBeGreaterThan(0);
    // The camera id comes from the topic level under the +.
    expect(new Set(results.map((r) => r.camera))).toEqual(new Set(Array.from({ length: CAMERAS }, (_, i) => `esp${i}`)));
    await sub.close();
  }, 600_000);
});
