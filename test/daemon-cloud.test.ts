import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "./helpers/agent.ts";
import { freePort } from "./helpers/mosquitto.ts";
import { SCENES_DIR } from "./helpers/scenes.ts";

const TOKEN = "cloud-box-token";

/** Segment calls the "cloud" agent has answered, from its own /metrics. */
async function cloudCalls(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text();
  return [...text.matchAll(/^sam_edge_http_requests_total\{[^}]*route="\/v1\/segment\/interactive"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

// The cloud is a second agent serving the hosted API's routes over HTTP (what the hosted
// service speaks); the edge agent reaches it with the token from MSF_API_KEY, as the hosted
// API's examples do.
describe("cloud route between two agents", () => {
  let tmp: string;
  let cloud: AgentProcess;
  let cloudUrl: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-cloud-"));
    const port = await freePort();
    cloudUrl = `http://127.0.0.1:${port}`;
    cloud = await AgentProcess.start(tmp, "cloud", { state_dir: join(tmp, "cloud"), mqtt: { enabled: false }, http: { port, token: TOKEN }, cameras: [] }, { args: [] });
    await cloud.waitFor(() => /HTTP API at/.test(cloud.stderr) && /model .* loaded/.test(cloud.stderr), "the cloud agent");
  });
  afterAll(async () => {
    await cloud.stop("SIGKILL");
    await rm(tmp, { recursive: true, force: true });
  });

  const edge = (name: string, baseUrl: string, budget: number) =>
    AgentProcess.start(
      tmp,
      name,
      {
        state_dir: join(tmp, name),
        mqtt: { enabled: false },
        http: { enabled: false },
        cloud: { base_url: baseUrl, monthly_budget: budget, retries: 1, retry_base_ms: 10 },
        routing: { default_route: "cloud" },
        cameras: [{ id: "scene", type: "folder", dir: SCENES_DIR, interval_ms: 0, max_fps: 20, coordinates: "pixels", prompts: [{ points: [{ x: 20, y: 20 }] }] }],
      },
      { env: { MSF_API_KEY: TOKEN } },
    );

  it("frames go to the cloud agent until the month's budget is spent, then run locally; no call past the budget, even after a restart", async () => {
    const before = await cloudCalls(cloudUrl);
    const first = await edge("edge", cloudUrl, 3);
    await first.waitFor(() => first.printed.length >= 6, "six results");
    expect((await first.stop()).code).toBe(0);
    const routes = first.printed.map((p) => p.route);
    expect(routes.slice(0, 3)).toEqual(["cloud", "cloud", "cloud"]);
    expect(routes.slice(3).every((r) => r === "local")).toBe(true);
    expect((first.printed[3] as unknown as { fallback: { code: string } }).fallback.code).toBe("CLOUD_BUDGET_EXHAUSTED");
    expect(await cloudCalls(cloudUrl)).toBe(before + 3);
    expect(JSON.parse(await readFile(join(tmp, "edge", "cloud-budget.json"), "utf8"))).toMatchObject({ used: 3 });

    const again = await edge("edge", cloudUrl, 3);
    await again.waitFor(() => again.printed.length >= 2, "results after the restart");
    expect((await again.stop()).code).toBe(0);
    expect(again.printed.every((p) => p.route === "local")).toBe(true);
    expect(await cloudCalls(cloudUrl)).toBe(before + 3);
  });

  it("with the cloud agent down, frames fall back to the local model", async () => {
    const down = await edge("edge-down", `http://127.0.0.1:${await freePort()}`, 100);
    await down.waitFor(() => down.printed.length >= 2, "results");
    expect((await down.stop()).code).toBe(0);
    const first = down.printed[0] as unknown as { route: string; fallback: { code: string; message: string } };
    expect(first.route).toBe("local");
    expect(first.fallback).toMatchObject({ code: "CLOUD_UNAVAILABLE", message: expect.stringMatching(/ECONNREFUSED|fetch failed/) });
  });
});
