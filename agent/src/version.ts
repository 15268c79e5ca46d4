import { readFileSync } from "node:fs";

/** The agent's version, from its package.json: what it tells Home Assistant it runs. */
export const VERSION: string = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
