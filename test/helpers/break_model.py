"""Copy a model folder into one that loads and runs but segments nothing sensible, with a
manifest whose sha256 match the new files, so only a check of the model's answers can tell.

    python break_model.py SRC_DIR OUT_DIR negative-masks|shuffled-encoder|zero-encoder

negative-masks: every decoder (single and batch) answers logits of -10 everywhere: empty masks
  with the original confidences.
shuffled-encoder: every float weight of the encoder is permuted within its tensor (same values,
  same statistics, no structure): what a checkpoint loaded into the wrong layers looks like.
zero-encoder: every float weight of the encoder is zero.
The self-test's threshold (agent/src/model/self-test.ts) quotes what the last two score.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def negative_masks(model: onnx.ModelProto) -> None:
    graph = model.graph
    for out in graph.output:
        if out.name not in ("masks", "low_res_masks"):
            continue
        raw = out.name + "_raw"
        for node in graph.node:
            node.output[:] = [raw if o == out.name else o for o in node.output]
            node.input[:] = [raw if i == out.name else i for i in node.input]
        zero, minus = out.name + "_zero", out.name + "_minus"
        graph.initializer.extend([numpy_helper.from_array(np.zeros((), np.float32), zero), numpy_helper.from_array(np.float32(-10), minus)])
        graph.node.extend(
            [
                helper.make_node("Mul", [raw, zero], [out.name + "_zeroed"]),
                helper.make_node("Add", [out.name + "_zeroed", minus], [out.name]),
            ]
        )


def shuffled_encoder(model: onnx.ModelProto) -> None:
    rng = np.random.default_rng(7)
    for i, init in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(init)
        if w.dtype != np.float32 or w.size < 2:
            continue
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(rng.permutation(w.ravel()).reshape(w.shape), init.name))


def zero_encoder(model: onnx.ModelProto) -> None:
    for i, init in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 1:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.zeros_like(w), init.name))


def main() -> None:
    src, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    manifest = json.loads((src / "manifest.json").read_text())
    out.mkdir(parents=True)
    files = [manifest[k] for k in ("encoder", "decoder", "decoderBatch") if k in manifest]
    for name in files:
        shutil.copyfile(src / name, out / name)
    if mode == "negative-masks":
        targets, change = [manifest["decoder"], manifest.get("decoderBatch")], negative_masks
    elif mode == "shuffled-encoder":
        targets, change = [manifest["encoder"]], shuffled_encoder
    elif mode == "zero-encoder":
        targets, change = [manifest["encoder"]], zero_encoder
    else:
        sys.exit(f"unknown mode {mode}")
    for name in filter(None, targets):
        model = onnx.load(out / name)
        change(model)
        onnx.checker.check_model(model)
        onnx.save(model, out / name)
    manifest["source"] = f"{mode} of {manifest['name']} (test/helpers/break_model.py)"
    manifest["name"] = f"{manifest['name']}-{mode}"
    manifest["sha256"] = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in files}
    manifest.pop("bytes", None)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
