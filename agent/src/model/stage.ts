import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { Readable, Transform } from "node:stream";
import type { ReadableStream } from "node:stream/web";
import { pipeline } from "node:stream/promises";
import { isSamEdgeError, SamEdgeError, type ErrorCode } from "../core/errors.ts";
import { realPathInside } from "../core/files.ts";
import { jsonSyntaxProblem } from "../core/json.ts";
import { FetchRefused, PolicedFetch, type FetchPolicy } from "./fetch-policy.ts";
import { manifestFiles, parseManifest, type ModelManifest } from "./manifest.ts";

/** Where a model update comes from: a folder on this box, or a web folder holding manifest.json and the files it names. */
export type ModelSource = { kind: "folder"; dir: string } | { kind: "url"; base: URL };

export interface StageLimits {
  /** Largest model file, in bytes (model.update.max_bytes). */
  maxBytes: number;
  /** For a URL source: the manifest and every file together (model.update.timeout_ms). */
  timeoutMs: number;
}

export interface StagedModel {
  /** The verified copy, under the agent's models folder. */
  dir: string;
  manifest: ModelManifest;
}

const MAX_SOURCE_LENGTH = 4096;
const MAX_MANIFEST_BYTES = 1024 * 1024;
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

const fail = (code: ErrorCode, message: string) => new SamEdgeError(code, message);

/** An update's `source` as the request gave it: an absolute folder path or an http(s) URL. */
export function parseSource(text: unknown): ModelSource {
  const example = 'e.g. {"source": "/opt/models/mobile-sam"} or {"source": "https://models.example.com/mobile-sam/"}';
  if (typeof text !== "string" || text.trim() === "") throw fail("MODEL_UPDATE_SOURCE_INVALID", `"source" must be a folder path or an http(s) URL, ${example}`);
  if (text.length > MAX_SOURCE_LENGTH) throw fail("MODEL_UPDATE_SOURCE_INVALID", `"source" is ${text.length} characters; at most ${MAX_SOURCE_LENGTH}`);
  if (/^[a-z][a-z0-9+.-]*:/i.test(text) && !isAbsolute(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw fail("MODEL_UPDATE_SOURCE_INVALID", `"source" ${JSON.stringify(text)} is not a valid URL, ${example}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw fail("MODEL_UPDATE_SOURCE_INVALID", `"source" uses ${url.protocol}; a model set is fetched over http:// or https://, or read from a folder given as a plain absolute path`);
    }
    if (url.username || url.password) throw fail("MODEL_UPDATE_SOURCE_INVALID", `"source" carries credentials; serve the model set without them (they would end up in logs)`);
    // The folder of the manifest: ".../mobile-sam", ".../mobile-sam/" and ".../mobile-sam/manifest.json" all name it.
    const path = url.pathname.replace(/\/manifest\.json$/, "/");
    url.pathname = path.endsWith("/") ? path : `${path}/`;
    url.search = "";
    url.hash = "";
    return { kind: "url", base: url };
  }
  if (!isAbsolute(text)) {
    throw fail("MODEL_UPDATE_SOURCE_INVALID", `"source" ${JSON.stringify(text)} is neither an absolute folder path nor an http(s) URL; a relative path would depend on the agent's working directory`);
  }
  return { kind: "folder", dir: text };
}

export function describeSource(source: ModelSource): string {
  return source.kind === "url" ? source.base.href : source.dir;
}

/** Refuses a file of a folder source that is a link to somewhere else: the agent reads a model set, nothing beside it. */
async function inFolder(dir: string, file: string): Promise<void> {
  if (!(await realPathInside(dir, file))) {
    throw fail("MODEL_UPDATE_INVALID", `${join(dir, file)} is a symbolic link that leads out of ${dir}; copy the file into the model folder instead`);
  }
}

/** A name safe as one path segment, from the manifest's free-text name. */
function folderName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.-]/g, "-").replace(/^\.+/, "").slice(0, 64) || "model";
}

function reason(err: unknown): string {
  const e = err as Error & { cause?: { message?: string; code?: string } };
  if (e?.name === "TimeoutError") return "it took longer than model.update.timeout_ms";
  return [e?.message, e?.cause?.code ?? e?.cause?.message].filter(Boolean).join(": ") || String(err);
}

/**
 * Copies `input` to `dest`, hashing as it goes and stopping at `maxBytes`. Errors of the
 * agent's own disk (full, read-only) are MODEL_UPDATE_FAILED; those of the source are `sourceCode`.
 */
async function writeHashed(input: Readable, dest: string, maxBytes: number, from: string, sourceCode: ErrorCode): Promise<string> {
  const hash = createHash("sha256");
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) done(fail(sourceCode, `${from} is over model.update.max_bytes (${maxBytes} bytes); raise the limit for models this large`));
      else {
        hash.update(chunk);
        done(null, chunk);
      }
    },
  });
  try {
    // A large buffer: each write waits for a libuv thread, which onnxruntime's runs hold while
    // the agent serves; few big writes keep a download from crawling behind them.
    await pipeline(input, meter, createWriteStream(dest, { highWaterMark: WRITE_BUFFER_BYTES }));
  } catch (err) {
    if (isSamEdgeError(err)) throw err;
    if ((err as NodeJS.ErrnoException).path === dest) throw fail("MODEL_UPDATE_FAILED", `writing ${dest} failed: ${reason(err)}; check the free space and permissions of the state dir`);
    throw fail(sourceCode, `reading ${from} failed: ${reason(err)}`);
  }
  return hash.digest("hex");
}

/** What staging reads of an answer, from Node's fetch or undici's. */
interface FetchedResponse {
  ok: boolean;
  status: number;
  statusText: string;
  headers: { get(name: string): string | null };
  body: ReadableStream<Uint8Array> | null;
}

/**
 * How a URL source is fetched. Without a policy (the owner's own command on the box) errors say
 * what went wrong; under one (a request from the network) every failure of the fetch is one
 * message, the detail going to the agent's log only, so the agent cannot be used to probe
 * what answers on its network and how (a 404 and a reset connection look the same).
 */
class Fetcher {
  private readonly policed: PolicedFetch | undefined;

  constructor(
    private readonly base: URL,
    policy: FetchPolicy | undefined,
  ) {
    this.policed = policy ? new PolicedFetch(policy) : undefined;
  }

  /** A MODEL_UPDATE_FETCH_FAILED error, generic under a policy. */
  failed(detail: string): SamEdgeError {
    if (!this.policed) return fail("MODEL_UPDATE_FETCH_FAILED", detail);
    return new SamEdgeError("MODEL_UPDATE_FETCH_FAILED", `the model set at ${this.base.href} could not be fetched; the agent's log says why`, { detail });
  }

  async get(url: URL, signal: AbortSignal): Promise<FetchedResponse> {
    let res: Awaited<ReturnType<PolicedFetch["get"]>> | Response;
    try {
      res = this.policed ? await this.policed.get(url, signal) : await fetch(url, { signal });
    } catch (err) {
      throw this.failed(err instanceof FetchRefused ? `GET ${url.href} refused: ${err.message}` : `GET ${url.href} failed: ${reason(err)}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw this.failed(`GET ${url.href} answered ${res.status} ${res.statusText}`);
    }
    // Node's fetch and undici's differ only in their stream types' declarations.
    return res as unknown as FetchedResponse;
  }

  close(): Promise<void> {
    return this.policed?.close() ?? Promise.resolve();
  }
}

function declaredTooLarge(res: FetchedResponse, maxBytes: number): boolean {
  const length = Number(res.headers.get("content-length"));
  return Number.isFinite(length) && length > maxBytes;
}

async function readManifestText(source: ModelSource, signal: AbortSignal, fetcher: Fetcher | undefined): Promise<{ where: string; text: string }> {
  if (source.kind === "folder") {
    const where = join(source.dir, "manifest.json");
    let size: number;
    try {
      await inFolder(source.dir, "manifest.json");
      size = (await stat(where)).size;
    } catch (err) {
      if (isSamEdgeError(err)) throw err;
      throw fail("MODEL_UPDATE_INVALID", `${where} does not exist; an update needs the model set's manifest.json, with the sha256 of each file it names`);
    }
    if (size > MAX_MANIFEST_BYTES) throw fail("MODEL_UPDATE_INVALID", `${where} is ${size} bytes; a manifest is at most ${MAX_MANIFEST_BYTES}`);
    return { where, text: await readFile(where, "utf8") };
  }
  const url = new URL("manifest.json", source.base);
  const res = await fetcher!.get(url, signal);
  if (declaredTooLarge(res, MAX_MANIFEST_BYTES)) {
    await res.body?.cancel();
    throw fail("MODEL_UPDATE_INVALID", `${url.href} is over ${MAX_MANIFEST_BYTES} bytes: not a manifest`);
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of Readable.fromWeb(res.body as ReadableStream<Uint8Array>)) {
      bytes += (chunk as Buffer).length;
      if (bytes > MAX_MANIFEST_BYTES) throw fail("MODEL_UPDATE_INVALID", `${url.href} is over ${MAX_MANIFEST_BYTES} bytes: not a manifest`);
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (isSamEdgeError(err)) throw err;
    throw fetcher!.failed(`GET ${url.href} failed: ${reason(err)}`);
  }
  return { where: url.href, text: Buffer.concat(chunks).toString("utf8") };
}

/**
 * Puts a verified copy of the model set at `source` in a new folder under `modelsDir`: the
 * manifest first, which must give the sha256 of every file it names, then each file, hashed
 * while it is written and refused when it differs. What is loaded is therefore exactly what
 * was checked, and it stays there (a later start loads it) whatever becomes of the source.
 */
export async function stageModel(source: ModelSource, modelsDir: string, limits: StageLimits, policy?: FetchPolicy): Promise<StagedModel> {
  const fetcher = source.kind === "url" ? new Fetcher(source.base, policy) : undefined;
  try {
    return await stageFrom(source, modelsDir, limits, fetcher);
  } finally {
    await fetcher?.close();
  }
}

async function stageFrom(source: ModelSource, modelsDir: string, limits: StageLimits, fetcher: Fetcher | undefined): Promise<StagedModel> {
  const signal = AbortSignal.timeout(limits.timeoutMs);
  const { where, text } = await readManifestText(source, signal, fetcher);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw fail("MODEL_UPDATE_INVALID", `${where} is ${jsonSyntaxProblem(err)}`);
  }
  let manifest: ModelManifest;
  try {
    manifest = parseManifest(where, raw);
  } catch (err) {
    throw fail("MODEL_UPDATE_INVALID", (err as Error).message);
  }
  const files = manifestFiles(manifest);
  const unchecked = files.filter((f) => !manifest.sha256?.[f]);
  if (unchecked.length > 0) {
    throw fail(
      "MODEL_UPDATE_CHECKSUM",
      `${where} gives no sha256 for ${unchecked.join(", ")}; an update checks every file: add "sha256": {"${unchecked[0]}": "<sha256sum of the file>", ...}`,
    );
  }
  const id = createHash("sha256").update(text).digest("hex").slice(0, 12);
  const dir = join(modelsDir, `${folderName(manifest.name)}-${id}-${Date.now().toString(36)}`);
  await mkdir(dir, { recursive: true });
  try {
    for (const file of files) {
      const dest = join(dir, file);
      // A manifest's paths are relative and checked (isModelPath): `onnx/x.onnx` stays inside.
      await mkdir(dirname(dest), { recursive: true });
      let from: string;
      let actual: string;
      if (source.kind === "folder") {
        from = join(source.dir, file);
        let size: number;
        try {
          await inFolder(source.dir, file);
          size = (await stat(from)).size;
        } catch (err) {
          if (isSamEdgeError(err)) throw err;
          throw fail("MODEL_UPDATE_INVALID", `${from} does not exist (named in ${where})`);
        }
        if (size > limits.maxBytes) throw fail("MODEL_UPDATE_INVALID", `${from} is ${size} bytes, over model.update.max_bytes (${limits.maxBytes})`);
        actual = await writeHashed(createReadStream(from), dest, limits.maxBytes, from, "MODEL_UPDATE_INVALID");
      } else {
        const url = new URL(file.split("/").map(encodeURIComponent).join("/"), source.base);
        from = url.href;
        const res = await fetcher!.get(url, signal);
        if (declaredTooLarge(res, limits.maxBytes)) {
          await res.body?.cancel();
          throw fetcher!.failed(`${from} is ${res.headers.get("content-length")} bytes, over model.update.max_bytes (${limits.maxBytes})`);
        }
        try {
          actual = await writeHashed(Readable.fromWeb(res.body as ReadableStream<Uint8Array>), dest, limits.maxBytes, from, "MODEL_UPDATE_FETCH_FAILED");
        } catch (err) {
          if (isSamEdgeError(err) && err.code === "MODEL_UPDATE_FETCH_FAILED") throw fetcher!.failed(err.message);
          throw err;
        }
      }
      const expected = manifest.sha256![file]!;
      if (actual !== expected) {
        throw fail("MODEL_UPDATE_CHECKSUM", `${from}: sha256 is ${actual}, but ${where} says ${expected}; the file is corrupt, truncated or not the one the manifest describes`);
      }
    }
    await writeFile(join(dir, "manifest.json"), text);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { dir, manifest };
}
