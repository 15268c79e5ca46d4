import { printable } from "../../service/result.ts";
import type { ResultBus } from "../results.ts";
import type { Feature } from "./feature.ts";

/** `--print`: one JSON line per result (masks left out), after the result is queued for MQTT. */
export function printResults(bus: ResultBus, write: (line: string) => void = (line) => process.stdout.write(line + "\n")): Feature {
  return {
    name: "print",
    start() {
      bus.on((e) => write(printable(e.message)));
    },
    stop() {},
  };
}
