"""Quantise a SAM-layout ONNX model pair to int8, measure it against the float model, and write
a model folder that the agent loads.

    python quantize.py --encoder ../../models/tiny-sam/tiny-sam.encoder.onnx \\
        --decoder ../../models/tiny-sam/tiny-sam.decoder.onnx \\
        --decoder-batch ../../models/tiny-sam/tiny-sam.decoder-batch.onnx \\
        --calibration-scenes 32 --out ../../models/quantized/tiny-sam-int8

Steps: pre-processing for quantisation (shape inference, ORT's basic fusions); the decoder(s)
dynamic int8 (weights int8 per channel, activations quantised at run time); the encoder both
dynamic int8 and static QDQ int8 calibrated on --calibration images, with the nodes named by
--float-nodes left in float. Each encoder variant, paired with the int8 decoder, is measured
on generated scenes with exact ground truth: mask agreement (mIoU) with the float model for
the same prompts, mIoU against the ground truth, file sizes and latency. The fastest variant
within the budget is kept; when none is, the most accurate one is reported and the script
exits with status 3 (see --budget).

Exit status: 0 written; 2 bad input; 3 outside the accuracy/size budget (with --budget
enforce the files go to OUT.rejected/ and OUT is left as it was).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.calibrate import DistributionCalibrater, EntropyCalibrater, MinMaxCalibrater, PercentileCalibrater, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image, UnidentifiedImageError

# The scene generator, preprocessing, click rule and IoU of the bundled model's evaluation, so
# the quantised model is measured the way the float model's model card was.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train-tiny-sam"))
from data import PIXEL_MEAN, PIXEL_STD, interior_point, noisy_box  # noqa: E402
from evaluate import SIZES, iou, preprocess  # noqa: E402
from export import original_size_masks  # noqa: E402
from scenes import make_scene  # noqa: E402

PROG = "quantize.py"
EXIT_BAD_INPUT = 2
EXIT_OUTSIDE_BUDGET = 3

DECODER_REQUIRED = ("image_embeddings", "point_coords", "point_labels")
# evaluate.preprocess resizes to SAM's 1024 frame, as every SAM variant's encoder expects.
IMAGE_SIZE = 1024
FLAGS = {"encoder": "--encoder", "decoder": "--decoder", "decoderBatch": "--decoder-batch"}
# Ops with weights: the only ones quantised. Normalisation, softmax, activations and
# everything else stay float, which is where int8 costs the most accuracy for the least gain.
WEIGHT_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
# The decoder's convolutions run on full-resolution mask maps, where ConvInteger is several
# times slower than float Conv on a CPU, and hold a small share of its weights.
DECODER_OPS = ["MatMul", "Gemm"]
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
# Calibrator classes with the settings onnxruntime's create_calibrator gives each method.
CALIBRATORS = {
    "minmax": (MinMaxCalibrater, {}),
    "entropy": (EntropyCalibrater, {}),
    "percentile": (PercentileCalibrater, {"symmetric": True}),
    "distribution": (DistributionCalibrater, {"num_bins": 2048}),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# Seeds that no other scene set uses: training 1..2, validation 424242, evaluate.py 20261125.
CALIBRATION_SEED = 9001
EVAL_SEED = 20261126
# Pre-processing that grows a model by more than this has stored computed tensors as weights.
FOLDING_GROWTH = 1.25
# Variants whose encoder latencies are this close count as equally fast (the machine is noisy).
LATENCY_TIE = 0.05


class InputError(Exception):
    """Bad input: the message says what to fix."""


def fail(message: str, status: int) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(status)


def log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Input checks


def io_summary(model: onnx.ModelProto) -> str:
    def dims(v: onnx.ValueInfoProto) -> str:
        return ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim)

    ins = ", ".join(f"{v.name} [{dims(v)}]" for v in model.graph.input)
    outs = ", ".join(v.name for v in model.graph.output)
    return f"inputs {ins}; outputs {outs}"


def load_onnx(path: Path, flag: str) -> onnx.ModelProto:
    if not path.exists():
        raise InputError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise InputError(f"{flag} {path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises several types for a file that is not ONNX
        raise InputError(f"{flag} {path}: not an ONNX model ({type(err).__name__}: {err})") from err
    if not model.graph.node or not model.graph.input:
        raise InputError(f"{flag} {path}: not an ONNX model (no graph inside)")
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (old exports also list initializers as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def looks_like_decoder(model: onnx.ModelProto) -> bool:
    names = {v.name for v in graph_inputs(model)}
    return all(n in names for n in DECODER_REQUIRED)


def check_encoder(model: onnx.ModelProto, path: Path) -> str:
    """The encoder's input name; it must take SAM's reference [1,3,S,S] normalised image."""
    if looks_like_decoder(model):
        raise InputError(
            f"--encoder {path} is a SAM mask decoder ({io_summary(model)}), not an image encoder: "
            "did you swap --encoder and --decoder?"
        )
    inputs = graph_inputs(model)
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if len(inputs) != 1 or dims != [1, 3, IMAGE_SIZE, IMAGE_SIZE]:
        raise InputError(
            f"--encoder {path} is not a SAM image encoder with the reference input [1,3,{IMAGE_SIZE},{IMAGE_SIZE}] "
            f"(SAM-normalised, padded): found {io_summary(model)}. Encoders that take raw [H,W,3] "
            "pixels are not supported here; export the encoder with the reference input."
        )
    return inputs[0].name


def check_decoder(model: onnx.ModelProto, path: Path, flag: str) -> None:
    if looks_like_decoder(model):
        outputs = {v.name for v in model.graph.output}
        if not ({"iou_predictions", "scores"} & outputs) or not ({"low_res_masks", "masks"} & outputs):
            raise InputError(f"{flag} {path}: a SAM decoder needs an iou_predictions (or scores) and a low_res_masks (or masks) output; found {io_summary(model)}")
        return
    hint = " It looks like an image encoder: did you swap --encoder and --decoder?" if len(graph_inputs(model)) == 1 else ""
    raise InputError(f"{flag} {path} is not a SAM mask decoder: it needs inputs {', '.join(DECODER_REQUIRED)}; found {io_summary(model)}.{hint}")


def source_manifest(encoder: Path) -> dict:
    """The manifest beside the source encoder, when it describes that encoder: its name,
    input size and normalisation carry over to the int8 model."""
    path = encoder.parent / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err}); fix or remove it") from err
    return manifest if isinstance(manifest, dict) and manifest.get("encoder") == encoder.name else {}


# ---------------------------------------------------------------------------------------------
# Images for calibration


@dataclass
class ImageSet:
    """Calibration images: a folder's files or generated scenes, loaded one at a time."""

    description: dict
    count: int
    load: Callable[[int], np.ndarray]  # index -> H x W x 3 uint8

    @staticmethod
    def from_folder(folder: Path) -> ImageSet:
        if not folder.is_dir():
            raise InputError(f"--calibration {folder}: no such folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"--calibration {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

        def load(i: int) -> np.ndarray:
            try:
                with Image.open(files[i]) as im:
                    return np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as err:
                raise InputError(f"--calibration: {files[i]} is not a readable image ({err})") from err

        digest = hashlib.sha256("".join(f"{p.name}:{sha256(p)}\n" for p in files).encode()).hexdigest()
        return ImageSet({"kind": "folder", "path": str(folder), "images": len(files), "sha256": digest}, len(files), load)

    @staticmethod
    def from_scenes(count: int, seed: int) -> ImageSet:
        if count < 1:
            raise InputError("--calibration-scenes must be at least 1")

        def load(i: int) -> np.ndarray:
            w, h = SIZES[i % len(SIZES)]
            return make_scene(np.random.default_rng([seed, i]), w, h).image

        return ImageSet({"kind": "scenes", "images": count, "seed": seed, "generator": "scripts/train-tiny-sam/scenes.py"}, count, load)


class OneImage(CalibrationDataReader):
    """Feeds the encoder one preprocessed image: the calibrator sees one image per call, so no
    calibrator holds every image's activations at once."""

    def __init__(self, image: np.ndarray, input_name: str) -> None:
        self.feed: dict[str, np.ndarray] | None = {input_name: preprocess(image)[0]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


# ---------------------------------------------------------------------------------------------
# Quantisation


def pre_process(src: Path, dst: Path) -> str:
    """quant_pre_process, with two fallbacks. Symbolic shape inference gives up on some of
    torch's exported reshapes: then plain ONNX shape inference. ORT's constant folding can
    store computed tensors as weights (the decoder's dense positional encoding is 1 MB in the
    tiny model) and grow the file it is meant to shrink: then no optimisation, which costs
    nothing at run time because onnxruntime folds the same constants when it loads the model.
    Returns what was done, for the manifest."""
    src, dst = src.resolve(), dst.resolve()

    def attempt(**skip: bool) -> None:
        # Symbolic shape inference that gives up saves its partial model to the working
        # directory and prints to stdout, where this script's JSON summary goes.
        with contextlib.chdir(dst.parent), contextlib.redirect_stdout(sys.stderr):
            quant_pre_process(str(src), str(dst), **skip)

    symbolic = True
    try:
        attempt()
    except Exception as err:  # symbolic_shape_infer asserts rather than raising a typed error
        log(f"{src.name}: symbolic shape inference failed ({type(err).__name__}: {err}); using ONNX shape inference only")
        symbolic = False
        attempt(skip_symbolic_shape=True)
    optimised = dst.stat().st_size <= FOLDING_GROWTH * src.stat().st_size
    if not optimised:
        log(f"{src.name}: optimisation grew the model from {src.stat().st_size} to {dst.stat().st_size} bytes; pre-processing without it")
        attempt(skip_symbolic_shape=not symbolic, skip_optimization=True)
    return ", ".join(
        [
            "symbolic shape inference" if symbolic else "ONNX shape inference (symbolic shape inference failed)",
            "ORT basic optimisation" if optimised else "no optimisation (ORT's constant folding grew the model)",
        ]
    )


def weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the weight-bearing nodes, in graph (topological) order: what gets quantised.
    A MatMul of two activations (attention scores, attention times values) is not one: those
    stay float, as they carry the widest ranges."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in WEIGHT_OPS and any(i in inits for i in n.input[1:])]


def vector_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls by a constant vector (tiny-sam's folded mask head multiplies by a bias that way).
    A vector has no output channel to give per-channel scales to, and the quantiser scales it
    along the wrong axis (onnxruntime then refuses the model), so these stay float: they hold a
    handful of weights."""
    vectors = {i.name for i in model.graph.initializer if len(i.dims) == 1}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in vectors]


def resolve_float_nodes(model: onnx.ModelProto, patterns: list[str]) -> list[str]:
    """@first: the first weight op (the patch embedding / stem); @last: the last weight op (the
    output projection); anything else is a node name or a regular expression over node names."""
    weights = weight_nodes(model)
    names = [n.name for n in model.graph.node]
    chosen: list[str] = []
    for p in patterns:
        if p in ("@first", "@last"):
            found = weights[:1] if p == "@first" else weights[-1:]
        else:
            try:
                rx = re.compile(p)
            except re.error as err:
                raise InputError(f"--float-nodes {p!r}: not a regular expression ({err})") from err
            found = [n for n in names if n == p or rx.fullmatch(n)]
        if not found:
            sample = ", ".join(weights[:5])
            raise InputError(f"--float-nodes {p!r} matches no node of the encoder (weight nodes are named like: {sample})")
        chosen += [n for n in found if n not in chosen]
    return chosen


def quantize_dynamic_int8(src: Path, dst: Path, ops: list[str], exclude: list[str]) -> None:
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=ops,
        per_channel=True,
        weight_type=QuantType.QInt8,
        # The quantiser turns each Gemm into a MatMul named NAME_MatMul before it picks nodes.
        nodes_to_exclude=[*exclude, *(f"{n}_MatMul" for n in exclude)],
        # As weight_nodes: MatMuls of two activations stay float.
        extra_options={"MatMulConstBOnly": True},
    )


def calibrate(model: Path, nodes: list[str], images: ImageSet, input_name: str, method: str, work: Path) -> Path:
    """Activation ranges of the inputs and outputs of `nodes`, one image at a time, saved where
    quantize_static reads a calibration cache. onnxruntime's own calibration records every
    tensor around every MatMul, attention scores included: 13 GB per image for ViT-B."""
    base, options = CALIBRATORS[method]
    proto = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    wanted = {t for n in proto.graph.node if n.name in set(nodes) for t in [*n.input, *n.output] if t and t not in inits}
    del proto

    class Calibrator(base):
        def select_tensors_to_calibrate(self, graph_model):
            tensors, value_infos = super().select_tensors_to_calibrate(graph_model)
            return tensors & wanted, value_infos

    calibrator = Calibrator(str(model), WEIGHT_OPS, str(work / "augmented.onnx"), **options)
    calibrator.augment_graph()
    calibrator.create_inference_session()
    for i in range(images.count):
        calibrator.collect_data(OneImage(images.load(i), input_name))
    ranges = work / "ranges.json"
    save_tensors_data(calibrator.compute_data(), ranges)
    return ranges


def quantize_static_int8(src: Path, dst: Path, nodes: list[str], ranges: Path, method: str) -> None:
    quantize_static(
        str(src),
        str(dst),
        None,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=WEIGHT_OPS,
        nodes_to_quantize=nodes,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CALIBRATION_METHODS[method],
        calibration_cache_path=ranges,
    )


def finish(src: Path, dst: Path, keep_names: bool) -> None:
    """Drop the shape annotations the quantiser needed (onnxruntime infers them again at load)
    and, unless asked not to, shorten internal tensor and node names: in a small model the
    names of a quantised graph weigh as much as its int8 weights."""
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    if not keep_names:
        shorten_names(model)
    onnx.save(model, str(dst))


def shorten_names(model: onnx.ModelProto) -> None:
    graphs: list[onnx.GraphProto] = []

    def collect(g: onnx.GraphProto) -> None:
        graphs.append(g)
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)
                for sub in a.graphs:
                    collect(sub)

    collect(model.graph)
    # Graph inputs and outputs are the model's interface: their names never change.
    keep = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    rename: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return rename.setdefault(name, f"t{len(rename)}")

    count = 0
    for g in graphs:
        for init in g.initializer:
            init.name = short(init.name)
        for n in g.node:
            n.name = f"n{count}"
            count += 1
            n.input[:] = [short(i) for i in n.input]
            n.output[:] = [short(o) for o in n.output]
        if g is not model.graph:
            for v in list(g.input) + list(g.output):
                v.name = short(v.name)


def op_types(path: Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    return sorted({f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node})


# ---------------------------------------------------------------------------------------------
# Measurement


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Pair:
    """An encoder + decoder, run the way the agent runs them (see agent/src/model/sam-model.ts):
    decoder inputs beyond the three every SAM decoder has are fed only when the graph has them,
    and masks come from `masks` at the original size or else from the low-res output."""

    def __init__(self, encoder: Path, decoder: Path, threads: int) -> None:
        self.encoder = session(encoder, threads)
        self.decoder = session(decoder, threads)
        self.image_input = self.encoder.get_inputs()[0].name
        outs = [o.name for o in self.encoder.get_outputs()]
        self.embedding_output = "image_embeddings" if "image_embeddings" in outs else outs[0]
        self.inputs = {i.name for i in self.decoder.get_inputs()}
        outputs = [o.name for o in self.decoder.get_outputs()]
        self.scores = "iou_predictions" if "iou_predictions" in outputs else "scores"
        self.full = "masks" if "orig_im_size" in self.inputs and "masks" in outputs else None
        self.low = "low_res_masks" if "low_res_masks" in outputs else "masks"

    def encode(self, x: np.ndarray) -> np.ndarray:
        """image_embeddings of one preprocessed image [1,3,1024,1024]."""
        return self.encoder.run([self.embedding_output], {self.image_input: x})[0]

    def decode(self, emb: np.ndarray, coords: list, labels: list, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Mask logits [M, H, W] at the original size and scores [M] for one prompt set."""
        feeds = {
            "image_embeddings": emb,
            "point_coords": np.asarray(coords, np.float32)[None],
            "point_labels": np.asarray(labels, np.float32)[None],
        }
        if "mask_input" in self.inputs:
            feeds["mask_input"] = np.zeros((1, 1, 256, 256), np.float32)
            feeds["has_mask_input"] = np.zeros(1, np.float32)
        if "orig_im_size" in self.inputs:
            feeds["orig_im_size"] = np.array(size, np.float32)
        names = [self.scores, self.full or self.low]
        scores, masks = self.decoder.run(names, feeds)
        if self.full is None:
            masks = original_size_masks(torch.from_numpy(masks), torch.tensor(size, dtype=torch.float32)).numpy()
        return masks[0], scores[0]


def agreement_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two predictions; two empty masks agree."""
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def scene_prompts(scene, rng: np.random.Generator, scale: float):
    """Per target: SAM's 1-click (innermost pixel, padding point) and exact box prompts."""
    for k in rng.permutation(len(scene.masks))[:2]:
        gt = scene.masks[k]
        cx, cy = interior_point(gt, None)
        box = noisy_box(gt, None).reshape(2, 2) * scale  # no rng: the exact box
        yield gt, {"oneClick": ([[cx * scale, cy * scale], [0.0, 0.0]], [1, -1]), "box": (box.tolist(), [2, 3])}


def predict(pair: Pair, emb: np.ndarray, prompt: tuple, kind: str, size: tuple[int, int]) -> np.ndarray:
    masks, scores = pair.decode(emb, prompt[0], prompt[1], size)
    # SAM's rule (and the agent's): a lone click takes the best multimask output, a box the single one.
    k = int(np.argmax(scores[1:])) + 1 if kind == "oneClick" and len(scores) > 1 else 0
    return masks[k] > 0


def measure_quality(reference: Pair, candidates: dict[str, Pair], scenes: int, seed: int) -> tuple[dict, dict]:
    """Ground-truth mIoU of the float model; agreement with it and ground-truth mIoU of each candidate."""
    kinds = ("oneClick", "box")
    ref_gt = {k: [] for k in kinds}
    agree = {c: {k: [] for k in kinds} for c in candidates}
    cand_gt = {c: {k: [] for k in kinds} for c in candidates}
    rng = np.random.default_rng(seed)
    for n in range(scenes):
        w, h = SIZES[n % len(SIZES)]
        scene = make_scene(rng, w, h)
        if not scene.masks:
            continue
        x, scale = preprocess(scene.image)
        emb = reference.encode(x)
        embs = {c: p.encode(x) for c, p in candidates.items()}
        for gt, prompts in scene_prompts(scene, rng, scale):
            for kind, prompt in prompts.items():
                ref = predict(reference, emb, prompt, kind, (h, w))
                ref_gt[kind].append(iou(ref, gt))
                for c, p in candidates.items():
                    mask = predict(p, embs[c], prompt, kind, (h, w))
                    agree[c][kind].append(agreement_iou(ref, mask))
                    cand_gt[c][kind].append(iou(mask, gt))

    def mean(v: list[float]) -> float:
        return round(float(np.mean(v)), 4) if v else 0.0

    reference_gt = {k: mean(v) for k, v in ref_gt.items()}
    per_candidate = {
        c: {
            "targets": len(agree[c]["box"]),
            "agreement": {k: mean(v) for k, v in agree[c].items()},
            "groundTruth": {k: mean(v) for k, v in cand_gt[c].items()},
            "groundTruthDrop": {k: round(reference_gt[k] - mean(v), 4) for k, v in cand_gt[c].items()},
        }
        for c in candidates
    }
    return reference_gt, per_candidate


def measure_latency(pairs: dict[str, Pair], runs: int) -> dict:
    """Median ms per run of each encoder and decoder, interleaved run by run so that the
    variants see the same machine load."""
    image = np.random.default_rng(0).standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    embs = {name: p.encode(image) for name, p in pairs.items()}  # also the warm-up run
    prompt = ([[400.0, 300.0], [0.0, 0.0]], [1, -1])
    enc = {name: [] for name in pairs}
    dec = {name: [] for name in pairs}
    for _ in range(runs):
        for name, p in pairs.items():
            t = time.perf_counter()
            p.encode(image)
            enc[name].append(1000 * (time.perf_counter() - t))
    for name, p in pairs.items():
        p.decode(embs[name], *prompt, (480, 640))
    for _ in range(runs * 5):
        for name, p in pairs.items():
            t = time.perf_counter()
            p.decode(embs[name], *prompt, (480, 640))
            dec[name].append(1000 * (time.perf_counter() - t))
    return {name: {"encoderMs": round(statistics.median(enc[name]), 2), "decoderMs": round(statistics.median(dec[name]), 2)} for name in pairs}


# ---------------------------------------------------------------------------------------------
# Budget and selection


@dataclass
class Budget:
    min_agreement: float
    max_gt_drop: float
    max_size_ratio: float

    def failures(self, quality: dict, size_ratio: float) -> list[str]:
        out = []
        for kind, v in quality["agreement"].items():
            if v < self.min_agreement:
                out.append(f"{kind} agreement mIoU {v} < {self.min_agreement}")
        for kind, v in quality["groundTruthDrop"].items():
            if v > self.max_gt_drop:
                out.append(f"{kind} ground-truth mIoU drop {v} > {self.max_gt_drop}")
        if size_ratio > self.max_size_ratio:
            out.append(f"size {size_ratio}x the float files > {self.max_size_ratio}x")
        return out


@dataclass
class Candidate:
    name: str  # "dynamic" or "static-qdq"
    encoder: Path
    quality: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    size_ratio: float = 0.0
    failures: list[str] = field(default_factory=list)


def choose(candidates: list[Candidate]) -> Candidate:
    """The fastest encoder among those within the budget (near-ties go to the better
    agreement); with none within it, the one that agrees best with the float model."""

    def agreement(c: Candidate) -> float:
        return min(c.quality["agreement"].values())

    within = [c for c in candidates if not c.failures]
    if not within:
        return max(candidates, key=agreement)
    fastest = min(c.latency["encoderMs"] for c in within)
    close = [c for c in within if c.latency["encoderMs"] <= fastest * (1 + LATENCY_TIE)]
    return max(close, key=agreement)


# ---------------------------------------------------------------------------------------------
# Output folder


def stage_dir(out: Path, sources: list[Path]) -> Path:
    if any(p.resolve().parent == out.resolve() for p in sources):
        raise InputError(f"--out {out} holds the float model being quantised and would be replaced; choose another folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise InputError(f"--out {out} exists and is not a model folder (no manifest.json); choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # mkdtemp makes the folder private; the model folder it becomes gets the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    return stage


def replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    src.rename(dst)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", type=Path, required=True, help="float image encoder: images [1,3,S,S] -> image_embeddings")
    ap.add_argument("--decoder", type=Path, required=True, help="float mask decoder with SAM's reference inputs")
    ap.add_argument("--decoder-batch", type=Path, help="float decoder with a dynamic prompt-batch dimension (optional)")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write, e.g. models/quantized/NAME")
    ap.add_argument("--name", help="file name prefix (default: the --out folder's name)")
    cal = ap.add_mutually_exclusive_group()
    cal.add_argument("--calibration", type=Path, metavar="DIR", help="calibration images (a few dozen, like the camera's)")
    cal.add_argument("--calibration-scenes", type=int, metavar="N", help="calibrate on N generated scenes instead")
    ap.add_argument("--calibration-method", choices=sorted(CALIBRATION_METHODS), default="minmax")
    ap.add_argument(
        "--encoder-method",
        choices=["auto", "dynamic", "static"],
        default="auto",
        help="auto measures both and keeps the better one; dynamic needs no calibration images",
    )
    ap.add_argument(
        "--float-nodes",
        nargs="+",
        default=["@first", "@last"],
        metavar="PATTERN",
        help="encoder nodes left in float: @first (stem / patch embedding), @last (output projection), "
        "node names or regular expressions (default: @first @last; none: --float-nodes '')",
    )
    ap.add_argument("--eval-scenes", type=int, default=40, help="generated scenes for the accuracy check (2 targets each)")
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads while measuring")
    ap.add_argument("--min-agreement", type=float, default=0.95, help="fp32-vs-int8 mask mIoU, 1-click and box")
    ap.add_argument("--max-gt-drop", type=float, default=0.02, help="ground-truth mIoU drop, 1-click and box")
    ap.add_argument("--max-size-ratio", type=float, default=0.35, help="int8 bytes over float bytes, all files")
    ap.add_argument(
        "--budget",
        choices=["enforce", "report"],
        default="enforce",
        help="enforce: outside the budget the files go to OUT.rejected and the exit status is 3; "
        "report: write OUT regardless, record the verdict in the manifest and exit 0",
    )
    ap.add_argument("--keep-names", action="store_true", help="keep the float graph's tensor and node names")
    ap.add_argument("--source", help="the manifest's source text (default: from the float model's manifest)")
    args = ap.parse_args(argv)
    if args.encoder_method != "dynamic" and args.calibration is None and args.calibration_scenes is None:
        ap.error("--calibration DIR or --calibration-scenes N is required unless --encoder-method dynamic")
    if args.eval_scenes < 1 or args.latency_runs < 1 or args.threads < 1:
        ap.error("--eval-scenes, --latency-runs and --threads must be at least 1")
    args.float_nodes = [p for p in args.float_nodes if p]
    return args


def run(args: argparse.Namespace) -> int:
    sources = {"encoder": args.encoder, "decoder": args.decoder}
    if args.decoder_batch:
        sources["decoderBatch"] = args.decoder_batch
    models = {role: load_onnx(path, FLAGS[role]) for role, path in sources.items()}
    image_input = check_encoder(models.pop("encoder"), args.encoder)
    for role, model in models.items():
        check_decoder(model, sources[role], FLAGS[role])
    del models
    upstream = source_manifest(args.encoder)
    images = None
    if args.encoder_method != "dynamic":
        images = ImageSet.from_folder(args.calibration) if args.calibration else ImageSet.from_scenes(args.calibration_scenes, CALIBRATION_SEED)
    stage = stage_dir(args.out, list(sources.values()))
    try:
        return build(args, sources, image_input, images, upstream, stage)
    finally:
        # Gone already when build moved it into place; what is left is a failed run's.
        shutil.rmtree(stage, ignore_errors=True)


def build(args: argparse.Namespace, sources: dict[str, Path], image_input: str, images: ImageSet | None, upstream: dict, stage: Path) -> int:
    name = args.name or args.out.name
    budget = Budget(args.min_agreement, args.max_gt_drop, args.max_size_ratio)
    files = {"encoder": f"{name}.encoder.onnx", "decoder": f"{name}.decoder.onnx", "decoderBatch": f"{name}.decoder-batch.onnx"}

    with tempfile.TemporaryDirectory(prefix="sam-quantize-") as tmp_name:
        tmp = Path(tmp_name)
        pre = {}
        preprocessing = {}
        for role, path in sources.items():
            log(f"pre-processing {path}")
            pre[role] = tmp / f"{role}.pre.onnx"
            try:
                preprocessing[role] = pre_process(path, pre[role])
            except Exception as err:  # onnxruntime's loader and optimiser raise untyped errors
                raise InputError(f"{FLAGS[role]} {path}: onnxruntime cannot load it for quantisation ({type(err).__name__}: {err})") from err

        decoders = [role for role in sources if role != "encoder"]
        for role in decoders:
            log(f"{role}: dynamic int8")
            quantize_dynamic_int8(pre[role], tmp / f"{role}.int8.onnx", DECODER_OPS, vector_matmuls(onnx.load(str(pre[role]))))
            finish(tmp / f"{role}.int8.onnx", stage / files[role], args.keep_names)

        encoder = onnx.load(str(pre["encoder"]), load_external_data=False)
        float_nodes = resolve_float_nodes(encoder, args.float_nodes)
        quantised = [n for n in weight_nodes(encoder) if n not in float_nodes]
        del encoder
        candidates = []
        if args.encoder_method in ("auto", "dynamic"):
            log("encoder: dynamic int8")
            quantize_dynamic_int8(pre["encoder"], tmp / "encoder.dynamic.raw.onnx", WEIGHT_OPS, float_nodes)
            finish(tmp / "encoder.dynamic.raw.onnx", tmp / "encoder.dynamic.onnx", args.keep_names)
            candidates.append(Candidate("dynamic", tmp / "encoder.dynamic.onnx"))
        if args.encoder_method in ("auto", "static"):
            log(f"encoder: static QDQ int8, {args.calibration_method} calibration on {images.count} images")
            ranges = calibrate(pre["encoder"], quantised, images, image_input, args.calibration_method, tmp)
            quantize_static_int8(pre["encoder"], tmp / "encoder.static.raw.onnx", quantised, ranges, args.calibration_method)
            finish(tmp / "encoder.static.raw.onnx", tmp / "encoder.static.onnx", args.keep_names)
            candidates.append(Candidate("static-qdq", tmp / "encoder.static.onnx"))

        float_bytes = sum(p.stat().st_size for p in sources.values())
        decoder_bytes = sum((stage / files[r]).stat().st_size for r in decoders)
        log(f"measuring on {args.eval_scenes} scenes with {args.threads} threads")
        reference = Pair(args.encoder, args.decoder, args.threads)
        pairs = {c.name: Pair(c.encoder, stage / files["decoder"], args.threads) for c in candidates}
        reference_gt, quality = measure_quality(reference, pairs, args.eval_scenes, EVAL_SEED)
        latency = measure_latency({"fp32": reference, **pairs}, args.latency_runs)
        del reference, pairs
        for c in candidates:
            c.quality, c.latency = quality[c.name], latency[c.name]
            c.size_ratio = round((c.encoder.stat().st_size + decoder_bytes) / float_bytes, 4)
            c.failures = budget.failures(c.quality, c.size_ratio)
        best = choose(candidates)
        shutil.copyfile(best.encoder, stage / files["encoder"])

    written = {role: stage / files[role] for role in sources}
    manifest = {
        "name": name,
        "inputSize": upstream.get("inputSize", 1024),
        "pixelMean": upstream.get("pixelMean", [round(float(v), 3) for v in PIXEL_MEAN]),
        "pixelStd": upstream.get("pixelStd", [round(float(v), 3) for v in PIXEL_STD]),
        **{role: path.name for role, path in written.items()},
        "source": args.source or f"int8 of {upstream.get('name', args.encoder.stem)} ({upstream.get('source', args.encoder)})",
        "sha256": {p.name: sha256(p) for p in written.values()},
        "bytes": {p.name: p.stat().st_size for p in written.values()},
        "sources": {role: {"path": str(p), "sha256": sha256(p), "bytes": p.stat().st_size} for role, p in sources.items()},
        "sizeRatio": best.size_ratio,
        "method": {
            "encoder": best.name,
            "decoder": "dynamic",
            "weights": "int8, symmetric, per channel",
            "activations": "uint8, calibrated (QDQ)" if best.name == "static-qdq" else "uint8, quantised at run time",
            "quantisedOps": {"encoder": WEIGHT_OPS, "decoder": DECODER_OPS},
            "floatNodes": float_nodes,
            "namesShortened": not args.keep_names,
            "preprocessing": preprocessing,
            "tools": {"onnxruntime": ort.__version__, "onnx": onnx.__version__},
        },
        "calibration": {**images.description, "method": args.calibration_method} if best.name == "static-qdq" else None,
        "evaluation": {
            "scenes": args.eval_scenes,
            "seed": EVAL_SEED,
            "sizes": [f"{w}x{h}" for w, h in SIZES],
            "protocol": "scripts/train-tiny-sam/evaluate.py: 1-click at the innermost pixel (best multimask output), exact box (single output); masks at the original size, logit > 0",
            "targets": best.quality["targets"],
        },
        "agreement": best.quality["agreement"],
        "groundTruth": {"fp32": reference_gt, "int8": best.quality["groundTruth"], "drop": best.quality["groundTruthDrop"]},
        "latencyMs": {"fp32": latency["fp32"], "int8": best.latency, "threads": args.threads, "runs": args.latency_runs},
        "ops": {p.name: op_types(p) for p in written.values()},
        "budget": {
            "minAgreement": budget.min_agreement,
            "maxGroundTruthDrop": budget.max_gt_drop,
            "maxSizeRatio": budget.max_size_ratio,
            "passed": not best.failures,
            "failures": best.failures,
        },
        "candidates": {
            c.name: {"quality": c.quality, "latencyMs": c.latency, "sizeRatio": c.size_ratio, "failures": c.failures} for c in candidates
        },
    }
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    if best.failures and args.budget == "enforce":
        rejected = args.out.with_name(args.out.name + ".rejected")
        replace_dir(stage, rejected)
        log(f"outside the budget: {'; '.join(best.failures)}. Nothing written to {args.out}; the measured files are in {rejected}")
        return EXIT_OUTSIDE_BUDGET
    replace_dir(stage, args.out)
    print(json.dumps({k: manifest[k] for k in ("name", "sizeRatio", "method", "agreement", "groundTruth", "latencyMs", "budget")}, indent=2))
    if best.failures:
        log(f"wrote {args.out}, OUTSIDE the budget (--budget report): {'; '.join(best.failures)}")
    else:
        log(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        status = run(args)
    except InputError as err:
        fail(str(err), EXIT_BAD_INPUT)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
