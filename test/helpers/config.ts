import { loadConfig, type ConfigInputs } from "../../agent/src/config/load.ts";
import { isSamEdgeError } from "../../agent/src/core/errors.ts";

/** The CONFIG_INVALID message for these inputs, or a failure if the config was accepted. */
export async function rejection(inputs: ConfigInputs): Promise<string> {
  try {
    await loadConfig({ env: {}, ...inputs });
  } catch (err) {
    if (isSamEdgeError(err) && err.code === "CONFIG_INVALID") return err.message;
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(inputs)}`);
}
