"""Training batches and click simulation, in the 256 px model frame (the 1024 frame / 4)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from scenes import make_scene, random_size

FRAME = 256  # model frame: SAM's 1024 input after the encoder's fixed 4x4 pool
SCALE = 1024 / FRAME  # prompt coordinates live in SAM's 1024 frame
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)


def to_sam_frame(x: float) -> float:
    """Centre of model-frame pixel x in SAM's 1024 frame, where pixel indices are scaled."""
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


class SceneBatches(torch.utils.data.IterableDataset):
    """Endless batches: images, targets and a first prompt (a click or a box) per target."""

    def __init__(self, seed: int, images: int, targets: int, box_fraction: float) -> None:
        self.seed, self.images, self.targets, self.box_fraction = seed, images, targets, box_fraction

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield self.batch(rng)

    def batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        imgs, gts, coords, labels, index = [], [], [], [], []
        while len(imgs) < self.images:
            w, h = random_size(rng, FRAME)
            scene = make_scene(rng, w, h)
            if not scene.masks:
                continue
            image = scene.image
            if rng.random() < 0.15:  # a small camera frame upscaled: soft edges
                f = rng.uniform(1.5, 3.0)
                small = Image.fromarray(image).resize((max(4, int(w / f)), max(4, int(h / f))), Image.BILINEAR)
                image = np.asarray(small.resize((w, h), Image.BILINEAR))
            i = len(imgs)
            imgs.append(normalise_pad(image, FRAME))
            for k in rng.permutation(len(scene.masks))[: self.targets]:
                m = np.zeros((FRAME, FRAME), bool)
                m[:h, :w] = scene.masks[k]
                gts.append(m)
                if rng.random() < self.box_fraction:
                    b = noisy_box(m, rng) * SCALE
                    coords.append([[b[0], b[1]], [b[2], b[3]]])
                    labels.append([2, 3])
                else:
                    x, y = interior_point(m, rng)
                    coords.append([[to_sam_frame(x), to_sam_frame(y)], [0.0, 0.0]])
                    labels.append([1, -1])
                index.append(i)
        return {
            "images": torch.from_numpy(np.stack(imgs)),
            "gt": torch.from_numpy(np.stack(gts)),
            "coords": torch.tensor(coords, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.float32),
            "index": torch.tensor(index),
        }
