"""Where a SAM-layout decoder spends its time, node by node, through onnxruntime's profiler.

    python3 bench/python/profile_decoder.py models/tiny-sam/tiny-sam.decoder.onnx [THREADS]

Prints JSON: the mean time per run, the share of each operator type, and the share of the
transformer (nodes under /mask_decoder/transformer or /transformer) against the rest. Profiling
adds overhead, so the shares are what to compare, not the absolute times.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

RUNS = 50
CONTROL_FLOW = {"If", "Loop", "Scan"}


def decoder_feeds() -> dict[str, np.ndarray]:
    """One click on a random embedding of a 640x480 image: what bench/model-latency.ts times."""
    return {
        "image_embeddings": np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32),
        "point_coords": np.array([[[400, 300], [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([480, 640], np.float32),
    }


def main() -> None:
    path = sys.argv[1]
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.intra_op_num_threads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = decoder_feeds()
    for _ in range(10):
        session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(RUNS):
        session.run(None, feeds)
    mean_ms = (time.perf_counter() - start) / RUNS * 1000
    profile = session.end_profiling()
    with open(profile) as f:
        events = json.load(f)
    os.remove(profile)
    by_op: collections.Counter[str] = collections.Counter()
    transformer = 0
    for e in events:
        # An If's time includes its branch's nodes, which the profile lists as well.
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["args"]["op_name"] not in CONTROL_FLOW:
            by_op[e["args"]["op_name"]] += e["dur"]
            if "/transformer/" in e["name"]:
                transformer += e["dur"]
    total = sum(by_op.values())
    print(
        json.dumps(
            {
                "model": path,
                "mean_ms_per_run_profiled": round(mean_ms, 2),
                "share_by_op": {k: round(v / total, 3) for k, v in by_op.most_common(12)},
                "share_transformer": round(transformer / total, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
