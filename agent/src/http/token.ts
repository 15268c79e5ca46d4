import { randomBytes } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isLoopbackHost } from "../core/net.ts";

/** Where the agent keeps the token it made itself (0600, in the state dir). */
export const TOKEN_FILE = "http-token";


/**
 * The token the HTTP API wants when the owner configured none. On loopback none is needed
 * (only this machine can connect, and the site guard keeps browsers' pages out). Reachable from
 * the LAN, the API gets a random token made at the first start and kept in the state dir, as
 * Jupyter does: `created` says whether this start made it (the URL with it is then printed once).
 */
export async function generatedToken(stateDir: string, host: string): Promise<{ token: string; file: string; created: boolean } | undefined> {
  if (isLoopbackHost(host)) return undefined;
  const file = join(stateDir, TOKEN_FILE);
  try {
    const token = (await readFile(file, "utf8")).trim();
    // A token file emptied or cut short is replaced rather than trusted.
    if (/^[A-Za-z0-9_-]{32,}$/.test(token)) {
      await chmod(file, 0o600);
      return { token, file, created: false };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const token = randomBytes(24).toString("base64url");
  await writeFile(file, token + "\n", { mode: 0o600 });
  await chmod(file, 0o600);
  return { token, file, created: true };
}
