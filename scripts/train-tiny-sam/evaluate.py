"""Evaluate exported ONNX files on held-out scenes, through SAM's full inference path.

    python evaluate.py --model ../../models/tiny-sam --out ../../models/tiny-sam/eval.json

Scenes come from a seed that training never uses, at several sizes and aspect ratios. Each
image goes the way a user's image goes: resized so its longest side is 1024, normalised,
padded, encoded; prompts are scaled into the 1024 frame; masks come back at the original size
from the decoder's `masks` output and are thresholded at logit 0. Metrics, per target:
- 1-click: a click at the target's innermost pixel, best of the multimask outputs by
  predicted IoU (SAM's rule for a lone click);
- box: the target's exact bounding box, single-mask output;
- k-click: k-1 corrective clicks after the first, each at the innermost pixel of the largest
  error, positive on a miss and negative on a spill, with the previous low-res logits as
  `mask_input`, single-mask output.
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from data import PIXEL_MEAN, PIXEL_STD, corrective_click, interior_point
from scenes import make_scene

SIZES = [(640, 480), (480, 640), (1024, 1024), (1280, 720), (320, 240), (800, 600), (600, 900), (256, 256)]
MAX_CLICKS = 4


def preprocess(image: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = 1024 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
    x = np.zeros((1024, 1024, 3), np.float32)
    x[:nh, :nw] = (resized - PIXEL_MEAN) / PIXEL_STD
    return x.transpose(2, 0, 1)[None], scale


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


class Model:
    def __init__(self, folder: Path, threads: int) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.encoder = ort.InferenceSession(str(next(folder.glob("*.encoder.onnx"))), opts)
        self.decoder = ort.InferenceSession(str(next(folder.glob("*.decoder.onnx"))), opts)

    def decode(self, emb, coords, labels, size, mask_input=None):
        outs = self.decoder.run(
            None,
            {
                "image_embeddings": emb,
                "point_coords": np.asarray(coords, np.float32)[None],
                "point_labels": np.asarray(labels, np.float32)[None],
                "mask_input": np.zeros((1, 1, 256, 256), np.float32) if mask_input is None else mask_input,
                "has_mask_input": np.array([0 if mask_input is None else 1], np.float32),
                "orig_im_size": np.array(size, np.float32),
            },
        )
        return outs[0][0], outs[1][0], outs[2][0]


_worker: dict = {}


def _init_worker(folder: Path, use_mask_input: bool, seed: int) -> None:
    _worker.update(model=Model(folder, threads=1), use_mask_input=use_mask_input, seed=seed)


def evaluate_scene(n: int) -> tuple[list[dict], float]:
    """Rows for scene n: each scene has its own generator, so scenes can run in any order."""
    model, use_mask_input = _worker["model"], _worker["use_mask_input"]
    rng = np.random.default_rng([_worker["seed"], n])
    w, h = SIZES[n % len(SIZES)]
    scene = make_scene(rng, w, h)
    if not scene.masks:
        return [], 0.0
    x, scale = preprocess(scene.image)
    t = time.perf_counter()
    emb = model.encoder.run(None, {"images": x})[0]
    encode_s = time.perf_counter() - t
    rows = []
    for k in rng.permutation(len(scene.masks))[:2]:
        gt = scene.masks[k]
        cx, cy = interior_point(gt, None)
        coords, labels = [[cx * scale, cy * scale]], [1]
        masks, scores, low = model.decode(emb, coords + [[0, 0]], labels + [-1], (h, w))
        best = int(np.argmax(scores[1:])) + 1
        pred, prev = masks[best] > 0, low[best]
        curve = [iou(pred, gt)]
        for _ in range(MAX_CLICKS - 1):
            click = corrective_click(pred, gt, None)
            if click is not None:
                coords.append([click[0] * scale, click[1] * scale])
                labels.append(click[2])
            masks, _, low = model.decode(emb, coords + [[0, 0]], labels + [-1], (h, w), prev[None, None] if use_mask_input else None)
            pred, prev = masks[0] > 0, low[0]
            curve.append(iou(pred, gt))
        ys, xs = np.nonzero(gt)
        box = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], np.float32) * scale
        bmask, _, _ = model.decode(emb, box, [2, 3], (h, w))
        rows.append({"size": f"{w}x{h}", "kind": scene.kinds[k], "area": int(gt.sum()), "clicks": curve, "box": iou(bmask[0] > 0, gt)})
    return rows, encode_s


def evaluate(folder: Path, scenes: int, seed: int, use_mask_input: bool, workers: int) -> dict:
    with Pool(workers, initializer=_init_worker, initargs=(folder, use_mask_input, seed)) as pool:
        results = pool.map(evaluate_scene, range(scenes), chunksize=4)
    rows = [r for rs, _ in results for r in rs]
    encode_s = [e for rs, e in results if rs]

    def summary(sel: list[dict]) -> dict:
        c = np.array([r["clicks"] for r in sel])
        return {
            "targets": len(sel),
            "miou_1click": round(float(c[:, 0].mean()), 4),
            "miou_box": round(float(np.mean([r["box"] for r in sel])), 4),
            "miou_3click": round(float(c[:, 2].mean()), 4),
            "miou_after_3_corrective": round(float(c[:, 3].mean()), 4),
            "miou_by_clicks": [round(float(v), 4) for v in c.mean(axis=0)],
        }

    return {
        **summary(rows),
        "by_size": {s: summary([r for r in rows if r["size"] == s]) for s in sorted({r["size"] for r in rows})},
        "by_kind": {k: summary([r for r in rows if r["kind"] == k]) for k in sorted({r["kind"] for r in rows})},
        "encoder_ms_mean_one_thread": round(1000 * float(np.mean(encode_s)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="folder with *.encoder.onnx and *.decoder.onnx")
    ap.add_argument("--out", type=Path, help="write the metrics here as JSON")
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261125, help="held-out seed (training uses 1..2, validation 424242)")
    ap.add_argument("--workers", type=int, default=2, help="processes, one onnxruntime thread each")
    ap.add_argument("--training-config", type=Path, help="the training config, recorded beside the metrics")
    ap.add_argument("--no-mask-input", action="store_true", help="corrective clicks without the previous mask")
    args = ap.parse_args()
    result = {
        "heldout": {"seed": args.seed, "scenes": args.scenes, "sizes": [f"{w}x{h}" for w, h in SIZES]},
        "protocol": "masks at original size, logit > 0; clicks at the innermost pixel; see evaluate.py",
        "mask_input_on_corrections": not args.no_mask_input,
        **evaluate(args.model, args.scenes, args.seed, not args.no_mask_input, args.workers),
    }
    if args.training_config:
        result["training_config"] = json.loads(args.training_config.read_text())
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
