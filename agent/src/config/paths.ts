import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The model the agent runs unless told otherwise: the int8 build of the bundled model (a third
 * of the size, faster on a Pi's CPU, masks within a few hundredths of the float ones).
 */
export const BUNDLED_MODEL_DIR = fileURLToPath(new URL("../../../models/quantized/tiny-sam-int8/", import.meta.url));
/** The float model it was quantised from: the reference for the quantisation check and benches. */
export const BUNDLED_FP32_MODEL_DIR = fileURLToPath(new URL("../../../models/tiny-sam/", import.meta.url));
/** The frames the demo camera shows. */
export const SAMPLES_DIR = fileURLToPath(new URL("../../samples/", import.meta.url));

/** XDG's state home: the outbox and the cloud budget outlive restarts, and are no cache. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_STATE_HOME || join(homedir(), ".local", "state"), "sam-edge");
}
