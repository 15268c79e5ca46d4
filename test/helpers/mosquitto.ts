import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { isListening } from "../../agent/src/mqtt/broker.ts";

const exec = promisify(execFile);

/** A port the OS says is free now: tests never depend on 1883 or 8080. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * A real Mosquitto (Debian's package) on a free loopback port, with persistence, so a test can
 * stop it and start it again with its sessions and queued messages as a restarted broker has.
 */
export class Mosquitto {
  private child: ChildProcess | undefined;
  log = "";

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  /** TLS: a self-signed certificate for 127.0.0.1 (`ca` is the file to trust). */
  tls = false;

  get ca(): string {
    return join(this.dir, "cert.pem");
  }

  /** With `users`, only they may connect (a mosquitto_passwd file); with `tls`, over TLS only. */
  static async start(options: { tls?: boolean; users?: Record<string, string> } = {}): Promise<Mosquitto> {
    const dir = await mkdtemp(join(tmpdir(), "sam-edge-mosquitto-"));
    const broker = new Mosquitto(await freePort(), dir);
    const auth: string[] = ["allow_anonymous true"];
    if (options.users) {
      const file = join(dir, "passwords");
      await writeFile(file, "");
      for (const [user, password] of Object.entries(options.users)) await exec("mosquitto_passwd", ["-b", file, user, password]);
      auth.splice(0, 1, "allow_anonymous false", `password_file ${file}`);
    }
    if (options.tls) {
      broker.tls = true;
      await exec("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", broker.ca, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]);
      auth.push(`certfile ${broker.ca}`, `keyfile ${join(dir, "key.pem")}`);
    }
    await writeFile(
      join(dir, "mosquitto.conf"),
      [
        `listener ${broker.port} 127.0.0.1`,
        ...auth,
        "persistence true",
        `persistence_location ${dir}/`,
        // As root, mosquitto would switch to its own user, which cannot write the temp dir.
        "user root",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "max_queued_messages 100000",
      ].join("\n") + "\n",
    );
    await broker.run();
    return broker;
  }

  get url(): string {
    return `${this.tls ? "mqtts" : "mqtt"}://127.0.0.1:${this.port}`;
  }

  async run(): Promise<void> {
    const child = spawn("mosquitto", ["-c", join(this.dir, "mosquitto.conf")], { stdio: ["ignore", "ignore", "pipe"] });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (this.log += d));
    const failed = new Promise<never>((_, reject) => {
      child.once("error", (err) => reject(new Error(`mosquitto did not start (apt-get install mosquitto): ${err.message}`)));
      child.once("exit", (code) => reject(new Error(`mosquitto exited with ${code}: ${this.log}`)));
    });
    failed.catch(() => undefined);
    this.child = child;
    for (let i = 0; i < 100; i++) {
      if (await Promise.race([isListening("127.0.0.1", this.port), failed])) return;
      await sleep(50);
    }
    throw new Error(`mosquitto is not listening on ${this.port}: ${this.log}`);
  }

  /** SIGTERM: mosquitto saves its sessions and queued messages, as on a clean service stop. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
    this.child = undefined;
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
