"""SAM's own predictor path in Python (onnxruntime + numpy + Pillow), timed, for comparison.

    python3 bench/python/reference_pipeline.py MODEL_DIR IMAGE X Y --runs N

Does what segment_anything's SamPredictor + the ONNX example do for one click on an image
that is not cached: decode the file, turn it upright (EXIF), resize the longest side to 1024,
normalise, pad, run the encoder, scale the click, run the decoder, threshold the masks at 0.
Prints JSON: median milliseconds per uncached prompt, and the same for a cached re-prompt.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("image", type=Path)
    ap.add_argument("x", type=float)
    ap.add_argument("y", type=float)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    manifest = json.loads((args.model / "manifest.json").read_text())
    encoder = ort.InferenceSession(str(args.model / manifest["encoder"]))
    decoder = ort.InferenceSession(str(args.model / manifest["decoder"]))
    raw = args.image.read_bytes()

    def embed():
        import io

        image = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(raw))).convert("RGB"))
        h, w = image.shape[:2]
        scale = 1024 / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
        x = np.zeros((1024, 1024, 3), np.float32)
        x[:nh, :nw] = (resized - MEAN) / STD
        emb = encoder.run(None, {"images": x.transpose(2, 0, 1)[None]})[0]
        return emb, (h, w), (nw / w, nh / h)

    def prompt(emb, size, scale):
        coords = np.array([[[args.x * scale[0], args.y * scale[1]], [0, 0]]], np.float32)
        masks, scores, _ = decoder.run(
            None,
            {
                "image_embeddings": emb,
                "point_coords": coords,
                "point_labels": np.array([[1, -1]], np.float32),
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array(size, np.float32),
            },
        )
        best = int(np.argmax(scores[0, 1:])) + 1
        return masks[0, best] > 0

    def timed(fn):
        fn()
        ms = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            ms.append(1000 * (time.perf_counter() - t))
        return float(np.median(ms))

    cached = embed()
    print(json.dumps({"uncached_ms": timed(lambda: prompt(*embed())), "cached_ms": timed(lambda: prompt(*cached))}))


if __name__ == "__main__":
    main()
