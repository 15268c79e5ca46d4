/**
 * The local HTTP API's overhead and its behaviour under load, on this machine:
 *
 *   npx tsx bench/http.ts [MODEL_DIR] [--runs N] [--duration S] [--connections C]
 *
 * The server runs in a child process (this script with --serve), so the load generator and the
 * server do not share an event loop and the server's RSS is its own (read from its /metrics).
 * Prints JSON:
 * - loopback_over_in_process: p50 of POST /v1/segment/interactive on a cached image over
 *   loopback, over the p50 of the same engine.segment call inside the server process (its old
 *   budget, 1.2, is retired: it measured this VM's noise more than the API; the API's own cost
 *   is `api_over_bare_route_ms`),
 *   once per client: `minimal` is an HTTP/1.1 client of a few lines on one kept-alive socket
 *   (request bytes built once, response read to its Content-Length), so its time is the
 *   server's and the wire's; `node_http` is node:http with a keep-alive agent, which adds the
 *   client library's own work. in_process_with_answer_ms adds what the route does after the
 *   engine (mask PNG, RLE), and in_server_request_ms is the server's own time per request
 *   (headers in to response written; in_server_phases_p50_ms splits it into reading the body,
 *   handling it and writing the answer), to show where the difference goes: what the minimal
 *   client's time adds to it is the two processes' wake-ups and the transfer. A bare fastify
 *   route in the same process (multipart, the engine call and the same answer; no auth,
 *   schemas or metrics), called by the same minimal client in the same blocks, is the floor
 *   the API's own code stands on: `api_over_bare_route_ms` is the median of the paired
 *   differences (the API's i-th request minus the bare route's i-th). A busy route beside it
 *   answers the same bytes after a busy wait of BUSY_MS instead of the engine call: its
 *   overhead (`overhead_p50_ms.busy_route`, its p50 less BUSY_MS) is HTTP's cost with no model
 *   run beside it, against the API's (`overhead_p50_ms.api`, its p50 less the engine call's);
 * - load: C concurrent clients for S seconds on the same cached request (autocannon): errors
 *   and non-2xx other than 503 BUSY (0 wanted; BUSY is how the bounded queue answers more
 *   clients than its line holds, and is counted apart), p99, and the server's RSS before and
 *   after (within 10%), "before"
 *   being a warm server's: stretches of S/6 seconds of the same load repeat until one moves
 *   RSS by less than 2% either way (at most 6; `warmup_rss_mb` lists RSS after each, so a
 *   server that never settles shows as one).
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { Agent, request } from "node:http";
import { connect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import Fastify from "fastify";
import { BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";
import { DEFAULT_BODY_LIMIT } from "../agent/src/http/limits.ts";
import { registerMultipart } from "../agent/src/http/multipart.ts";
import { createServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { encodeRle, maskToPngBase64 } from "../agent/src/segment/formats/index.ts";
import type { Point } from "../agent/src/segment/prompts.ts";
import { encodeForm } from "../test/helpers/form-data.ts";
import { median } from "./stats.ts";
import { wholeNumber } from "./options.ts";

const IMAGE = fileURLToPath(new URL("../test/fixtures/scenes/portrait.jpg", import.meta.url));
const CLICK = { x: 240, y: 320, label: 1 as const };
const TOKEN = "bench-token";
const hundredths = (ms: number): number => Math.round(ms * 100) / 100;
/** The busy route's stand-in for the engine call: about the bundled model's click here. */
const BUSY_MS = 9;

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
// The two sides alternate in blocks of 10 runs.
const runs = wholeNumber("runs", values.runs, 10);
const duration = wholeNumber("duration", values.duration, 1);
const connections = wholeNumber("connections", values.connections, 1);

/** Engine calls timed inside the server process, bare and with the answer's PNG and RLE. */
interface EngineTimes {
  inProcess: number[];
  withAnswer: number[];
}

/**
 * Where a request's time goes in the server, from its headers' arrival: `read` until its body is
 * read, parsed and authorised (fastify's preValidation), `handle` until the answer is serialised
 * (onSend: validation, the engine call, the mask's PNG and RLE), `write` until the response is
 * handed to the kernel ('finish').
 */
interface RequestPhases {
  read: number;
  handle: number;
  write: number;
}

/** The server's answer over IPC: its engine times, and the phases of each request since the last ask. */
interface InProcessTimes extends EngineTimes {
  requests: RequestPhases[];
}

/**
 * HTTP/1.1 on one kept-alive socket, one request at a time: the request's bytes are built once,
 * and a response is complete when its Content-Length bytes of body have arrived.
 */
class MinimalClient {
  private pending?: { resolve: () => void; reject: (err: Error) => void };
  private received: Buffer[] = [];

  private constructor(
    private readonly socket: Socket,
    private readonly requestBytes: Buffer,
  ) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.settle(err));
    socket.on("close", () => this.settle(new Error("the server closed the connection")));
  }

  static async connect(target: URL, headers: Record<string, string>, body: Buffer): Promise<MinimalClient> {
    const socket = connect(Number(target.port), target.hostname);
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    const lines = [`POST ${target.pathname} HTTP/1.1`, `host: ${target.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), `content-length: ${body.length}`];
    return new MinimalClient(socket, Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), body]));
  }

  post(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket.write(this.requestBytes);
    });
  }

  close(): void {
    this.socket.removeAllListeners("close");
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.received.push(chunk);
    const data = Buffer.concat(this.received);
    const headEnd = data.indexOf("\r\n\r\n");
    if (headEnd < 0) return;
    const head = data.subarray(0, headEnd).toString("latin1");
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length) {
      this.settle(new Error(`the response has no Content-Length: ${head}`));
      return;
    }
    if (data.length < headEnd + 4 + Number(length[1])) return;
    this.received = [];
    const status = head.slice(9, 12);
    this.settle(status === "200" ? undefined : new Error(`the server answered ${status}: ${data.subarray(headEnd + 4)}`));
  }

  private settle(err?: Error): void {
    const pending = this.pending;
    this.pending = undefined;
    if (!pending) return;
    if (err) pending.reject(err);
    else pending.resolve();
  }
}

if (values.serve) {
  const engine = new SegmentEngine(await SamModel.load(dir));
  const app = await createServer({ engine, token: TOKEN });
  let requests: RequestPhases[] = [];
  const started = new WeakMap<object, { start: number; parsed: number; serialised: number }>();
  app.server.on("request", (req, res) => {
    const marks = { start: performance.now(), parsed: Number.NaN, serialised: Number.NaN };
    started.set(req, marks);
    res.once("finish", () => {
      const end = performance.now();
      // A request refused before validation (none here) has no phases to split.
      if (Number.isNaN(marks.parsed + marks.serialised)) return;
      requests.push({ read: marks.parsed - marks.start, handle: marks.serialised - marks.parsed, write: end - marks.serialised });
    });
  });
  // Callback hooks: async ones would each add a turn of the microtask queue to what they time.
  app.addHook("preValidation", (request, _reply, done) => {
    started.get(request.raw)!.parsed = performance.now();
    done();
  });
  app.addHook("onSend", (request, _reply, payload, done) => {
    started.get(request.raw)!.serialised = performance.now();
    done(null, payload);
  });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  const bytes = await readFile(IMAGE);
  const bare = Fastify({ bodyLimit: DEFAULT_BODY_LIMIT });
  registerMultipart(bare, DEFAULT_BODY_LIMIT);
  const bareAnswer = async (image: Buffer, points: Point[]) => {
    const best = (await engine.segment(image, { points }, { bestOnly: true })).masks[0]!;
    return { mask: await maskToPngBase64(best.mask, best.bbox), bbox: best.bbox, confidence: best.confidence, rle: encodeRle(best.mask, best.bbox) };
  };
  bare.post("/bare", async (request) => {
    const body = request.body as { image: Buffer; points: string };
    return bareAnswer(body.image, JSON.parse(body.points) as Point[]);
  });
  // The bare route with the engine call and the answer's encoding swapped for a busy wait of
  // about the engine's time and an answer made once: HTTP's cost with no model run beside it.
  const answerOnce = await bareAnswer(bytes, [CLICK]);
  bare.post("/busy", async () => {
    for (const until = performance.now() + BUSY_MS; performance.now() < until; );
    return answerOnce;
  });
  await bare.listen({ host: "127.0.0.1", port: 0 });
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
  process.stdout.write(`${url} http://127.0.0.1:${(bare.server.address() as { port: number }).port}\n`);
} else {
  await bench();
}

/** `runs` engine calls as the route makes them, bare and with the answer's PNG and RLE. */
async function timeInProcess(engine: SegmentEngine, bytes: Buffer, runs: number): Promise<EngineTimes> {
  const times: EngineTimes = { inProcess: [], withAnswer: [] };
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const result = await engine.segment(bytes, { points: [CLICK] }, { bestOnly: true });
    times.inProcess.push(performance.now() - t);
    if (!result.cached) throw new Error("the in-process call should hit the embedding cache");
    t = performance.now();
    const again = await engine.segment(bytes, { points: [CLICK] }, { bestOnly: true });
    const best = again.masks[0]!;
    await maskToPngBase64(best.mask, best.bbox);
    encodeRle(best.mask, best.bbox);
    times.withAnswer.push(performance.now() - t);
  }
  return times;
}

async function serverRss(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text();
  return Number(/^process_resident_memory_bytes (\d+)/m.exec(text)?.[1]);
}

async function bench(): Promise<void> {
  const bytes = await readFile(IMAGE);

  // The body once, as a client would send it; every request repeats it, so the image stays cached.
  const form = new FormData();
  form.append("image", new Blob([new Uint8Array(bytes)]), "portrait.jpg");
  form.append("points", JSON.stringify([CLICK]));
  const { body, contentType } = await encodeForm(form);
  const headers = { "content-type": contentType, authorization: `Bearer ${TOKEN}` };

  const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), dir, "--serve"], { stdio: ["ignore", "pipe", "inherit", "ipc"] });
  try {
    const [url, bareUrl] = await new Promise<[string, string]>((resolve, reject) => {
      child.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim().split(" ") as [string, string]));
      child.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
    });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const target = new URL(`${url}/v1/segment/interactive`);
    const viaNodeHttp = () =>
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
    const minimal = await MinimalClient.connect(target, headers, body);
    const bareRoute = await MinimalClient.connect(new URL(`${bareUrl}/bare`), headers, body);
    const busyRoute = await MinimalClient.connect(new URL(`${bareUrl}/busy`), headers, body);
    const clients = { minimal: () => minimal.post(), node_http: viaNodeHttp, bare_route: () => bareRoute.post(), busy_route: () => busyRoute.post() };

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
    for (let i = 0; i < 4; i++) for (const post of Object.values(clients)) await post();
    await inServer(1);

    const inProcess: number[] = [];
    const withAnswer: number[] = [];
    const loopback: Record<keyof typeof clients, number[]> = { minimal: [], node_http: [], bare_route: [], busy_route: [] };
    const inServerRequests: RequestPhases[] = [];
    // Alternating blocks, so drift in the machine's load (other jobs, thermal) hits both sides
    // alike. The in-process calls run in the server's own process on its own engine (asked for
    // over IPC), so this process only sends requests and the two sides differ by HTTP alone.
    const block = 10;
    for (let i = 0; i < runs; i += block) {
      const times = await inServer(block);
      inProcess.push(...times.inProcess);
      withAnswer.push(...times.withAnswer);
      inServerRequests.push(...times.requests);
      for (const [name, post] of Object.entries(clients)) {
        for (let j = 0; j < block; j++) {
          const t = performance.now();
          await post();
          loopback[name as keyof typeof clients].push(performance.now() - t);
        }
      }
    }
    agent.destroy();
    minimal.close();
    bareRoute.close();
    busyRoute.close();
    // Zero engine runs: only the last block's request times.
    inServerRequests.push(...(await inServer(0)).requests);

    // RSS is compared from a warm server: what 50 connections allocate once (sockets, parser
    // buffers, onnxruntime's arena at its peak, the heap the garbage collector settles on) takes
    // longer to reach the fewer bytes each request allocates, so the warm-up lasts until it has.
    const load = (seconds: number) =>
      autocannon({ url: `${url}/v1/segment/interactive`, method: "POST", headers, body, connections, duration: seconds });
    const warmupRss = [await serverRss(url)];
    for (let stretch = 0; stretch < 6; stretch++) {
      await load(Math.max(1, Math.round(duration / 6)));
      warmupRss.push(await serverRss(url));
      // Settled means neither growing nor shrinking: a stretch whose garbage collection gave
      // memory back would otherwise leave a low baseline that the next run's usual swing exceeds.
      if (Math.abs(warmupRss.at(-1)! / warmupRss.at(-2)! - 1) < 0.02) break;
    }
    const rssBefore = warmupRss.at(-1)!;
    const result = await load(duration);
    const rssAfter = await serverRss(url);

    const p50 = {
      in_process_ms: median(inProcess),
      in_process_with_answer_ms: median(withAnswer),
      in_server_request_ms: median(inServerRequests.map((r) => r.read + r.handle + r.write)),
      loopback_minimal_ms: median(loopback.minimal),
      loopback_node_http_ms: median(loopback.node_http),
      loopback_bare_route_ms: median(loopback.bare_route),
      loopback_busy_route_ms: median(loopback.busy_route),
    };
    const ratio = (ms: number) => Math.round((ms / p50.in_process_ms) * 1000) / 1000;
    const busy = (result.statusCodeStats as Record<string, { count: number }> | undefined)?.["503"]?.count ?? 0;
    const rssRatio = rssAfter / rssBefore;
    console.log(
      JSON.stringify(
        {
          model: dir,
          image: "test/fixtures/scenes/portrait.jpg",
          runs,
          p50_ms: Object.fromEntries(Object.entries(p50).map(([k, v]) => [k, hundredths(v)])),
          in_server_phases_p50_ms: Object.fromEntries((["read", "handle", "write"] as const).map((k) => [k, hundredths(median(inServerRequests.map((r) => r[k])))])),
          loopback_over_in_process: { minimal: ratio(p50.loopback_minimal_ms), node_http: ratio(p50.loopback_node_http_ms) },
          api_over_bare_route_ms: hundredths(median(loopback.minimal.map((ms, i) => ms - loopback.bare_route[i]!))),
          overhead_p50_ms: {
            api: hundredths(p50.loopback_minimal_ms - p50.in_process_ms),
            busy_route: hundredths(p50.loopback_busy_route_ms - BUSY_MS),
          },
          load: {
            connections,
            duration_s: duration,
            requests: result.requests.total,
            requests_per_s: result.requests.average,
            errors: result.errors,
            timeouts: result.timeouts,
            busy_503: busy,
            other_non_2xx: result.non2xx - busy,
            latency_ms: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
            warmup_rss_mb: warmupRss.slice(1).map((rss) => Math.round(rss / 1e5) / 10),
            rss_before_mb: Math.round(rssBefore / 1e5) / 10,
            rss_after_mb: Math.round(rssAfter / 1e5) / 10,
            rss_after_over_before: { value: Math.round(rssRatio * 1000) / 1000, budget: 1.1, over_budget: rssRatio > 1.1 },
            over_budget: result.errors + result.timeouts + result.non2xx - busy > 0 || rssRatio > 1.1,
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
