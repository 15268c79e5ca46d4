import { cp, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, Subscriber } from "./helpers/agent.ts";
import { request } from "./helpers/http.ts";
import { freePort, Mosquitto } from "./helpers/mosquitto.ts";
import { TINY_SAM_DIR } from "./helpers/scenes.ts";

const INT8_DIR = new URL("../models/quantized/tiny-sam-int8/", import.meta.url).pathname;
const TOKEN = "daemon-model-token";
const base = "site";
const device = "box1";
const root = `${base}/${device}`;

// The daemon as a child process: a model update over MQTT (model.update.mqtt), results that go
// on across it, and the updated model chosen again by the next start, until model.dir changes.
describe("sam-edge run: model updates over MQTT, kept across a restart", () => {
  let broker: Mosquitto;
  let tmp: string;
  let sub: Subscriber;
  let httpPort: number;
  let agent: AgentProcess | undefined;

  const config = (model: object = {}) => ({
    device_id: device,
    state_dir: join(tmp, "state"),
    mqtt: { url: broker.url, base_topic: base, stats_interval_s: 1 },
    http: { port: httpPort, token: TOKEN },
    // The float model, so that a swap to the int8 one shows.
    model: { dir: TINY_SAM_DIR, ...model, update: { mqtt: true } },
    cameras: [{ id: "demo", type: "folder", dir: new URL("../agent/samples/", import.meta.url).pathname, interval_ms: 300 }],
  });
  const api = (path: string) => request(`http://127.0.0.1:${httpPort}${path}`, { token: TOKEN });
  const start = async (model?: object) => {
    agent = await AgentProcess.start(tmp, "agent", config(model));
    await agent.waitFor(() => agent!.printed.length > 0, "a first result");
    return agent;
  };
  const command = async (payload: string) => sub.client.publishAsync(`${root}/model/update`, payload, { qos: 1 });
  const reply = (id?: string) => sub.json(new RegExp(`^${root}/response${id ? `/${id}` : ""}$`));

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-model-daemon-"));
    broker = await Mosquitto.start();
    httpPort = await freePort();
    sub = await Subscriber.connect(broker.url, [`${root}/#`], { protocolVersion: 5 });
  });
  // A failed test leaves no agent holding the port for the next one.
  afterEach(async () => {
    await agent?.stop("SIGKILL");
  });
  afterAll(async () => {
    await sub?.close();
    await broker?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it("refuses bad commands and bad model sets with codes, swaps a good one in while results go on", { timeout: 120_000 }, async () => {
    await start();
    expect((await api("/v1/model")).body.model.name).toBe("tiny-sam");

    await command("not json");
    await command(JSON.stringify({ id: "a/#", source: INT8_DIR }));
    await command(JSON.stringify({ id: "u0", source: INT8_DIR, force: true }));
    await command(JSON.stringify({ id: "u1", source: join(tmp, "nowhere") }));
    await sub.waitFor(() => reply().length === 2 && reply("u0").length === 1 && reply("u1").length === 1, "answers to the bad commands");
    expect(reply().map((r) => r.error.code)).toEqual(["REQUEST_INVALID", "REQUEST_INVALID"]);
    expect(reply()[1]!.error.message).toContain('"id" must be');
    expect(reply("u0")[0]).toMatchObject({ id: "u0", error: { code: "REQUEST_INVALID", message: expect.stringContaining("unknown keys force") } });
    expect(reply("u1")[0]).toMatchObject({ id: "u1", error: { code: "MODEL_UPDATE_INVALID", message: expect.stringContaining("nowhere/manifest.json does not exist") } });
    expect(agent!.stderr).toContain("model update from");
    expect(agent!.stderr).toContain("refused (MODEL_UPDATE_INVALID");

    await command(JSON.stringify({ id: "u2", source: INT8_DIR }));
    await sub.waitFor(() => reply("u2").length === 1, "the answer to the update", 60_000);
    const swapped = reply("u2")[0]!;
    expect(swapped).toMatchObject({ id: "u2", model: { name: "tiny-sam-int8" }, update: { running: null, last: { result: "swapped", source: INT8_DIR } } });
    const status = await api("/v1/model");
    expect([status.body.model.name, status.body.model.dir]).toEqual(["tiny-sam-int8", swapped.model.dir]);

    // The camera's results go on, and the stats name the model.
    const results = agent!.printed.length;
    await agent!.waitFor(() => agent!.printed.length >= results + 2, "results after the swap");
    await sub.waitFor(() => sub.json(new RegExp(`^${root}/stats$`)).some((s) => s.model?.name === "tiny-sam-int8" && s.model.last_update?.result === "swapped"), "stats naming the new model");
    const metrics = await api("/metrics");
    expect(metrics.body).toContain('sam_edge_model_updates_total{result="refused",code="MODEL_UPDATE_INVALID"} 1');
    expect(metrics.body).toContain('sam_edge_model_updates_total{result="swapped",code=""} 1');
    expect(await agent!.stop()).toEqual({ code: 0, signal: null });
  });

  it("the next start serves the updated model; a changed model.dir wins over it", { timeout: 120_000 }, async () => {
    await start();
    const kept = await api("/v1/model");
    expect(kept.body.model.name).toBe("tiny-sam-int8");
    expect(kept.body.model.dir.startsWith(join(tmp, "state", "models"))).toBe(true);
    expect(agent!.stderr).toMatch(/model: tiny-sam-int8 from the update of .* instead of model\.dir/);
    expect(await agent!.stop()).toEqual({ code: 0, signal: null });

    const mine = join(tmp, "my-model");
    await cp(TINY_SAM_DIR, mine, { recursive: true });
    await start({ dir: mine });
    const chosen = await api("/v1/model");
    expect([chosen.body.model.name, chosen.body.model.dir]).toEqual(["tiny-sam", mine]);
    expect(agent!.stderr).toContain(`model.dir is ${mine}`);
    expect(agent!.stderr).toContain("the config wins over that update");
    await expect(stat(join(tmp, "state", "active-model.json"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await agent!.stop()).toEqual({ code: 0, signal: null });
  });
});
