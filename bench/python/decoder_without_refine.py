"""How much faster the bundled decoder gets without its 256x256 refinement, before training one.

    python3 bench/python/decoder_without_refine.py [MODEL_DIR]

The decoder's time goes to its 256x256 stages (`profile_decoder.py`). Without the refinement
convolution after the upscaling, everything from `up2` on is linear, so the hypernetwork's
weights fold into `up2` and into the detail projection, and each of the four masks comes out of
two pixel-shuffles of 4-channel maps instead of the 8-channel feature map being built at
256x256 first. That variant needs training (dropping the refinement changes the masks), so this
script only times it: it rebuilds the model from MODEL_DIR's ONNX files (`from_onnx.py`),
exports the variant with those weights, and runs both decoders in alternating blocks with
onnxruntime (2 threads). Prints JSON: medians, their ratio, and the masks' largest difference
(non-zero: the variant's masks are not the shipped model's until it is trained).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "train-tiny-sam"))

from export import export  # noqa: E402
from from_onnx import load_decoder, load_encoder  # noqa: E402
from model import CONTEXT_CH, DETAIL_CH, GRID, MaskDecoder, TinySam  # noqa: E402
from profile_decoder import decoder_feeds  # noqa: E402


class FoldedDecoder(MaskDecoder):
    """MaskDecoder without `refine`, the hypernetwork folded into the last linear maps."""

    def forward(self, embeddings, pos, sparse, dense, image_index=None):
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        context, detail = embeddings[:, :CONTEXT_CH], embeddings[:, CONTEXT_CH:]
        src = (context + dense).expand(b, -1, -1, -1)
        hs, src_out = self.transformer(src, pos.unsqueeze(0).expand(b, -1, -1, -1), tokens)
        m = self.num_mask_tokens
        hyper = torch.stack([self.hypernet[i](hs[:, 1 + i]) for i in range(m)], dim=1)  # [B, 4, 8]
        x = F.gelu(self.up1_norm(F.pixel_shuffle(self.up1(src_out.transpose(1, 2).reshape(b, -1, GRID, GRID)), 2)))
        # up2's output channel c*4 + s (sub-pixel s) meets hypernetwork weight c of each mask.
        up2 = self.up2.weight.reshape(-1, 4, x.shape[1])
        weight = torch.einsum("bmc,csi->bmsi", hyper, up2).reshape(b, m * 4, -1)
        bias = torch.einsum("bmc,cs->bms", hyper, self.up2.bias.reshape(-1, 4)).reshape(b, m * 4, 1)
        up = F.pixel_shuffle((weight @ x.flatten(2) + bias).reshape(b, m * 4, 2 * GRID, 2 * GRID), 2)
        # The folded detail map's channel c*16 + S is sub-pixel S of detail channel c.
        proj = hyper @ self.detail_proj.weight.reshape(-1, DETAIL_CH)
        fine = proj @ detail.reshape(detail.shape[0], DETAIL_CH, -1) + (hyper @ self.detail_proj.bias)[..., None]
        fine = F.pixel_shuffle(fine.reshape(b, m * 16, GRID, GRID), 4)
        return up + fine, self.iou_head(hs[:, 0])


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "models" / "tiny-sam")
    model = TinySam()
    load_encoder(model, model_dir / "tiny-sam.encoder.onnx")
    load_decoder(model, model_dir / "tiny-sam.decoder.onnx")
    model.eval()
    model.mask_decoder.__class__ = FoldedDecoder
    with tempfile.TemporaryDirectory() as tmp:
        variant = export(model, Path(tmp))[1]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sessions = {name: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for name, p in (("shipped", model_dir / "tiny-sam.decoder.onnx"), ("without_refine", variant))}
    f = decoder_feeds()
    outs = {name: s.run(None, f) for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(10):
        for name, s in sessions.items():
            for _ in range(3):
                s.run(None, f)
            for _ in range(20):
                t = time.perf_counter()
                s.run(None, f)
                times[name].append((time.perf_counter() - t) * 1000)
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(
        json.dumps(
            {
                "decoder_median_ms": {k: round(v, 2) for k, v in median.items()},
                "without_refine_over_shipped": round(median["without_refine"] / median["shipped"], 3),
                "low_res_masks_max_abs_diff": float(np.abs(outs["shipped"][2] - outs["without_refine"][2]).max()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
