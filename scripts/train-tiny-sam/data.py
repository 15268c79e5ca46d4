"""Training batches and click simulation.

Images go to the encoder in its 512 px frame (model.FRAME); ground truth, clicks and boxes
live in the 256 px frame of the low-res masks (SAM's 1024 frame / 4), where the loss is taken.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from model import FRAME, IMG_SIZE, LOWRES
from real import TRAIN_ROOT, RealSamples, area_downscale

SCALE = IMG_SIZE / LOWRES  # prompt coordinates live in SAM's 1024 frame
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)


def to_sam_frame(x: float) -> float:
    """Centre of low-res pixel x in SAM's 1024 frame, where pixel indices are scaled."""
    return x * SCALE + (SCALE - 1) / 2


def normalise_pad(image: np.ndarray, size: int) -> np.ndarray:
    """HWC uint8 -> CHW float32, SAM-normalised, zero-padded bottom/right to size x size."""
    x = (image.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    out = np.zeros((size, size, 3), np.float32)
    out[: x.shape[0], : x.shape[1]] = x
    return out.transpose(2, 0, 1)


def interior_point(mask: np.ndarray, rng: np.random.Generator | None) -> tuple[float, float]:
    """A point well inside `mask`: its innermost pixel, or (with rng) one of its inner half."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return float(x), float(y)
    ys, xs = np.nonzero(dist >= 0.5 * dist.max())
    i = int(rng.integers(len(ys)))
    return float(xs[i]), float(ys[i])


def corrective_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator | None) -> tuple[float, float, int] | None:
    """The next click of a simulated user: inside the largest error, positive where the mask
    misses the object, negative where it spills over. None when the mask is perfect."""
    fn, fp = gt & ~pred, pred & ~gt
    d_fn = ndimage.distance_transform_edt(np.pad(fn, 1))[1:-1, 1:-1]
    d_fp = ndimage.distance_transform_edt(np.pad(fp, 1))[1:-1, 1:-1]
    positive = d_fn.max() >= d_fp.max()
    d = d_fn if positive else d_fp
    if d.max() == 0:
        return None
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    else:
        ys, xs = np.nonzero(d >= 0.5 * d.max())
        i = int(rng.integers(len(ys)))
        y, x = ys[i], xs[i]
    return float(x), float(y), int(positive)


def noisy_box(mask: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """[x0, y0, x1, y1] of the mask's bounding box in pixel-edge coordinates, jittered by up to
    10% of its size as a person drawing a box would."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    if rng is not None:
        w, h = box[2] - box[0], box[3] - box[1]
        box += rng.normal(0, 0.05, 4).clip(-0.1, 0.1) * np.array([w, h, w, h])
    return box


class Batches(torch.utils.data.IterableDataset):
    """Endless batches: images, targets (soft, at the low-res scale) and a first prompt (a click
    or a box) per target. `data` configures real.RealSamples: set weights, the share of
    procedural scenes, copy-paste and union probabilities."""

    def __init__(self, seed: int, images: int, targets: int, box_fraction: float, data: dict) -> None:
        self.seed, self.images, self.targets, self.box_fraction, self.data = seed, images, targets, box_fraction, data

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        samples = RealSamples(TRAIN_ROOT, self.data["sets"], self.data["synthetic"], FRAME, self.data["paste"], self.data["union"])
        while True:
            yield self.batch(samples, rng)

    def batch(self, samples: RealSamples, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        imgs, gts, coords, labels, index = [], [], [], [], []
        while len(imgs) < self.images:
            image, objects = samples.sample(rng)
            if not objects:
                continue
            h, w = image.shape[:2]
            i = len(imgs)
            imgs.append(normalise_pad(image, FRAME))
            for k in rng.permutation(len(objects))[: self.targets]:
                full = np.zeros((FRAME, FRAME), bool)
                full[:h, :w] = objects[k]
                soft = area_downscale(full, FRAME // LOWRES)
                m = soft >= 0.5
                if not m.any():
                    continue
                gts.append(soft)
                if rng.random() < self.box_fraction:
                    b = noisy_box(m, rng) * SCALE
                    coords.append([[b[0], b[1]], [b[2], b[3]]])
                    labels.append([2, 3])
                else:
                    x, y = interior_point(m, rng)
                    coords.append([[to_sam_frame(x), to_sam_frame(y)], [0.0, 0.0]])
                    labels.append([1, -1])
                index.append(i)
            if len(index) == 0 or index[-1] != i:  # no usable target: drop the image
                imgs.pop()
        return {
            "images": torch.from_numpy(np.stack(imgs)),
            "gt": torch.from_numpy(np.stack(gts)),
            "coords": torch.tensor(coords, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.float32),
            "index": torch.tensor(index),
        }
