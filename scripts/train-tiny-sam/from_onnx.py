"""Rebuild a training checkpoint from an exported tiny-SAM (the two ONNX files).

    python from_onnx.py --model ../../models/tiny-sam --out runs/shipped/checkpoint.pt \
        --step 2400 --config config-real1.json

The shipped ONNX files hold every weight of the model, so a later training phase can start from
them when the run folder that produced them is gone. Export folds each BatchNorm into the
convolution before it and pre-transposes MatMul weights; the rebuilt model takes the folded
convolution as is and gets an identity BatchNorm (mean 0, variance 1 - eps, scale 1) whose
bias is the folded bias, which is the same function in eval mode. That is why a phase started
from such a checkpoint trains with `freeze_bn`: batch statistics would undo the identity.

The rebuild is checked, not trusted: the model is exported again and both exports must give
the same outputs on random inputs, or the script exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from export import EXPORT_TOLERANCE, export, random_decoder_feeds
from model import COARSE_CH, CONTEXT_CH, DETAIL_CH, GlobalAttention, TinySam


def initializers(path: Path) -> tuple[dict[str, torch.Tensor], list[tuple[str, torch.Tensor]]]:
    """Named initializers (an nn.Module path) and the unnamed ones that export created, in
    graph order."""
    named, unnamed = {}, []
    graph = load_graph(path)
    for init in graph.initializer:
        t = torch.from_numpy(numpy_helper.to_array(init).copy())
        (unnamed.append((init.name, t)) if init.name.startswith("onnx::") else named.__setitem__(init.name, t))
    named |= {k: v for k, v in constants(graph).items() if not k.startswith("onnx::")}
    return named, unnamed


def take(unnamed: list[tuple[str, torch.Tensor]], prefix: str, shape: tuple[int, ...]) -> torch.Tensor:
    name, t = unnamed.pop(0)
    if not name.startswith(prefix) or tuple(t.shape) != shape:
        raise SystemExit(f"unexpected initializer {name} {list(t.shape)}: wanted {prefix}* {list(shape)}")
    return t


def load_graph(path: Path) -> onnx.GraphProto:
    try:
        return onnx.load(str(path)).graph
    except Exception as err:  # onnx raises DecodeError, OSError... for what is not an ONNX file
        raise SystemExit(f"{path}: not an ONNX model ({err})") from err


def constants(graph: onnx.GraphProto) -> dict[str, torch.Tensor]:
    """Every initializer by name, and the names the exporter aliased to one: it stores a tensor
    once when two are equal (fresh zero biases, unit norm weights...) and hands it to the other
    users through Identity nodes, which the initializer list does not show."""
    consts = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
    return consts


def node_weights(graph: onnx.GraphProto, consts: dict[str, torch.Tensor]) -> list[tuple[str, list[torch.Tensor]]]:
    """(op type, its unnamed constant inputs) of each node that has some, in graph order, which
    is the order forward runs them."""
    unnamed = {k: v for k, v in consts.items() if k.startswith("onnx::")}
    return [(n.op_type, [unnamed[i] for i in n.input if i in unnamed]) for n in graph.node if n.op_type != "Identity" and any(i in unnamed for i in n.input)]


def load_encoder(model: TinySam, path: Path) -> None:
    enc = model.image_encoder
    graph = load_graph(path)
    consts = constants(graph)
    named = {k.removeprefix("encoder."): v for k, v in consts.items() if k.startswith("encoder.")}
    weights = node_weights(graph, consts)

    def take(op: str, shapes: tuple[tuple[int, ...], ...]) -> list[torch.Tensor]:
        got_op, tensors = weights.pop(0) if weights else ("nothing", [])
        if got_op != op or tuple(tuple(t.shape) for t in tensors) != shapes:
            raise SystemExit(f"{path}: unexpected {got_op} weights {[list(t.shape) for t in tensors]}: wanted {op} {[list(s) for s in shapes]}")
        return tensors

    # Forward order, which is the module tree's: BatchNorm'd convolutions (folded, so they carry
    # a bias), the attention layers' three weight products, the two channel norms.
    sd = enc.state_dict() | named
    for name, module in enc.named_modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[1], nn.BatchNorm2d):
            conv, bn = module[0], module[1]
            weight, bias = take("Conv", (tuple(conv.weight.shape), (conv.out_channels,)))
            sd[f"{name}.0.weight"] = weight
            sd[f"{name}.1.weight"] = torch.ones_like(bn.weight)
            sd[f"{name}.1.bias"] = bias
            sd[f"{name}.1.running_mean"] = torch.zeros_like(bn.running_mean)
            sd[f"{name}.1.running_var"] = torch.full_like(bn.running_var, 1.0 - bn.eps)
        elif isinstance(module, GlobalAttention):
            c = module.norm1.normalized_shape[0]
            sd[f"{name}.attn.in_proj_weight"] = take("MatMul", ((c, 3 * c),))[0].T
            sd[f"{name}.mlp.0.weight"] = take("MatMul", ((c, 2 * c),))[0].T
            sd[f"{name}.mlp.2.weight"] = take("MatMul", ((2 * c, c),))[0].T
    # The two channel norms: the detail map's, then the context's (the order forward runs them).
    for key, c in (("fine.3", DETAIL_CH), ("out.1", CONTEXT_CH)):
        sd[f"{key}.weight"] = take("Mul", ((c, 1, 1),))[0].flatten()
        sd[f"{key}.bias"] = take("Add", ((c, 1, 1),))[0].flatten()
    enc.load_state_dict(sd)
    if weights:
        raise SystemExit(f"{path}: encoder weights left over: {[(op, [list(t.shape) for t in ts]) for op, ts in weights]}")


def load_decoder(model: TinySam, path: Path) -> None:
    named, unnamed = initializers(path)
    sd = model.state_dict()
    for k, v in named.items():
        sd[k.removeprefix("model.")] = v

    def layer_norm(key: str, c: int, trailing: tuple[int, ...] = (1, 1)) -> None:
        sd[f"{key}.weight"] = take(unnamed, "onnx::Mul", (c, *trailing)).flatten()
        sd[f"{key}.bias"] = take(unnamed, "onnx::Add", (c, *trailing)).flatten()

    layer_norm("prompt_encoder.mask_downscaling.1", 4)
    layer_norm("prompt_encoder.mask_downscaling.4", 16)
    sd["prompt_encoder.no_mask_embed.weight"] = take(unnamed, "onnx::Mul", (1, 64, 1, 1)).reshape(1, 64)
    tokens = take(unnamed, "onnx::Expand", (1, 5, 64))[0]
    sd["mask_decoder.iou_token.weight"], sd["mask_decoder.mask_tokens.weight"] = tokens[:1], tokens[1:]
    t = model.mask_decoder.transformer
    attns = []
    for i, layer in enumerate(t.layers):
        attns += [(f"layers.{i}.self_attn", layer.self_attn), (f"layers.{i}.cross_t2i", layer.cross_t2i), (f"layers.{i}.mlp", None), (f"layers.{i}.cross_i2t", layer.cross_i2t)]
    attns.append(("final_attn", t.final_attn))
    for key, attn in attns:
        prefix = f"mask_decoder.transformer.{key}"
        if attn is None:
            for j in (0, 2):
                w = sd[f"{prefix}.{j}.weight"]
                sd[f"{prefix}.{j}.weight"] = take(unnamed, "onnx::MatMul", tuple(w.T.shape)).T
            continue
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w = sd[f"{prefix}.{proj}.weight"]
            sd[f"{prefix}.{proj}.weight"] = take(unnamed, "onnx::MatMul", tuple(w.T.shape)).T
    # The coarse head's projection of the image tokens, pre-transposed like the transformer's.
    sd["mask_decoder.coarse_proj.weight"] = take(unnamed, "onnx::MatMul", (CONTEXT_CH, COARSE_CH)).T
    if unnamed:
        raise SystemExit(f"decoder initializers left over: {[n for n, _ in unnamed]}")
    model.load_state_dict(sd)


def max_difference(a: tuple[Path, Path], b: tuple[Path, Path], image: np.ndarray, feeds: dict[str, np.ndarray]) -> float:
    """Largest difference between two encoder + decoder pairs' outputs on one image and prompt,
    end to end (the embedding is the model's own business: only what the decoder makes of it
    counts)."""
    outs = []
    for enc, dec in (a, b):
        embeddings = ort.InferenceSession(str(enc), providers=["CPUExecutionProvider"]).run(None, {"images": image})[0]
        outs.append(ort.InferenceSession(str(dec), providers=["CPUExecutionProvider"]).run(None, feeds | {"image_embeddings": embeddings}))
    return max(float(np.abs(x - y).max()) for x, y in zip(*outs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="folder with tiny-sam.encoder.onnx and tiny-sam.decoder.onnx")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    ap.add_argument("--step", type=int, required=True, help="the step the export was made at (train.py's init_step check)")
    ap.add_argument("--config", type=Path, help="the config of the run that made the export, recorded in the checkpoint")
    ap.add_argument("--name", default="tiny-sam")
    args = ap.parse_args()
    enc_path, dec_path = args.model / f"{args.name}.encoder.onnx", args.model / f"{args.name}.decoder.onnx"
    for p in (enc_path, dec_path):
        if not p.is_file():
            raise SystemExit(f"{p}: not found")
    model = TinySam()
    load_encoder(model, enc_path)
    load_decoder(model, dec_path)
    model.eval()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = export(model, Path(tmp), args.name)
        image = rng.standard_normal((1, 3, 1024, 1024)).astype(np.float32)
        diff = max_difference((enc_path, dec_path), (paths[0], paths[1]), image, random_decoder_feeds(rng, has_mask_input=1.0))
    print(json.dumps({"max_abs_diff": diff}))
    if diff > EXPORT_TOLERANCE:
        raise SystemExit("the rebuilt model does not reproduce the export")
    try:
        config = json.loads(args.config.read_text()) if args.config else {}
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--config {args.config}: cannot be read as JSON ({err})") from err
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": config, "step": args.step, "from_onnx": str(args.model)}, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
