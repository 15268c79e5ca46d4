import type { SamEdgeError } from "../core/errors.ts";
import type { ModelUpdater } from "../service/model-updater.ts";
import { REQUEST_ID } from "./topic.ts";

const USAGE = 'send {"id": "u1", "source": "<absolute folder path or http(s) URL of the model set>"}';

/**
 * A model update over MQTT, published to `<base>/<device>/model/update` (model.update.mqtt):
 *   { "id": "u1", "source": "https://models.example.com/mobile-sam/" }
 * answered as segment requests are, with the model status GET /v1/model shows once the new
 * model serves, or `{"id", "error": {"code", "message"}}` when it was refused.
 */
export async function answerModelUpdate(
  updater: ModelUpdater,
  payload: Buffer,
  topicFor: (id?: string) => string,
): Promise<{ topic: string; payload: Record<string, unknown> }> {
  const error = (id: string | undefined, code: string, message: string) => ({ topic: topicFor(id), payload: { ...(id ? { id } : {}), error: { code, message } } });
  let command: unknown;
  try {
    command = JSON.parse(payload.toString("utf8"));
  } catch {
    return error(undefined, "REQUEST_INVALID", `the command is not JSON; ${USAGE}`);
  }
  if (typeof command !== "object" || command === null || Array.isArray(command)) return error(undefined, "REQUEST_INVALID", `the command must be a JSON object; ${USAGE}`);
  const { id, source, ...rest } = command as Record<string, unknown>;
  if (id !== undefined && (typeof id !== "string" || !REQUEST_ID.test(id))) return error(undefined, "REQUEST_INVALID", `"id" must be 1 to 64 letters, digits, _ or -`);
  const extra = Object.keys(rest);
  if (extra.length > 0) return error(id, "REQUEST_INVALID", `unknown keys ${extra.join(", ")}; ${USAGE}`);
  try {
    const status = await updater.update(source);
    return { topic: topicFor(id), payload: { ...(id ? { id } : {}), ...status } };
  } catch (err) {
    // update() refuses with a SamEdgeError whatever went wrong.
    const refusal = err as SamEdgeError;
    return error(id, refusal.code, refusal.message);
  }
}
