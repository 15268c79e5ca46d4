"""Loads a COCO export with pycocotools and gives back every annotation's mask as pycocotools
decodes it, for test/http-annotations.test.ts.

Usage: python3 coco_export.py DATASET_DIR   (the extracted export: annotations.json, images/)
Writes JSON on stdout:
  {"images": [{"file_name", "width", "height", "exists"}],
   "annotations": [{"file_name", "category", "kind": "polygon" | "rle", "area", "bbox",
                    "rle": {"size", "counts"} of annToMask's mask, re-encoded}]}

Install with: pip install -r test/helpers/requirements.txt
"""

import contextlib
import json
import os
import sys

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def main():
    root = sys.argv[1]
    # COCO() reports its progress on stdout, where the answer goes.
    with contextlib.redirect_stdout(sys.stderr):
        coco = COCO(os.path.join(root, "annotations.json"))
    images = coco.loadImgs(coco.getImgIds())
    categories = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    annotations = []
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        rle = mask_utils.encode(mask.copy(order="F"))
        annotations.append(
            {
                "file_name": image["file_name"],
                "category": categories[ann["category_id"]],
                "kind": "polygon" if isinstance(ann["segmentation"], list) else "rle",
                "area": ann["area"],
                "bbox": ann["bbox"],
                "rle": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
    json.dump(
        {
            "images": [
                {**{k: i[k] for k in ("file_name", "width", "height")}, "exists": os.path.isfile(os.path.join(root, i["file_name"]))}
                for i in images
            ],
            "annotations": annotations,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
