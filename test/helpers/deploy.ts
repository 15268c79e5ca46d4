import { createHash } from "node:crypto";
import { lstat, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { REPO_ROOT } from "./python.ts";

/** What install.sh and the Dockerfiles put in /opt/sam-edge, checked the same way for both. */
export const MODELS = ["models/tiny-sam", "models/quantized/tiny-sam-int8"];

export const exists = (path: string): Promise<boolean> =>
  lstat(path).then(
    () => true,
    () => false,
  );

export const sha256 = async (file: string): Promise<string> => createHash("sha256").update(await readFile(file)).digest("hex");

/**
 * APP's node_modules against the lock file: production packages missing (optional ones are
 * other platforms' binaries), dev packages present, and onnxruntime-node bindings for machines
 * other than this one.
 */
export async function productionTreeProblems(app: string): Promise<{ missing: string[]; dev: string[]; bindings: string[] }> {
  const lock = JSON.parse(await readFile(join(REPO_ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
  const entries = Object.entries(lock.packages).filter(([path]) => path.startsWith("node_modules/"));
  if (!entries.some(([path, e]) => path === "node_modules/vitest" && e.dev)) throw new Error("package-lock.json no longer marks vitest as dev: this check would check nothing");
  const present = await Promise.all(entries.map(([path]) => exists(join(app, path))));
  const napi = join(app, "node_modules/onnxruntime-node/bin/napi-v6");
  const platforms = await readdir(napi);
  const bindings = (await Promise.all(platforms.map(async (p) => (await readdir(join(napi, p))).map((arch) => `${p}/${arch}`)))).flat();
  return {
    missing: entries.filter(([, e], i) => !e.dev && !e.optional && !present[i]).map(([path]) => path),
    dev: entries.filter(([, e], i) => e.dev && present[i]).map(([path]) => path),
    bindings: bindings.filter((b) => b !== `linux/${process.arch}`),
  };
}

/** Model files under APP whose sha256 is not the one their manifest names. */
export async function modelProblems(app: string): Promise<string[]> {
  const problems: string[] = [];
  for (const model of MODELS) {
    const manifest = JSON.parse(await readFile(join(app, model, "manifest.json"), "utf8")) as { sha256: Record<string, string> };
    if (Object.keys(manifest.sha256).length !== 3) problems.push(`${model}: manifest names ${Object.keys(manifest.sha256).length} files, not encoder, decoder and batch decoder`);
    for (const [file, hash] of Object.entries(manifest.sha256)) if ((await sha256(join(app, model, file))) !== hash) problems.push(`${model}/${file}`);
  }
  return problems;
}
