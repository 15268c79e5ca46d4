// The worker thread's entry: plain JavaScript, so that a worker started from a test runner or
// from tsx alike can load the agent's TypeScript (tsx registers its loader in this thread too).
import { register } from "tsx/esm/api";

register();
await import("./engine-worker-main.ts");
