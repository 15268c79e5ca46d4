import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The model that ships with the agent, and the frames its demo camera shows. */
export const BUNDLED_MODEL_DIR = fileURLToPath(new URL("../../../models/tiny-sam/", import.meta.url));
export const SAMPLES_DIR = fileURLToPath(new URL("../../samples/", import.meta.url));

/** XDG's state home: the outbox and the cloud budget outlive restarts, and are no cache. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_STATE_HOME || join(homedir(), ".local", "state"), "sam-edge");
}
