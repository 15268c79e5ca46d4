/**
 * The page at `/`: click-to-segment on a camera's latest frame (or an opened image), accept a
 * mask as an annotation, Everything mode, exports. Browser code, compiled by the server with
 * esbuild; it talks only to the API it came from.
 */
import type { ApiErrorBody, ApiPoint, EverythingResult, InteractiveResult } from "../client/types.ts";

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

const imageCanvas = $<HTMLCanvasElement>("image");
const overlay = $<HTMLCanvasElement>("overlay");
const pointsCanvas = $<HTMLCanvasElement>("points");
const cameraSelect = $<HTMLSelectElement>("camera");
const statusLine = $<HTMLSpanElement>("status");
const acceptButton = $<HTMLButtonElement>("accept");

const state = {
  /** The exact bytes on screen: segment and accept send these, never a newer frame. */
  image: undefined as Blob | undefined,
  width: 0,
  height: 0,
  points: [] as ApiPoint[],
  /** The current interactive mask (base64 PNG), the one Accept saves. */
  mask: undefined as string | undefined,
  /** Answers to superseded requests are dropped: only the latest click's mask is drawn. */
  request: 0,
};

// A token can come in the URL fragment (never sent to the server), and stays for the session.
const fragmentToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (fragmentToken) sessionStorage.setItem("sam-edge-token", fragmentToken);
const token = sessionStorage.getItem("sam-edge-token");

function status(text: string, kind: "idle" | "busy" | "error" = "idle"): void {
  statusLine.textContent = text;
  statusLine.dataset.state = kind;
}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(path, { ...init, headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!res.ok) {
    const body = (await res.json().catch(() => undefined)) as ApiErrorBody | undefined;
    throw new Error(body ? `${body.error.code}: ${body.error.message}` : `${path} answered ${res.status}`);
  }
  return res;
}

async function run(what: string, task: () => Promise<void>): Promise<void> {
  status(`${what}…`, "busy");
  try {
    await task();
  } catch (err) {
    status((err as Error).message, "error");
  }
}

async function openImage(blob: Blob): Promise<void> {
  // Upright, as the server reads EXIF orientation: clicks are in the same pixels as its masks.
  const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
  state.image = blob;
  state.width = bitmap.width;
  state.height = bitmap.height;
  for (const canvas of [imageCanvas, overlay, pointsCanvas]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  imageCanvas.getContext("2d")!.drawImage(bitmap, 0, 0);
  clearPrompt();
  status(`${bitmap.width}x${bitmap.height}: click an object`);
}

async function openCamera(id: string): Promise<void> {
  await openImage(await (await api(`/v1/cameras/${encodeURIComponent(id)}/frame.jpg`)).blob());
}

function clearPrompt(): void {
  state.points = [];
  state.mask = undefined;
  state.request++;
  drawMasks([]).catch(() => undefined);
  drawPoints();
}

function drawPoints(): void {
  const ctx = pointsCanvas.getContext("2d")!;
  ctx.clearRect(0, 0, pointsCanvas.width, pointsCanvas.height);
  const r = Math.max(4, Math.round(Math.max(state.width, state.height) / 120));
  for (const p of state.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = p.label === 1 ? "#2ecc71" : "#e74c3c";
    ctx.fill();
    ctx.lineWidth = Math.max(1, r / 3);
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

const COLORS: [number, number, number][] = [
  [30, 144, 255],
  [255, 99, 71],
  [50, 205, 50],
  [255, 215, 0],
  [186, 85, 211],
  [0, 206, 209],
  [255, 140, 0],
  [199, 21, 133],
];

/** Paints each mask (base64 PNG) in its own translucent colour; the overlay holds nothing else. */
async function drawMasks(masks: string[]): Promise<void> {
  const ctx = overlay.getContext("2d")!;
  const out = ctx.createImageData(overlay.width, overlay.height);
  for (const [i, b64] of masks.entries()) {
    const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${b64}`)).blob());
    const scratch = new OffscreenCanvas(bitmap.width, bitmap.height).getContext("2d")!;
    scratch.drawImage(bitmap, 0, 0);
    const pixels = scratch.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const [r, g, b] = COLORS[i % COLORS.length]!;
    for (let p = 0; p < pixels.length; p += 4) {
      if (pixels[p]! > 127) out.data.set([r, g, b, 140], p);
    }
  }
  ctx.putImageData(out, 0, 0);
  // What is on screen, for people reading the DOM and for tests waiting on a redraw.
  overlay.dataset.masks = String(masks.length);
  overlay.dataset.draws = String(Number(overlay.dataset.draws ?? 0) + 1);
}

async function segment(): Promise<void> {
  const request = ++state.request;
  if (!state.image || state.points.length === 0) {
    state.mask = undefined;
    acceptButton.disabled = true;
    await drawMasks([]);
    status("click an object");
    return;
  }
  const form = new FormData();
  form.append("image", state.image, "frame");
  form.append("points", JSON.stringify(state.points));
  const result = (await (await api("/v1/segment/interactive", { method: "POST", body: form })).json()) as InteractiveResult;
  if (request !== state.request) return;
  state.mask = result.mask;
  await drawMasks([result.mask]);
  acceptButton.disabled = false;
  status(`mask ${result.bbox.join(",")} · confidence ${result.confidence.toFixed(2)} · ${Math.round(result.latency_ms ?? 0)} ms`);
}

function addPoint(event: MouseEvent, label: 0 | 1): void {
  if (!state.image) return;
  const box = pointsCanvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) * state.width) / box.width;
  const y = ((event.clientY - box.top) * state.height) / box.height;
  state.points.push({ x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, label });
  drawPoints();
  void run("segmenting", segment);
}

pointsCanvas.addEventListener("click", (e) => addPoint(e, e.shiftKey ? 0 : 1));
pointsCanvas.addEventListener("contextmenu", (e) => {
  e.preventDefault();
  addPoint(e, 0);
});

$("undo").addEventListener("click", () => {
  state.points.pop();
  drawPoints();
  void run("segmenting", segment);
});
$("clear").addEventListener("click", () => {
  clearPrompt();
  acceptButton.disabled = true;
  status("click an object");
});

$("everything").addEventListener("click", () =>
  run("finding every object", async () => {
    if (!state.image) return;
    clearPrompt();
    acceptButton.disabled = true;
    const request = state.request;
    const form = new FormData();
    form.append("image", state.image, "frame");
    form.append("points_per_side", $<HTMLInputElement>("per-side").value);
    const result = (await (await api("/v1/segment/everything", { method: "POST", body: form })).json()) as EverythingResult;
    if (request !== state.request) return;
    await drawMasks(result.masks.map((m) => m.mask));
    status(`${result.masks.length} objects · ${Math.round(result.latency_ms ?? 0)} ms`);
  }),
);

acceptButton.addEventListener("click", () =>
  run("saving", async () => {
    if (!state.image || !state.mask) return;
    const form = new FormData();
    form.append("image", state.image, "frame");
    form.append("mask", state.mask);
    form.append("class", $<HTMLInputElement>("class").value);
    const saved = (await (await api("/v1/annotations", { method: "POST", body: form })).json()) as { id: string; class: string };
    clearPrompt();
    acceptButton.disabled = true;
    status(`saved ${saved.class} (${saved.id})`);
  }),
);

for (const button of document.querySelectorAll<HTMLButtonElement>("[data-export]")) {
  button.addEventListener("click", () =>
    run("exporting", async () => {
      const format = button.dataset.export!;
      const blob = await (await api(`/v1/export?format=${format}`)).blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `sam-edge-${format}.tar.gz`;
      link.click();
      // Revoking at once can cancel the download before the browser has read the blob.
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
      status(`exported ${format}`);
    }),
  );
}

cameraSelect.addEventListener("change", () => run("loading frame", () => openCamera(cameraSelect.value)));
$("refresh").addEventListener("click", () => run("loading frame", () => openCamera(cameraSelect.value)));
$<HTMLInputElement>("file").addEventListener("change", (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (file) void run("opening", () => openImage(file));
});

void run("loading cameras", async () => {
  const { cameras } = (await (await api("/v1/cameras")).json()) as { cameras: { id: string }[] };
  cameraSelect.replaceChildren(...cameras.map((c) => new Option(c.id, c.id)));
  if (cameras[0]) await openCamera(cameras[0].id);
  else status("no cameras: open an image");
});
