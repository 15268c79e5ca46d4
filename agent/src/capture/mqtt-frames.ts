import { connect, type IClientOptions, type MqttClient } from "mqtt";
import { SourceState } from "./health.ts";
import type { Frame, FrameSource, SourceHealth } from "./source.ts";

export interface MqttFrameOptions {
  /** The configured camera: frames of topics without a `+` level carry this id. */
  cameraId: string;
  url: string;
  client: IClientOptions;
  /** e.g. `esp32/+/jpeg`, or `$share/sam/esp32/+/jpeg` to split the frames between agents. */
  topic: string;
  maxFrameBytes: number;
}

/** Frames held for the camera scheduler, which drains them at once into its latest-frame slots. */
const QUEUE_LIMIT = 256;

/** The camera id a topic stands for: the level where the pattern has its first `+`. */
export function cameraIdFromTopic(pattern: string, topic: string, fallback: string): string {
  const levels = pattern.split("/");
  const filter = levels[0] === "$share" ? levels.slice(2) : levels;
  const at = filter.indexOf("+");
  if (at < 0) return fallback;
  const level = topic.split("/")[at] ?? "";
  return level.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64) || fallback;
}

/**
 * JPEG payloads that a gateway relays from ESP32-CAMs. With a `$share/GROUP/` topic the broker
 * gives each message to one agent of the group, so several boxes split one stream of frames.
 */
export class MqttFrameSource implements FrameSource {
  readonly cameraId: string;
  readonly live = true;
  private readonly state = new SourceState();
  private readonly seqs = new Map<string, number>();

  constructor(private readonly options: MqttFrameOptions) {
    this.cameraId = options.cameraId;
  }

  health(): SourceHealth {
    return this.state.snapshot();
  }

  async *frames(signal: AbortSignal): AsyncIterable<Frame> {
    const o = this.options;
    const queue: Frame[] = [];
    let wake: (() => void) | undefined;
    const client: MqttClient = connect(o.url, { ...o.client, clientId: `${o.client.clientId ?? "sam-edge"}-frames-${o.cameraId}-${process.pid}` });
    client.on("connect", () => {
      this.state.connected = true;
      this.state.lastError = undefined;
      client.subscribe(o.topic, { qos: 1 }, (err) => {
        if (err) this.state.lastError = `subscribe ${o.topic}: ${err.message}`;
      });
    });
    client.on("close", () => {
      if (this.state.connected) this.state.reconnects++;
      this.state.connected = false;
    });
    client.on("error", (err) => (this.state.lastError = err.message));
    client.on("message", (topic, payload) => {
      if (payload.length > o.maxFrameBytes || payload.length === 0) {
        this.state.badFrames++;
        return;
      }
      const cameraId = cameraIdFromTopic(o.topic, topic, o.cameraId);
      const seq = this.seqs.get(cameraId) ?? 0;
      this.seqs.set(cameraId, seq + 1);
      if (queue.length >= QUEUE_LIMIT) queue.shift();
      queue.push({ cameraId, seq, capturedAt: new Date(), bytes: payload });
      wake?.();
    });
    const aborted = new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    try {
      while (!signal.aborted) {
        const frame = queue.shift();
        if (frame) {
          yield frame;
          continue;
        }
        await Promise.race([new Promise<void>((resolve) => (wake = resolve)), aborted]);
        wake = undefined;
      }
    } finally {
      this.state.connected = false;
      await client.endAsync(true);
    }
  }
}
