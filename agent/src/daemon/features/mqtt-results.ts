import type { MqttPublisher, Topics } from "../../mqtt/publisher.ts";
import type { ResultBus } from "../results.ts";
import type { Feature } from "./feature.ts";

/** Each camera result on `cameras/<camera>/result`, QoS 1 through the durable outbox. */
export function mqttResults(bus: ResultBus, publisher: MqttPublisher, topics: Topics): Feature {
  return {
    name: "mqtt-results",
    start() {
      bus.on((e) => publisher.publishDurable(topics.result(e.frame.cameraId), Buffer.from(JSON.stringify(e.message))));
    },
    stop() {},
  };
}
