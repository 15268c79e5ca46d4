"""A decoder's latency under the thread settings the agent could give it, side by side.

    python3 bench/python/decoder_threads.py models/tiny-sam/tiny-sam.decoder.onnx

The agent's sessions run with spinning off (`model.spin_wait`) and `model.threads` intra-op
threads for the encoder and the decoder alike. A small decoder's operators are too short to
share between threads, so this times one thread and two without spinning, and two with it,
in alternating blocks (the machine is noisy: compare the medians of one run). Prints JSON.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import onnxruntime as ort

from profile_decoder import decoder_feeds

SETTINGS = {"1_thread": (1, False), "2_threads": (2, False), "2_threads_spinning": (2, True)}
BLOCKS = 8
RUNS_PER_BLOCK = 20


def main() -> None:
    path = sys.argv[1]
    sessions = {}
    for name, (threads, spin) in SETTINGS.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        sessions[name] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = decoder_feeds()
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(BLOCKS):
        for name, s in sessions.items():
            s.run(None, feeds)
            for _ in range(RUNS_PER_BLOCK):
                t = time.perf_counter()
                s.run(None, feeds)
                times[name].append((time.perf_counter() - t) * 1000)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    first = medians["2_threads"]
    print(
        json.dumps(
            {
                "model": path,
                "median_ms": {k: round(v, 2) for k, v in medians.items()},
                "over_2_threads": {k: round(v / first, 3) for k, v in medians.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
