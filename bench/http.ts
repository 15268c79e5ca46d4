/**
 * The local HTTP API's overhead and its behaviour under load, on this machine:
 *
 *   npx tsx bench/http.ts [MODEL_DIR] [--runs N] [--duration S] [--connections C]
 *
 * The server runs in a child process (this script with --serve), so the load generator and the
 * server do not share an event loop and the server's RSS is its own (read from its /metrics).
 * Prints JSON, with the budgets from the HTTP API issue:
 * - loopback_over_in_process: p50 of POST /v1/segment/interactive on a cached image over
 *   loopback, over the p50 of the same engine.segment call inside the server process (<= 1.2);
 *   in_process_with_answer_ms adds what the route does after the engine (mask PNG, RLE), and
 *   in_server_request_ms is the server's own time per request (headers in to response written),
 *   to show where the difference goes: what loopback_ms adds to it is the two processes' wake-ups
 *   and the transfer;
 * - load: C concurrent clients for S seconds on the same cached request (autocannon): errors
 *   and non-2xx (0 wanted), p99, and the server's RSS before and after (within 10%), "before"
 *   being after a warm-up of S/6 seconds of the same load.
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { Agent, request } from "node:http";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { encodeRle, maskToPngBase64 } from "../agent/src/segment/formats/index.ts";

const IMAGE = fileURLToPath(new URL("../test/fixtures/scenes/portrait.jpg", import.meta.url));
const CLICK = { x: 240, y: 320, label: 1 as const };
const TOKEN = "bench-token";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    runs: { type: "string", default: "100" },
    duration: { type: "string", default: "30" },
    connections: { type: "string", default: "50" },
    serve: { type: "boolean" },
  },
});
const dir = positionals[0] ?? BUNDLED_MODEL_DIR;

/** Engine calls timed inside the server process, bare and with the answer's PNG and RLE. */
interface EngineTimes {
  inProcess: number[];
  withAnswer: number[];
}

/** The server's answer over IPC: its engine times, and how long each request since the last
 * ask took, from the request's headers to the response's end. */
interface InProcessTimes extends EngineTimes {
  requests: number[];
}

if (values.serve) {
  const engine = new SegmentEngine(await SamModel.load(dir));
  const { app, url } = await startServer({ engine, token: TOKEN });
  let requests: number[] = [];
  app.server.on("request", (_req, res) => {
    const start = performance.now();
    res.once("finish", () => requests.push(performance.now() - start));
  });
  const bytes = await readFile(IMAGE);
  process.on("message", (runs: number) => {
    timeInProcess(engine, bytes, runs).then(
      (times) => {
        process.send!({ ...times, requests });
        requests = [];
      },
      (err: Error) => {
        // The bench waits for an answer: exiting is how it learns there will be none.
        console.error(`in-process timing failed: ${err.message}`);
        process.exit(1);
      },
    );
  });
  process.stdout.write(`${url}\n`);
} else {
  await bench();
}

/** `runs` engine calls as the route makes them, bare and with the answer's PNG and RLE. */
async function timeInProcess(engine: SegmentEngine, bytes: Buffer, runs: number): Promise<EngineTimes> {
  const times: EngineTimes = { inProcess: [], withAnswer: [] };
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const result = await engine.segment(bytes, { points: [CLICK] });
    times.inProcess.push(performance.now() - t);
    if (!result.cached) throw new Error("the in-process call should hit the embedding cache");
    t = performance.now();
    const again = await engine.segment(bytes, { points: [CLICK] });
    await maskToPngBase64(again.masks[0]!.mask);
    encodeRle(again.masks[0]!.mask);
    times.withAnswer.push(performance.now() - t);
  }
  return times;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function serverRss(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text();
  return Number(/^process_resident_memory_bytes (\d+)/m.exec(text)?.[1]);
}

async function bench(): Promise<void> {
  const runs = Number(values.runs);
  const bytes = await readFile(IMAGE);

  // The body once, as a client would send it; every request repeats it, so the image stays cached.
  const form = new FormData();
  form.append("image", new Blob([new Uint8Array(bytes)]), "portrait.jpg");
  form.append("points", JSON.stringify([CLICK]));
  const encoded = new Response(form);
  const body = Buffer.from(await encoded.arrayBuffer());
  const headers = { "content-type": encoded.headers.get("content-type")!, authorization: `Bearer ${TOKEN}` };

  const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), dir, "--serve"], { stdio: ["ignore", "pipe", "inherit", "ipc"] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim()));
      child.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
    });
    // node:http with a keep-alive agent: the leanest client, so the ratio is the server's overhead.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const target = new URL(`${url}/v1/segment/interactive`);
    const post = () =>
      new Promise<void>((resolve, reject) => {
        const req = request(target, { method: "POST", agent, headers: { ...headers, "content-length": body.length } }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`the server answered ${res.statusCode}: ${Buffer.concat(chunks)}`))));
        });
        req.on("error", reject);
        req.end(body);
      });

    const inServer = (runs: number) =>
      new Promise<InProcessTimes>((resolve, reject) => {
        const exited = (code: number | null) => reject(new Error(`the server exited (${code}) while timing in process`));
        child.once("exit", exited);
        child.once("message", (times) => {
          child.off("exit", exited);
          resolve(times as InProcessTimes);
        });
        child.send(runs);
      });
    // The first request encodes the image; everything after runs on its cached embedding.
    for (let i = 0; i < 4; i++) await post();
    await inServer(1);

    const inProcess: number[] = [];
    const withAnswer: number[] = [];
    const loopback: number[] = [];
    const inServerRequests: number[] = [];
    // Alternating blocks, so drift in the machine's load (other jobs, thermal) hits both sides
    // alike. The in-process calls run in the server's own process on its own engine (asked for
    // over IPC), so this process only sends requests and the two sides differ by HTTP alone.
    const block = 10;
    for (let i = 0; i < runs; i += block) {
      const times = await inServer(block);
      inProcess.push(...times.inProcess);
      withAnswer.push(...times.withAnswer);
      inServerRequests.push(...times.requests);
      for (let j = 0; j < block; j++) {
        const t = performance.now();
        await post();
        loopback.push(performance.now() - t);
      }
    }
    agent.destroy();
    // Zero engine runs: only the last block's request times.
    inServerRequests.push(...(await inServer(0)).requests);

    // RSS is compared from a warm server: a first stretch of the same load settles what 50
    // connections allocate once (sockets, parser buffers, onnxruntime's arena at its peak).
    const load = (duration: number) =>
      autocannon({ url: `${url}/v1/segment/interactive`, method: "POST", headers, body, connections: Number(values.connections), duration });
    await load(Math.max(1, Math.round(Number(values.duration) / 6)));
    const rssBefore = await serverRss(url);
    const result = await load(Number(values.duration));
    const rssAfter = await serverRss(url);

    const p50 = {
      in_process_ms: median(inProcess),
      in_process_with_answer_ms: median(withAnswer),
      in_server_request_ms: median(inServerRequests),
      loopback_ms: median(loopback),
    };
    const ratio = p50.loopback_ms / p50.in_process_ms;
    const rssRatio = rssAfter / rssBefore;
    console.log(
      JSON.stringify(
        {
          model: dir,
          image: "test/fixtures/scenes/portrait.jpg",
          runs,
          p50_ms: Object.fromEntries(Object.entries(p50).map(([k, v]) => [k, Math.round(v * 100) / 100])),
          loopback_over_in_process: { value: Math.round(ratio * 1000) / 1000, budget: 1.2, over_budget: ratio > 1.2 },
          load: {
            connections: Number(values.connections),
            duration_s: Number(values.duration),
            requests: result.requests.total,
            requests_per_s: result.requests.average,
            errors: result.errors,
            timeouts: result.timeouts,
            non_2xx: result.non2xx,
            latency_ms: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
            rss_before_mb: Math.round(rssBefore / 1e5) / 10,
            rss_after_mb: Math.round(rssAfter / 1e5) / 10,
            rss_after_over_before: { value: Math.round(rssRatio * 1000) / 1000, budget: 1.1, over_budget: rssRatio > 1.1 },
            over_budget: result.errors + result.timeouts + result.non2xx > 0 || rssRatio > 1.1,
          },
        },
        null,
        2,
      ),
    );
  } finally {
    child.kill("SIGTERM");
  }
}
