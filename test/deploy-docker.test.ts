import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validate, format } from "dockerfile-utils";
import { connectAsync } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { loadConfig } from "../agent/src/config/load.ts";
import { exists, modelProblems, productionTreeProblems } from "./helpers/deploy.ts";
import { dockerignore, imageCwd, imageEnv, replayDockerfile, type Stage } from "./helpers/dockerfile.ts";
import { freePort } from "./helpers/mosquitto.ts";
import { REPO_ROOT } from "./helpers/python.ts";

const DOCKER = join(REPO_ROOT, "deploy/docker");
const DOCKERFILES = ["Dockerfile", "Dockerfile.jetson"];

/** What cannot happen in a directory: the image's OS packages and users. */
function skipRun(command: string): string | undefined {
  if (command.includes("apt-get install")) return "installs the base image's OS packages";
  if (command.startsWith("useradd ")) return "adds the service user to the image's /etc/passwd";
  return undefined;
}

function exec(file: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<number> {
  return new Promise((resolve) => execFile(file, args, options, (err) => resolve(err ? (typeof err.code === "number" ? err.code : -1) : 0)));
}

/** Runs the replayed image's ENTRYPOINT + CMD; resolves once its HEALTHCHECK passes, checking that it failed before. */
async function runImage(image: Stage): Promise<{ stop: () => Promise<number | null>; stderr: () => string }> {
  const port = await freePort();
  // Loopback and a free port instead of the image's 0.0.0.0:8080; no MQTT (the demo would embed a broker on 1883).
  const env = imageEnv(image, { SAM_EDGE_HTTP_HOST: "127.0.0.1", SAM_EDGE_HTTP_PORT: String(port), SAM_EDGE_MQTT_ENABLED: "false" });
  const health = () => exec(image.healthcheck![0]!, image.healthcheck!.slice(1), { cwd: imageCwd(image), env });
  expect(await health()).toBe(1);
  const [command, ...args] = [...image.entrypoint, ...image.cmd];
  const child = spawn(command!, args, { cwd: imageCwd(image), env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while ((await health()) !== 0) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the image's health check never passed; the agent said:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    stderr: () => stderr,
    stop: async () => {
      child.kill("SIGTERM");
      const code = await exited;
      expect(await health()).toBe(1);
      return code;
    },
  };
}

describe("deploy/docker: Dockerfiles, their replay without Docker, and the compose file", () => {
  let tmp: string;
  const cache = new Map<string, Stage>();
  const replayed: Record<string, Stage[]> = {};
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-docker-"));
    // npm installs from its cache (CI's own `npm ci` filled it) rather than the registry.
    for (const file of DOCKERFILES) replayed[file] = await replayDockerfile(join(DOCKER, file), { context: REPO_ROOT, work: tmp, env: { npm_config_offline: "true" }, skipRun, cache });
  }, 300_000);
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it.each(DOCKERFILES)("%s passes dockerfile-utils' linter and is formatted as its formatter writes it", async (file) => {
    const text = await readFile(join(DOCKER, file), "utf8");
    expect(validate(text)).toEqual([]);
    expect(format(text, { insertSpaces: true, tabSize: 4 })).toEqual([]);
  });

  it("the linter does find mistakes (the check above can fail)", () => {
    const diagnostics = validate("from node:20\nHEALTHCHECK --interval=30x CMD true\nCMD [\"a\"]\nCMD [\"b\"]\n");
    expect(diagnostics.map((d) => d.message).sort()).toEqual([
      "Instructions should be written in uppercase letters",
      "There can only be one CMD instruction in a Dockerfile or build stage. Only the last one will have an effect.",
      "time: unknown unit x in duration 30x",
    ]);
  });

  it("the build context (.dockerignore) lets in what the Dockerfiles copy and keeps node_modules out", async () => {
    const ignored = await dockerignore(REPO_ROOT);
    expect(ignored("node_modules/onnxruntime-node/package.json")).toBe(true);
    expect(ignored("test/daemon.test.ts")).toBe(true);
    expect(ignored("scripts/train-tiny-sam/train.py")).toBe(true);
    expect(ignored("agent/src/cli.ts")).toBe(false);
    expect(ignored("models/tiny-sam/tiny-sam.encoder.onnx")).toBe(false);
  });

  it.each(DOCKERFILES)("%s: the deps stage installs production dependencies only; the image has the agent and both models", async (file) => {
    const [deps, image] = replayed[file]!;
    expect(replayed[file]).toHaveLength(2);
    expect(deps!.name).toBe("deps");
    expect(deps!.ran).toEqual(["npm ci --omit=dev --ignore-scripts --no-audit --no-fund && sh deploy/prune-deps.sh node_modules"]);
    expect(deps!.skipped).toEqual([]);
    const app = join(image!.root, "opt/sam-edge");
    expect(await productionTreeProblems(app)).toEqual({ missing: [], dev: [], bindings: [] });
    expect(await modelProblems(app)).toEqual([]);
    expect(await exists(join(app, "agent/bin/sam-edge.js"))).toBe(true);
    expect(await exists(join(app, "test"))).toBe(false);
    expect(image!.user).toBe("sam-edge");
    expect(image!.ran).toEqual([]);
    expect(image!.skipped.map((s) => s.reason)).toEqual([
      "installs the base image's OS packages",
      "adds the service user to the image's /etc/passwd",
      ...(file === "Dockerfile.jetson" ? ["/usr/local/bin/node comes with node:20-bookworm-slim, which is no directory here"] : []),
    ]);
  });

  it("the Jetson image's deps stage is the same as the arm64/x86-64 one (replayed once, as Docker's cache would)", () => {
    expect(replayed["Dockerfile"]![0]!.reused).toBe(false);
    expect(replayed["Dockerfile.jetson"]![0]!.reused).toBe(true);
    expect(replayed["Dockerfile.jetson"]![1]!.base).toBe("nvcr.io/nvidia/l4t-base:r36.2.0");
  });

  it.each(DOCKERFILES)("%s: the image's command starts the agent and its HEALTHCHECK passes on /healthz (and fails without it)", async (file) => {
    const image = replayed[file]!.at(-1)!;
    expect(image.entrypoint).toEqual(["node", "agent/bin/sam-edge.js"]);
    expect(image.cmd).toEqual(["run"]);
    const agent = await runImage(image);
    expect(await agent.stop(), agent.stderr()).toBe(0);
    // The state went to the image's volume.
    expect(await exists(join(image.root, "var/lib/sam-edge"))).toBe(true);
  });

  it("compose.yaml: builds from the repository root, and its settings with the example config are a valid configuration", async () => {
    const compose = parse(await readFile(join(DOCKER, "compose.yaml"), "utf8")) as {
      services: Record<string, { build?: { context: string; dockerfile: string }; environment?: Record<string, string>; volumes?: (string | { source: string; target: string })[] }>;
    };
    expect(Object.keys(compose.services).sort()).toEqual(["mosquitto", "sam-edge"]);
    const agent = compose.services["sam-edge"]!;
    expect(join(DOCKER, agent.build!.context)).toBe(REPO_ROOT.replace(/\/$/, ""));
    expect(await exists(join(REPO_ROOT, agent.build!.dockerfile))).toBe(true);
    const configMount = agent.volumes!.find((v): v is { source: string; target: string } => typeof v === "object")!;
    expect(configMount.target).toBe(agent.environment!.SAM_EDGE_CONFIG);
    for (const v of compose.services["mosquitto"]!.volumes!) {
      if (typeof v === "string" && v.startsWith("./")) expect(await exists(join(DOCKER, v.split(":")[0]!)), v).toBe(true);
    }
    const image = replayed["Dockerfile"]!.at(-1)!;
    const config = await loadConfig({ file: join(REPO_ROOT, "deploy/config.example.json"), env: { ...image.env, ...agent.environment } });
    expect(config.mqtt).toMatchObject({ url: "mqtt://mosquitto:1883", embedded_broker: "never" });
    expect(config.http).toMatchObject({ host: "0.0.0.0", port: 8080 });
    expect(config.state_dir).toBe("/var/lib/sam-edge");
  });

  it("mosquitto.conf: Mosquitto starts with it and takes the example config's MQTT login", async () => {
    const port = await freePort();
    const conf = (await readFile(join(DOCKER, "mosquitto.conf"), "utf8"))
      .replace(/^listener 1883$/m, `listener ${port} 127.0.0.1`)
      .replace(/^persistence_location .*$/m, `persistence_location ${tmp}/`);
    expect(conf).toContain(`listener ${port} 127.0.0.1`);
    await writeFile(join(tmp, "mosquitto.conf"), conf);
    const broker = spawn("mosquitto", ["-c", join(tmp, "mosquitto.conf")], { stdio: "ignore" });
    try {
      const example = JSON.parse(await readFile(join(REPO_ROOT, "deploy/config.example.json"), "utf8")) as { mqtt: { username: string; password: string } };
      let client: Awaited<ReturnType<typeof connectAsync>> | undefined;
      for (let tries = 0; !client; tries++) {
        client = await connectAsync(`mqtt://127.0.0.1:${port}`, { username: example.mqtt.username, password: example.mqtt.password, reconnectPeriod: 0 }).catch((err: Error) => {
          if (tries > 50) throw err;
          return new Promise<undefined>((r) => setTimeout(r, 100));
        });
      }
      expect(client.connected).toBe(true);
      await client.endAsync();
    } finally {
      broker.kill();
    }
  });
});
