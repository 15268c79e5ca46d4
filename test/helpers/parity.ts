import { readFile, readdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { SamModel } from "../../agent/src/model/sam-model.ts";
import { SegmentEngine, type MaskResult } from "../../agent/src/segment/engine.ts";
import type { Box, Point } from "../../agent/src/segment/prompts.ts";

/**
 * The layout fixtures (scripts/export/parity/make_layouts.py): random-weight models exported
 * by each SAM-family project's own export code, in its own folder layout, and the masks its own
 * Python predictor gives for fixed images and prompts.
 */
export const LAYOUTS_DIR = fileURLToPath(new URL("../fixtures/layouts/", import.meta.url));
export const PARITY_DIR = fileURLToPath(new URL("../fixtures/parity/", import.meta.url));

export interface GoldenCase {
  image: string;
  case: string;
  prompt: { points?: [number, number][]; labels?: number[]; box?: Box; mask_from?: string };
  multimask: boolean;
  /** The predictor's scores, best first, and its masks in that order, stacked in one PNG. */
  scores: number[];
  masks: string;
}

export interface Golden {
  layout: string;
  /** The folder inside the layout that holds the graphs, when not the layout's root. */
  dir?: string;
  /** Which model of a folder holding several. */
  model?: string;
  reference: string;
  cases: GoldenCase[];
}

export async function goldens(): Promise<Golden[]> {
  const names = (await readdir(PARITY_DIR, { withFileTypes: true })).filter((e) => e.isDirectory() && e.name !== "images").map((e) => e.name);
  return Promise.all(names.sort().map(async (n) => JSON.parse(await readFile(`${PARITY_DIR}${n}/golden.json`, "utf8")) as Golden));
}

/** `--model` for a layout fixture: its folder, and `#NAME` where the folder holds several models. */
export function modelSpec(g: Golden): string {
  return `${LAYOUTS_DIR}${g.layout}${g.dir ? `/${g.dir}` : ""}${g.model ? `#${g.model}` : ""}`;
}

/** The expected masks of a case, as 0/1 bytes, best first. */
export async function goldenMasks(g: Golden, c: GoldenCase): Promise<{ width: number; height: number; masks: Uint8Array[] }> {
  const { data, info } = await sharp(`${PARITY_DIR}${g.layout}/${c.masks}`).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  const height = info.height / c.scores.length;
  const size = info.width * height;
  return { width: info.width, height, masks: c.scores.map((_, i) => Uint8Array.from(data.subarray(i * size, (i + 1) * size), (v) => (v > 127 ? 1 : 0))) };
}

/** Intersection over union of two 0/1 masks of one size (1 when both are empty). */
export function iou(a: Uint8Array, b: Uint8Array): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    inter += a[i]! & b[i]!;
    union += a[i]! | b[i]!;
  }
  return union === 0 ? 1 : inter / union;
}

export interface CaseResult {
  image: string;
  case: string;
  /** Per expected mask, best first: its IoU with the engine's mask of the same rank. */
  ious: number[];
  scores: { golden: number[]; engine: number[] };
  engineMasks: number;
}

/** Runs every case of a golden through the engine, as the agent would. */
export async function runParity(g: Golden): Promise<CaseResult[]> {
  const model = await SamModel.load(modelSpec(g));
  try {
    const engine = new SegmentEngine(model);
    const best = new Map<string, MaskResult>();
    const results: CaseResult[] = [];
    for (const c of g.cases) {
      const bytes = await readFile(`${PARITY_DIR}images/${c.image}`);
      const points: Point[] = (c.prompt.points ?? []).map(([x, y], i) => ({ x, y, label: c.prompt.labels![i] as 0 | 1 }));
      const maskInput = c.prompt.mask_from ? best.get(`${c.image}/${c.prompt.mask_from}`)!.lowRes : undefined;
      const out = await engine.segment(bytes, { points, ...(c.prompt.box ? { box: c.prompt.box } : {}), ...(maskInput ? { maskInput } : {}) }, { multimask: c.multimask });
      best.set(`${c.image}/${c.case}`, out.masks[0]!);
      const expected = await goldenMasks(g, c);
      results.push({
        image: c.image,
        case: c.case,
        ious: expected.masks.map((m, i) => (out.masks[i] ? iou(m, out.masks[i]!.mask.data) : 0)),
        scores: { golden: c.scores, engine: out.masks.map((m) => Math.round(m.confidence * 1e5) / 1e5) },
        engineMasks: out.masks.length,
      });
    }
    return results;
  } finally {
    await model.release();
  }
}
