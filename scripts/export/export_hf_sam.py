"""Export a Hugging Face transformers SamModel (sam-vit-base / -large / -huge, SlimSAM) to the
two-file ONNX layout the agent loads, with the input and output names of SAM's reference export.

    python export_hf_sam.py --checkpoint facebook/sam-vit-base --out ../../models/sam-vit-base
    python export_hf_sam.py --checkpoint path/to/checkpoint-folder --out ../../models/my-sam
    python export_hf_sam.py --random-config tiny --out ../../.cache/models/hf-sam-tiny
    python export_hf_sam.py --random-config vit-b --out ../../.cache/models/sam-vit-b-random

Writes NAME.encoder.onnx (images [1,3,1024,1024] -> image_embeddings [1,256,64,64]),
NAME.decoder.onnx and NAME.decoder-batch.onnx (image_embeddings, point_coords, point_labels,
mask_input, has_mask_input, orig_im_size -> masks, iou_predictions, low_res_masks; all four mask
tokens, index 0 the single-mask answer) and manifest.json. A hub id needs internet (and the
`huggingface_hub` cache); a folder is what `SamModel.save_pretrained` writes. --random-config
builds a randomly initialised model of that architecture (for tests and benchmarks: its masks
mean nothing). After exporting, the ONNX files are run against the transformers model on the
same inputs (--no-verify skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

# The bundled model's exporter: its decoder wrapper (reference I/O, one-resize postprocessing)
# and manifest writer, so both exports give the engine the same files.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train-tiny-sam"))
from export import OPSET, DecoderOnnx, write_manifest  # noqa: E402

PROG = "export_hf_sam.py"
EXIT_BAD_INPUT = 2
EXIT_MISMATCH = 3
IMAGE_SIZE = 1024  # the decoder's postprocessing and the agent assume SAM's 1024 frame

# Randomly initialised architectures. vit-b is facebook/sam-vit-base's; tiny keeps SAM's
# interface (256-channel 64x64 embeddings, four mask tokens) with a 2-layer, 32-wide ViT.
RANDOM_CONFIGS = {
    "vit-b": {
        "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
        "prompt_encoder_config": {},
        "mask_decoder_config": {},
    },
    "tiny": {
        "vision_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1], "mlp_dim": 64},
        "prompt_encoder_config": {},
        "mask_decoder_config": {"mlp_dim": 128, "iou_head_hidden_dim": 64},
    },
}


class CheckpointError(Exception):
    """The checkpoint cannot be used: the message says why."""


def load_checkpoint(checkpoint: str):
    path = Path(checkpoint)
    if path.exists() or checkpoint.startswith((".", "/")) or checkpoint.count("/") > 1:
        if not path.is_dir():
            raise CheckpointError(f"--checkpoint {checkpoint}: no such folder (give a SamModel.save_pretrained folder or a hub id like facebook/sam-vit-base)")
        config = path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"--checkpoint {checkpoint}: no config.json; not a transformers checkpoint folder")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except json.JSONDecodeError as err:
            raise CheckpointError(f"--checkpoint {checkpoint}: config.json is not valid JSON ({err})") from err
        if model_type != "sam":
            raise CheckpointError(f"--checkpoint {checkpoint}: model_type is {model_type!r}; this exporter takes SamModel checkpoints (model_type \"sam\")")
    # Imported after the cheap checks: transformers takes seconds to import.
    from transformers import SamModel

    try:
        return SamModel.from_pretrained(checkpoint, attn_implementation="eager")
    except Exception as err:  # transformers raises OSError, ValueError, EnvironmentError... for a bad id
        raise CheckpointError(f"--checkpoint {checkpoint}: cannot be loaded as a SamModel ({type(err).__name__}: {err})") from err


def random_model(kind: str, seed: int):
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    model = SamModel(SamConfig(**RANDOM_CONFIGS[kind], attn_implementation="eager"))
    # transformers initialises the ViT with std 1e-10, which makes every image look the same;
    # trained-like spreads keep activations (and the export check) meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.endswith("positional_embedding"):
                p.normal_(0.0, 0.02)
    return model


class EncoderOnnx(nn.Module):
    """`images` [1,3,1024,1024] (SAM-normalised, padded) -> `image_embeddings` [1,256,64,64]."""

    def __init__(self, sam) -> None:
        super().__init__()
        self.vision = sam.vision_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision(images)[0]


class SamDecode(nn.Module):
    """SamOnnxModel's prompt embedding and `predict_masks` on transformers' modules. The
    transformers decoder's forward returns either mask 0 or masks 1-3 and embeds box corners
    only through its own box input; the reference export takes corners as labels 2/3 in
    `point_labels` and returns all four masks, which is what the agent expects."""

    def __init__(self, sam) -> None:
        super().__init__()
        self.prompt = sam.prompt_encoder
        self.decoder = sam.mask_decoder
        self.register_buffer("image_pe", sam.get_image_wide_positional_embeddings().detach())

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt.shared_embedding((coords + 0.5)[:, None], (IMAGE_SIZE, IMAGE_SIZE))[:, 0]
        labels = labels[..., None]
        pe = pe * (labels != -1) + self.prompt.not_a_point_embed.weight * (labels == -1)
        for i, embed in enumerate(self.prompt.point_embed):
            pe = pe + embed.weight * (labels == i)
        return pe

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        """-> low-res mask logits [B, 4, 256, 256] and predicted IoUs [B, 4]."""
        sparse = self.embed_points(point_coords, point_labels)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * self.prompt.mask_embed(mask_input) + (1 - has) * self.prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dec = self.decoder
        b = sparse.shape[0]
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.expand(b, -1, -1), sparse], dim=1)[:, None]  # [B, 1, T, C]
        src = (image_embeddings + dense).expand(b, -1, -1, -1)
        queries, keys = dec.transformer(
            point_embeddings=tokens,
            image_embeddings=src,
            image_positional_embeddings=self.image_pe.expand(b, -1, -1, -1),
            attention_similarity=None,
        )
        _, c, h, w = src.shape
        upscaled = dec.upscale_conv1(keys.transpose(2, 3).reshape(b, c, h, w))
        upscaled = dec.activation(dec.upscale_conv2(dec.activation(dec.upscale_layer_norm(upscaled))))
        hyper = torch.stack([mlp(queries[:, 0, 1 + i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        _, uc, uh, uw = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
        return masks, dec.iou_prediction_head(queries[:, 0, 0])


def export(sam, out: Path, name: str) -> list[Path]:
    sam.eval()
    out.mkdir(parents=True, exist_ok=True)
    enc_path = out / f"{name}.encoder.onnx"
    with torch.no_grad():
        torch.onnx.export(
            EncoderOnnx(sam),
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            enc_path,
            input_names=["images"],
            output_names=["image_embeddings"],
            opset_version=OPSET,
            dynamo=False,
        )
    side = sam.config.prompt_encoder_config.image_embedding_size
    channels = sam.config.mask_decoder_config.hidden_size
    inputs = (
        torch.randn(1, channels, side, side),
        torch.randint(0, IMAGE_SIZE, (1, 5, 2)).float(),
        torch.tensor([[1, 0, 2, 3, -1]], dtype=torch.float32),
        torch.randn(1, 1, 4 * side, 4 * side),
        torch.tensor([1], dtype=torch.float32),
        torch.tensor([1500, 2250], dtype=torch.float32),
    )
    names = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
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
        with torch.no_grad():
            torch.onnx.export(
                DecoderOnnx(SamDecode(sam)),
                inputs,
                path,
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        paths.append(path)
    return paths


def verify(sam, paths: list[Path]) -> list[str]:
    """Runs the exported files and transformers on the same image and prompts; returns what
    disagrees (nothing when the export is faithful)."""
    problems = []

    def compare(what: str, got: np.ndarray, want: torch.Tensor) -> None:
        want = want.detach().numpy()
        if got.shape != want.shape:
            problems.append(f"{what}: shape {got.shape}, transformers {want.shape}")
            return
        scale = max(1.0, float(np.abs(want).max()))
        diff = float(np.abs(got - want).max())
        if diff > 1e-3 * scale:
            problems.append(f"{what}: differs from transformers by up to {diff:.3g} (values up to {scale:.3g})")

    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    encoder = ort.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(paths[1]), providers=["CPUExecutionProvider"])
    emb = encoder.run(None, {"images": image.numpy()})[0]
    with torch.no_grad():
        want_emb = sam.get_image_embeddings(image)
        compare("image_embeddings", emb, want_emb)
        side = 4 * sam.config.prompt_encoder_config.image_embedding_size
        click, box = [[412.0, 301.0]], [[200.0, 150.0, 700.0, 620.0]]
        for what, coords, labels, kwargs, picked in (
            ("1-click multimask", click + [[0.0, 0.0]], [1, -1], {"input_points": torch.tensor([[click]]), "input_labels": torch.tensor([[[1]]]), "multimask_output": True}, slice(1, None)),
            ("box single mask", [box[0][:2], box[0][2:]], [2, 3], {"input_boxes": torch.tensor([box]), "multimask_output": False}, slice(0, 1)),
        ):
            feeds = {
                "image_embeddings": emb,
                "point_coords": np.array([coords], np.float32),
                "point_labels": np.array([labels], np.float32),
                "mask_input": np.zeros((1, 1, side, side), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array([480, 640], np.float32),
            }
            masks, scores, low = decoder.run(None, feeds)
            want = sam(image_embeddings=want_emb, **kwargs)
            compare(f"{what} low_res_masks", low[:, picked], want.pred_masks[:, 0])
            compare(f"{what} iou_predictions", scores[:, picked], want.iou_scores[:, 0])
            if masks.shape[-2:] != (480, 640):
                problems.append(f"{what} masks: shape {masks.shape}, expected [..,480,640] (orig_im_size)")
    return problems


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a SamModel folder (save_pretrained) or a hub id such as facebook/sam-vit-base")
    src.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS), help="a randomly initialised model of this architecture")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--name", help="file name prefix (default: the --out folder's name)")
    ap.add_argument("--seed", type=int, default=0, help="for --random-config")
    ap.add_argument("--no-verify", action="store_true", help="skip running the export against transformers")
    args = ap.parse_args(argv)

    try:
        sam = load_checkpoint(args.checkpoint) if args.checkpoint else random_model(args.random_config, args.seed)
    except CheckpointError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    if sam.config.vision_config.image_size != IMAGE_SIZE:
        print(f"{PROG}: the checkpoint's image_size is {sam.config.vision_config.image_size}; the agent's layout is SAM's {IMAGE_SIZE}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)

    name = args.name or args.out.name
    paths = export(sam, args.out, name)
    if args.checkpoint:
        source = f"transformers SamModel {args.checkpoint}, exported by scripts/export/export_hf_sam.py"
    else:
        source = f"RANDOM WEIGHTS (seed {args.seed}), transformers SamModel {args.random_config} architecture, scripts/export/export_hf_sam.py: masks mean nothing"
    write_manifest(args.out, name, paths, source)
    for p in paths:
        print(p, p.stat().st_size)
    if not args.no_verify:
        problems = verify(sam, paths)
        if problems:
            print(f"{PROG}: the ONNX files do not match transformers: {'; '.join(problems)}", file=sys.stderr)
            raise SystemExit(EXIT_MISMATCH)
        print(f"{PROG}: verified against transformers (embeddings, 1-click and box masks and scores)", file=sys.stderr)


if __name__ == "__main__":
    main()
