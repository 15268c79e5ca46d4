import { setTimeout as sleep } from "node:timers/promises";
import type { SourceHealth } from "./source.ts";

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };

/** The counts behind SourceHealth, kept by each source. */
export class SourceState {
  connected = false;
  reconnects = 0;
  badFrames = 0;
  lastError: string | undefined;

  snapshot(): SourceHealth {
    return { connected: this.connected, reconnects: this.reconnects, badFrames: this.badFrames, ...(this.lastError ? { lastError: this.lastError } : {}) };
  }
}

/** Exponential, with ±25% jitter so that cameras that dropped together do not retry together. */
export function backoffDelay(attempt: number, backoff: Backoff, random: () => number = Math.random): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt);
  return Math.round(base * (0.75 + random() * 0.5));
}

/**
 * Runs `connect` until the signal aborts: each time it ends or throws, the state says so and
 * the next try waits a backoff that grows with each try and starts over once a try has
 * delivered something.
 */
export async function* reconnecting<T>(
  state: SourceState,
  signal: AbortSignal,
  connect: (signal: AbortSignal) => AsyncIterable<T>,
  backoff: Backoff = DEFAULT_BACKOFF,
): AsyncIterable<T> {
  let attempt = 0;
  while (!signal.aborted) {
    try {
      for await (const item of connect(signal)) {
        state.connected = true;
        state.lastError = undefined;
        attempt = 0;
        yield item;
      }
      if (!signal.aborted) state.lastError = "the stream ended";
    } catch (err) {
      if (signal.aborted) break;
      state.lastError = (err as Error).message;
    }
    state.connected = false;
    if (signal.aborted) break;
    state.reconnects++;
    await sleep(backoffDelay(attempt++, backoff), undefined, { signal }).catch(() => undefined);
  }
  state.connected = false;
}

/** Basic auth from a username and password, unless the configured headers already authorise. */
export function authHeaders(headers: Record<string, string> = {}, username?: string, password?: string): Record<string, string> {
  const has = Object.keys(headers).some((h) => h.toLowerCase() === "authorization");
  if (has || username === undefined) return headers;
  return { ...headers, Authorization: `Basic ${Buffer.from(`${username}:${password ?? ""}`).toString("base64")}` };
}
