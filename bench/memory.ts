/**
 * Memory and liveness of the daemon under the hostile-input issue's requests, on this machine:
 *
 *   npx tsx bench/memory.ts [MODEL_DIR] [--healthz-ms N]
 *
 * Runs `sam-edge run` as a child process (no cameras, no MQTT, the HTTP API on a free port, the
 * bundled int8 model unless MODEL_DIR), and for each request measures the agent's peak RSS over
 * its idle RSS: the kernel's own high-water mark (VmHWM in /proc/PID/status), reset before each
 * request by writing 5 to /proc/PID/clear_refs, so no sampling can miss a peak. The requests:
 * an 8000x8000 PNG to /v1/segment/interactive (186 KB on the wire, the largest image the limits
 * accept), a batch of ten of them, Everything at the default settings on a 640x480 JPEG, and
 * Everything 32x32 on a 1280x720 JPEG. Budgets (issue 20): <= 250 MB over idle for each.
 *
 * Liveness: while Everything 64x64 runs on a 1280x720 JPEG, /healthz is asked every --healthz-ms
 * (default 20) from this process; its p50, p99 and max are printed (budget: p99 <= 50 ms), with
 * how many answers came while the model ran.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { BUNDLED_MODEL_DIR } from "../agent/src/config/paths.ts";
import { wholeNumber } from "./options.ts";
import { median } from "./stats.ts";

const BIN = fileURLToPath(new URL("../agent/bin/sam-edge.js", import.meta.url));
const { values, positionals } = parseArgs({ allowPositionals: true, options: { "healthz-ms": { type: "string", default: "20" } } });
const healthzMs = wholeNumber("healthz-ms", values["healthz-ms"], 1);
const modelDir = positionals[0] ?? BUNDLED_MODEL_DIR;

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const status = async (pid: number, key: string): Promise<number> => {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)![1]) / 1024;
};

const tmp = await mkdtemp(join(tmpdir(), "sam-edge-memory-"));

interface Agent {
  url: string;
  pid: number;
  post(path: string, fields: Record<string, string | Buffer | Buffer[]>): Promise<{ status: number; body: { error?: { code: string } } }>;
}

/** A fresh agent for `fn`: each request's peak is measured from a warm, idle agent that nothing before it has grown. */
async function withAgent<T>(fn: (agent: Agent) => Promise<T>): Promise<T> {
  const port = await freePort();
  const config = join(tmp, `config-${port}.json`);
  await writeFile(config, JSON.stringify({ state_dir: join(tmp, `state-${port}`), mqtt: { enabled: false }, cameras: [], http: { port }, model: { dir: modelDir } }));
  const child = spawn("node", [BIN, "run", "--config", config], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; ; i++) {
      const ready = await fetch(`${url}/readyz`).then((r) => r.status === 200, () => false);
      if (ready) break;
      if (i > 600 || child.exitCode !== null) throw new Error(`the agent did not get ready:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const post: Agent["post"] = async (path, fields) => {
      const form = new FormData();
      for (const [k, v] of Object.entries(fields)) {
        for (const x of Array.isArray(v) ? v : [v]) {
          if (typeof x === "string") form.append(k, x);
          else form.append(k, new Blob([new Uint8Array(x)]), `${k}.bin`);
        }
      }
      const res = await fetch(`${url}${path}`, { method: "POST", body: form });
      return { status: res.status, body: (await res.json()) as { error?: { code: string } } };
    };
    return await fn({ url, pid: child.pid!, post });
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

try {
  // Flat colour: a PNG of 8000x8000 pixels that is a few hundred KB on the wire, as in the issue.
  const big = await sharp({ create: { width: 8000, height: 8000, channels: 3, background: "#6a8caf" } }).png({ compressionLevel: 9 }).toBuffer();
  // Real photographs' size and texture: the bundled samples' photo, resized.
  const photo = join(fileURLToPath(new URL("../agent/samples/", import.meta.url)), "shapes-square.webp");
  const vga = await sharp(photo).resize(640, 480, { fit: "fill" }).jpeg().toBuffer();
  const hd = await sharp(photo).resize(1280, 720, { fit: "fill" }).jpeg().toBuffer();
  const click = JSON.stringify([{ x: 4000, y: 4000, label: 1 }]);
  const cases: [string, (a: Agent) => ReturnType<Agent["post"]>][] = [
    [`interactive_8000x8000_png_${Math.round(big.length / 1024)}kb`, (a) => a.post("/v1/segment/interactive", { image: big, points: click })],
    ["interactive_batch_of_10_8000x8000", (a) => a.post("/v1/segment/interactive", { image: Array(10).fill(big), points: click })],
    ["everything_default_640x480", (a) => a.post("/v1/segment/everything", { image: vga })],
    ["everything_32x32_1280x720", (a) => a.post("/v1/segment/everything", { image: hd, points_per_side: "32" })],
  ];
  const peaks: Record<string, { status: number; idle_rss_mb: number; peak_over_idle_mb: number; error?: string }> = {};
  for (const [name, run] of cases) {
    peaks[name] = await withAgent(async (agent) => {
      // A small request first, so that the idle figure is a warm agent's (model run once, buffers made).
      await agent.post("/v1/segment/interactive", { image: vga, points: JSON.stringify([{ x: 10, y: 10, label: 1 }]) });
      await new Promise((r) => setTimeout(r, 1000));
      const idle = await status(agent.pid, "VmRSS");
      await writeFile(`/proc/${agent.pid}/clear_refs`, "5");
      const res = await run(agent);
      const peak = await status(agent.pid, "VmHWM");
      return { status: res.status, idle_rss_mb: Math.round(idle), peak_over_idle_mb: Math.round(peak - idle), ...(res.status !== 200 ? { error: res.body.error?.code ?? "?" } : {}) };
    });
  }

  // Liveness: /healthz while a long Everything runs in the model's worker thread.
  const liveness = await withAgent(async (agent) => {
    const latencies: number[] = [];
    let running = true;
    const everything = agent.post("/v1/segment/everything", { image: hd, points_per_side: "64" }).finally(() => (running = false));
    while (running) {
      const t = performance.now();
      await fetch(`${agent.url}/healthz`).then((r) => r.arrayBuffer());
      latencies.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, healthzMs));
    }
    const long = await everything;
    const sorted = [...latencies].sort((a, b) => a - b);
    const pct = (p: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 10) / 10;
    return { status: long.status, answers: latencies.length, p50_ms: Math.round(median(latencies) * 10) / 10, p99_ms: pct(0.99), max_ms: pct(1) };
  });
  console.log(
    JSON.stringify(
      {
        date: new Date().toISOString(),
        model: modelDir,
        requests: peaks,
        budget_mb: 250,
        within_budget: Object.values(peaks).every((p) => p.status === 200 && p.peak_over_idle_mb <= 250),
        healthz_during_everything_64x64: { ...liveness, budget_p99_ms: 50, within_budget: liveness.p99_ms <= 50 },
      },
      null,
      2,
    ),
  );
} finally {
  await rm(tmp, { recursive: true, force: true });
}
