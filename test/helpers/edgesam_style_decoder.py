"""Rewrite a SAM reference decoder into the interface of EdgeSAM's ONNX export, for tests of
tools that must take exports made elsewhere.

    python edgesam_style_decoder.py REFERENCE_DECODER.onnx OUT.onnx

EdgeSAM's decoder takes only image_embeddings, point_coords and point_labels and returns
`scores` and low-res `masks`: no mask input, no original-size masks.
"""

import sys

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.utils import Extractor


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    inputs = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
    model = Extractor(onnx.load(src)).extract_model(inputs, ["iou_predictions", "low_res_masks"])
    graph = model.graph
    # The reference decoder's "no mask" inputs become constants.
    for name, value in (("mask_input", np.zeros((1, 1, 256, 256), np.float32)), ("has_mask_input", np.zeros(1, np.float32))):
        graph.input.remove(next(i for i in graph.input if i.name == name))
        graph.initializer.append(numpy_helper.from_array(value, name))
    rename = {"iou_predictions": "scores", "low_res_masks": "masks"}
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for out in graph.output:
        out.name = rename.get(out.name, out.name)
    onnx.checker.check_model(model)
    onnx.save(model, dst)


if __name__ == "__main__":
    main()
