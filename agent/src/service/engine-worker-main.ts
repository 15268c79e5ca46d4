import { parentPort, workerData } from "node:worker_threads";
import { isSamEdgeError } from "../core/errors.ts";
import { InProcessEngine } from "./engine.ts";
import type { WorkerData, WorkerReply, WorkerRequest } from "./worker-protocol.ts";
import { transferablesOf } from "./worker-protocol.ts";

/**
 * The model's thread: loads the model named in workerData, then runs one request at a time as
 * they come. Answers carry the engine's cache counts, so the main thread can report them
 * without asking.
 */
const { dir, session } = workerData as WorkerData;
const port = parentPort!;

function errorOf(err: unknown): WorkerReply["error"] {
  const e = err as Error & { code?: string; detail?: string };
  return { name: e?.name ?? "Error", message: e?.message ?? String(err), ...(isSamEdgeError(err) ? { code: err.code, ...(err.detail ? { detail: err.detail } : {}) } : {}) };
}

try {
  const engine = await InProcessEngine.load(dir, session);
  port.postMessage({ id: 0, ok: true, value: engine.model } satisfies WorkerReply);
  // One at a time: onnxruntime already uses every core for one run.
  let queue = Promise.resolve();
  port.on("message", (request: WorkerRequest) => {
    queue = queue.then(async () => {
      let reply: WorkerReply;
      try {
        const value =
          request.op === "segment"
            ? await engine.segment(request.image, request.prompt, request.options)
            : request.op === "everything"
              ? await engine.everything(request.image, request.options)
              : await engine.release();
        reply = { id: request.id, ok: true, value, cache: engine.cacheStats };
      } catch (err) {
        reply = { id: request.id, ok: false, error: errorOf(err) };
      }
      port.postMessage(reply, transferablesOf(reply.value));
      if (request.op === "release") port.close();
    });
  });
} catch (err) {
  port.postMessage({ id: 0, ok: false, error: errorOf(err) } satisfies WorkerReply);
}
