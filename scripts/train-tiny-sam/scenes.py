"""Procedural scenes with exact ground truth for training and evaluating the tiny SAM.

A scene is a background plus a stack of shapes painted back to front. The ground truth of
each object is its *visible* part: what is left of its shape after the shapes painted later
cover it. Everything is rendered at twice the target resolution and box-filtered down, so
edges are anti-aliased like a camera's and the masks are exact to half a pixel.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2
SHAPES = ("circle", "ellipse", "rectangle", "polygon", "irregular", "ring", "star")


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8
    masks: list[np.ndarray]  # visible part of each object, H x W bool, back to front
    kinds: list[str]


def _outline(rng: np.random.Generator, kind: str, cx: float, cy: float, r: float) -> list[np.ndarray]:
    """Polygons of one shape: the outline first, then holes (only rings have one)."""
    angle = rng.uniform(0, math.pi)
    aspect = rng.uniform(0.35, 1.0) if kind in ("ellipse", "rectangle", "ring") else 1.0

    def ellipse(rx: float, ry: float, n: int = 72) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)

    if kind == "circle":
        pts = [ellipse(r, r)]
    elif kind in ("ellipse",):
        pts = [ellipse(r, r * aspect)]
    elif kind == "rectangle":
        pts = [np.array([[-r, -r * aspect], [r, -r * aspect], [r, r * aspect], [-r, r * aspect]])]
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        t = np.arange(n) * 2 * math.pi / n
        pts = [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]
    elif kind == "star":
        n = int(rng.integers(4, 8))
        t = np.arange(2 * n) * math.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.4, 0.7))
        pts = [np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)]
    elif kind == "irregular":
        n = int(rng.integers(6, 16))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = r * rng.uniform(0.45, 1.0, n)
        pts = [np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)]
    elif kind == "ring":
        inner = rng.uniform(0.35, 0.7)
        pts = [ellipse(r, r * aspect), ellipse(r * inner, r * aspect * inner)]
    else:
        raise ValueError(kind)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return [p @ rot.T + np.array([cx, cy]) for p in pts]


def _fill(rng: np.random.Generator, h: int, w: int, avoid: np.ndarray | None) -> np.ndarray:
    """A flat or linear-gradient colour field, kept visibly apart from `avoid` (the colour beneath)."""
    for _ in range(20):
        c0 = rng.uniform(0, 255, 3)
        if avoid is None or np.abs(c0 - avoid).sum() > 90:
            break
    if rng.random() < 0.6:
        return np.broadcast_to(c0, (h, w, 3)).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-70, 70, 3), 0, 255)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(theta) + yy * math.sin(theta)) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    style = rng.choice(["plain", "gradient", "noisy"])
    if style == "plain":
        return np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3)).astype(np.float32)
    if style == "gradient":
        return _fill(rng, h, w, None) if rng.random() < 0.2 else _gradient_bg(rng, h, w)
    base = _gradient_bg(rng, h, w) if rng.random() < 0.5 else np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3))
    # Low-frequency blotches plus pixel noise: texture without edges that look like objects.
    coarse = rng.normal(0, 1, (max(2, h // 32), max(2, w // 32), 3)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(((coarse * 40) + 128).clip(0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32) - 128
    return np.clip(base + coarse * rng.uniform(0.2, 0.8) + rng.normal(0, rng.uniform(3, 15), (h, w, 3)), 0, 255).astype(np.float32)


def _gradient_bg(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(theta) + yy * math.sin(theta)) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)


def _downsample(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f, *a.shape[2:]).mean(axis=(1, 3))


def make_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    max_objects: int = 8,
    min_visible: float = 0.004,
    jpeg: bool = True,
) -> Scene:
    """Render one scene of `width` x `height` pixels.

    `min_visible` is the smallest visible area, as a fraction of the image, that an object
    must keep to be returned as a target (smaller remnants stay painted but are not targets).
    """
    s = SUPERSAMPLE
    H, W = height * s, width * s
    canvas = np.array(_background(rng, H, W), np.float32)
    short = min(H, W)
    n = int(rng.integers(1, max_objects + 1))
    shapes: list[np.ndarray] = []
    kinds: list[str] = []
    for _ in range(n):
        kind = str(rng.choice(SHAPES))
        # Log-uniform size: as many small objects as large ones.
        r = short * math.exp(rng.uniform(math.log(0.05), math.log(0.42)))
        cx, cy = rng.uniform(0.05, 0.95) * W, rng.uniform(0.05, 0.95) * H
        polys = _outline(rng, kind, cx, cy, r)
        m = Image.new("L", (W, H), 0)
        d = ImageDraw.Draw(m)
        d.polygon([tuple(p) for p in polys[0]], fill=1)
        for hole in polys[1:]:
            d.polygon([tuple(p) for p in hole], fill=0)
        mask = np.asarray(m, bool)
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if len(ys) == 0 or mask.sum() < 16:
            continue
        # Paint inside the shape's bounding box only: full-frame fills dominate the cost.
        box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        sub = mask[box]
        beneath = canvas[box][sub].mean(axis=0)
        fill = _fill(rng, sub.shape[0], sub.shape[1], beneath)
        canvas[box] = np.where(sub[..., None], fill, canvas[box])
        shapes.append(mask)
        kinds.append(kind)

    visible = []
    covered = np.zeros((H, W), bool)
    for mask in reversed(shapes):
        visible.append(mask & ~covered)
        covered |= mask
    visible.reverse()

    image = _downsample(canvas, s)
    if rng.random() < 0.3:
        image = image + rng.normal(0, rng.uniform(2, 8), image.shape)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if jpeg and rng.random() < 0.7:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(rng.integers(35, 95)))
        image = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    masks, keep_kinds = [], []
    min_px = min_visible * width * height
    for v, k in zip(visible, kinds):
        m = _downsample(v.astype(np.float32), s) >= 0.5
        if m.sum() >= max(min_px, 12):
            masks.append(m)
            keep_kinds.append(k)
    return Scene(image=image, masks=masks, kinds=keep_kinds)


def random_size(rng: np.random.Generator, longest: int) -> tuple[int, int]:
    """A (width, height) with the given longest side and an aspect ratio between 1:2 and 2:1."""
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    if aspect >= 1:
        return longest, max(8, round(longest / aspect))
    return max(8, round(longest * aspect)), longest
