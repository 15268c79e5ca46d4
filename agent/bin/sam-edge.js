#!/usr/bin/env node
// The agent runs its TypeScript sources through tsx: no build step between a checkout and a box.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli.ts");
process.exitCode = await main(process.argv.slice(2));
