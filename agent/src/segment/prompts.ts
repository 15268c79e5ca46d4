import { SamEdgeError } from "../core/errors.ts";

/** A click in original-image pixels: label 1 includes (foreground), 0 excludes (background). */
export interface Point {
  x: number;
  y: number;
  label: 0 | 1;
}

/** [x0, y0, x1, y1] in original-image pixels. */
export type Box = [number, number, number, number];

export interface Prompt {
  points?: Point[];
  box?: Box;
  /** Low-res logits of an earlier result on the same image (`lowRes` of a MaskResult). */
  maskInput?: Float32Array;
}

export const MAX_POINTS = 64;
export const LOW_RES = 256;

function bad(message: string): SamEdgeError {
  return new SamEdgeError("PROMPT_INVALID", message);
}

/** Checks a prompt against the image it applies to; every problem names what to fix. */
export function validatePrompt(prompt: Prompt, width: number, height: number): void {
  validatePromptShape(prompt);
  (prompt.points ?? []).forEach((p, i) => {
    if (p.x < 0 || p.y < 0 || p.x > width || p.y > height) {
      throw bad(`points[${i}] (${p.x}, ${p.y}) lies outside the ${width}x${height} image`);
    }
  });
  const b = prompt.box;
  if (b && (b[0] < 0 || b[1] < 0 || b[2] > width || b[3] > height)) throw bad(`box [${b.join(", ")}] lies outside the ${width}x${height} image`);
}

/**
 * Everything about a prompt but its bounds, which need the image's size: checked before any
 * image is decoded, so a malformed request costs nothing.
 */
export function validatePromptShape(prompt: Prompt): void {
  const points = prompt.points ?? [];
  if (!Array.isArray(points)) throw bad("points must be an array of {x, y, label}");
  if (points.length === 0 && !prompt.box) throw bad("give at least one point or a box");
  if (points.length > MAX_POINTS) throw bad(`${points.length} points given; at most ${MAX_POINTS} are accepted`);
  points.forEach((p, i) => {
    if (typeof p !== "object" || p === null) throw bad(`points[${i}] must be an object {x, y, label}`);
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) throw bad(`points[${i}]: x and y must be finite numbers`);
    if (p.label !== 0 && p.label !== 1) throw bad(`points[${i}]: label must be 1 (foreground) or 0 (background), got ${JSON.stringify(p.label)}`);
  });
  if (prompt.box) {
    const b = prompt.box;
    if (!Array.isArray(b) || b.length !== 4 || !b.every(Number.isFinite)) throw bad("box must be four finite numbers [x0, y0, x1, y1]");
    if (b[2] <= b[0] || b[3] <= b[1]) throw bad(`box [${b.join(", ")}] must have x1 > x0 and y1 > y0`);
  }
  if (prompt.maskInput && prompt.maskInput.length !== LOW_RES * LOW_RES) {
    throw bad(`maskInput must be ${LOW_RES}x${LOW_RES} low-res logits (${LOW_RES * LOW_RES} values), got ${prompt.maskInput.length}`);
  }
}

/**
 * The decoder's point arrays for one prompt, in the encoder's resized frame: clicks, then the
 * box as two corners labelled 2 and 3; without a box, SAM's padding point (0, 0, -1).
 */
export function encodePrompt(prompt: Prompt, scaleX: number, scaleY: number): { coords: number[]; labels: number[] } {
  const coords: number[] = [];
  const labels: number[] = [];
  for (const p of prompt.points ?? []) {
    coords.push(p.x * scaleX, p.y * scaleY);
    labels.push(p.label);
  }
  if (prompt.box) {
    const [x0, y0, x1, y1] = prompt.box;
    coords.push(x0 * scaleX, y0 * scaleY, x1 * scaleX, y1 * scaleY);
    labels.push(2, 3);
  } else {
    coords.push(0, 0);
    labels.push(-1);
  }
  return { coords, labels };
}
