import type { MqttPublisher, Topics } from "../../mqtt/publisher.ts";
import type { Feature } from "./feature.ts";

/** The daemon's counters on `stats` every `mqtt.stats_interval_s` (QoS 0: a missed one is replaced by the next). */
export function statsPublisher(publisher: MqttPublisher, topics: Topics, intervalS: number, stats: () => object): Feature {
  let timer: NodeJS.Timeout | undefined;
  return {
    name: "stats",
    start() {
      timer = setInterval(() => publisher.publishVolatile(topics.stats, JSON.stringify(stats())), intervalS * 1000);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
