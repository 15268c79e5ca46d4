"""Training samples from the real-photo sets of `../shared/datasets/train`, augmented hard.

Each set keeps its own layout (`../shared/datasets/README.md`); what training needs from each
is a list of objects, one binary mask each:
- `coco-mval`, `weizmann-horse`: one object per pair (mask value 255);
- `coco128-seg`: each instance id 1..N;
- `bsds500`: each human-segmented region (ids 1..K, every pixel in one);
- `camvid`: the 8-connected components of each thing class (pole, sign, car, pedestrian,
  bicyclist); the stuff classes (sky, building, road...) are not objects.
Objects smaller than MIN_OBJECT of their image are dropped. `davis345` is evaluation only and
is never read here.

A sample is one image in the encoder's 512 px frame: an optional crop around an object (zoom),
a horizontal flip, the resize of its longest side to the frame, an optional copy-paste of an
object cut out of another image (which then occludes what it covers and is a target itself),
colour jitter, blur, JPEG re-encoding and grey-scale. Some images are procedural scenes
(`scenes.py`) instead, so the model keeps what it learned on them.

Held out from training for the validation curve: every tenth pair of `coco-mval` and of
`weizmann-horse` (VALIDATION_EVERY).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from scenes import make_scene, random_size

HERE = Path(__file__).resolve().parent
TRAIN_ROOT = HERE.parent.parent.parent / "shared" / "datasets" / "train"
MIN_OBJECT = 0.005  # of the image's area
CAMVID_THINGS = (2, 6, 8, 9, 10)  # pole, sign, car, pedestrian, bicyclist
VALIDATION_EVERY = 10
# Where objects for copy-paste come from: sets whose masks outline whole things.
PASTE_SETS = ("coco-mval", "coco128-seg", "weizmann-horse")


@dataclass(frozen=True)
class Pair:
    set: str
    image: Path
    mask: Path


def list_pairs(root: Path, split: str) -> dict[str, list[Pair]]:
    """The pairs of each set, `split` "train" or "val" (see VALIDATION_EVERY)."""
    out: dict[str, list[Pair]] = {}
    for name in ("coco-mval", "coco128-seg", "weizmann-horse", "bsds500", "camvid"):
        masks = sorted((root / name / "masks").glob("*.png"))
        if not masks:
            raise SystemExit(f"{root / name}: no masks/*.png (see ../shared/datasets/README.md)")
        pairs = []
        for i, m in enumerate(masks):
            held_out = name in ("coco-mval", "weizmann-horse") and i % VALIDATION_EVERY == 0
            if held_out == (split == "val"):
                image = next((p for p in (m.parent.parent / "images" / f"{m.stem}{ext}" for ext in (".jpg", ".png")) if p.is_file()), None)
                if image is None:
                    raise SystemExit(f"{m}: no image beside it")
                pairs.append(Pair(name, image, m))
        if pairs:
            out[name] = pairs
    return out


def objects_of(pair: Pair, labels: np.ndarray) -> list[np.ndarray]:
    """The objects of one pair as binary masks, per its set's layout."""
    if pair.set in ("coco-mval", "weizmann-horse"):
        masks = [labels > 127]
    elif pair.set in ("coco128-seg", "bsds500"):
        masks = [labels == v for v in np.unique(labels) if v > 0]
    elif pair.set == "camvid":
        masks = []
        for c in CAMVID_THINGS:
            n, comp = cv2.connectedComponents((labels == c).astype(np.uint8), connectivity=8)
            masks += [comp == i for i in range(1, n)]
    else:
        raise ValueError(pair.set)
    return [m for m in masks if m.sum() >= MIN_OBJECT * labels.size]


def load(pair: Pair) -> tuple[np.ndarray, list[np.ndarray]]:
    image = np.asarray(Image.open(pair.image).convert("RGB"))
    labels = np.asarray(Image.open(pair.mask))
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise SystemExit(f"{pair.mask}: {labels.shape} does not match its image {image.shape[:2]}")
    return image, objects_of(pair, labels)


def fit_frame(image: np.ndarray, masks: list[np.ndarray], frame: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize so the longest side is `frame` (the agent's resize of a user's image, halved)."""
    h, w = image.shape[:2]
    s = frame / max(h, w)
    nw, nh = max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))
    image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    masks = [cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool) for m in masks]
    return image, masks


def random_crop(rng: np.random.Generator, image: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """A crop of 35-100% of each side that keeps the centre of a random object: a zoom-in."""
    h, w = image.shape[:2]
    sy, sx = rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0)
    ch, cw = max(16, int(h * sy)), max(16, int(w * sx))
    ys, xs = np.nonzero(masks[int(rng.integers(len(masks)))])
    cy, cx = int(ys.mean()), int(xs.mean())
    y0 = int(np.clip(cy - rng.uniform(0.2, 0.8) * ch, 0, h - ch))
    x0 = int(np.clip(cx - rng.uniform(0.2, 0.8) * cw, 0, w - cw))
    return image[y0 : y0 + ch, x0 : x0 + cw], [m[y0 : y0 + ch, x0 : x0 + cw] for m in masks]


def paste(rng: np.random.Generator, image: np.ndarray, masks: list[np.ndarray], donor: np.ndarray, donor_mask: np.ndarray):
    """Copy-paste: the donor object, rescaled, at a random place; it hides what it covers."""
    ys, xs = np.nonzero(donor_mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cut, cut_mask = donor[y0:y1, x0:x1], donor_mask[y0:y1, x0:x1]
    h, w = image.shape[:2]
    # Never wider or taller than the image: a tall photo would otherwise leave no place to put it.
    s = min(rng.uniform(0.15, 0.6) * max(h, w) / max(cut.shape[:2]), w / cut.shape[1], h / cut.shape[0])
    nw, nh = max(4, int(cut.shape[1] * s)), max(4, int(cut.shape[0] * s))
    cut = cv2.resize(cut, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(cut_mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
    # A slightly soft edge, so the seam is not a give-away the model could learn instead of objects.
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0.7)
    px, py = int(rng.integers(-nw // 4, w - 3 * nw // 4 + 1)), int(rng.integers(-nh // 4, h - 3 * nh // 4 + 1))
    ax0, ay0, ax1, ay1 = max(0, px), max(0, py), min(w, px + nw), min(h, py + nh)
    if ax1 <= ax0 or ay1 <= ay0:
        return image, masks
    a = alpha[ay0 - py : ay1 - py, ax0 - px : ax1 - px, None]
    out = image.astype(np.float32)
    out[ay0:ay1, ax0:ax1] = out[ay0:ay1, ax0:ax1] * (1 - a) + cut[ay0 - py : ay1 - py, ax0 - px : ax1 - px] * a
    pasted = np.zeros((h, w), bool)
    pasted[ay0:ay1, ax0:ax1] = a[..., 0] >= 0.5
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), [m & ~pasted for m in masks] + [pasted]


def photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Colour jitter, blur, grey-scale and JPEG re-encoding, each at random."""
    im = Image.fromarray(image)
    if rng.random() < 0.8:
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.65, 1.35))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.65, 1.35))
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.6)))
    if rng.random() < 0.05:
        im = im.convert("L").convert("RGB")
    if rng.random() < 0.3:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(30, 92)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = np.asarray(im)
    if rng.random() < 0.3:  # a colour cast, as a white balance gone wrong
        out = np.clip(out * rng.uniform(0.85, 1.15, 3) + 0.5, 0, 255).astype(np.uint8)
    return out


class RealSamples:
    """Augmented (image, objects) samples in the `frame` px frame, from the training pairs and,
    with probability `synthetic`, from procedural scenes. Set weights choose the set of each
    sample; a set's pairs are chosen uniformly."""

    def __init__(self, root: Path, weights: dict[str, float], synthetic: float, frame: int, paste_p: float = 0.3, union_p: float = 0.1) -> None:
        self.pairs = list_pairs(root, "train")
        unknown = set(weights) - set(self.pairs)
        if unknown:
            raise SystemExit(f"set weights name sets that are not there: {sorted(unknown)}")
        self.sets = [s for s in weights if weights[s] > 0]
        p = np.array([weights[s] for s in self.sets], np.float64)
        self.p = p / p.sum()
        self.synthetic, self.frame, self.paste_p, self.union_p = synthetic, frame, paste_p, union_p

    def _pick(self, rng: np.random.Generator, sets) -> tuple[np.ndarray, list[np.ndarray]]:
        while True:
            s = sets[int(rng.choice(len(sets), p=self.p if sets is self.sets else None))]
            pair = self.pairs[s][int(rng.integers(len(self.pairs[s])))]
            image, objects = load(pair)
            if objects:
                return image, objects

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        if rng.random() < self.synthetic:
            while True:
                w, h = random_size(rng, self.frame)
                scene = make_scene(rng, w, h)
                if scene.masks:
                    return scene.image, scene.masks
        image, objects = self._pick(rng, self.sets)
        if rng.random() < 0.6:
            image, objects = random_crop(rng, image, objects)
        if rng.random() < 0.5:
            image, objects = image[:, ::-1], [m[:, ::-1] for m in objects]
        image, objects = fit_frame(np.ascontiguousarray(image), objects, self.frame)
        if rng.random() < self.paste_p:
            donor, donor_objects = self._pick(rng, [s for s in PASTE_SETS if s in self.pairs])
            image, objects = paste(rng, image, objects, donor, donor_objects[int(rng.integers(len(donor_objects)))])
        if len(objects) >= 2 and rng.random() < self.union_p:
            # Two touching objects as one target, as the DAVIS-style annotations merge them.
            i, j = rng.choice(len(objects), 2, replace=False)
            if (cv2.dilate(objects[i].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & objects[j]).any():
                objects = objects + [objects[i] | objects[j]]
        image = photometric(rng, image)
        objects = [m for m in objects if m.sum() >= max(64, MIN_OBJECT * m.size)]
        return image, objects


def validation_samples(root: Path, frame: int, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The held-out pairs (coco-mval and horses), whole, in the frame: (image, object) each."""
    out = []
    pairs = [p for ps in list_pairs(root, "val").values() for p in ps]
    for pair in pairs[:limit]:
        image, objects = load(pair)
        image, objects = fit_frame(image, objects[:1], frame)
        out += [(image, objects[0])] if objects else []
    return out


def area_downscale(mask: np.ndarray, f: int) -> np.ndarray:
    """The fraction of each f x f cell a mask covers: soft ground truth at the low-res masks'
    scale, which keeps where inside a cell the boundary runs."""
    h, w = mask.shape
    return mask[: h - h % f, : w - w % f].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)
