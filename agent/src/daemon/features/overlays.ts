import type { MqttPublisher, Topics } from "../../mqtt/publisher.ts";
import type { ResultBus } from "../results.ts";
import type { Feature } from "./feature.ts";

/** `results.overlay`: a retained JPEG of the masks over each frame on `cameras/<camera>/overlay`, while connected. */
export function overlays(bus: ResultBus, publisher: MqttPublisher, topics: Topics): Feature {
  return {
    name: "overlays",
    start() {
      bus.on(async (e) => {
        // Drawn only when someone can get it: an overlay that would wait out an outage is stale when it arrives.
        if (!publisher.connected) return;
        publisher.publishVolatile(topics.overlay(e.frame.cameraId), await e.overlay(), true);
      });
    },
    stop() {},
  };
}
