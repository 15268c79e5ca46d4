import type { SessionConfig } from "../model/sam-model.ts";
import type { SegmentOptions } from "../segment/engine.ts";
import type { EverythingOptions } from "../segment/everything.ts";
import type { Prompt } from "../segment/prompts.ts";
import type { CacheStats } from "./engine.ts";

/** The messages between the main thread and the model's worker thread. */
export interface WorkerData {
  dir: string;
  session: SessionConfig;
}

export type WorkerRequest =
  | { id: number; op: "segment"; image: Uint8Array; prompt: Prompt; options?: SegmentOptions }
  | { id: number; op: "everything"; image: Uint8Array; options?: Partial<EverythingOptions> }
  | { id: number; op: "release" };

export interface WorkerReply {
  /** 0 answers the model's load. */
  id: number;
  ok: boolean;
  value?: unknown;
  cache?: CacheStats;
  error?: { name: string; message: string; code?: string; detail?: string };
}

/**
 * The buffers an answer can hand over instead of copying: masks and low-res logits, each in a
 * buffer of its own (a view into a larger buffer is copied, since handing over the buffer would
 * take the rest with it).
 */
export function transferablesOf(value: unknown): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const visit = (v: unknown, depth: number) => {
    if (depth > 4 || v === null || typeof v !== "object") return;
    if (ArrayBuffer.isView(v)) {
      const b = v.buffer;
      if (b instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === b.byteLength) out.add(b);
      return;
    }
    for (const child of Array.isArray(v) ? v : Object.values(v)) visit(child, depth + 1);
  };
  visit(value, 0);
  return [...out];
}
