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


def names_used(graph: onnx.GraphProto) -> set[str]:
    """Every name a node reads, in this graph and in the If/Loop bodies nested in it (which read
    outer names without listing them as the node's inputs)."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used |= names_used(attr.g)
    return used


def drop_unused(graph: onnx.GraphProto) -> None:
    """Removes what no output needs any more: nodes, then initializers and graph inputs."""
    while True:
        used = names_used(graph)
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for value in [i for i in graph.input if i.name not in used]:
        graph.input.remove(value)


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    model = onnx.load(src)
    graph = model.graph
    graph.output.remove(next(o for o in graph.output if o.name == "masks"))
    drop_unused(graph)
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
