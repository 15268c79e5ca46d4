import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/python.ts";

const UNIT = join(REPO_ROOT, "deploy/systemd/sam-edge.service");

function systemdAnalyze(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile("systemd-analyze", args, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") reject(err);
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** The [Service] section's settings, each with all its values in order. */
function serviceSettings(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  let section = "";
  for (const line of text.split("\n")) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1]!;
    const setting = /^(\w+)=(.*)$/.exec(line);
    if (section === "Service" && setting) settings.set(setting[1]!, [...(settings.get(setting[1]!) ?? []), setting[2]!]);
  }
  return settings;
}

const UNITS: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 };
const bytes = (size: string): number => Number(size.slice(0, -1)) * UNITS[size.slice(-1)]!;

describe("deploy/systemd/sam-edge.service", () => {
  let tmp: string;
  let text: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-unit-"));
    text = await readFile(UNIT, "utf8");
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  // systemd-analyze checks that ExecStart's program exists: check the unit with the node on
  // PATH in it, as install.sh installs it.
  async function unitWithNode(body = text): Promise<string> {
    const node = await new Promise<string>((resolve, reject) => execFile("sh", ["-c", "command -v node"], (err, out) => (err ? reject(err) : resolve(out.trim()))));
    const file = join(tmp, "sam-edge.service");
    await writeFile(file, body.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${node} `));
    return file;
  }

  it("passes systemd-analyze verify without a warning", async () => {
    const result = await systemdAnalyze(["verify", await unitWithNode()]);
    expect(result).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  it("systemd-analyze verify does complain about a unit with a mistake (the check above can fail)", async () => {
    const result = await systemdAnalyze(["verify", await unitWithNode(text.replace("Restart=on-failure", "Restart=sometimes").replace("CPUWeight=", "CPUWieght="))]);
    expect(result.stderr).toContain("Failed to parse service restart specifier, ignoring: sometimes");
    expect(result.stderr).toContain("Unknown key 'CPUWieght' in section [Service]");
  });

  it("restarts on failure, is a notify unit with a watchdog, and is sandboxed to its state dir and video devices", () => {
    const s = serviceSettings(text);
    const one = (key: string) => {
      expect(s.get(key), key).toHaveLength(1);
      return s.get(key)![0]!;
    };
    expect(one("Restart")).toBe("on-failure");
    expect(one("Type")).toBe("notify");
    // The agent's pings come from systemd-notify, a child: only "all" accepts them.
    expect(one("NotifyAccess")).toBe("all");
    expect(one("WatchdogSec")).toMatch(/^\d+(s|min)$/);
    expect(one("User")).toBe("sam-edge");
    expect(one("ProtectSystem")).toBe("strict");
    expect(s.get("ReadWritePaths")).toEqual(["/var/lib/sam-edge"]);
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("PrivateTmp")).toBe("yes");
    expect(one("ProtectHome")).toBe("yes");
    expect(one("DevicePolicy")).toBe("closed");
    expect(s.get("DeviceAllow")).toEqual(["char-video4linux rw"]);
    expect(s.has("PrivateDevices")).toBe(false);
    expect(bytes(one("MemoryHigh"))).toBeLessThan(bytes(one("MemoryMax")));
    expect(bytes(one("MemoryMax"))).toBeLessThanOrEqual(bytes("1G"));
    expect(Number(one("CPUWeight"))).toBeLessThan(100);
  });

  it("systemd-analyze security rates its exposure below 3 (of 10)", async () => {
    const result = await systemdAnalyze(["security", "--offline=true", "--no-pager", await unitWithNode()]);
    const level = /Overall exposure level for sam-edge\.service: (\d+\.\d+)/.exec(result.stdout);
    expect(level, result.stdout + result.stderr).not.toBeNull();
    expect(Number(level![1])).toBeLessThan(3);
  });
});
