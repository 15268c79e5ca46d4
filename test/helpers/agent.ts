import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connectAsync, type IClientOptions, type MqttClient } from "mqtt";

const BIN = fileURLToPath(new URL("../../agent/bin/sam-edge.js", import.meta.url));

/** `sam-edge run` as a real child process, as systemd or `npm start` runs it. */
export class AgentProcess {
  stdout = "";
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  /** Writes `config` to DIR/name.json and runs the agent on it (with --print unless told otherwise). */
  static async start(dir: string, name: string, config: object, options: { env?: NodeJS.ProcessEnv; args?: string[] } = {}): Promise<AgentProcess> {
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify(config, null, 2));
    const child = spawn("node", [BIN, "run", "--config", file, ...(options.args ?? ["--print"])], {
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return new AgentProcess(child);
  }

  /** The --print lines so far: one per result the agent produced. */
  get printed(): { camera: string; frame: number; frame_id: string; width: number; height: number; route: string }[] {
    return this.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l));
  }

  async waitFor(test: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test()) {
      if (this.child.exitCode !== null) throw new Error(`the agent exited (${this.child.exitCode}) while waiting for ${what}:\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; agent stderr:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export interface Received {
  topic: string;
  payload: Buffer;
  retain: boolean;
  properties?: Record<string, unknown>;
}

/** A subscriber that records what it receives, in order. */
export class Subscriber {
  readonly messages: Received[] = [];

  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload, packet) => this.messages.push({ topic, payload, retain: packet.retain, ...(packet.properties ? { properties: packet.properties as Record<string, unknown> } : {}) }));
  }

  static async connect(url: string, topics: string[], options: IClientOptions = {}): Promise<Subscriber> {
    const client = await connectAsync(url, { reconnectPeriod: 200, ...options });
    const sub = new Subscriber(client);
    await client.subscribeAsync(topics, { qos: 1 });
    return sub;
  }

  on(topic: RegExp): Received[] {
    return this.messages.filter((m) => topic.test(m.topic));
  }

  json<T = Record<string, any>>(topic: RegExp): T[] {
    return this.on(topic).map((m) => JSON.parse(m.payload.toString()) as T);
  }

  async waitFor(test: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; received ${this.messages.length} messages on ${[...new Set(this.messages.map((m) => m.topic))].join(", ")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
