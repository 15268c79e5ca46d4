"""Reference COCO RLE strings from pycocotools, for test/mask-formats.test.ts.

Reads JSON on stdin:
  {"masks": [{"h": H, "w": W, "fortran": base64 of the H*W mask bytes in column-major order}],
   "uncompressed": [{"h": H, "w": W, "counts": [run, ...]}]}
Writes JSON on stdout:
  {"encoded": [counts string of mask.encode, ...],
   "fromUncompressed": [counts string of mask.frPyObjects, ...]}

Install with: pip install -r test/helpers/requirements.txt
"""

import base64
import json
import sys

import numpy as np
from pycocotools import mask as mask_utils


def encode(item):
    flat = np.frombuffer(base64.b64decode(item["fortran"]), dtype=np.uint8)
    # Column-major bytes reshaped in Fortran order: exactly the layout mask.encode requires.
    array = flat.reshape((item["h"], item["w"]), order="F")
    return mask_utils.encode(array)["counts"].decode("ascii")


def compress(item):
    rle = mask_utils.frPyObjects({"size": [item["h"], item["w"]], "counts": item["counts"]}, item["h"], item["w"])
    return rle["counts"].decode("ascii")


def main():
    request = json.load(sys.stdin)
    json.dump(
        {
            "encoded": [encode(m) for m in request.get("masks", [])],
            "fromUncompressed": [compress(u) for u in request.get("uncompressed", [])],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
