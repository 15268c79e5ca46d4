"""Test fixtures for the agent's model layouts: for each SAM-family project, a small
randomly initialised model exported by that project's own export code, in the folder layout
its users get, and golden masks from that project's own Python predictor.

    python make_layouts.py --upstream /path/to/upstream --out ../../../test/fixtures

`--upstream` holds the upstream repositories (see upstream.py). Writes, under --out:

    layouts/<layout>/...           the exported files, named and placed as the publisher does
    parity/images/*.png            the test images: 1024x1024 (no resize for any layout), 640x480
    parity/<layout>/golden.json    per case: image, prompt, multimask flag, the predictor's scores
    parity/<layout>/*.png          the predictor's masks for that case, stacked top to bottom

Takes a few minutes on two cores. The masks of random weights mean nothing; what is compared is
that the agent's engine, given the same files, image and prompt, gives the masks the project's
predictor gives.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream  # noqa: E402

SQUARE = "square.png"
WIDE = "wide.png"


def scene(width: int, height: int) -> Image.Image:
    """Flat shapes on a gradient: anything segments them, and the PNG stays small."""
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = (np.concatenate([60 + 80 * x + 0 * y, 90 + 60 * y + 0 * x, 140 - 50 * x + 30 * y], axis=2)).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    d = ImageDraw.Draw(img)
    s = min(width, height) / 1024
    d.ellipse([int(150 * s), int(160 * s), int(420 * s), int(430 * s)], fill=(230, 70, 60))
    d.rectangle([int(560 * s), int(120 * s), int(900 * s), int(380 * s)], fill=(40, 180, 90))
    d.polygon([(int(200 * s), int(900 * s)), (int(480 * s), int(520 * s)), (int(700 * s), int(900 * s))], fill=(250, 220, 50))
    d.ellipse([int(720 * s), int(560 * s), int(960 * s), int(960 * s)], fill=(70, 60, 200))
    return img


def cases_for(width: int, height: int) -> list[dict]:
    """The prompts of the issue: a click, clicks, a box, and a click refined with the click's mask."""
    s = min(width, height) / 1024
    p = lambda x, y: [round(x * s, 1), round(y * s, 1)]  # noqa: E731
    return [
        {"name": "click", "points": [p(285, 295)], "labels": [1]},
        {"name": "clicks", "points": [p(650, 200), p(820, 300), p(300, 300)], "labels": [1, 1, 0]},
        {"name": "box", "box": p(190, 510) + p(710, 910)},
        {"name": "mask", "points": [p(285, 295)], "labels": [1], "mask_from": "click"},
    ]


# ------------------------------------------------------------------------------------------
# The reference predictors. Each returns (scores [M], logits [M,H,W] at the original size, low-res [M,256,256]).


def sam_predict(predictor, case, multimask, mask_input):
    coords = np.array(case["points"], np.float32) if "points" in case else None
    labels = np.array(case["labels"], np.int32) if "points" in case else None
    box = np.array(case["box"], np.float32) if "box" in case else None
    masks, scores, low = predictor.predict(point_coords=coords, point_labels=labels, box=box, mask_input=mask_input, multimask_output=multimask, return_logits=True)
    return scores, masks, low


def edge_sam_predict(predictor, case, multimask, mask_input):
    coords = np.array(case["points"], np.float32) if "points" in case else None
    labels = np.array(case["labels"], np.int32) if "points" in case else None
    box = np.array(case["box"], np.float32) if "box" in case else None
    masks, scores, low = predictor.predict(point_coords=coords, point_labels=labels, box=box, mask_input=mask_input, num_multimask_outputs=3 if multimask else 1, return_logits=True)
    return scores, masks, low


def efficient_sam_predict(model, image, case):
    """EfficientSAM has no predictor class: its README's EfficientSAM_example.py calls the model."""
    import torch
    from torchvision import transforms

    points = list(case.get("points", [])) + ([case["box"][:2], case["box"][2:]] if "box" in case else [])
    labels = list(case.get("labels", [])) + ([2, 3] if "box" in case else [])
    with torch.no_grad():
        logits, iou = model(transforms.ToTensor()(image)[None], torch.tensor([[points]], dtype=torch.float32), torch.tensor([[labels]], dtype=torch.float32))
    return iou[0, 0].numpy(), logits[0, 0].numpy(), None


def hf_predict(model, processor, image, case, mask_input=None):
    import torch

    kwargs = {}
    if "points" in case:
        kwargs["input_points"] = [[[list(map(float, pt)) for pt in case["points"]]]]
        kwargs["input_labels"] = [[case["labels"]]]
    if "box" in case:
        kwargs["input_boxes"] = [[list(map(float, case["box"]))]]
    inputs = processor(images=image, return_tensors="pt", **kwargs)
    with torch.no_grad():
        out = model(**{k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")}, multimask_output=True)
    sizes = [inputs["original_sizes"], *([inputs["reshaped_input_sizes"]] if "reshaped_input_sizes" in inputs else [])]
    masks = processor.post_process_masks(out.pred_masks, *sizes, binarize=False)[0][0]
    return out.iou_scores[0, 0].numpy(), masks.numpy(), out.pred_masks[0, 0].numpy()


# ------------------------------------------------------------------------------------------


def write_case(dest: Path, image_name: str, case: dict, multimask: bool, scores, logits) -> dict:
    order = np.argsort(-np.asarray(scores), kind="stable")
    masks = (np.asarray(logits)[order] > 0).astype(np.uint8) * 255
    name = f"{Path(image_name).stem}-{case['name']}.png"
    Image.fromarray(masks.reshape(-1, masks.shape[-1]), "L").save(dest / name, optimize=True)
    prompt = {k: case[k] for k in ("points", "labels", "box") if k in case}
    if "mask_from" in case:
        prompt["mask_from"] = case["mask_from"]
    return {"image": image_name, "case": case["name"], "prompt": prompt, "multimask": multimask, "scores": [round(float(scores[i]), 5) for i in order], "masks": name}


def sam_family_cases(predict, predictor, images: dict, single_mask: bool = False, mask_input: bool = True) -> list[tuple]:
    """Runs SamPredictor-style predictors. A lone click is multimask (SAM's rule, the engine's
    default); with a decoder exported --return-single-mask the expectation is the mask
    SamOnnxModel.select_masks picks: the best multimask answer for one or two prompt points
    (a click and its padding point, or a box's two corners), the single-mask answer for more.
    `mask_input=False` for exports without one (EdgeSAM's decoder takes no mask)."""
    takes_mask = mask_input
    out = []
    for image_name, image in images.items():
        predictor.set_image(np.asarray(image))
        best_low = {}
        for case in cases_for(*image.size):
            if "mask_from" in case and not takes_mask:
                continue
            mask_input = best_low[case["mask_from"]][None] if "mask_from" in case else None
            lone = len(case.get("points", [])) == 1 and "box" not in case and mask_input is None
            if single_mask:
                n = len(case.get("points", [])) + (2 if "box" in case else 1)
                ms, mm, ml = predict(predictor, case, True, mask_input)
                ss, sm, sl = predict(predictor, case, False, mask_input)
                if n <= 2:
                    k = int(np.argmax(ms))
                    scores, logits, low = ms[k : k + 1], mm[k : k + 1], ml[k : k + 1]
                else:
                    scores, logits, low = ss, sm, sl
                multimask = False
            else:
                multimask = lone
                scores, logits, low = predict(predictor, case, multimask, mask_input)
            best_low[case["name"]] = low[int(np.argmax(scores))]
            out.append((image_name, case, multimask, scores, logits))
    return out


def multimask_cases(run, images: dict, mask_input: bool, boxes: bool) -> list[tuple]:
    """For decoders exported with multimask output only: every case asks for the three masks."""
    out = []
    for image_name, image in images.items():
        best_low = {}
        for case in cases_for(*image.size):
            if ("mask_from" in case and not mask_input) or ("box" in case and not boxes):
                continue
            low_in = best_low[case["mask_from"]] if "mask_from" in case else None
            scores, logits, low = run(image_name, image, case, low_in)
            if low is not None:
                best_low[case["name"]] = low[int(np.argmax(scores))]
            out.append((image_name, case, True, scores, logits))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="test/fixtures")
    ap.add_argument("--only", nargs="*", help="layouts to make (default: all)")
    args = ap.parse_args()
    upstream.setup(args.upstream)
    import torch

    import models

    torch.set_num_threads(2)
    images_dir = args.out / "parity" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images = {SQUARE: scene(1024, 1024), WIDE: scene(640, 480)}
    for name, img in images.items():
        img.save(images_dir / name, optimize=True)
    # Read back, so the predictors see exactly the decoded pixels the engine sees.
    images = {name: Image.open(images_dir / name).convert("RGB") for name in images}

    def sam_predictor(module, sam):
        return module.SamPredictor(sam)

    layouts = {}

    def layout(name):
        def register(fn):
            layouts[name] = fn
            return fn

        return register

    @layout("sam-samexporter")
    def _(folder):
        """samexporter's README: output_models/ with a ViT encoder exported --use-preprocess and a
        decoder --return-single-mask, both also --quantize-out (two models in one folder)."""
        from segment_anything import SamPredictor
        from segment_anything.utils import onnx as sam_onnx

        sam = models.build_sam(tiny=True)
        out = folder / "output_models"
        enc = models.export_samexporter_encoder(sam, out / "sam_vit_t16.encoder.onnx", use_preprocess=True)
        dec = models.export_sam_decoder(sam, out / "sam_vit_t16.decoder.onnx", sam_onnx, return_single_mask=True, opset=18)
        models.quantize(enc, out / "sam_vit_t16.encoder.quant.onnx")
        models.quantize(dec, out / "sam_vit_t16.decoder.quant.onnx")
        meta = {"dir": "output_models", "model": "sam_vit_t16", "reference": "segment_anything.SamPredictor"}
        return meta, sam_family_cases(sam_predict, SamPredictor(sam), images, single_mask=True)

    @layout("sam-official")
    def _(folder):
        """segment-anything's scripts/export_onnx_model.py decoder (sam_onnx_example.onnx, the
        script's defaults: all four masks) beside a samexporter encoder without preprocessing."""
        from segment_anything import SamPredictor
        from segment_anything.utils import onnx as sam_onnx

        sam = models.build_sam(tiny=True)
        models.export_samexporter_encoder(sam, folder / "sam_vit_t16.encoder.onnx", use_preprocess=False)
        models.export_sam_decoder(sam, folder / "sam_onnx_example.onnx", sam_onnx, return_single_mask=False, opset=17)
        return {"reference": "segment_anything.SamPredictor"}, sam_family_cases(sam_predict, SamPredictor(sam), images)

    @layout("mobile-sam")
    def _(folder):
        """MobileSAM's README: its scripts/export_onnx_model.py decoder as mobile_sam.onnx, with
        samexporter's encoder export of the TinyViT (mobile_sam.encoder.onnx)."""
        from mobile_sam import SamPredictor
        from mobile_sam.utils import onnx as mobile_onnx

        sam = models.build_mobile_sam(tiny=True)
        models.export_samexporter_encoder(sam, folder / "mobile_sam.encoder.onnx", use_preprocess=False)
        models.export_sam_decoder(sam, folder / "mobile_sam.onnx", mobile_onnx, return_single_mask=False, opset=16)
        return {"reference": "mobile_sam.SamPredictor"}, sam_family_cases(sam_predict, SamPredictor(sam), images)

    @layout("edge-sam")
    def _(folder):
        """EdgeSAM's scripts/export_onnx_model.py: edge_sam_3x_encoder.onnx, edge_sam_3x_decoder.onnx."""
        from edge_sam.predictor import SamPredictor

        sam = models.build_edge_sam(tiny=True)
        predictor = SamPredictor(sam)
        models.export_edge_sam(sam, folder / "edge_sam_3x_encoder.onnx", folder / "edge_sam_3x_decoder.onnx")
        return {"reference": "edge_sam.SamPredictor"}, sam_family_cases(edge_sam_predict, predictor, images, mask_input=False)

    @layout("efficient-sam")
    def _(folder):
        """EfficientSAM's export_to_onnx.py: weights/efficient_sam_vitt{,_encoder,_decoder}.onnx
        (the first is encoder and decoder in one graph, which the agent lists but does not load)."""
        sam = models.build_efficient_sam(tiny=True)
        models.export_efficient_sam(sam, folder / "weights", "efficient_sam_vitt")
        run = lambda _name, image, case, _low: efficient_sam_predict(sam, image, case)  # noqa: E731
        return {"dir": "weights", "reference": "EfficientSam.forward (EfficientSAM_example.py)"}, multimask_cases(run, images, mask_input=False, boxes=True)

    @layout("sam2-samexporter")
    def _(folder):
        """samexporter's export_sam2.py: output_models/sam2.1_hiera_tiny.{encoder,decoder}.onnx."""
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        model = models.build_sam2("tiny")
        out = folder / "output_models"
        models.export_samexporter_sam2(model, out / "sam2.1_hiera_t16.encoder.onnx", out / "sam2.1_hiera_t16.decoder.onnx")
        predictor = SAM2ImagePredictor(model)
        current = {}

        def run(name, image, case, low):
            if current.get("image") != name:
                predictor.set_image(np.asarray(image))
                current["image"] = name
            coords = np.array(case["points"], np.float32) if "points" in case else None
            labels = np.array(case["labels"], np.int32) if "points" in case else None
            box = np.array(case["box"], np.float32) if "box" in case else None
            masks, scores, lows = predictor.predict(point_coords=coords, point_labels=labels, box=box, mask_input=None if low is None else low[None],
                                                    multimask_output=True, return_logits=True)
            return scores, masks, lows

        return {"dir": "output_models", "reference": "sam2.sam2_image_predictor.SAM2ImagePredictor"}, multimask_cases(run, images, mask_input=True, boxes=True)

    @layout("hf-sam")
    def _(folder):
        """transformers.js / optimum layout of SAM and SlimSAM (Xenova/slimsam-77-uniform):
        onnx/vision_encoder{,_quantized}.onnx, onnx/prompt_encoder_mask_decoder{,_quantized}.onnx
        and the processor's config. Points only: the export takes no boxes and no mask input."""
        from transformers import SamImageProcessor, SamProcessor

        model = models.build_hf_sam("tiny")
        models.export_hf_sam(model, folder)
        for part in ("vision_encoder", "prompt_encoder_mask_decoder"):
            models.quantize(folder / "onnx" / f"{part}.onnx", folder / "onnx" / f"{part}_quantized.onnx")
        model.config.save_pretrained(folder)
        processor = SamProcessor(image_processor=SamImageProcessor())
        processor.save_pretrained(folder)
        run = lambda _name, image, case, low: hf_predict(model, processor, image, case)  # noqa: E731
        return {"model": "fp32", "reference": "transformers SamModel + SamProcessor"}, multimask_cases(run, images, mask_input=False, boxes=False)

    @layout("hf-sam2")
    def _(folder):
        """onnx-community's SAM 2.1 layout (onnx-community/sam2.1-hiera-tiny-ONNX): onnx/vision_encoder.onnx
        and onnx/prompt_encoder_mask_decoder.onnx (the quantized twins, as hf-sam shows them, are
        left out to keep the fixtures small)."""
        from transformers import Sam2ImageProcessor, Sam2Processor

        model = models.build_hf_sam2("tiny")
        models.export_hf_sam2(model, folder)
        model.config.save_pretrained(folder)
        processor = Sam2Processor(image_processor=Sam2ImageProcessor())
        processor.save_pretrained(folder)
        run = lambda _name, image, case, low: hf_predict(model, processor, image, case)  # noqa: E731
        return {"reference": "transformers Sam2Model + Sam2Processor"}, multimask_cases(run, images, mask_input=False, boxes=True)

    for name, make in layouts.items():
        if args.only and name not in args.only:
            continue
        folder = args.out / "layouts" / name
        dest = args.out / "parity" / name
        for d in (folder, dest):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        print(f"{name}: exporting and predicting", flush=True)
        meta, results = make(folder)
        cases = [write_case(dest, *r) for r in results]
        (dest / "golden.json").write_text(json.dumps({"layout": name, **meta, "cases": cases}, indent=1) + "\n")
        print(f"{name}: {len(cases)} cases", flush=True)


if __name__ == "__main__":
    main()
