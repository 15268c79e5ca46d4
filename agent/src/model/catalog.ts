import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { SamEdgeError } from "../core/errors.ts";
import { jsonSyntaxProblem } from "../core/json.ts";
import { isModelPath } from "./manifest.ts";

/** One file of a published model: where it goes in the model folder, and where it comes from. */
export interface CatalogFile {
  path: string;
  url: string;
  bytes: number | null;
  /** Checked after the download when known; recorded on first use when not. */
  sha256: string | null;
}

/** A published model `sam-edge model pull` knows (models/catalog.json). */
export interface CatalogEntry {
  name: string;
  title: string;
  publisher: string;
  page: string;
  licence: string;
  layout: string;
  /** Which boxes it suits, in words. */
  suits: string;
  files: CatalogFile[];
}

export const CATALOG_FILE = fileURLToPath(new URL("../../../models/catalog.json", import.meta.url));

/** A model name is one path segment: it names a folder of the model library. */
export function isModelName(name: unknown): name is string {
  return typeof name === "string" && /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) && !name.includes("..");
}

function invalid(where: string, what: string): SamEdgeError {
  return new SamEdgeError("CONFIG_INVALID", `${where}: ${what}`);
}

function parseEntry(where: string, raw: unknown, i: number): CatalogEntry {
  const at = `${where} models[${i}]`;
  if (typeof raw !== "object" || raw === null) throw invalid(at, "must be an object");
  const e = raw as Record<string, unknown>;
  if (!isModelName(e.name)) throw invalid(at, `"name" must be one folder name (letters, digits, '.', '_', '-'; no "..")`);
  for (const key of ["title", "publisher", "page", "licence", "layout", "suits"]) {
    if (typeof e[key] !== "string") throw invalid(at, `"${key}" must be a string`);
  }
  if (!Array.isArray(e.files) || e.files.length < 2) throw invalid(at, `"files" must list the encoder and decoder`);
  const files = e.files.map((f: Record<string, unknown>, j: number) => {
    const fat = `${at}.files[${j}]`;
    if (!isModelPath(f?.path)) throw invalid(fat, `"path" must be a relative path inside the model folder`);
    let url: URL;
    try {
      url = new URL(String(f.url));
    } catch {
      throw invalid(fat, `"url" is not a URL`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") throw invalid(fat, `"url" must be http(s)`);
    if (!(f.bytes === null || (Number.isInteger(f.bytes) && (f.bytes as number) > 0))) throw invalid(fat, `"bytes" must be a positive integer or null`);
    if (!(f.sha256 === null || (typeof f.sha256 === "string" && /^[0-9a-f]{64}$/.test(f.sha256)))) throw invalid(fat, `"sha256" must be 64 hex digits or null`);
    return { path: f.path as string, url: url.href, bytes: f.bytes as number | null, sha256: f.sha256 as string | null };
  });
  return { ...(e as unknown as CatalogEntry), files };
}

export async function readCatalog(file: string = CATALOG_FILE): Promise<CatalogEntry[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw invalid(file, (err as NodeJS.ErrnoException).code ? `cannot be read (${(err as NodeJS.ErrnoException).code})` : `is ${jsonSyntaxProblem(err)}`);
  }
  const models = (raw as { models?: unknown })?.models;
  if (!Array.isArray(models)) throw invalid(file, `must hold {"models": [...]}`);
  const entries = models.map((m, i) => parseEntry(file, m, i));
  const names = entries.map((e) => e.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw invalid(file, `two models are named "${twice}"`);
  return entries;
}

/**
 * Where a file comes from: its publisher's URL, or with a mirror base (an http(s) URL or a folder
 * on this box) `<base>/<name>/<path>`: a mirror holds each model's folder as pull lays it out.
 */
export function sourceOf(entry: CatalogEntry, path: string, url: string | undefined, base: string | undefined): string {
  if (!base) return url!;
  const tail = `${entry.name}/${path}`;
  return /^https?:\/\//i.test(base) ? new URL(tail.split("/").map(encodeURIComponent).join("/"), base.endsWith("/") ? base : `${base}/`).href : `${base.replace(/\/+$/, "")}/${tail}`;
}
