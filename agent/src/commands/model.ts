import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, posix, resolve } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream } from "node:stream/web";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadConfig } from "../config/load.ts";
import { SAMPLES_DIR } from "../config/paths.ts";
import { isSamEdgeError, SamEdgeError } from "../core/errors.ts";
import { SegmentEngine } from "../segment/engine.ts";
import { loadForModel } from "../segment/preprocess.ts";
import { isModelName, readCatalog, sourceOf, CATALOG_FILE, type CatalogEntry } from "../model/catalog.ts";
import { candidateManifest, resolveModel, scanFolder, splitModelSpec, type Candidate } from "../model/folder.ts";
import { classifyGraph, mismatch, type DecoderSpec, type EncoderSpec } from "../model/layouts.ts";
import { manifestFiles, type ModelManifest } from "../model/manifest.ts";
import { readGraphSignature, type GraphSignature } from "../model/onnx-io.ts";
import { SamModel } from "../model/sam-model.ts";
import { InProcessEngine } from "../service/engine.ts";
import { selfTest } from "../service/self-test.ts";

export const MODEL_USAGE = `  sam-edge model list [--catalog FILE]
      the published models pull knows: publisher, layout, licence, files, which box each suits
  sam-edge model pull NAME [--library DIR] [--base-url URL|DIR] [--no-self-test] [--catalog FILE]
      downloads NAME (resuming a broken download), checks each file's sha256 (or records it on
      first use), writes its manifest, self-tests it and puts it in the library, whole or not at
      all; --base-url (or SAM_EDGE_MODEL_MIRROR) fetches <base>/NAME/<file> from a mirror or folder
  sam-edge model add DIR[#NAME] | ENCODER.onnx DECODER.onnx [--out DIR] [--force]
      inspects any export (files named as their publisher names them) and writes its manifest.json
      with each file's sha256; --out copies one model of a folder holding several into its own
  sam-edge model info DIR[#NAME] [--runs N] [--json]
      layout, inputs and outputs, sizes, and encoder/decoder milliseconds measured on this box
  sam-edge model use NAME|DIR [--url URL] [--token TOKEN] [--library DIR] [--config FILE]
      switches the running agent to that model (POST /v1/model: staged, self-tested, hot-swapped)`;

/** Where pulled models live unless --library says: beside the agent's state, not in it (updates prune <state_dir>/models). */
const LIBRARY = "library";
const MAX_DOWNLOAD_BYTES = 4 * 1024 * 1024 * 1024;
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

function usage(message: string): SamEdgeError {
  return new SamEdgeError("CONFIG_INVALID", `${message}\nusage:\n${MODEL_USAGE}`);
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/** Written whole, then renamed: an interrupted write leaves no half manifest. */
async function writeManifest(dir: string, manifest: ModelManifest & { bytes?: Record<string, number> }): Promise<string> {
  const path = join(dir, "manifest.json");
  await writeFile(`${path}.tmp`, JSON.stringify(manifest, null, 2) + "\n");
  await rename(`${path}.tmp`, path);
  return path;
}

/** The manifest of a candidate with every file's sha256 and size, for the model folder `dir`. */
async function checkedManifest(dir: string, base: ModelManifest, source: string): Promise<ModelManifest & { bytes: Record<string, number> }> {
  const files = manifestFiles(base);
  const sha256: Record<string, string> = {};
  const bytes: Record<string, number> = {};
  for (const f of files) {
    sha256[f] = await sha256File(join(dir, f));
    bytes[f] = (await stat(join(dir, f))).size;
  }
  return { ...base, source, sha256, bytes };
}

/** A progress line on stderr: redrawn in place on a terminal, every quarter in a log. */
function progress(label: string, total: number | null, out: NodeJS.WriteStream = process.stderr) {
  let shown = -1;
  return {
    update(done: number) {
      const share = total ? Math.min(1, done / total) : undefined;
      if (out.isTTY) {
        const bar = share === undefined ? "" : `[${"#".repeat(Math.round(share * 20)).padEnd(20)}] ${Math.floor(share * 100)}% `;
        out.write(`\r${label} ${bar}${mb(done)}${total ? ` of ${mb(total)}` : ""}   `);
      } else if (share !== undefined && Math.floor(share * 4) > shown) {
        shown = Math.floor(share * 4);
        out.write(`${label} ${shown * 25}% (${mb(done)} of ${mb(total!)})\n`);
      }
    },
    end(done: number) {
      out.write(`${out.isTTY ? "\r" : ""}${label} ${mb(done)}, done${out.isTTY ? "   " : ""}\n`);
    },
  };
}

/**
 * Downloads `url` to `dest`, resuming from what an earlier attempt left there (an HTTP Range
 * request; a server that ignores it sends the whole file again). A copy from a folder mirror
 * takes the same path. The file is complete when this returns.
 */
async function fetchFile(url: string, dest: string, expected: number | null, label: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  if (!/^https?:\/\//i.test(url)) {
    const from = url.startsWith("file:") ? fileURLToPath(url) : url;
    try {
      await copyFile(from, dest);
    } catch (err) {
      throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `${from} cannot be copied: ${(err as Error).message}`);
    }
    return;
  }
  const have = await stat(dest).then((s) => s.size, () => 0);
  let res: Response;
  try {
    res = await fetch(url, { headers: have > 0 ? { range: `bytes=${have}-` } : {}, redirect: "follow" });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `GET ${url} failed: ${cause?.code ?? cause?.message ?? (err as Error).message}; run pull again to retry`);
  }
  if (res.status === 416 && have > 0) {
    await res.body?.cancel();
    return; // what is there is the whole file already
  }
  if (res.status !== 200 && res.status !== 206) {
    await res.body?.cancel();
    throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `GET ${url} answered ${res.status} ${res.statusText}`);
  }
  const resumed = res.status === 206 && (res.headers.get("content-range") ?? "").startsWith(`bytes ${have}-`);
  let done = resumed ? have : 0;
  const length = Number(res.headers.get("content-length"));
  const total = Number.isFinite(length) && length > 0 ? done + length : expected;
  if (total !== null && total > MAX_DOWNLOAD_BYTES) {
    await res.body?.cancel();
    throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `${url} is ${total} bytes, over the ${MAX_DOWNLOAD_BYTES} a model file may be`);
  }
  const bar = progress(label, total);
  if (resumed) process.stderr.write(`${label}: resuming at ${mb(have)}\n`);
  const meter = new Transform({
    transform(chunk: Buffer, _enc, next) {
      done += chunk.length;
      if (done > MAX_DOWNLOAD_BYTES || (expected !== null && done > expected)) {
        next(new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `${url} sent more than ${expected ?? MAX_DOWNLOAD_BYTES} bytes`));
        return;
      }
      bar.update(done);
      next(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as ReadableStream<Uint8Array>), meter, createWriteStream(dest, { flags: resumed ? "a" : "w", highWaterMark: WRITE_BUFFER_BYTES }));
  } catch (err) {
    if (isSamEdgeError(err)) throw err;
    throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `${label}: the download broke off at ${mb(done)} (${(err as Error).message}); run pull again to resume`);
  }
  if (total !== null && done !== total) {
    throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `${label}: the download ended at ${done} of ${total} bytes; run pull again to resume`);
  }
  bar.end(done);
}

export interface PullOptions {
  library: string;
  base?: string;
  selfTest: boolean;
  log: (line: string) => void;
}

/**
 * Fetches a catalog model into `<library>/<name>`: into a staging folder first (kept between
 * attempts, so a broken download resumes), each file checked against the catalog's sha256 or its
 * sha256 recorded, the graphs' external data fetched from beside them, the manifest written, the
 * model loaded and self-tested; only then renamed into place. Whatever fails, the library holds
 * the earlier model of that name or none, never half of one.
 */
export async function pullModel(entry: CatalogEntry, options: PullOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const { library, base, log } = options;
  const staging = join(library, `.${entry.name}.partial`);
  const dest = join(library, entry.name);
  await mkdir(staging, { recursive: true });
  const recorded: string[] = [];
  const get = async (path: string, url: string | undefined, sha256: string | null, bytes: number | null) => {
    const file = join(staging, path);
    const from = sourceOf(entry, path, url, base);
    await fetchFile(from, file, bytes, `${entry.name}/${path}`);
    const actual = await sha256File(file);
    if (sha256 && actual !== sha256) {
      await rm(file, { force: true });
      throw new SamEdgeError("MODEL_UPDATE_CHECKSUM", `${from}: sha256 is ${actual}, but the catalog says ${sha256}; the file is corrupt or not the published one (it was removed)`);
    }
    if (!sha256) recorded.push(`${path} ${actual}`);
  };
  try {
    for (const f of entry.files) await get(f.path, f.url, f.sha256, f.bytes);
    // Weights over 2 GB live in external-data files the graph names: fetched from beside it.
    for (const f of entry.files) {
      let sig: GraphSignature;
      try {
        sig = await readGraphSignature(join(staging, f.path));
      } catch (err) {
        await rm(join(staging, f.path), { force: true });
        throw new SamEdgeError("MODEL_UPDATE_INVALID", `${entry.name}/${f.path}: ${(err as Error).message.replace(`${join(staging, f.path)} `, "")} (the file was removed)`);
      }
      for (const loc of sig.externalData) {
        const path = posix.join(posix.dirname(f.path), loc);
        await get(path, base ? undefined : new URL(loc, f.url).href, null, null);
      }
    }
    const scan = await scanFolder(staging);
    if (scan.candidates.length !== 1) {
      throw new SamEdgeError("MODEL_UPDATE_INVALID", `${entry.name}: its files make ${scan.candidates.length} models, not one (${scan.others.map((o) => `${o.file}: ${o.what}`).join("; ")})`);
    }
    const source = `${entry.title}, ${entry.publisher} (${entry.page}), pulled from ${base ?? "its publisher"}`;
    const manifest = await checkedManifest(staging, candidateManifest(scan.candidates[0]!), source);
    manifest.name = entry.name;
    await writeManifest(staging, manifest);
    if (recorded.length) log(`${entry.name}: the catalog gives no sha256 for ${recorded.length === 1 ? "this file" : "these files"}; recorded on first use in its manifest:\n  ${recorded.join("\n  ")}`);
    const engine = new InProcessEngine(new SegmentEngine(await SamModel.load(staging)));
    try {
      if (options.selfTest) {
        const report = await selfTest(engine);
        log(`${entry.name}: self-test passed (IoU ${report.ious.join(", ")} on agent/samples/${report.frame})`);
      } else {
        log(`${entry.name}: self-test skipped (--no-self-test)`);
      }
    } finally {
      await engine.release();
    }
    const old = join(library, `.${entry.name}.old`);
    await rm(old, { recursive: true, force: true });
    const had = await stat(dest).then(() => true, () => false);
    if (had) await rename(dest, old);
    await rename(staging, dest);
    await rm(old, { recursive: true, force: true });
    return { dir: dest, manifest };
  } catch (err) {
    // A download that broke off stays staged to resume; a model that is wrong does not.
    const resumable = isSamEdgeError(err) && err.code === "MODEL_UPDATE_FETCH_FAILED";
    if (!resumable) await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

/** Copies a model's files (keeping their relative paths) into `out`. */
async function copyModel(dir: string, manifest: ModelManifest, out: string): Promise<void> {
  for (const f of manifestFiles(manifest)) {
    await mkdir(dirname(join(out, f)), { recursive: true });
    await copyFile(join(dir, f), join(out, f));
  }
}

/** The model named by `add`'s arguments: `DIR`, `DIR#NAME`, or an encoder and a decoder file of one folder. */
async function addTarget(positionals: string[]): Promise<{ dir: string; chosen: Candidate; among: number }> {
  if (positionals.length === 2) {
    const paths = positionals.map((p) => resolve(p));
    const dir = dirname(paths[0]!);
    if (dirname(paths[1]!) !== dir) throw usage("model add ENCODER DECODER: both files must be in one folder (a manifest names files inside its folder)");
    const sigs = await Promise.all(paths.map((p) => readGraphSignature(p)));
    const specs = sigs.map(classifyGraph);
    const e = specs.findIndex((g) => g.role === "encoder");
    const d = specs.findIndex((g) => g.role === "decoder");
    if (e < 0 || d < 0) {
      throw new SamEdgeError("MODEL_INVALID", `model add needs an encoder and a decoder; found ${paths.map((p, i) => `${basename(p)}: ${specs[i]!.label}`).join("; ")}`);
    }
    const [encoderSpec, decoderSpec] = [specs[e] as EncoderSpec, specs[d] as DecoderSpec];
    const problem = mismatch(encoderSpec, decoderSpec);
    const data = [...new Set(sigs.flatMap((sig) => sig.externalData))];
    const chosen: Candidate = { name: basename(dir), encoder: basename(paths[e]!), decoder: basename(paths[d]!), data, encoderSpec, decoderSpec, ...(problem ? { problem } : {}) };
    return { dir, chosen, among: 1 };
  }
  if (positionals.length !== 1) throw usage("model add takes one DIR (or DIR#NAME), or an ENCODER and a DECODER file");
  const { dir, name } = await splitModelSpec(positionals[0]!);
  const scan = await scanFolder(dir);
  const chosen = name === undefined && scan.candidates.length === 1 ? scan.candidates[0] : scan.candidates.find((c) => c.name === name);
  if (!chosen) {
    // resolveModel says which models there are, or why there is none.
    await resolveModel(positionals[0]!);
    throw usage(`${dir}: no model "${name}"`);
  }
  return { dir, chosen, among: scan.candidates.length };
}

async function addCommand(args: string[], log: (line: string) => void): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { out: { type: "string" }, force: { type: "boolean" } } });
  const { dir, chosen, among } = await addTarget(positionals);
  const hasManifest = await stat(join(dir, "manifest.json")).then(() => true, () => false);
  if (hasManifest && !values.force && !values.out) throw usage(`${dir} has a manifest.json already; --force rewrites it from the files`);
  if (chosen.problem) throw new SamEdgeError("MODEL_INVALID", `${dir}: ${chosen.problem}`);
  if (among > 1 && !values.out) {
    throw usage(`${dir} holds ${among} models; a manifest.json there would hide all but one: add --out DIR to copy ${chosen.name} into a folder of its own`);
  }
  let target = dir;
  if (values.out) {
    target = resolve(values.out);
    await mkdir(target, { recursive: true });
    await copyModel(dir, candidateManifest(chosen), target);
  }
  const manifest = await checkedManifest(target, candidateManifest(chosen), `added by sam-edge model add from ${resolve(dir)}`);
  const path = await writeManifest(target, manifest);
  // Loading it checks what was written: the files, their sha256, encoder against decoder.
  const model = await SamModel.load(target);
  await model.release();
  log(`${path}: ${manifest.name}, ${manifest.layout}; ${manifestFiles(manifest).map((f) => `${f} ${mb(manifest.bytes[f]!)}`).join(", ")}`);
}

async function infoCommand(args: string[], log: (line: string) => void): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { runs: { type: "string", default: "3" }, json: { type: "boolean" } } });
  if (positionals.length !== 1) throw usage("model info takes one DIR (or DIR#NAME)");
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw usage("--runs must be a whole number from 1 to 100");
  const files = await resolveModel(positionals[0]!);
  const { dir, manifest } = files;
  const graphs: Record<string, unknown> = {};
  for (const f of [manifest.encoder, manifest.decoder, ...(manifest.decoderBatch ? [manifest.decoderBatch] : [])]) {
    const sig = await readGraphSignature(join(dir, f));
    graphs[f] = { inputs: sig.inputs, outputs: sig.outputs };
  }
  const bytes = Object.fromEntries(await Promise.all(manifestFiles(manifest).map(async (f) => [f, (await stat(join(dir, f))).size] as const)));
  const model = await SamModel.load(positionals[0]!);
  const median = (xs: number[]) => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! * 10) / 10;
  let timing: { encoder_ms: number; decoder_ms: number };
  try {
    const image = await loadForModel(await readFile(join(SAMPLES_DIR, "shapes-portrait.jpg")), model.input);
    const enc: number[] = [];
    const dec: number[] = [];
    let features = await model.encode(image);
    for (let i = 0; i < runs; i++) {
      const before = model.sessionMs;
      features = await model.encode(image);
      enc.push(model.sessionMs - before);
    }
    const s = image.resizedWidth / image.width;
    const inputs = { embedding: features, coords: Float32Array.of(240 * s, 320 * (image.resizedHeight / image.height), 0, 0), labels: Float32Array.of(1, -1), batch: 1, points: 2, origSize: { width: image.width, height: image.height } };
    await model.decode(inputs);
    for (let i = 0; i < runs * 3; i++) {
      const before = model.sessionMs;
      await model.decode(inputs);
      dec.push(model.sessionMs - before);
    }
    timing = { encoder_ms: median(enc), decoder_ms: median(dec) };
  } finally {
    await model.release();
  }
  const info = { name: manifest.name, dir, layout: model.layout, input: model.input, can_batch: model.canBatch, files: bytes, total_bytes: Object.values(bytes).reduce((a, b) => a + b, 0), graphs, ...timing, measured_on: "this box, onnxruntime's default threads, the 480x640 sample" };
  if (values.json) {
    log(JSON.stringify(info, null, 2));
    return;
  }
  const lines = [
    `${manifest.name} (${dir})`,
    `  encoder: ${model.layout.encoder}`,
    `  decoder: ${model.layout.decoder}`,
    `  input: ${model.input.size} px, ${model.input.fit}; ${model.canBatch ? "batches prompts" : "one prompt set per decoder call"}`,
    ...Object.entries(bytes).map(([f, n]) => `  ${f}: ${mb(n)}`),
    ...Object.entries(graphs).flatMap(([f, g]) => {
      const io = g as { inputs: { name: string; shape: unknown[] }[]; outputs: { name: string; shape: unknown[] }[] };
      const d = (ts: { name: string; shape: unknown[] }[]) => ts.map((t) => `${t.name} [${t.shape.join(",")}]`).join(", ");
      return [`  ${f}: in ${d(io.inputs)}; out ${d(io.outputs)}`];
    }),
    `  on this box: encoder ${timing.encoder_ms} ms, decoder ${timing.decoder_ms} ms (median of ${runs} and ${runs * 3} runs)`,
  ];
  log(lines.join("\n"));
}

async function libraryDir(given: string | undefined, config: string | undefined): Promise<string> {
  if (given) return resolve(given);
  const loaded = await loadConfig(config ? { file: config } : {});
  return join(loaded.state_dir, LIBRARY);
}

async function useCommand(args: string[], log: (line: string) => void): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { url: { type: "string" }, token: { type: "string" }, library: { type: "string" }, config: { type: "string" } },
  });
  if (positionals.length !== 1) throw usage("model use takes one NAME (pulled) or DIR");
  const target = positionals[0]!;
  let source: string;
  if (isModelName(target) && !target.includes("/")) {
    const inLibrary = join(await libraryDir(values.library, values.config), target);
    const there = await stat(inLibrary).then((s) => s.isDirectory(), () => false);
    source = there ? inLibrary : resolve(target);
  } else {
    source = isAbsolute(target) ? target : resolve(target);
  }
  if (!(await stat(join(source, "manifest.json")).then(() => true, () => false))) {
    throw new SamEdgeError("MODEL_NOT_FOUND", `${source} has no manifest.json: pull the model, or write one with sam-edge model add ${target}`);
  }
  let url = values.url;
  let token = values.token;
  if (!url || !token) {
    const config = await loadConfig(values.config ? { file: values.config } : {});
    const host = ["0.0.0.0", "::", ""].includes(config.http.host) ? "127.0.0.1" : config.http.host;
    url ??= `http://${host.includes(":") ? `[${host}]` : host}:${config.http.port}`;
    token ??= config.http.token;
  }
  let res: Response;
  try {
    res = await fetch(new URL("/v1/model", url), {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ source }),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    throw new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `no agent answers at ${url} (${cause?.code ?? (err as Error).message}); start it with sam-edge run, or give --url`);
  }
  const body = (await res.json().catch(() => ({}))) as { model?: { name?: string }; update?: { last?: { self_test?: { ious?: number[] } } }; error?: { code?: string; message?: string } };
  if (!res.ok) {
    throw new SamEdgeError("MODEL_UPDATE_FAILED", `the agent at ${url} refused ${source}: ${body.error?.code ?? res.status}: ${body.error?.message ?? res.statusText}`);
  }
  log(`the agent at ${url} now serves ${body.model?.name} from ${source} (self-test IoU ${body.update?.last?.self_test?.ious?.join(", ") ?? "?"})`);
}

async function listCommand(catalog: string, log: (line: string) => void): Promise<void> {
  for (const e of await readCatalog(catalog)) {
    const size = e.files.every((f) => f.bytes !== null) ? mb(e.files.reduce((a, f) => a + f.bytes!, 0)) : "size not in the catalog";
    log(
      [
        `${e.name}: ${e.title}`,
        `  publisher: ${e.publisher} (${e.page})`,
        `  licence: ${e.licence}; suits: ${e.suits}`,
        `  layout: ${e.layout}; ${size}`,
        ...e.files.map((f) => `  ${f.path} <- ${f.url}${f.sha256 ? "" : " (sha256 recorded on first pull)"}`),
      ].join("\n"),
    );
  }
}

/** `sam-edge model ...`: throws SamEdgeError (the CLI prints it and exits 1). */
export async function modelCommand(argv: string[], log: (line: string) => void = (line) => console.log(line)): Promise<void> {
  const [sub, ...args] = argv;
  if (sub === "list") {
    const { values } = parseArgs({ args, options: { catalog: { type: "string", default: CATALOG_FILE } } });
    return listCommand(values.catalog, log);
  }
  if (sub === "pull") {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { library: { type: "string" }, "base-url": { type: "string" }, "no-self-test": { type: "boolean" }, catalog: { type: "string", default: CATALOG_FILE }, config: { type: "string" } },
    });
    if (positionals.length !== 1) throw usage("model pull takes one NAME (see sam-edge model list)");
    const name = positionals[0]!;
    if (!isModelName(name)) throw usage(`"${name}" is not a model name: one folder name, letters, digits, '.', '_', '-', no ".."`);
    const entry = (await readCatalog(values.catalog)).find((e) => e.name === name);
    if (!entry) throw new SamEdgeError("MODEL_NOT_FOUND", `${values.catalog} has no model "${name}"; sam-edge model list shows those it has`);
    const base = values["base-url"] ?? process.env.SAM_EDGE_MODEL_MIRROR;
    const library = await libraryDir(values.library, values.config);
    const { dir, manifest } = await pullModel(entry, { library, ...(base ? { base } : {}), selfTest: !values["no-self-test"], log });
    log(`${entry.name}: ${dir} (${manifest.layout}); switch the agent to it with: sam-edge model use ${entry.name}`);
    return;
  }
  if (sub === "add") return addCommand(args, log);
  if (sub === "info") return infoCommand(args, log);
  if (sub === "use") return useCommand(args, log);
  throw usage(sub ? `unknown model command "${sub}"` : "model takes a command");
}
