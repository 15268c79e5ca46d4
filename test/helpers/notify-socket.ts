import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("./notify_socket.py", import.meta.url));

/**
 * The receiving end of systemd's notification protocol: a unix datagram socket, as the service
 * manager binds it (Node cannot bind one, so Python does). `messages` holds each datagram.
 */
export class NotifySocket {
  readonly messages: string[] = [];
  private out = "";

  private constructor(
    readonly path: string,
    private readonly child: ChildProcess,
  ) {
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      this.out += d;
      const lines = this.out.split("\n");
      this.out = lines.pop()!;
      for (const line of lines) this.messages.push(JSON.parse(line) as string);
    });
  }

  /** Binds DIR/notify.sock; resolves once it receives. */
  static async open(dir: string): Promise<NotifySocket> {
    const path = join(dir, "notify.sock");
    const child = spawn("python3", [SCRIPT, path], { stdio: ["ignore", "pipe", "inherit"] });
    const socket = new NotifySocket(path, child);
    await socket.waitFor(() => socket.messages[0] === "LISTENING", "the notify socket to be bound", 20_000);
    socket.messages.shift();
    return socket;
  }

  /** The datagrams carrying `assignment` (one datagram may carry several, a line each), in order. */
  with(assignment: string): string[] {
    return this.messages.filter((m) => m.split("\n").includes(assignment));
  }

  async waitFor(test: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test()) {
      if (this.child.exitCode !== null) throw new Error(`the notify socket receiver exited (${this.child.exitCode}) while waiting for ${what}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; received ${JSON.stringify(this.messages)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.child.kill();
  }
}
