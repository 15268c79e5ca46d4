import { spawn } from "node:child_process";
import type { Logger } from "../core/log.ts";

/** What `Type=notify` units are told (sd_notify(3)); the watchdog ping repeats, the others are said once. */
type Message = "READY=1" | "WATCHDOG=1" | "STOPPING=1";

/**
 * systemd's readiness and watchdog protocol for `Type=notify` units with `WatchdogSec=`.
 * Node has no unix datagram sockets, so each message goes through `systemd-notify`, which
 * by default waits until the manager has read it (sd_notify_barrier): the manager still finds
 * the sender in the unit's cgroup, and `NotifyAccess=all` lets it accept a child's message.
 *
 * "Alive" is the event loop turning: the ping is a timer on it, so a loop blocked longer than
 * the watchdog period (a runaway computation, a wedged synchronous call) gets the agent
 * restarted. onnxruntime-node loads sessions and runs them synchronously on this loop, so
 * READY waits for the model load and `WatchdogSec=` must exceed the model's slowest single
 * encoder pass. A stuck camera is no reason to restart: sources reconnect on their own.
 */
export class SystemdNotifier {
  private timer: NodeJS.Timeout | undefined;
  private pinging = false;
  private state: "starting" | "ready" | "stopping" = "starting";
  private failures = 0;

  private constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly log: Logger,
    /** The watchdog period systemd expects a ping within; undefined when no watchdog is asked for. */
    readonly watchdogMs: number | undefined,
    private readonly command: string,
  ) {}

  /**
   * A notifier when systemd started the agent as a notify unit (NOTIFY_SOCKET is set), else
   * undefined: a shell, Docker or a test run sends nothing.
   */
  static fromEnv(env: NodeJS.ProcessEnv, log: Logger, options: { pid?: number; command?: string } = {}): SystemdNotifier | undefined {
    if (!env.NOTIFY_SOCKET) return undefined;
    let watchdogMs: number | undefined;
    const usec = env.WATCHDOG_USEC;
    // WATCHDOG_PID names the process the watchdog is for; a child that inherited the variables is not it.
    const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === (options.pid ?? process.pid);
    if (usec !== undefined && forUs) {
      const n = Number(usec);
      // setInterval takes at most 2^31-1 ms: a longer period is no watchdog a ping could miss.
      if (/^\d+$/.test(usec) && n >= 2000 && n / 2000 <= 2 ** 31 - 1) watchdogMs = n / 1000;
      else log.warn(`WATCHDOG_USEC="${usec}" is not a watchdog period in microseconds (>= 2000); no WATCHDOG=1 pings will be sent, so systemd's watchdog will restart the agent: fix WatchdogSec= in the unit`);
    }
    return new SystemdNotifier(env, log, watchdogMs, options.command ?? "systemd-notify");
  }

  /** READY=1, then WATCHDOG=1 every half period while the event loop turns. Ignored once stopping. */
  ready(status: string): void {
    if (this.state !== "starting") return;
    this.state = "ready";
    this.send("READY=1", [`--status=${status.replace(/\s+/g, " ")}`]);
    if (this.watchdogMs === undefined) return;
    this.timer = setInterval(() => {
      // A ping still waiting on the manager is as good as a new one; piling them up is not.
      if (!this.pinging) this.send("WATCHDOG=1");
    }, this.watchdogMs / 2);
    this.timer.unref();
  }

  /** STOPPING=1: the stop that follows (outbox flush included) is no watchdog failure. */
  stopping(): void {
    if (this.state === "stopping") return;
    this.state = "stopping";
    clearInterval(this.timer);
    this.send("STOPPING=1");
  }

  private send(message: Message, extra: string[] = []): void {
    const ping = message === "WATCHDOG=1";
    if (ping) this.pinging = true;
    let stderr = "";
    let settled = false;
    // A spawn that fails emits "error" and may never emit "close": either one ends the send.
    const done = (problem?: string) => {
      if (settled) return;
      settled = true;
      if (ping) this.pinging = false;
      if (problem) this.failed(message, problem);
    };
    const child = spawn(this.command, [message, ...extra], { env: this.env, stdio: ["ignore", "ignore", "pipe"] });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.once("error", (err) => done(`${this.command} could not run (${err.message}); install systemd's systemd-notify, or run the agent from a unit without Type=notify and WatchdogSec=`));
    child.once("close", (code) => done(code === 0 ? undefined : `${this.command} exited with ${code ?? "a signal"}: ${stderr.trim() || "no message"} (NOTIFY_SOCKET=${this.env.NOTIFY_SOCKET})`));
  }

  private failed(message: Message, why: string): void {
    const n = ++this.failures;
    // The first few, then one in a hundred: a ping that fails every period must not flood the journal.
    if (n <= 3 || n % 100 === 0) this.log.error(`systemd notification ${message} failed: ${why}${n > 3 ? ` (${n} failures so far)` : ""}`);
  }
}
