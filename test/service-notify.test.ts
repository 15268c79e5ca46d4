import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SAMPLES_DIR } from "../agent/src/config/paths.ts";
import { createLogger } from "../agent/src/core/log.ts";
import { SystemdNotifier } from "../agent/src/daemon/systemd-notify.ts";
import { AgentProcess } from "./helpers/agent.ts";
import { freePort } from "./helpers/mosquitto.ts";
import { NotifySocket } from "./helpers/notify-socket.ts";

function capture(): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger("debug", (l) => lines.push(l)) };
}

// systemd's side is a unix datagram socket that receives what systemd-notify sends, as the
// service manager's own socket does (deploy/systemd/sam-edge.service: Type=notify, WatchdogSec=).
describe("sd_notify: READY, WATCHDOG and STOPPING for a Type=notify unit", () => {
  let tmp: string;
  let socket: NotifySocket;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-notify-"));
    socket = await NotifySocket.open(tmp);
  });
  afterAll(async () => {
    socket.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it("the agent says READY=1 once its model has loaded, pings WATCHDOG=1 every half period, and STOPPING=1 on SIGTERM", async () => {
    const port = await freePort();
    const agent = await AgentProcess.start(
      tmp,
      "agent",
      {
        state_dir: join(tmp, "state"),
        mqtt: { enabled: false },
        http: { port },
        cameras: [{ id: "demo", type: "folder", dir: SAMPLES_DIR, interval_ms: 200 }],
      },
      // 0.4 s: a ping every 0.2 s. WATCHDOG_PID is what systemd sets: the agent's own pid is unknown here, so unset.
      { env: { NOTIFY_SOCKET: socket.path, WATCHDOG_USEC: "400000", WATCHDOG_PID: undefined }, args: [] },
    );
    try {
      // The waits end before the test's own timeout, so the agent is always stopped below.
      await socket.waitFor(() => socket.with("READY=1").length === 1, "READY=1", 60_000);
      // READY follows the model load: the readiness probe must already see the model.
      const ready = (await (await fetch(`http://127.0.0.1:${port}/readyz`)).json()) as { model: { loaded: boolean; name: string } };
      expect(ready.model).toMatchObject({ loaded: true, name: "tiny-sam-int8" });
      expect(socket.with("READY=1")[0]).toContain(`STATUS=1 cameras, HTTP API at http://127.0.0.1:${port}`);
      await socket.waitFor(() => socket.with("WATCHDOG=1").length >= 3, "three WATCHDOG=1 pings", 20_000);
      expect(socket.messages.indexOf(socket.with("WATCHDOG=1")[0]!)).toBeGreaterThan(socket.messages.indexOf(socket.with("READY=1")[0]!));
      expect(socket.with("STOPPING=1")).toEqual([]);
    } finally {
      const exit = await agent.stop("SIGTERM");
      expect(exit, agent.stderr).toEqual({ code: 0, signal: null });
    }
    await socket.waitFor(() => socket.with("STOPPING=1").length === 1, "STOPPING=1", 20_000);
    expect(agent.stderr).not.toContain("systemd notification");
  }, 150_000);

  it("sends no WATCHDOG=1 when WATCHDOG_PID names another process (a child that inherited the variables)", () => {
    const { log } = capture();
    const env = { NOTIFY_SOCKET: socket.path, WATCHDOG_USEC: "200000" };
    expect(SystemdNotifier.fromEnv({ ...env, WATCHDOG_PID: "4242" }, log, { pid: 4243 })?.watchdogMs).toBeUndefined();
    expect(SystemdNotifier.fromEnv({ ...env, WATCHDOG_PID: "4243" }, log, { pid: 4243 })?.watchdogMs).toBe(200);
    expect(SystemdNotifier.fromEnv(env, log)?.watchdogMs).toBe(200);
  });

  it("is off outside systemd: no NOTIFY_SOCKET, no notifier", () => {
    expect(SystemdNotifier.fromEnv({ WATCHDOG_USEC: "200000" }, capture().log)).toBeUndefined();
    expect(SystemdNotifier.fromEnv({ NOTIFY_SOCKET: "" }, capture().log)).toBeUndefined();
  });

  it("refuses a malformed WATCHDOG_USEC with a warning that names it, and sends no pings", () => {
    for (const usec of ["", "abc", "-5", "1.5e6", "0", "1999", "400000 ", "99999999999999999999"]) {
      const { lines, log } = capture();
      const notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: socket.path, WATCHDOG_USEC: usec }, log);
      expect(notifier?.watchdogMs, usec).toBeUndefined();
      expect(lines.join("\n"), usec).toContain(`WATCHDOG_USEC="${usec}" is not a watchdog period`);
    }
  });

  it("a socket nobody listens on, or no systemd-notify, is logged with what to fix; the agent goes on", async () => {
    const gone = capture();
    SystemdNotifier.fromEnv({ NOTIFY_SOCKET: join(tmp, "nobody.sock") }, gone.log)!.ready("up");
    const missing = capture();
    const notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: socket.path }, missing.log, { command: join(tmp, "no-such-systemd-notify") })!;
    notifier.ready("up");
    notifier.stopping();
    const waitFor = async (lines: string[], n: number) => {
      const deadline = Date.now() + 20_000;
      while (lines.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    };
    await waitFor(gone.lines, 1);
    await waitFor(missing.lines, 2);
    expect(gone.lines).toEqual([expect.stringMatching(/\[error\] systemd notification READY=1 failed: systemd-notify exited with 1: .*No such file or directory \(NOTIFY_SOCKET=.*nobody\.sock\)/)]);
    expect(missing.lines).toEqual([
      expect.stringMatching(/\[error\] systemd notification READY=1 failed: .*no-such-systemd-notify could not run \(spawn .* ENOENT\); install systemd's systemd-notify/),
      expect.stringMatching(/\[error\] systemd notification STOPPING=1 failed: .*could not run/),
    ]);
  });
});
