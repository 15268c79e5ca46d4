"""Export a tiny-SAM checkpoint to the two-file ONNX layout of SAM's reference export.

    python export.py --checkpoint runs/main/checkpoint.pt --out ../../models/tiny-sam

Writes `tiny-sam.encoder.onnx`, `tiny-sam.decoder.onnx` (prompt batch fixed at 1, as in SAM's
`export_onnx_model.py`) and `tiny-sam.decoder-batch.onnx` (prompt batch dynamic: Everything
mode runs a grid of single-point prompts in one call).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from model import FRAME, IMG_SIZE, TinySam

HERE = Path(__file__).resolve().parent
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]

OPSET = 17


class EncoderOnnx(nn.Module):
    """`images` [1,3,1024,1024] (SAM-normalised, padded) -> `image_embeddings` [1,256,64,64]."""

    def __init__(self, model: TinySam) -> None:
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(F.avg_pool2d(images, IMG_SIZE // FRAME))


class DecoderOnnx(nn.Module):
    """The inputs and outputs of SAM's reference ONNX decoder (SamOnnxModel, all four masks)."""

    def __init__(self, model: TinySam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        low_res, scores = self.model.decode(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
        return original_size_masks(low_res, orig_im_size), scores, low_res


def original_size_masks(low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """SamOnnxModel.mask_postprocessing (upsample to 1024, crop the padding, resize to the
    original size) in one resize: crop the low-res logits to the cells that hold the image,
    resize them so each cell spans what it spans in the original, then crop to the original
    size. Same geometry to half an original pixel, without the 1024x1024 intermediate that
    cost most of the decoder's time on a CPU."""
    side = low_res.shape[-1]
    cell = IMG_SIZE / side
    scale = IMG_SIZE / torch.max(orig_im_size)
    prepadded = torch.floor(orig_im_size * scale + 0.5)
    cells = torch.ceil(prepadded / cell)
    target = torch.floor(orig_im_size * cells * cell / prepadded + 0.5).to(torch.int64)
    cells = cells.to(torch.int64)
    size = orig_im_size.to(torch.int64)
    masks = F.interpolate(low_res[..., : cells[0], : cells[1]], size=(target[0], target[1]), mode="bilinear", align_corners=False)
    return masks[..., : size[0], : size[1]]


def export(model: TinySam, out: Path, name: str = "tiny-sam") -> list[Path]:
    trained = model.eval()
    model = copy.deepcopy(trained).for_export()
    out.mkdir(parents=True, exist_ok=True)
    enc_path = out / f"{name}.encoder.onnx"
    torch.onnx.export(
        EncoderOnnx(model),
        (torch.zeros(1, 3, IMG_SIZE, IMG_SIZE),),
        enc_path,
        input_names=["images"],
        output_names=["image_embeddings"],
        opset_version=OPSET,
        dynamo=False,
    )
    inputs = (
        torch.randn(1, 256, 64, 64),
        torch.randint(0, 1024, (1, 5, 2)).float(),
        torch.tensor([[1, 0, 2, 3, -1]], dtype=torch.float32),
        torch.randn(1, 1, 256, 256),
        torch.tensor([1], dtype=torch.float32),
        torch.tensor([1500, 2250], dtype=torch.float32),
    )
    outputs = ["masks", "iou_predictions", "low_res_masks"]
    paths = [enc_path]
    for suffix, axes in (
        ("decoder", {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}),
        (
            "decoder-batch",
            {
                "point_coords": {0: "batch", 1: "num_points"},
                "point_labels": {0: "batch", 1: "num_points"},
                "mask_input": {0: "mask_batch"},
                "has_mask_input": {0: "mask_batch"},
                "masks": {0: "batch"},
                "iou_predictions": {0: "batch"},
                "low_res_masks": {0: "batch"},
            },
        ),
    ):
        path = out / f"{name}.{suffix}.onnx"
        traced = io.BytesIO()
        torch.onnx.export(
            DecoderOnnx(model),
            inputs,
            traced,
            input_names=DECODER_INPUTS,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        path.write_bytes(rewrite_decoder(traced.getvalue(), path.name))
        paths.append(path)
    print(f"exported decoders differ from the trained model by at most {check_export(trained, paths):.2g}", file=sys.stderr)
    return paths


# Largest difference in mask logits (tens in size) allowed between the exported files and the
# model they came from: float rounding in another order of operations, nothing more.
EXPORT_TOLERANCE = 1e-3


def check_export(trained: TinySam, paths: list[Path]) -> float:
    """The exported forms (TinySam.for_export, rewrite_decoder) are checked, not trusted: a
    random image and prompts through the ONNX encoder and each decoder must give what the
    trained model gives in its training form, or export exits non-zero. Returns the largest
    difference seen."""
    largest = 0.0
    rng = np.random.default_rng(1)
    image = rng.standard_normal((1, 3, IMG_SIZE, IMG_SIZE)).astype(np.float32)
    encoder, *decoders = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths)
    embeddings = encoder.run(None, {"images": image})[0]
    with torch.no_grad():
        expected_embeddings = EncoderOnnx(trained)(torch.from_numpy(image))
        for has_mask, size in ((0.0, (601, 803)), (1.0, (480, 640))):
            feeds = random_decoder_feeds(rng, has_mask, size)
            expected = DecoderOnnx(trained)(expected_embeddings, *(torch.from_numpy(feeds[k]) for k in DECODER_INPUTS[1:]))
            feeds["image_embeddings"] = embeddings
            for path, decoder in zip(paths[1:], decoders):
                diff = max(float(np.abs(got - want.numpy()).max()) for got, want in zip(decoder.run(None, feeds), expected))
                if diff > EXPORT_TOLERANCE:
                    raise SystemExit(f"{path.name}: differs from the trained model by {diff:.2g} (has_mask_input={has_mask}, orig_im_size={size})")
                largest = max(largest, diff)
    return largest


def random_decoder_feeds(rng: np.random.Generator, has_mask_input: float, orig_im_size: tuple[int, int] = (601, 803)) -> dict[str, np.ndarray]:
    """One prompt of every kind of point (foreground, background, padding) on a random
    embedding and mask input, for checks that two decoders compute the same function."""
    return {
        "image_embeddings": rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
        "point_coords": (rng.random((1, 3, 2)) * IMG_SIZE).astype(np.float32),
        "point_labels": np.array([[1, 0, -1]], np.float32),
        "mask_input": rng.standard_normal((1, 1, 256, 256)).astype(np.float32),
        "has_mask_input": np.array([has_mask_input], np.float32),
        "orig_im_size": np.array(orig_im_size, np.float32),
    }


def rewrite_decoder(traced: bytes, name: str) -> bytes:
    """Rewrites of the traced decoder graph that compute the same function in less time (tracing
    cannot express them): the mask input's downscaling convolutions run only when some
    `has_mask_input` is set; the final crop to the original size is one Slice (one copy of the
    full-size masks) instead of one per axis, and runs only when the resize overshoots the
    original size. `bench/model-latency.ts` compares an export with an earlier one."""
    model = onnx.load_from_string(traced)
    skip_mask_downscaling(model)
    merge_final_crop(model.graph)
    crop_only_when_needed(model.graph)
    onnx.checker.check_model(model, full_check=True)
    rewritten = model.SerializeToString()
    # Checked, not trusted: both graphs, run without onnxruntime's own rewrites, must agree to
    # the bit with and without a mask input.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before, after = (ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]) for m in (traced, rewritten))
    rng = np.random.default_rng(0)
    # 601x803 needs the final crop, 480x640 does not.
    for has_mask, size in ((0.0, (601, 803)), (1.0, (601, 803)), (0.0, (480, 640))):
        feeds = random_decoder_feeds(rng, has_mask, size)
        if not all(np.array_equal(a, b) for a, b in zip(before.run(None, feeds), after.run(None, feeds))):
            raise SystemExit(f"{name}: the rewritten decoder's outputs differ from the traced one's (has_mask_input={has_mask}, orig_im_size={size})")
    return rewritten


def unexpected_graph(what: str) -> SystemExit:
    """The rewrites match the graph torch traces from model.py; a changed model must change them too."""
    return SystemExit(f"rewrite_decoder: {what}; the decoder graph is not the one these rewrites were written for (model.py changed?)")


def skip_mask_downscaling(model: onnx.ModelProto) -> None:
    """SAM adds `has_mask_input * downscale(mask_input) + (1 - has_mask_input) * no_mask_embed`,
    so without a mask the downscaling is multiplied by 0: an If on `any(has_mask_input != 0)`
    runs it, or else gives zeros of its shape, which is the same sum."""
    graph = model.graph
    prefix = "/mask_downscaling/"
    inner = [n for n in graph.node if n.name.startswith(prefix)]
    names = {o for n in inner for o in n.output}
    outer_inputs = {i for n in graph.node if not n.name.startswith(prefix) for i in n.input}
    results = [o for o in names if o in outer_inputs]
    if len(results) != 1:
        raise unexpected_graph(f"the mask downscaling has {len(results)} outputs read elsewhere, not 1")
    (result,) = results
    producer = {o: n for n in graph.node for o in n.output}
    users = [n for n in graph.node if result in n.input]
    gate = producer.get(next((i for i in users[0].input if i != result), "")) if len(users) == 1 and users[0].op_type == "Mul" else None
    if gate is None or gate.input[0] != "has_mask_input":
        raise unexpected_graph("the mask downscaling is not multiplied by has_mask_input alone")
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    channels, height, width = (d.dim_value for d in shapes[result].type.tensor_type.shape.dim[1:])

    then_out = f"{result}/then"
    for n in inner:
        n.output[:] = [then_out if o == result else o for o in n.output]
    then_branch = helper.make_graph(inner, "with_mask_input", [], [helper.make_tensor_value_info(then_out, TensorProto.FLOAT, None)])
    else_out = f"{result}/else"
    # One image's zeros: multiplied by `has_mask_input` (one per mask) they broadcast to the
    # shape the downscaling would have had.
    else_branch = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["/no_mask/shape"], [else_out], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))],
        "without_mask_input",
        [],
        [helper.make_tensor_value_info(else_out, TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("/no_mask/shape", TensorProto.INT64, [4], [1, channels, height, width])],
    )
    condition = [
        helper.make_node("Abs", ["has_mask_input"], ["/mask_given/abs"]),
        helper.make_node("ReduceMax", ["/mask_given/abs"], ["/mask_given/max"], keepdims=0),
        helper.make_node("Cast", ["/mask_given/max"], ["/mask_given"], to=TensorProto.BOOL),
        helper.make_node("If", ["/mask_given"], [result], then_branch=then_branch, else_branch=else_branch, name="/mask_downscaling_if"),
    ]
    kept = [n for n in graph.node if not n.name.startswith(prefix)]
    # Nodes stay in topological order: the If goes where its first consumer was.
    at = next(i for i, n in enumerate(kept) if result in n.input)
    graph.ClearField("node")
    graph.node.extend(kept[:at] + condition + kept[at:])


def merge_final_crop(graph: onnx.GraphProto) -> None:
    """`masks[..., :h, :w]` traces as two Slices, each copying every mask at full size."""
    producer = {o: n for n in graph.node for o in n.output}
    last = producer["masks"]
    first = producer.get(last.input[0])
    if first is None or not (last.op_type == first.op_type == "Slice" and len(first.input) == len(last.input) == 5):
        raise unexpected_graph(f"`masks` is not made by two five-input Slices in a row (its last node is a {last.op_type})")
    concats = [
        helper.make_node("Concat", [first.input[k], last.input[k]], [f"/crop/{role}"], axis=0)
        for k, role in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))
    ]
    crop = helper.make_node("Slice", [first.input[0]] + [c.output[0] for c in concats], ["masks"], name="/crop")
    nodes = [n for n in graph.node if n is not first and n is not last]
    graph.ClearField("node")
    graph.node.extend(nodes + concats + [crop])


def crop_only_when_needed(graph: onnx.GraphProto) -> None:
    """The resize lands on the original size itself whenever the image's sides at the 1024
    scale are whole low-res cells (4:3 and 16:9 images among them); the crop then copies every
    full-size mask for nothing. An If resizes straight into `masks` in that case."""
    producer = {o: n for n in graph.node for o in n.output}
    crop = producer["masks"]
    resize = producer.get(crop.input[0])
    if crop.name != "/crop" or resize is None or resize.op_type != "Resize" or len(resize.input) != 4:
        raise unexpected_graph("`masks` is not the crop of a Resize to given sizes")
    sizes, ends = resize.input[3], crop.input[2]  # [N, C, H, W] and the crop's [H, W]
    attributes = {a.name: helper.get_attribute_value(a) for a in resize.attribute}

    def resize_to(output: str, name: str) -> onnx.NodeProto:
        """The traced Resize, again, inside a branch."""
        return helper.make_node("Resize", resize.input, [output], name=name, **attributes)

    then_branch = helper.make_graph(
        [resize_to("/crop/resized", "/crop/resize"), helper.make_node("Slice", ["/crop/resized", *crop.input[1:]], ["/crop/cropped"], name="/crop/slice")],
        "crop",
        [],
        [helper.make_tensor_value_info("/crop/cropped", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [resize_to("/crop/exact", "/crop/resize_exact")],
        "no_crop",
        [],
        [helper.make_tensor_value_info("/crop/exact", TensorProto.FLOAT, None)],
    )
    # The resize's size is never below the original's, so any excess means a crop.
    condition = [
        helper.make_node("Constant", [], ["/crop/hw_start"], value=helper.make_tensor("", TensorProto.INT64, [1], [2])),
        helper.make_node("Constant", [], ["/crop/hw_end"], value=helper.make_tensor("", TensorProto.INT64, [1], [4])),
        helper.make_node("Slice", [sizes, "/crop/hw_start", "/crop/hw_end"], ["/crop/target"]),
        helper.make_node("Sub", ["/crop/target", ends], ["/crop/excess"]),
        helper.make_node("ReduceMax", ["/crop/excess"], ["/crop/excess_max"], keepdims=0),
        helper.make_node("Cast", ["/crop/excess_max"], ["/crop/needed"], to=TensorProto.BOOL),
        helper.make_node("If", ["/crop/needed"], ["masks"], then_branch=then_branch, else_branch=else_branch, name="/crop"),
    ]
    nodes = [n for n in graph.node if n is not crop and n is not resize]
    graph.ClearField("node")
    graph.node.extend(nodes + condition)


def write_manifest(out: Path, name: str, paths: list[Path], source: str) -> Path:
    """The manifest the engine reads: files, SAM's preprocessing constants, checksums."""
    manifest = {
        "name": name,
        "inputSize": IMG_SIZE,
        "pixelMean": [123.675, 116.28, 103.53],
        "pixelStd": [58.395, 57.12, 57.375],
        "encoder": paths[0].name,
        "decoder": paths[1].name,
        "decoderBatch": paths[2].name,
        "source": source,
        "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths},
        "bytes": {p.name: p.stat().st_size for p in paths},
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="tiny-sam")
    args = ap.parse_args()
    ckpt = torch.load(args.checkpoint, map_location="cpu")
    model = TinySam()
    model.load_state_dict(ckpt["model"])
    paths = export(model, args.out, args.name)
    config = dict(ckpt.get("config", {}))
    if config.get("init_from"):
        # Checkpoints of earlier runs held it absolute: record it as the config file writes it.
        config["init_from"] = os.path.relpath(config["init_from"], HERE) if os.path.isabs(config["init_from"]) else config["init_from"]
    source = f"scripts/train-tiny-sam, step {ckpt.get('step', '?')} of config {json.dumps(config, sort_keys=True)}"
    write_manifest(args.out, args.name, paths, source)
    for p in paths:
        print(p, p.stat().st_size)


if __name__ == "__main__":
    main()
