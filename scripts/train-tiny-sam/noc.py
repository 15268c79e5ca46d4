"""Interactive-segmentation figures on real photographs, by the RITM / f-BRS / SimpleClick protocol.

    python noc.py --model ../../models/tiny-sam --out davis.json
    python noc.py --model ../../models/tiny-sam --model ../../models/quantized/tiny-sam-int8 \
        --grabcut --everything --limit 50

Each object of the set (default `../shared/datasets/eval/davis345`: all annotated objects of a
frame merged into one foreground, pixels marked 255 ignored) is segmented at its original
resolution by a simulated user:
- the first click is a positive one at the object's point farthest from its boundary (distance
  transform, as RITM's clicker: cv2 L2 precise, ties to the first pixel in raster order);
- each next click goes to the point farthest from the boundary of the larger error region, positive
  where the mask misses the object, negative where it spills over, never on a pixel clicked before;
- up to `--clicks` (20) clicks. NoC@85 / NoC@90: clicks needed to reach that IoU (20 when never).

A model is driven through its ONNX files as SAM's reference ONNX example drives SAM: the image
resized so its longest side is 1024 (bilinear), normalised, padded; clicks scaled into that frame
and followed by a padding point (label -1); for a lone click the best of the multimask outputs
by predicted IoU, after that the single-mask output, with the previous low-res logits of the
kept mask as `mask_input`; masks are the `masks` output at the original size, logit > 0. The box
prompt is the object's bounding box, single-mask output.

`--grabcut`: OpenCV's GrabCut seeded by the same simulated user (each click a hard disk and a
probable-label disk around it, the previous result as probable labels, one iteration per click,
on the frame halved and scored at the original resolution; its box figure is GrabCut's own
rectangle mode). GrabCut is slow, so its user stops at IoU 0.90 as in RITM's NoC runs, and its
mIoU after k clicks carries the last IoU forward; models run all the clicks (`--stop-iou` and
`--grabcut-stop-iou` change that). GrabCut does not
depend on the model: `--grabcut-cache FILE` keeps its per-object results (a JSON line each) for later runs.

`--everything`: SAM's automatic mask generator on a 16x16 grid (the agent's Everything mode: the
three multimask outputs per point, predicted-IoU and stability filters, box NMS 0.7), scored per
annotated object (each palette index of a frame): found when some mask has IoU >= 0.5 with it.
Reported at the model manifest's `everything` thresholds (SAM's 0.88 / 0.95 without one) and over
a grid of thresholds, with the number of frames that get no mask at all. `--calibrate` writes
the grid's pick into the model's manifest; calibrate on pairs training held out, not on davis345:

    python noc.py --model ../../models/tiny-sam --data ../../../shared/datasets/train/coco-mval \
        --binary --stride 10 --everything-only --calibrate

Speckle: the fraction of mask pixels that lie in 8-connected components smaller than 1% of the
mask's area (pooled over the objects' 1-click and box masks).

Per-object progress streams to stderr; the JSON summary goes to stdout and `--out`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent.parent / "shared" / "datasets" / "eval" / "davis345"
IGNORE = 255
CLICK_RADIUS = 3  # px of GrabCut's halved frame: the hard label around each click (RITM's 5 px disks, about)
GRABCUT_DOWNSCALE = 2
SPECKLE_FRACTION = 0.01
MIOU_AT = (1, 2, 3, 5, 10, 20)
# The Everything thresholds swept: predicted IoU x stability.
IOU_GRID = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.88)
STABILITY_GRID = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Calibration never picks thresholds that keep more masks than this per frame on average: a user
# of Everything wants the objects, not hundreds of overlapping guesses that happen to include them.
MAX_MASKS_PER_FRAME = 24
SAM_EVERYTHING = {"points_per_side": 16, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "box_nms_thresh": 0.7}


# ---------------------------------------------------------------------------------------------
# The data and the simulated user


def load_pair(data: Path, name: str, binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and its label map (0 background, 1..K objects, 255 ignored). `binary`: the
    mask is 0 / 255 with one object (coco-mval, weizmann-horse), so 255 is that object."""
    image = np.asarray(Image.open(data / "images" / f"{name}.jpg").convert("RGB"))
    labels = np.asarray(Image.open(data / "masks" / f"{name}.png"))
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise SystemExit(f"{name}: mask {labels.shape} does not match image {image.shape[:2]}")
    return image, ((labels > 0).astype(np.uint8) if binary else labels)


def distance_inside(mask: np.ndarray) -> np.ndarray:
    """Distance of each pixel of `mask` to the nearest pixel outside it, the image's edge counting
    as outside (RITM pads by one pixel before the transform)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


class Clicker:
    """RITM's clicker: the next click at the farthest-from-boundary point of the larger error."""

    def __init__(self, gt: np.ndarray, valid: np.ndarray) -> None:
        self.gt, self.valid = gt, valid
        self.not_clicked = np.ones(gt.shape, bool)
        self.clicks: list[tuple[int, int, bool]] = []  # (x, y, positive)

    def next(self, pred: np.ndarray) -> tuple[int, int, bool]:
        fn = self.gt & ~pred & self.valid
        fp = ~self.gt & pred & self.valid
        d_fn = distance_inside(fn) * self.not_clicked
        d_fp = distance_inside(fp) * self.not_clicked
        positive = bool(d_fn.max() > d_fp.max())
        d = d_fn if positive else d_fp
        ys, xs = np.nonzero(d == d.max())
        x, y = int(xs[0]), int(ys[0])
        self.not_clicked[y, x] = False
        self.clicks.append((x, y, positive))
        return x, y, positive


def iou(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    inter = (pred & gt & valid).sum()
    union = ((pred | gt) & valid).sum()
    return float(inter / union) if union else 1.0


def speckle(mask: np.ndarray) -> tuple[int, int]:
    """(pixels in components smaller than 1% of the mask's area, the mask's area)."""
    area = int(mask.sum())
    if area == 0:
        return 0, 0
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    return int(sizes[sizes < SPECKLE_FRACTION * area].sum()), area


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 in pixel-edge coordinates (x1, y1 one past the last pixel)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---------------------------------------------------------------------------------------------
# A model through its ONNX files


class OnnxSam:
    def __init__(self, folder: Path, threads: int = 1) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = lambda name: ort.InferenceSession(str(folder / manifest[name]), opts, providers=["CPUExecutionProvider"])  # noqa: E731
        self.encoder, self.decoder = session("encoder"), session("decoder")
        self.decoder_batch = session("decoderBatch") if manifest.get("decoderBatch") else None
        self.size = int(manifest.get("inputSize", 1024))
        self.mean = np.array(manifest.get("pixelMean", [123.675, 116.28, 103.53]), np.float32)
        self.std = np.array(manifest.get("pixelStd", [58.395, 57.12, 57.375]), np.float32)
        self.everything = {**SAM_EVERYTHING, **manifest.get("everything", {})}

    def embed(self, image: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        """Embedding, the scale into the model frame, and the resized (h, w)."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
        x = np.zeros((self.size, self.size, 3), np.float32)
        x[:nh, :nw] = (resized - self.mean) / self.std
        emb = self.encoder.run(None, {self.encoder.get_inputs()[0].name: x.transpose(2, 0, 1)[None]})[0]
        return emb, scale, (nh, nw)

    def decode(self, emb, coords, labels, size, mask_input=None):
        """coords [N, 2] and labels [N] in the model frame; a padding point is appended when no box is given."""
        coords, labels = np.asarray(coords, np.float32), np.asarray(labels, np.float32)
        if not (labels >= 2).any():
            coords, labels = np.concatenate([coords, [[0.0, 0.0]]]), np.concatenate([labels, [-1.0]])
        masks, scores, low = self.decoder.run(
            None,
            {
                "image_embeddings": emb,
                "point_coords": coords[None].astype(np.float32),
                "point_labels": labels[None].astype(np.float32),
                "mask_input": np.zeros((1, 1, 256, 256), np.float32) if mask_input is None else mask_input[None, None],
                "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
                "orig_im_size": np.array(size, np.float32),
            },
        )
        return masks[0], scores[0], low[0]


def run_model(model: OnnxSam, image, gt, valid, clicks_max: int, stop_iou: float) -> dict:
    h, w = gt.shape
    emb, scale, _ = model.embed(image)
    clicker = Clicker(gt, valid)
    pred = np.zeros_like(gt)
    coords, labels, ious, prev = [], [], [], None
    first = None
    for k in range(clicks_max):
        x, y, positive = clicker.next(pred)
        coords.append([x * scale, y * scale])
        labels.append(1.0 if positive else 0.0)
        masks, scores, low = model.decode(emb, coords, labels, (h, w), prev)
        pick = int(np.argmax(scores[1:])) + 1 if k == 0 else 0
        pred, prev = masks[pick] > 0, low[pick]
        ious.append(iou(pred, gt, valid))
        if k == 0:
            first = pred
        if ious[-1] >= stop_iou:
            break
    x0, y0, x1, y1 = bbox(gt)
    masks, _, _ = model.decode(emb, [[x0 * scale, y0 * scale], [x1 * scale, y1 * scale]], [2, 3], (h, w))
    box = masks[0] > 0
    return {"ious": ious, "box": iou(box, gt, valid), "speckle": [speckle(first), speckle(box)]}


def everything_masks(model: OnnxSam, emb, scale, resized_hw, orig_hw, points_per_side: int):
    """All candidates of SAM's automatic mask generator for one image, before any filter:
    (predicted IoU, stability, low-res logits) of the three multimask outputs per grid point."""
    h, w = orig_hw
    n = points_per_side
    grid = (np.arange(n) + 0.5) / n
    pts = np.array([[gx * w * scale, gy * h * scale] for gy in grid for gx in grid], np.float32)
    decoder = model.decoder_batch or model.decoder
    out_scores, out_low = [], []
    step = 64 if model.decoder_batch else 1
    for s in range(0, len(pts), step):
        chunk = pts[s : s + step]
        b = len(chunk)
        coords = np.concatenate([chunk[:, None], np.zeros((b, 1, 2), np.float32)], axis=1)
        labels = np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1))
        _, scores, low = decoder.run(
            None,
            {
                "image_embeddings": emb,
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array([1, 1], np.float32),
            },
        )
        out_scores.append(scores[:, 1:])
        out_low.append(low[:, 1:])
    scores = np.concatenate(out_scores).reshape(-1)
    low = np.concatenate(out_low).reshape(-1, 256, 256)
    cells_h = int(np.ceil(resized_hw[0] * 256 / model.size))
    cells_w = int(np.ceil(resized_hw[1] * 256 / model.size))
    low = low[:, :cells_h, :cells_w]
    stability = (low > 1).sum((1, 2)) / np.maximum(1, (low > -1).sum((1, 2)))
    return scores, stability, low


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_keep(binary: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """The agent's NMS (agent/src/segment/everything.ts): greedy by score, a candidate dropped
    when its box IoU with a kept one, or (when the boxes touch) its mask IoU, is over the threshold."""
    boxes = []
    for m in binary:
        ys, xs = np.nonzero(m)
        boxes.append(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32))
    areas = binary.sum((1, 2))
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        dup = False
        for k in kept:
            o = box_iou(boxes[i], boxes[k])
            if o > threshold or (o > 0 and min(areas[i], areas[k]) > threshold * max(areas[i], areas[k]) and (binary[i] & binary[k]).sum() / (binary[i] | binary[k]).sum() > threshold):
                dup = True
                break
        if not dup:
            kept.append(int(i))
    return kept


def run_everything(model: OnnxSam, image, labels) -> dict:
    """Objects found at IoU >= 0.5 and masks kept, at every threshold pair of the grid and at the manifest's."""
    h, w = labels.shape
    emb, scale, resized_hw = model.embed(image)
    settings = model.everything
    scores, stability, low = everything_masks(model, emb, scale, resized_hw, (h, w), settings["points_per_side"])
    objects = [labels == v for v in np.unique(labels) if v not in (0, IGNORE)]
    valid = labels != IGNORE
    # Ground truth at the low-res cells' resolution is too coarse to score against: each kept
    # mask is upsampled to the original size (as the agent returns it) once, on demand.
    upsampled: dict[int, np.ndarray] = {}

    def full(i: int) -> np.ndarray:
        if i not in upsampled:
            logits = cv2.resize(low[i], (int(round(low.shape[2] * model.size / 256 / scale)), int(round(low.shape[1] * model.size / 256 / scale))), interpolation=cv2.INTER_LINEAR)
            upsampled[i] = logits[:h, :w] > 0
        return upsampled[i]

    def score(t_iou: float, t_stab: float) -> tuple[int, int]:
        ok = np.nonzero((scores >= t_iou) & (stability >= t_stab) & ((low > 0).sum((1, 2)) > 0))[0]
        if len(ok) == 0:
            return 0, 0
        kept = [ok[i] for i in nms_keep(low[ok] > 0, scores[ok], settings["box_nms_thresh"])]
        found = sum(any(iou(full(i), o, valid) >= 0.5 for i in kept) for o in objects)
        return found, len(kept)

    grid = {f"{a}/{b}": score(a, b) for a in IOU_GRID for b in STABILITY_GRID}
    return {"objects": len(objects), "manifest": score(settings["pred_iou_thresh"], settings["stability_score_thresh"]), "grid": grid}


# ---------------------------------------------------------------------------------------------
# GrabCut seeded by the same user


def run_grabcut(image, gt, valid, clicks_max: int, stop_iou: float) -> dict:
    """GrabCut works on the frame halved (a full-resolution call takes about a second on these
    CPUs, 20 clicks on 345 objects most of a day of shared cores); its labels are scaled back
    to the original resolution, where they are scored like a model's masks."""
    h, w = gt.shape
    small = (w // GRABCUT_DOWNSCALE, h // GRABCUT_DOWNSCALE)
    bgr = np.ascontiguousarray(cv2.resize(image[..., ::-1], small, interpolation=cv2.INTER_AREA))
    prior = int(round(0.1 * max(small)))  # probable-label disk around each click
    clicker = Clicker(gt, valid)
    pred = np.zeros_like(gt)
    ious, first = [], None
    for k in range(clicks_max):
        clicker.next(pred)
        labels = cv2.resize(np.where(pred, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8), small, interpolation=cv2.INTER_NEAREST)
        at = lambda x, y: (x // GRABCUT_DOWNSCALE, y // GRABCUT_DOWNSCALE)  # noqa: E731
        x, y, positive = clicker.clicks[-1]
        cv2.circle(labels, at(x, y), prior, cv2.GC_PR_FGD if positive else cv2.GC_PR_BGD, -1)
        for x, y, positive in clicker.clicks:
            cv2.circle(labels, at(x, y), CLICK_RADIUS, cv2.GC_FGD if positive else cv2.GC_BGD, -1)
        pred = upscale(grabcut(bgr, labels, cv2.GC_INIT_WITH_MASK), (w, h))
        ious.append(iou(pred, gt, valid))
        if k == 0:
            first = pred
        if ious[-1] >= stop_iou:
            break
    x0, y0, x1, y1 = (v // GRABCUT_DOWNSCALE for v in bbox(gt))
    labels = np.zeros(bgr.shape[:2], np.uint8)
    box = upscale(grabcut(bgr, labels, cv2.GC_INIT_WITH_RECT, (x0, y0, max(1, x1 - x0), max(1, y1 - y0))), (w, h))
    return {"ious": ious, "box": iou(box, gt, valid), "speckle": [speckle(first), speckle(box)]}


def upscale(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)


def grabcut(bgr: np.ndarray, mask: np.ndarray, mode: int, rect=None) -> np.ndarray:
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    has_fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).any()
    has_bg = ((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)).any()
    if mode == cv2.GC_INIT_WITH_MASK and not (has_fg and has_bg):
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)  # nothing to model one side with
    if mode == cv2.GC_INIT_WITH_RECT and (rect[2] >= bgr.shape[1] and rect[3] >= bgr.shape[0]):
        return np.ones(mask.shape, bool)  # a box of the whole frame leaves no background
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models by k-means: the same answer every run
    cv2.grabCut(bgr, mask, rect, bgd, fgd, 1, mode)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


# ---------------------------------------------------------------------------------------------
# Workers and the summary

_w: dict = {}


def _init(data: Path, binary: bool, models: list[str], grabcut: bool, cached: set[str], everything: str, clicks: int, stop_iou: float, grabcut_stop: float) -> None:
    cv2.setNumThreads(1)
    _w.update(data=data, binary=binary, models={m: OnnxSam(Path(m)) for m in models}, grabcut=grabcut, cached=cached, everything=everything, clicks=clicks, stop=stop_iou, gc_stop=grabcut_stop)


def _object(name: str) -> dict:
    image, labels = load_pair(_w["data"], name, _w["binary"])
    gt, valid = (labels > 0) & (labels != IGNORE), labels != IGNORE
    out: dict = {"name": name, "area": int(gt.sum()), "models": {}}
    for key, model in _w["models"].items():
        t = time.perf_counter()
        row = {} if _w["everything"] == "only" else run_model(model, image, gt, valid, _w["clicks"], _w["stop"])
        if _w["everything"]:
            row["everything"] = run_everything(model, image, labels)
        row["seconds"] = round(time.perf_counter() - t, 2)
        out["models"][key] = row
    if _w["grabcut"] and name not in _w["cached"]:
        t = time.perf_counter()
        out["grabcut"] = run_grabcut(image, gt, valid, _w["clicks"], _w["gc_stop"]) | {"seconds": 0.0}
        out["grabcut"]["seconds"] = round(time.perf_counter() - t, 2)
    return out


def summarise(rows: list[dict], clicks: int) -> dict:
    """NoC@85/90 (RITM's: the first click at or above the IoU, `clicks` when never), mIoU after k
    clicks (the last IoU carried forward where the user stopped), box mIoU and speckle."""
    curves = np.array([r["ious"] + [r["ious"][-1]] * (clicks - len(r["ious"])) for r in rows])

    def noc(t: float) -> np.ndarray:
        hit = curves >= t
        return np.where(hit.any(1), hit.argmax(1) + 1, clicks)

    small = sum(s[0] for r in rows for s in r["speckle"])
    area = sum(s[1] for r in rows for s in r["speckle"])
    return {
        "objects": len(rows),
        "noc85": round(float(noc(0.85).mean()), 2),
        "noc90": round(float(noc(0.90).mean()), 2),
        "never_90": int((~(curves >= 0.90).any(1)).sum()),
        "noc90_at_max": int((noc(0.90) >= clicks).sum()),
        "miou_at_clicks": {str(k): round(float(curves[:, k - 1].mean()), 4) for k in MIOU_AT if k <= clicks},
        "miou_box": round(float(np.mean([r["box"] for r in rows])), 4),
        "speckle": round(small / max(1, area), 5),
        "speckle_1click": round(sum(r["speckle"][0][0] for r in rows) / max(1, sum(r["speckle"][0][1] for r in rows)), 5),
        "speckle_box": round(sum(r["speckle"][1][0] for r in rows) / max(1, sum(r["speckle"][1][1] for r in rows)), 5),
        "seconds_per_object": round(float(np.mean([r["seconds"] for r in rows])), 2),
    }


def summarise_everything(rows: list[dict], settings: dict) -> dict:
    """Recall at IoU 0.5, frames with no mask and masks per frame, at the model's thresholds and
    over the grid; `calibrated`: the grid's most selective thresholds (fewest masks per frame)
    whose recall is within 0.02 of the best that leaves no frame without a mask and keeps at most
    MAX_MASKS_PER_FRAME masks per frame."""
    objects = sum(r["objects"] for r in rows)

    def at(key_of) -> dict:
        found = sum(key_of(r)[0] for r in rows)
        kept = [key_of(r)[1] for r in rows]
        return {"recall_iou50": round(found / max(1, objects), 4), "empty_frames": int(sum(k == 0 for k in kept)), "masks_per_frame": round(float(np.mean(kept)), 2)}

    grid = {k: at(lambda r, k=k: r["grid"][k]) for k in rows[0]["grid"]}
    usable = {k: v for k, v in grid.items() if v["empty_frames"] == 0 and v["masks_per_frame"] <= MAX_MASKS_PER_FRAME}
    calibrated = None
    if usable:
        best = max(v["recall_iou50"] for v in usable.values())
        near = [k for k, v in usable.items() if v["recall_iou50"] >= best - 0.02]
        key = min(near, key=lambda k: (grid[k]["masks_per_frame"], -sum(map(float, k.split("/")))))
        t_iou, t_stab = map(float, key.split("/"))
        calibrated = {**settings, "pred_iou_thresh": t_iou, "stability_score_thresh": t_stab}
    return {"objects": objects, "frames": len(rows), "settings": settings, "at_settings": at(lambda r: r["manifest"]), "grid": grid, "calibrated": calibrated}


def progress(name: str, row: dict) -> str:
    if "everything" in row and "ious" not in row:
        found, kept = row["everything"]["manifest"]
        return f"{name}: everything {found}/{row['everything']['objects']} found, {kept} masks"
    return f"{name}: 1-click {row['ious'][0]:.3f} last {row['ious'][-1]:.3f} box {row['box']:.3f}"


def machine() -> str:
    """The CPU's model name and core count, for the date-and-machine line of every figure."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def grabcut_key(data: Path, name: str, clicks: int, stop: float) -> str:
    h = hashlib.sha256()
    for p in (data / "images" / f"{name}.jpg", data / "masks" / f"{name}.png"):
        h.update(p.read_bytes())
    return f"{name}:{h.hexdigest()[:16]}:{clicks}:{stop}:{cv2.__version__}:r{CLICK_RADIUS}:d{GRABCUT_DOWNSCALE}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="a model folder (manifest.json + ONNX files); repeatable")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/ and masks/ (default: davis345)")
    ap.add_argument("--binary", action="store_true", help="masks are 0 / 255, one object each (the training sets coco-mval and weizmann-horse: calibrate there, not on davis345)")
    ap.add_argument("--stride", type=int, default=1, help="every K-th object (10 on coco-mval: the pairs training holds out, real.VALIDATION_EVERY)")
    ap.add_argument("--limit", type=int, help="only the first N objects (after --stride)")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--stop-iou", type=float, default=1.0, help="a model's user stops at this IoU (1.0: all clicks)")
    ap.add_argument("--grabcut", action="store_true", help="also OpenCV GrabCut seeded by the same clicks")
    ap.add_argument("--grabcut-stop-iou", type=float, default=0.90)
    ap.add_argument("--grabcut-cache", type=Path, help="GrabCut's per-object results, one JSON line each: read, and extended as objects finish")
    ap.add_argument("--everything", action="store_true", help="also Everything mode's recall (16x16 grid)")
    ap.add_argument("--everything-only", action="store_true", help="Everything mode's recall and nothing else (calibration)")
    ap.add_argument("--calibrate", action="store_true", help="write each model's calibrated Everything thresholds into its manifest.json")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not args.model and not args.grabcut:
        raise SystemExit("nothing to measure: give --model and/or --grabcut")
    if args.calibrate and not (args.everything or args.everything_only):
        raise SystemExit("--calibrate needs --everything or --everything-only")
    everything = "only" if args.everything_only else "also" if args.everything else ""
    for m in args.model:
        if not (Path(m) / "manifest.json").is_file():
            raise SystemExit(f"--model {m}: no manifest.json there")
    names = sorted(p.stem for p in (args.data / "masks").glob("*.png"))
    if not names:
        raise SystemExit(f"--data {args.data}: no masks/*.png")
    if args.stride < 1 or (args.limit is not None and args.limit < 1):
        raise SystemExit(f"--stride and --limit must be whole numbers of 1 or more (got --stride {args.stride}, --limit {args.limit})")
    names = names[:: args.stride]
    names = names[: args.limit] if args.limit else names

    cache: dict = {}
    if args.grabcut_cache and args.grabcut_cache.is_file():
        for line in args.grabcut_cache.read_text().splitlines():
            entry = json.loads(line)
            cache[entry["key"]] = entry["grabcut"]
    keys = {n: grabcut_key(args.data, n, args.clicks, args.grabcut_stop_iou) for n in names} if args.grabcut else {}
    need_grabcut = args.grabcut and any(keys[n] not in cache for n in names)
    if args.grabcut_cache:
        args.grabcut_cache.parent.mkdir(parents=True, exist_ok=True)

    start = time.time()
    rows = []
    with Pool(args.workers, initializer=_init, initargs=(args.data, args.binary, args.model, need_grabcut, {n for n in names if keys.get(n) in cache}, everything, args.clicks, args.stop_iou, args.grabcut_stop_iou)) as pool:
        for i, row in enumerate(pool.imap(_object, names)):
            if args.grabcut:
                key = keys[row["name"]]
                if key not in cache:
                    cache[key] = row["grabcut"]
                    if args.grabcut_cache:  # one line per object, so an interrupted run keeps what it did
                        with args.grabcut_cache.open("a") as f:
                            f.write(json.dumps({"key": key, "grabcut": row["grabcut"]}) + "\n")
                row["grabcut"] = cache[key]
            rows.append(row)
            parts = [progress(Path(m).name, row["models"][m]) for m in args.model]
            if args.grabcut:
                parts.append(f"grabcut: 1-click {row['grabcut']['ious'][0]:.3f} last {row['grabcut']['ious'][-1]:.3f}")
            print(f"[{i + 1}/{len(names)} {time.time() - start:.0f}s] {row['name']} " + " | ".join(parts), file=sys.stderr, flush=True)
    result: dict = {
        "data": str(args.data.resolve().relative_to(HERE.parent.parent.parent)) if args.data.resolve().is_relative_to(HERE.parent.parent.parent) else str(args.data),
        "objects": len(rows),
        "protocol": {
            "clicks": args.clicks,
            "first_click": "farthest from the boundary (cv2 L2 distance transform)",
            "next_clicks": "farthest from the boundary of the larger error region",
            "model_stop_iou": args.stop_iou,
            "mask_input": "previous low-res logits",
            "lone_click": "best multimask output by predicted IoU",
            "speckle": "mask pixels in 8-connected components < 1% of the mask's area, pooled over 1-click and box masks",
        },
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "models": {},
    }
    for m in args.model:
        sel = [r["models"][m] for r in rows]
        result["models"][m] = {} if everything == "only" else summarise(sel, args.clicks)
        if everything:
            summary = summarise_everything([s["everything"] for s in sel], OnnxSam(Path(m)).everything)
            result["models"][m]["everything"] = summary
            if args.calibrate and summary["calibrated"]:
                manifest_path = Path(m) / "manifest.json"
                manifest = json.loads(manifest_path.read_text())
                manifest["everything"] = summary["calibrated"]
                manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
                print(f"{manifest_path}: everything = {json.dumps(summary['calibrated'])}", file=sys.stderr)
    if args.grabcut:
        result["grabcut"] = summarise([r["grabcut"] for r in rows], args.clicks) | {"stop_iou": args.grabcut_stop_iou}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
