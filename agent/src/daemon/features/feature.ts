/**
 * A part of the daemon that is not on the way from a frame to its result: it listens (to
 * results, to the broker's connects) and reports (to MQTT, stdout, /metrics). The controller
 * starts them after the core parts and stops them before.
 */
export interface Feature {
  readonly name: string;
  start(): Promise<void> | void;
  stop(): Promise<void> | void;
}
