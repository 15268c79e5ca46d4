import { execFile } from "node:child_process";
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exists, modelProblems, productionTreeProblems, sha256 } from "./helpers/deploy.ts";
import { REPO_ROOT } from "./helpers/python.ts";

const INSTALL = join(REPO_ROOT, "deploy/install.sh");
const UNIT = "etc/systemd/system/sam-edge.service";
const APP = "opt/sam-edge";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * install.sh as a person runs it. npm installs from its cache (npm_config_offline): CI's own
 * `npm ci` filled it, and a test must not need the registry.
 */
function install(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile("bash", [INSTALL, ...args], { env: { ...process.env, npm_config_offline: "true", ...env }, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") reject(err);
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** Every path under DIR with its type, mode, size, mtime and link target: a rewrite of the same bytes shows too. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    const s = await lstat(join(dir, rel), { bigint: true });
    const link = s.isSymbolicLink() ? ` -> ${await readlink(join(dir, rel))}` : "";
    out[rel || "."] = `${s.mode.toString(8)} ${s.size} ${s.mtimeNs}${link}`;
    if (s.isDirectory()) await Promise.all((await readdir(join(dir, rel))).map((name) => walk(join(rel, name))));
  };
  await walk("");
  return out;
}

const mode = async (path: string): Promise<string> => ((await stat(path)).mode & 0o777).toString(8);

describe("deploy/install.sh --prefix: a root in a directory", () => {
  let tmp: string;
  let root: string;
  let first: Run;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-install-"));
    root = join(tmp, "root");
    first = await install(["--prefix", root]);
  }, 300_000);
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("installs the agent, both models, production dependencies only, the config, the state dir and the enabled unit", async () => {
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain("skipped under --prefix: create the system user sam-edge (group sam-edge, also in group video)");
    const app = join(root, APP);
    expect(await mode(join(app, "agent/bin/sam-edge.js"))).toBe("755");
    expect(await mode(join(app, "agent/src/cli.ts"))).toBe("644");
    expect(await readFile(join(app, "package-lock.json"))).toEqual(await readFile(join(REPO_ROOT, "package-lock.json")));

    expect(await modelProblems(app)).toEqual([]);
    expect(await productionTreeProblems(app)).toEqual({ missing: [], dev: [], bindings: [] });
    expect(await exists(join(app, "node_modules/tsx"))).toBe(true);

    expect(await readFile(join(root, "etc/sam-edge/config.json"))).toEqual(await readFile(join(REPO_ROOT, "deploy/config.example.json")));
    expect(await mode(join(root, "etc/sam-edge/config.json"))).toBe("640");
    expect(await mode(join(root, "etc/sam-edge"))).toBe("750");
    expect(await mode(join(root, "var/lib/sam-edge"))).toBe("750");

    // The unit is the repository's, running the node this machine has.
    const unit = await readFile(join(root, UNIT), "utf8");
    const execStart = /^ExecStart=(\S+) (\S+) run --config (\S+)$/m.exec(unit)!;
    expect(execStart[1]).toMatch(/\/node$/);
    const repoUnit = await readFile(join(REPO_ROOT, "deploy/systemd/sam-edge.service"), "utf8");
    expect(unit.replace(/^ExecStart=\S+ /m, "ExecStart=/usr/bin/node ")).toBe(repoUnit);
    // What the unit runs, reads and may write is what install.sh put there.
    expect(await exists(join(root, execStart[2]!))).toBe(true);
    expect(await exists(join(root, execStart[3]!))).toBe(true);
    const stateDir = /^ReadWritePaths=(\S+)$/m.exec(unit)![1]!;
    expect((await stat(join(root, stateDir))).isDirectory()).toBe(true);
    expect(/^WorkingDirectory=(\S+)$/m.exec(unit)![1]).toBe(stateDir);
    expect(JSON.parse(await readFile(join(root, execStart[3]!), "utf8")).state_dir).toBe(stateDir);
    expect(await readlink(join(root, "etc/systemd/system/multi-user.target.wants/sam-edge.service"))).toBe("/etc/systemd/system/sam-edge.service");
  });

  it("the installed tree runs on its own node_modules: the int8 model segments a sample", async () => {
    const result = await new Promise<Run>((resolve) =>
      execFile(
        "node",
        [join(root, APP, "agent/bin/sam-edge.js"), "segment", join(root, APP, "agent/samples/shapes-square.webp"), "--point", "256,256", "--model", join(root, APP, "models/quantized/tiny-sam-int8"), "--format", "rle"],
        { cwd: tmp },
        (err, stdout, stderr) => resolve({ code: err ? (err.code as number) : 0, stdout, stderr }),
      ),
    );
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as { width: number; masks: { area: number; rle: { size: number[] } }[] };
    expect(out.width).toBe(512);
    expect(out.masks[0]!.area).toBeGreaterThan(0);
    expect(out.masks[0]!.rle.size).toEqual([512, 512]);
  });

  it("a second run changes nothing, and keeps an edited config; --dry-run agrees", async () => {
    const config = join(root, "etc/sam-edge/config.json");
    const edited = JSON.stringify({ device_id: "garage-pi", state_dir: "/var/lib/sam-edge" });
    await writeFile(config, edited);
    const before = await snapshot(root);
    const again = await install(["--prefix", root]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain("nothing to change: the installed sam-edge is this version");
    expect(await snapshot(root)).toEqual(before);
    const dry = await install(["--prefix", root, "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain("nothing to change");
    expect(await snapshot(root)).toEqual(before);
    expect(await readFile(config, "utf8")).toBe(edited);
  });

  it("puts back what was changed under /opt/sam-edge, removes what this version lacks, and names each change first in --dry-run", async () => {
    const app = join(root, APP);
    await writeFile(join(app, "agent/src/cli.ts"), "tampered");
    await chmod(join(app, "agent/src/core/errors.ts"), 0o600);
    await mkdir(join(app, "agent/src/old/sub"), { recursive: true });
    await writeFile(join(app, "agent/src/old/sub/gone.ts"), "from an older version");
    const stamp = await readFile(join(app, "node_modules/.sam-edge-deps"), "utf8");
    expect(stamp).toBe(`lock=${await sha256(join(REPO_ROOT, "package-lock.json"))} abi=${process.versions.modules} arch=${process.arch}\n`);
    await writeFile(join(app, "node_modules/.sam-edge-deps"), "lock=an-older-lock");
    const before = await snapshot(root);
    const dry = await install(["--prefix", root, "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    const would = dry.stdout.split("\n").filter((l) => l.startsWith("sam-edge: would "));
    expect(would).toEqual([
      `sam-edge: would remove ${app}/agent/src/old/sub/gone.ts (not in this version)`,
      `sam-edge: would remove ${app}/agent/src/old/sub/ (not in this version)`,
      `sam-edge: would remove ${app}/agent/src/old/ (not in this version)`,
      `sam-edge: would write ${app}/agent/src/cli.ts`,
      `sam-edge: would chmod 644 ${app}/agent/src/core/errors.ts`,
      `sam-edge: would install production dependencies into ${app}/node_modules (npm ci --omit=dev)`,
    ]);
    expect(dry.stdout).toContain("dry run: 6 changes, none made");
    expect(await snapshot(root)).toEqual(before);

    // The dependencies are the same ones: put their stamp back rather than wait for npm again.
    await writeFile(join(app, "node_modules/.sam-edge-deps"), stamp);
    const fix = await install(["--prefix", root]);
    expect(fix.code, fix.stderr).toBe(0);
    expect(await readFile(join(app, "agent/src/cli.ts"))).toEqual(await readFile(join(REPO_ROOT, "agent/src/cli.ts")));
    expect(await mode(join(app, "agent/src/core/errors.ts"))).toBe("644");
    expect(await exists(join(app, "agent/src/old"))).toBe(false);
  });

  it("--dry-run into an empty root creates nothing", async () => {
    const empty = join(tmp, "empty");
    const dry = await install(["--prefix", empty, "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    for (const line of [
      `would create ${empty}/opt/sam-edge`,
      `would install production dependencies into ${empty}/opt/sam-edge/node_modules`,
      `would create ${empty}/etc/sam-edge/config.json from deploy/config.example.json`,
      `would create ${empty}/var/lib/sam-edge`,
      `would write ${empty}/etc/systemd/system/sam-edge.service`,
      `would enable sam-edge.service under ${empty}`,
    ]) {
      expect(dry.stdout).toContain(line);
    }
    expect(await exists(empty)).toBe(false);
  });

  it("--dry-run without --prefix leaves this machine as it was", async () => {
    const paths = ["/opt/sam-edge", "/etc/sam-edge", "/var/lib/sam-edge", `/${UNIT}`, "/etc/passwd", "/etc/group"];
    const state = async () => Promise.all(paths.map(async (p) => (await exists(p)) && `${(await lstat(p, { bigint: true })).mtimeNs}`));
    const before = await state();
    const dry = await install(["--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/dry run: \d+ changes, none made|nothing to change/);
    expect(await state()).toEqual(before);
  });

  it("--uninstall removes the service and the agent but keeps the config and the state; --purge removes those; both can run twice", async () => {
    const outbox = join(root, "var/lib/sam-edge/outbox/0001.json");
    await mkdir(join(outbox, ".."), { recursive: true });
    await writeFile(outbox, "{}");
    const removed = await install(["--prefix", root, "--uninstall"]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toContain(`disable sam-edge.service under ${root}`);
    expect(removed.stdout).toContain(`kept ${root}/etc/sam-edge; --uninstall --purge removes it`);
    for (const gone of [APP, UNIT, "etc/systemd/system/multi-user.target.wants/sam-edge.service"]) expect(await exists(join(root, gone)), gone).toBe(false);
    expect(JSON.parse(await readFile(join(root, "etc/sam-edge/config.json"), "utf8")).device_id).toBe("garage-pi");
    expect(await readFile(outbox, "utf8")).toBe("{}");

    const twice = await install(["--prefix", root, "--uninstall"]);
    expect(twice.code, twice.stderr).toBe(0);
    expect(twice.stdout).toContain("nothing to remove");

    const purged = await install(["--prefix", root, "--uninstall", "--purge"]);
    expect(purged.code, purged.stderr).toBe(0);
    expect(await exists(join(root, "etc/sam-edge"))).toBe(false);
    expect(await exists(join(root, "var/lib/sam-edge"))).toBe(false);
    expect((await install(["--prefix", root, "--uninstall", "--purge"])).stdout).toContain("nothing to remove");
  });

  it("refuses bad options, an old Node.js and a 32-bit one with what to do, and touches nothing", async () => {
    const target = join(tmp, "refused");
    const shims = join(tmp, "shims");
    await mkdir(shims, { recursive: true });
    // A node that reports what the test says (install.sh asks `node -p 'version arch'`).
    await writeFile(join(shims, "node"), '#!/bin/sh\necho "$FAKE_NODE"\n', { mode: 0o755 });
    const withNode = (reply: string) => ({ PATH: `${shims}:${process.env.PATH}`, FAKE_NODE: reply });
    const cases: [string[], NodeJS.ProcessEnv, number, RegExp][] = [
      [["--prefix", target, "--prefixx"], {}, 2, /unknown option "--prefixx"/],
      [["--prefix"], {}, 2, /--prefix needs a directory/],
      [["--prefix="], {}, 2, /--prefix needs a directory/],
      [["--prefix", target, "--purge"], {}, 2, /--purge goes with --uninstall/],
      [["--prefix", target], withNode("18.19.1 x64"), 1, /Node\.js 18\.19\.1 is too old: sam-edge needs Node\.js 20\.15 or later/],
      [["--prefix", target], withNode("20.14.0 x64"), 1, /Node\.js 20\.14\.0 is too old: sam-edge needs Node\.js 20\.15 or later/],
      [["--prefix", target], withNode("20.15.1 arm"), 1, /Node\.js here is built for arm .*runs on arm64 and x86-64.*64-bit Raspberry Pi OS/],
      [["--prefix", target], withNode("20.15.1 ia32"), 1, /built for ia32/],
      [["--prefix", target], withNode("v20"), 1, /says its version is "v20"; sam-edge needs Node\.js 20\.15 or later/],
      [["--prefix", target], withNode(""), 1, /says its version is ""/],
    ];
    for (const [args, env, code, message] of cases) {
      const run = await install(args, env);
      expect(run.code, `${args.join(" ")} ${env.FAKE_NODE ?? ""}`).toBe(code);
      expect(run.stderr).toMatch(message);
      expect(await exists(target)).toBe(false);
    }
  });
});

describe("deploy shell scripts", () => {
  it("pass shellcheck", async () => {
    const result = await new Promise<Run>((resolve, reject) =>
      execFile("shellcheck", ["--severity=style", "deploy/install.sh", "deploy/prune-deps.sh"], { cwd: REPO_ROOT }, (err, stdout, stderr) =>
        err && typeof err.code !== "number" ? reject(err) : resolve({ code: err ? (err.code as number) : 0, stdout, stderr }),
      ),
    );
    expect(result).toEqual({ code: 0, stdout: "", stderr: "" });
  });
});
