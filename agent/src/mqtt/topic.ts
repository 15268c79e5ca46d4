/** What a request id may be: it becomes a topic level of the answer, so no wildcards or separators. */
export const REQUEST_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A request's id when it has a usable one: read without trusting anything else in the payload. */
export function requestIdOf(payload: Buffer): string | undefined {
  try {
    const id = (JSON.parse(payload.toString("utf8")) as { id?: unknown } | null)?.id;
    return typeof id === "string" && REQUEST_ID.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

/** Longest topic MQTT can carry: its length is a 16-bit number of UTF-8 bytes. */
const MAX_TOPIC_BYTES = 65_535;

/**
 * Why a broker would refuse a PUBLISH to this topic (MQTT 3.1.1 §4.7, MQTT 5 §4.7), or
 * undefined when it is a valid name to publish to. A broker answers such a publish by closing
 * the connection, so a topic must be checked before it is sent, never after.
 */
export function publishTopicProblem(topic: string): string | undefined {
  if (topic.length === 0) return "its topic is empty";
  if (/[+#]/.test(topic)) return `its topic ${JSON.stringify(topic.slice(0, 200))} holds a wildcard (+ or #), which only subscriptions may use`;
  if (topic.includes("\u0000")) return "its topic holds a NUL character";
  if (topic.startsWith("$")) return `its topic ${JSON.stringify(topic.slice(0, 200))} starts with $, which brokers keep for themselves`;
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return `its topic is over ${MAX_TOPIC_BYTES} bytes`;
  return undefined;
}
