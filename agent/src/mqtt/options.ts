import { readFileSync } from "node:fs";
import type { IClientOptions } from "mqtt";
import type { Config } from "../config/schema.ts";
import { SamEdgeError } from "../core/errors.ts";

/**
 * Client options for the configured broker: credentials, TLS files, protocol. Every MQTT
 * client of the agent (publisher, relayed-frame sources) starts from these.
 */
export function brokerOptions(mqtt: Config["mqtt"], protocolVersion: 4 | 5 = mqtt.protocol_version): IClientOptions {
  const file = (key: "ca" | "cert" | "key") => {
    const path = mqtt[key];
    if (!path) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new SamEdgeError("CONFIG_INVALID", `mqtt.${key}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const ca = file("ca");
  const cert = file("cert");
  const key = file("key");
  return {
    protocolVersion,
    keepalive: mqtt.keepalive_s,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    rejectUnauthorized: mqtt.reject_unauthorized,
    ...(mqtt.username !== undefined ? { username: mqtt.username } : {}),
    ...(mqtt.password !== undefined ? { password: mqtt.password } : {}),
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
  };
}
