import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, readdir, readFile, stat } from "node:fs/promises";
import { basename, join, posix } from "node:path";

/**
 * A Dockerfile replayed without Docker: each stage's file system is a directory, COPY copies
 * into it, RUN runs in it (`sh -c`, in the stage's WORKDIR, with its ARG and ENV). What cannot
 * happen in a directory (installing the image's OS packages, adding its users, files its base
 * image brings) is recorded as skipped, with the reason.
 */
export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Stage {
  name: string | undefined;
  base: string;
  root: string;
  workdir: string;
  env: Record<string, string>;
  user: string | undefined;
  entrypoint: string[];
  cmd: string[];
  healthcheck: string[] | undefined;
  ran: string[];
  skipped: { instruction: string; reason: string }[];
  /** Set when an identical stage replayed earlier (as Docker's layer cache would). */
  reused: boolean;
}

export interface ReplayOptions {
  /** The build context: the repository root. */
  context: string;
  /** Where stage roots go. */
  work: string;
  /** Variables added to every RUN (npm_config_offline: the npm cache instead of the registry). */
  env?: NodeJS.ProcessEnv;
  /** Why a RUN command cannot be replayed in a directory, or undefined to run it. */
  skipRun: (command: string) => string | undefined;
  /** Stage roots by content key, shared across replays. */
  cache?: Map<string, Stage>;
}

/** Instructions with continuation lines joined and comments (parser directives too) dropped. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line) || (!pending && line.trim() === "")) return;
    const continued = line.endsWith("\\");
    const part = continued ? line.slice(0, -1) : line;
    pending = pending ? { ...pending, text: `${pending.text} ${part.trim()}` } : { text: part.trim(), line: i + 1 };
    if (continued) return;
    const m = /^(\S+)\s*(.*)$/.exec(pending.text)!;
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!, line: pending.line });
    pending = undefined;
  });
  return out;
}

/** `${NAME}` and `$NAME` from the variables known at that point. */
function expand(text: string, vars: Record<string, string>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => vars[(a ?? b)!] ?? "");
}

/** `--flag=value` words before the rest. */
function flags(args: string): { flags: Record<string, string>; rest: string } {
  const found: Record<string, string> = {};
  let rest = args;
  for (let m = /^--(\w[\w-]*)=(\S+)\s*/.exec(rest); m; m = /^--(\w[\w-]*)=(\S+)\s*/.exec(rest)) {
    found[m[1]!] = m[2]!;
    rest = rest.slice(m[0].length);
  }
  return { flags: found, rest };
}

/** `KEY=value KEY2="two words"` pairs (ENV, ARG). */
function pairs(args: string): [string, string | undefined][] {
  return [...args.matchAll(/(\w+)(?:=("(?:[^"\\]|\\.)*"|\S*))?/g)].map((m) => [m[1]!, m[2]?.startsWith('"') ? (JSON.parse(m[2]) as string) : m[2]]);
}

const jsonForm = (args: string): string[] => (args.trim().startsWith("[") ? (JSON.parse(args) as string[]) : ["/bin/sh", "-c", args]);

async function hashPath(path: string, hash = createHash("sha256")): Promise<string> {
  const s = await stat(path);
  if (s.isDirectory()) {
    for (const name of (await readdir(path)).sort()) {
      hash.update(`${name}\n`);
      await hashPath(join(path, name), hash);
    }
  } else {
    hash.update(`${s.mode & 0o111 ? "x" : "-"}`).update(await readFile(path));
  }
  return hash.copy().digest("hex");
}

/** .dockerignore's rules, last match wins; a rule matching a parent directory matches what is inside. */
export async function dockerignore(context: string): Promise<(path: string) => boolean> {
  const text = await readFile(join(context, ".dockerignore"), "utf8").catch(() => "");
  const rules = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const negate = l.startsWith("!");
      const glob = posix.normalize(negate ? l.slice(1) : l).replace(/^\/+/, "");
      const source = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*\*/g, "\0").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]").replace(/\0/g, ".*");
      return { negate, re: new RegExp(`^${source}(/.*)?$`) };
    });
  return (path) => {
    let ignored = false;
    for (const rule of rules) if (rule.re.test(path)) ignored = !rule.negate;
    return ignored;
  };
}

function run(command: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command[0]!, command.slice(1), { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d));
    child.stderr.on("data", (d: Buffer) => (output += d));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, output }));
  });
}

/** Replays FILE's stages in order; the last one is the image. */
export async function replayDockerfile(file: string, options: ReplayOptions): Promise<Stage[]> {
  const instructions = parseDockerfile(await readFile(file, "utf8"));
  const ignored = await dockerignore(options.context);
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  let i = 0;
  for (; i < instructions.length && instructions[i]!.keyword === "ARG"; i++) for (const [k, v] of pairs(instructions[i]!.args)) globalArgs[k] = v ?? "";
  while (i < instructions.length) {
    const from = instructions[i]!;
    if (from.keyword !== "FROM") throw new Error(`${basename(file)}:${from.line}: expected FROM, found ${from.keyword}`);
    const [image, as, name] = expand(from.args, globalArgs).split(/\s+/);
    let end = i + 1;
    while (end < instructions.length && instructions[end]!.keyword !== "FROM") end++;
    const body = instructions.slice(i + 1, end);
    i = end;

    // The stage's content key: its base, its instructions, and what its COPYs read.
    const key = createHash("sha256").update(image!);
    for (const ins of body) {
      key.update(`${ins.keyword} ${ins.args}\n`);
      if (ins.keyword !== "COPY") continue;
      const { flags: f, rest } = flags(ins.args);
      const sources = rest.split(/\s+/).slice(0, -1);
      for (const src of sources) key.update(f.from ? `${stages.find((s) => s.name === f.from)?.root ?? f.from}:${src}` : await hashPath(join(options.context, src)));
    }
    const cacheKey = key.digest("hex");
    const cached = options.cache?.get(cacheKey);
    if (cached) {
      stages.push({ ...cached, name: as?.toUpperCase() === "AS" ? name : undefined, reused: true });
      continue;
    }

    const stage: Stage = {
      name: as?.toUpperCase() === "AS" ? name : undefined,
      base: image!,
      root: join(options.work, `stage-${cacheKey.slice(0, 12)}`),
      workdir: "/",
      env: {},
      user: undefined,
      entrypoint: [],
      cmd: [],
      healthcheck: undefined,
      ran: [],
      skipped: [],
      reused: false,
    };
    await mkdir(stage.root, { recursive: true });
    const args: Record<string, string> = {};
    const vars = () => ({ ...args, ...stage.env });
    const inRoot = (path: string) => join(stage.root, posix.resolve(stage.workdir, path));
    for (const ins of body) {
      const where = `${basename(file)}:${ins.line}`;
      switch (ins.keyword) {
        case "ARG":
          for (const [k, v] of pairs(ins.args)) args[k] = v ?? globalArgs[k] ?? "";
          break;
        case "ENV":
          for (const [k, v] of pairs(ins.args)) stage.env[k] = expand(v ?? "", vars());
          break;
        case "WORKDIR":
          stage.workdir = posix.resolve(stage.workdir, expand(ins.args, vars()));
          await mkdir(inRoot("."), { recursive: true });
          break;
        case "COPY": {
          const { flags: f, rest } = flags(ins.args);
          const words = rest.split(/\s+/);
          const dest = words.pop()!;
          const into = dest.endsWith("/") || words.length > 1;
          for (const src of words) {
            let from: string;
            if (f.from) {
              const source = stages.find((s) => s.name === f.from);
              if (!source) throw new Error(`${where}: COPY --from=${f.from}: no such stage`);
              from = join(source.root, src);
              const exists = await stat(from).then(
                () => true,
                () => false,
              );
              if (!exists) {
                stage.skipped.push({ instruction: `COPY --from=${f.from} ${src}`, reason: `${src} comes with ${source.base}, which is no directory here` });
                continue;
              }
            } else {
              if (ignored(posix.normalize(src))) throw new Error(`${where}: COPY ${src}: .dockerignore keeps it out of the build context`);
              from = join(options.context, src);
            }
            const isDir = (await stat(from)).isDirectory();
            const target = into && !isDir ? join(inRoot(dest), basename(src)) : inRoot(dest);
            await cp(from, target, { recursive: true });
          }
          break;
        }
        case "RUN": {
          // Not expanded here: the shell does, with ARG and ENV in its environment, as in Docker.
          const command = ins.args;
          const reason = options.skipRun(command);
          if (reason) {
            stage.skipped.push({ instruction: `RUN ${command}`, reason });
            break;
          }
          const result = await run(jsonForm(command), inRoot("."), { ...process.env, ...vars(), ...options.env });
          if (result.code !== 0) throw new Error(`${where}: RUN ${command} exited with ${result.code}:\n${result.output}`);
          stage.ran.push(command);
          break;
        }
        case "VOLUME": {
          const volumes = ins.args.trim().startsWith("[") ? (JSON.parse(ins.args) as string[]) : ins.args.trim().split(/\s+/);
          for (const v of volumes) await mkdir(join(stage.root, expand(v, vars())), { recursive: true });
          break;
        }
        case "USER":
          stage.user = expand(ins.args, vars());
          break;
        case "ENTRYPOINT":
          stage.entrypoint = jsonForm(ins.args);
          break;
        case "CMD":
          stage.cmd = jsonForm(ins.args);
          break;
        case "HEALTHCHECK": {
          const { rest } = flags(ins.args);
          const m = /^CMD\s+(.*)$/.exec(rest);
          if (!m) throw new Error(`${where}: HEALTHCHECK ${rest}: only the CMD form is replayed`);
          stage.healthcheck = jsonForm(m[1]!);
          break;
        }
        case "EXPOSE":
        case "LABEL":
          break;
        default:
          throw new Error(`${where}: ${ins.keyword} is not replayed; teach test/helpers/dockerfile.ts what it means in a directory`);
      }
    }
    options.cache?.set(cacheKey, stage);
    stages.push(stage);
  }
  return stages;
}

/**
 * The image's environment with its absolute paths moved into the stage root, so the image's
 * ENTRYPOINT/CMD and HEALTHCHECK can run from the directory.
 */
export function imageEnv(stage: Stage, overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(stage.env)) env[k] = v.startsWith("/") ? join(stage.root, v) : v;
  return { ...env, ...overrides };
}

/** The directory an image's commands start in. */
export const imageCwd = (stage: Stage): string => join(stage.root, stage.workdir);
