"""Write the test fixtures: generated scenes with their exact ground truth.

    python make_fixtures.py --out ../../test/fixtures/scenes

For each scene NAME: the image (NAME.png / NAME.jpg), NAME.labels.png (pixel value i+1 where
object i is visible, 0 elsewhere; visible parts never overlap) and NAME.json (size, and per
object its kind, bbox [x, y, w, h], area and an interior click). `portrait-exif6.jpg` stores
the portrait scene turned a quarter counter-clockwise with EXIF orientation 6, so only a
reader that applies the orientation sees the ground truth's upright picture.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from data import interior_point
from scenes import make_scene

FIXTURES = [
    ("landscape", 640, 480, "png"),
    ("portrait", 480, 640, "jpg"),
    ("small", 300, 200, "png"),
    ("large", 1600, 1200, "jpg"),
    ("square", 512, 512, "webp"),
]
SEED = 7_000_001  # used nowhere else


def clear_scene(rng: np.random.Generator, w: int, h: int):
    """A scene of 3-5 objects, each keeping at least 1.5% of the image visible."""
    while True:
        scene = make_scene(rng, w, h, max_objects=5, min_visible=0.015, jpeg=False)
        if len(scene.masks) >= 3:
            return scene


def write(out: Path, name: str, image: Image.Image, scene, fmt: str, exif: Image.Exif | None = None) -> None:
    labels = np.zeros(scene.masks[0].shape, np.uint8)
    objects = []
    for i, (m, kind) in enumerate(zip(scene.masks, scene.kinds)):
        labels[m] = i + 1
        ys, xs = np.nonzero(m)
        cx, cy = interior_point(m, None)
        objects.append(
            {
                "label": i + 1,
                "kind": kind,
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "area": int(m.sum()),
                "click": [cx, cy],
            }
        )
    file = f"{name}.{fmt}"
    kwargs = {"quality": 92} if fmt in ("jpg", "webp") else {}
    if exif is not None:
        kwargs["exif"] = exif
    image.save(out / file, **kwargs)
    Image.fromarray(labels).save(out / f"{name}.labels.png")
    h, w = labels.shape
    meta = {"image": file, "width": w, "height": h, "objects": objects}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for name, w, h, fmt in FIXTURES:
        scene = clear_scene(rng, w, h)
        write(args.out, name, Image.fromarray(scene.image), scene, fmt)
        if name == "portrait":
            exif = Image.Exif()
            exif[0x0112] = 6  # Orientation: the viewer turns the stored image 90 degrees clockwise
            stored = Image.fromarray(scene.image).transpose(Image.Transpose.ROTATE_90)
            write(args.out, "portrait-exif6", stored, scene, "jpg", exif)


if __name__ == "__main__":
    main()
