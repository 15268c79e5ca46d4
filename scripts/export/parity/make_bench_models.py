"""Random-weight models of the published architectures, for bench/model-latency.ts: the same
compute as the released weights (masks that mean nothing), each exported by its project's own
export code in its publisher's layout, in float and with 8-bit weights (onnxruntime's dynamic
quantisation, as samexporter's --quantize-out and transformers.js's *_quantized files are made).

    python make_bench_models.py --upstream /path/to/upstream --out .cache/bench-models [--only NAME ...]

Writes <out>/<name>/ and <out>/<name>-int8/ for sam-vit-b, mobile-sam, edge-sam,
efficient-sam-ti, sam2.1-tiny, sam2.1-small and slimsam-77 (~1.5 GB in all: not for git).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    upstream.setup(args.upstream)
    import torch

    import models

    torch.set_num_threads(2)

    def sam_vit_b(out: Path) -> list[Path]:
        from segment_anything.utils import onnx as sam_onnx

        sam = models.build_sam(tiny=False)
        return [models.export_samexporter_encoder(sam, out / "sam_vit_b.encoder.onnx", use_preprocess=False),
                models.export_sam_decoder(sam, out / "sam_vit_b.decoder.onnx", sam_onnx, return_single_mask=False, opset=17)]

    def mobile_sam(out: Path) -> list[Path]:
        from mobile_sam.utils import onnx as mobile_onnx

        sam = models.build_mobile_sam(tiny=False)
        return [models.export_samexporter_encoder(sam, out / "mobile_sam.encoder.onnx", use_preprocess=False),
                models.export_sam_decoder(sam, out / "mobile_sam.onnx", mobile_onnx, return_single_mask=False, opset=16)]

    def edge_sam(out: Path) -> list[Path]:
        sam = models.build_edge_sam(tiny=False)
        models.export_edge_sam(sam, out / "edge_sam_3x_encoder.onnx", out / "edge_sam_3x_decoder.onnx")
        return [out / "edge_sam_3x_encoder.onnx", out / "edge_sam_3x_decoder.onnx"]

    def efficient_sam(out: Path) -> list[Path]:
        sam = models.build_efficient_sam(tiny=False)
        models.export_efficient_sam(sam, out / "weights", "efficient_sam_vitt")
        (out / "weights" / "efficient_sam_vitt.onnx").unlink()  # the one-graph model: not what the agent runs
        return [out / "weights" / "efficient_sam_vitt_encoder.onnx", out / "weights" / "efficient_sam_vitt_decoder.onnx"]

    def sam2(size: str):
        def make(out: Path) -> list[Path]:
            model = models.build_sam2(size)
            models.export_samexporter_sam2(model, out / f"sam2.1_hiera_{size}.encoder.onnx", out / f"sam2.1_hiera_{size}.decoder.onnx")
            return [out / f"sam2.1_hiera_{size}.encoder.onnx", out / f"sam2.1_hiera_{size}.decoder.onnx"]

        return make

    def slimsam(out: Path) -> list[Path]:
        model = models.build_hf_sam("slimsam-77")
        models.export_hf_sam(model, out)
        return [out / "onnx" / "vision_encoder.onnx", out / "onnx" / "prompt_encoder_mask_decoder.onnx"]

    makers = {"sam-vit-b": sam_vit_b, "mobile-sam": mobile_sam, "edge-sam": edge_sam, "efficient-sam-ti": efficient_sam,
              "sam2.1-tiny": sam2("t"), "sam2.1-small": sam2("s"), "slimsam-77": slimsam}
    for name, make in makers.items():
        if args.only and name not in args.only:
            continue
        out = args.out / name
        print(f"{name}: exporting", flush=True)
        paths = make(out)
        quant = args.out / f"{name}-int8"
        for p in paths:
            dest = quant / p.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            models.quantize(p, dest)
        print(f"{name}: {', '.join(f'{p.name} {p.stat().st_size / 1e6:.1f} MB' for p in paths)}", flush=True)


if __name__ == "__main__":
    main()
