"""Randomly initialised models of each SAM-family architecture, built from the upstream projects'
own classes (see upstream.py), and their ONNX exports made with each project's own export code.

`tiny=True` gives the test fixtures: the same modules and graph layout, narrowed to 16 channels
with one or two blocks per stage, so each model is a few hundred kB. `tiny=False` gives the
published architecture (SAM ViT-B, MobileSAM, EdgeSAM, EfficientSAM-Ti, SAM 2.1 tiny/small,
SlimSAM) for benchmarks: same compute as the released weights, masks that mean nothing.

Current torch (2.13) makes the dynamo exporter the default of torch.onnx.export; the upstream
scripts were written for the TorchScript exporter, so every export here passes dynamo=False (the
upstream call otherwise unchanged: names, dynamic axes, opset).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

TINY = 16  # channels of the fixtures' prompt encoder, mask decoder and image embeddings
SEED = 0


def _seeded(seed: int) -> None:
    """Each builder starts from its own seed: the weights are each project's own initialisers."""
    torch.manual_seed(seed)


def _spread(model: nn.Module, std: float = 0.02) -> nn.Module:
    """transformers initialises SAM's ViT with a tiny std, which makes every image look the same;
    trained-like spreads keep the masks image-dependent (as scripts/export/export_hf_sam.py does).
    SAM 2's narrow fixture needs a wider one: at 0.02 its mask logits are all within 1e-4 of 0,
    where float rounding alone decides the sign of most pixels."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "positional_embedding" not in name:
                p.normal_(0.0, std)
    return model.eval()


def _sam_heads(modeling, dim: int, tiny: bool, **decoder_kwargs):
    """SAM's prompt encoder and mask decoder (the same modules in SAM, MobileSAM and EdgeSAM)."""
    prompt = modeling.PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=4 if tiny else 16)
    decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64 if tiny else 2048, num_heads=2 if tiny else 8),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=32 if tiny else 256,
        **decoder_kwargs,
    )
    return prompt, decoder


SAM_MEAN = [123.675, 116.28, 103.53]
SAM_STD = [58.395, 57.12, 57.375]


def build_sam(tiny: bool):
    """segment-anything's Sam with a ViT image encoder (ViT-B's dimensions when not tiny)."""
    from segment_anything import modeling

    _seeded(SEED)
    if tiny:
        encoder = modeling.ImageEncoderViT(
            depth=2, embed_dim=TINY, img_size=1024, mlp_ratio=2, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=16,
            qkv_bias=True, use_rel_pos=True, use_abs_pos=False, global_attn_indexes=[1], window_size=14, out_chans=TINY,
        )
    else:
        encoder = modeling.ImageEncoderViT(
            depth=12, embed_dim=768, img_size=1024, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=12, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=[2, 5, 8, 11], window_size=14, out_chans=256,
        )
    prompt, decoder = _sam_heads(modeling, TINY if tiny else 256, tiny)
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder, pixel_mean=SAM_MEAN, pixel_std=SAM_STD).eval()


def build_mobile_sam(tiny: bool):
    """MobileSAM: SAM's heads on a TinyViT encoder (its 5M-parameter one when not tiny)."""
    from mobile_sam import modeling
    from mobile_sam.modeling.common import LayerNorm2d

    _seeded(SEED + 1)
    if tiny:
        encoder = modeling.TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[8, 16, 16, TINY], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                   window_sizes=[7, 7, 14, 7], mlp_ratio=2.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
                                   mbconv_expand_ratio=2.0, local_conv_size=3, layer_lr_decay=0.8)
        # TinyViT keeps the last stage at 64x64 only for the widths it ships (PatchMerging: stride 1
        # when out_dim is 320, 448 or 576), and its neck is written 256 wide: the fixture narrows both.
        encoder.layers[2].downsample.conv2.c.stride = (1, 1)
        encoder.neck = nn.Sequential(nn.Conv2d(TINY, TINY, 1, bias=False), LayerNorm2d(TINY), nn.Conv2d(TINY, TINY, 3, padding=1, bias=False), LayerNorm2d(TINY))
    else:
        encoder = modeling.TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                                   window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
                                   mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    prompt, decoder = _sam_heads(modeling, TINY if tiny else 256, tiny)
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder, pixel_mean=SAM_MEAN, pixel_std=SAM_STD).eval()


def build_edge_sam(tiny: bool):
    """EdgeSAM: SAM's heads on a RepViT-m1 encoder (fused stages 2 and 3, bilinear upsampling as its ONNX export builds it)."""
    from edge_sam import modeling
    from edge_sam.modeling.common import LayerNorm2d, OpSequential, UpSampleLayer
    from edge_sam.modeling.rep_vit import RepViT

    _seeded(SEED + 2)
    if tiny:
        # k, t, c, SE, HS, s: one block per stage of m1's four.
        RepViT.arch_settings["tiny"] = [[3, 2, 8, 1, 0, 1], [3, 2, 16, 0, 0, 2], [3, 2, 24, 0, 1, 2], [3, 2, TINY, 0, 1, 2]]
        encoder = RepViT("tiny", img_size=1024, fuse=True, upsample_mode="bilinear")
        encoder.fuse_stage2 = nn.Conv2d(24, TINY, kernel_size=1, bias=False)
        encoder.fuse_stage3 = OpSequential([nn.Conv2d(TINY, TINY, kernel_size=1, bias=False), UpSampleLayer(factor=2, mode="bilinear")])
        encoder.neck = nn.Sequential(nn.Conv2d(TINY, TINY, 1, bias=False), LayerNorm2d(TINY), nn.Conv2d(TINY, TINY, 3, padding=1, bias=False), LayerNorm2d(TINY))
    else:
        encoder = RepViT("m1", img_size=1024, fuse=True, upsample_mode="bilinear")
    prompt, decoder = _sam_heads(modeling, TINY if tiny else 256, tiny)
    sam = modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder, pixel_mean=SAM_MEAN, pixel_std=SAM_STD)
    return sam.eval()


def build_efficient_sam(tiny: bool):
    """EfficientSAM-Ti (ViT-T, 192 wide) from its own build function's settings."""
    from efficient_sam.efficient_sam import EfficientSam
    from efficient_sam.efficient_sam_decoder import MaskDecoder, PromptEncoder
    from efficient_sam.efficient_sam_encoder import ImageEncoderViT
    from efficient_sam.two_way_transformer import TwoWayTransformer

    _seeded(SEED + 3)
    width, depth, heads, neck = (TINY, 2, 2, [TINY, TINY]) if tiny else (192, 12, 3, [256, 256])
    encoder = ImageEncoderViT(img_size=1024, patch_size=16, in_chans=3, patch_embed_dim=width, normalization_type="layer_norm", depth=depth,
                              num_heads=heads, mlp_ratio=2.0 if tiny else 4.0, neck_dims=neck, act_layer=nn.GELU)
    dim = encoder.transformer_output_dim
    sam = EfficientSam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024)),
        decoder_max_num_input_points=6,
        mask_decoder=MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=2 if tiny else 8, mlp_dim=64 if tiny else 2048, activation=nn.GELU,
                                          normalize_before_activation=False),
            num_multimask_outputs=3, activation=nn.GELU, normalization_type="layer_norm", normalize_before_activation=False, iou_head_depth=2,
            iou_head_hidden_dim=32 if tiny else 256, upscaling_layer_dims=[8, 4] if tiny else [64, 32],
        ),
        pixel_mean=[0.485, 0.456, 0.406],
        pixel_std=[0.229, 0.224, 0.225],
    )
    return sam.eval()


# SAM 2.1's Hiera trunks (configs/sam2.1/sam2.1_hiera_{t,s}.yaml); "tiny" is the fixtures'.
HIERA = {
    "tiny": dict(embed_dim=8, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3], window_pos_embed_bkg_spatial_size=[7, 7]),
    "t": dict(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9], window_pos_embed_bkg_spatial_size=[7, 7]),
    "s": dict(embed_dim=96, num_heads=1, stages=[1, 2, 11, 2], global_att_blocks=[7, 10, 13], window_pos_embed_bkg_spatial_size=[7, 7]),
}


def build_sam2(size: str):
    """SAM 2.1 image model from sam2's classes with the values of its Hydra configs (Hydra is
    not installed here; the YAML's _target_ classes are built directly)."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
    from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam.transformer import RoPEAttention, TwoWayTransformer
    from sam2.modeling.sam2_base import SAM2Base

    _seeded(SEED + 4)
    tiny = size == "tiny"
    d = TINY if tiny else 256
    trunk = Hiera(**HIERA[size])
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None, temperature=10000),
        d_model=d, backbone_channel_list=trunk.channel_list, fpn_top_down_levels=[2, 3], fpn_interp_model="nearest",
    )
    image_encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=1)
    mem = 16 if tiny else 64
    attention = partial(RoPEAttention, rope_theta=10000.0, feat_sizes=[64, 64], embedding_dim=d, num_heads=1, downsample_rate=1, dropout=0.1)
    memory_attention = MemoryAttention(
        d_model=d, pos_enc_at_input=True, num_layers=1 if tiny else 4,
        layer=MemoryAttentionLayer(activation="relu", dim_feedforward=64 if tiny else 2048, dropout=0.1, pos_enc_at_attn=False, d_model=d,
                                   pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False, self_attention=attention(),
                                   cross_attention=attention(rope_k_repeat=True, kv_in_dim=mem)),
    )
    memory_encoder = MemoryEncoder(
        out_dim=mem, in_dim=d,
        position_encoding=PositionEmbeddingSine(num_pos_feats=mem, normalize=True, scale=None, temperature=10000),
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1, embed_dim=d),
        fuser=Fuser(layer=CXBlock(dim=d, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True), num_layers=1 if tiny else 2),
    )
    model = SAM2Base(
        image_encoder=image_encoder, memory_attention=memory_attention, memory_encoder=memory_encoder, num_maskmem=7, image_size=1024,
        sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0, use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True, use_high_res_features_in_sam=True, multimask_output_in_sam=True, iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True, pred_obj_scores_mlp=True, fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True, use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True, compile_image_encoder=False,
        # build_sam.py's hydra_overrides_extra for image prediction.
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True, "dynamic_multimask_stability_delta": 0.05, "dynamic_multimask_stability_thresh": 0.98},
    )
    if tiny:
        model.sam_mask_decoder.transformer = TwoWayTransformer(depth=2, embedding_dim=d, mlp_dim=64, num_heads=2)
    return model.eval()


def hf_sam_config(kind: str):
    """transformers SamConfig: the fixtures' tiny one, or SlimSAM-77's (Xenova/slimsam-77-uniform)."""
    from transformers import SamConfig

    if kind == "tiny":
        return SamConfig(
            vision_config={"hidden_size": TINY, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1], "mlp_dim": 64, "output_channels": TINY,
                           "num_pos_feats": TINY // 2, "use_abs_pos": False},
            prompt_encoder_config={"hidden_size": TINY, "mask_input_channels": 4},
            mask_decoder_config={"hidden_size": TINY, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        )
    # SlimSAM-77: SAM ViT-B pruned to 77% less: 168 wide with 12 layers, MLP 696 (its config.json).
    return SamConfig(
        vision_config={"hidden_size": 168, "num_hidden_layers": 12, "num_attention_heads": 12, "global_attn_indexes": [2, 5, 8, 11], "mlp_dim": 696, "qkv_bias": True},
        prompt_encoder_config={},
        mask_decoder_config={},
    )


def build_hf_sam(kind: str):
    from transformers import SamModel

    _seeded(SEED + 5)
    return _spread(SamModel(hf_sam_config(kind)))


def hf_sam2_config(size: str):
    from transformers import Sam2Config

    h = HIERA[size]
    embed = [h["embed_dim"] * 2**i for i in range(4)]
    heads = [h["num_heads"] * 2**i for i in range(4)]
    d = TINY if size == "tiny" else 256
    return Sam2Config(
        vision_config={
            "backbone_config": {"hidden_size": h["embed_dim"], "num_attention_heads": h["num_heads"], "blocks_per_stage": h["stages"],
                                "embed_dim_per_stage": embed, "num_attention_heads_per_stage": heads, "global_attention_blocks": h["global_att_blocks"]},
            "backbone_channel_list": list(reversed(embed)),
            "fpn_hidden_size": d,
        },
        prompt_encoder_config={"hidden_size": d, "mask_input_channels": 4 if size == "tiny" else 16},
        mask_decoder_config={"hidden_size": d, "mlp_dim": 64 if size == "tiny" else 2048, "num_attention_heads": 2 if size == "tiny" else 8,
                             "iou_head_hidden_dim": 32 if size == "tiny" else 256},
    )


def build_hf_sam2(size: str):
    from transformers import Sam2Model

    _seeded(SEED + 6)
    return _spread(Sam2Model(hf_sam2_config(size)), 0.2 if size == "tiny" else 0.02)


# ---------------------------------------------------------------------------------------------
# Exports, with each project's own wrapper modules and torch.onnx.export arguments.


def _export(module, args: tuple, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch.onnx.export puts a module back in the mode it found it in: a new wrapper is in
    # training mode, and would leave the wrapped model there (MobileSAM's BatchNorms then use
    # batch statistics in the predictor that computes the goldens).
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), export_params=True, do_constant_folding=True, dynamo=False, **kwargs)
    return path


def quantize(src: Path, dest: Path) -> Path:
    """samexporter's --quantize-out and transformers.js's *_quantized: dynamic uint8 weights."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.quantize import quantize_dynamic

    try:
        quantize_dynamic(model_input=str(src), model_output=str(dest), per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8)
    except ValueError as err:
        # onnxruntime's Conv quantiser wants the bias as an initializer; TinyViT's and RepViT's
        # folded BatchNorms leave a computed one. Their matrix products still quantise.
        print(f"{src.name}: {err}; quantising MatMul and Gemm only", flush=True)
        quantize_dynamic(model_input=str(src), model_output=str(dest), per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return dest


def export_samexporter_encoder(sam, path: Path, use_preprocess: bool) -> Path:
    """samexporter/export_encoder.py: ImageEncoderOnnxModel, `input_image` -> `image_embeddings`."""
    from samexporter.onnx_utils import ImageEncoderOnnxModel

    model = ImageEncoderOnnxModel(model=sam, use_preprocess=use_preprocess, pixel_mean=SAM_MEAN, pixel_std=SAM_STD)
    size = sam.image_encoder.img_size
    if use_preprocess:
        dummy = torch.randn((size, size, 3), dtype=torch.float)
        axes = {"input_image": {0: "image_height", 1: "image_width"}}
    else:
        dummy = torch.randn((1, 3, size, size), dtype=torch.float)
        axes = None
    return _export(model, (dummy,), path, verbose=False, opset_version=18, input_names=["input_image"], output_names=["image_embeddings"], dynamic_axes=axes)


def export_sam_decoder(sam, path: Path, onnx_module, return_single_mask: bool, opset: int) -> Path:
    """segment-anything's scripts/export_onnx_model.py (also MobileSAM's and samexporter's
    export_decoder.py): SamOnnxModel, SAM's reference decoder inputs and outputs."""
    model = onnx_module.SamOnnxModel(model=sam, return_single_mask=return_single_mask, use_stability_score=False, return_extra_metrics=False)
    dim = sam.prompt_encoder.embed_dim
    size = sam.prompt_encoder.image_embedding_size
    dummy = {
        "image_embeddings": torch.randn(1, dim, *size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *[4 * x for x in size], dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    return _export(model, tuple(dummy.values()), path, verbose=False, opset_version=opset, input_names=list(dummy), output_names=["masks", "iou_predictions", "low_res_masks"], dynamic_axes=axes)


def export_edge_sam(sam, encoder_path: Path, decoder_path: Path) -> None:
    """EdgeSAM's scripts/export_onnx_model.py: a traced encoder (`image`), and SamCoreMLModel as
    the decoder (`image_embeddings`, `point_coords`, `point_labels` -> `scores`, `masks`)."""
    from edge_sam.utils.coreml import SamCoreMLModel

    image = torch.randn(1, 3, 1024, 1024, dtype=torch.float)
    sam.forward = sam.forward_dummy_encoder
    traced = torch.jit.trace(sam, image)
    _export(traced, (image,), encoder_path, input_names=["image"], output_names=["image_embeddings"], opset_version=11, verbose=False)
    decoder = SamCoreMLModel(model=sam, use_stability_score=False).eval()
    dim = sam.prompt_encoder.embed_dim
    size = sam.prompt_encoder.image_embedding_size
    args = (torch.randn(1, dim, *size), torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float), torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float))
    _export(decoder, args, decoder_path, input_names=["image_embeddings", "point_coords", "point_labels"], output_names=["scores", "masks"], opset_version=11,
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}, verbose=False)


def export_efficient_sam(sam, folder: Path, name: str) -> None:
    """EfficientSAM's export_to_onnx.py: the combined model, the encoder and the decoder."""
    import onnx_models

    _export(onnx_models.OnnxEfficientSam(model=sam), (torch.randn(1, 3, 1080, 1920), torch.randint(0, 1080, (1, 1, 5, 2)).float(), torch.randint(0, 4, (1, 1, 5)).float()),
            folder / f"{name}.onnx", opset_version=17, input_names=["batched_images", "batched_point_coords", "batched_point_labels"],
            output_names=["output_masks", "iou_predictions"], verbose=False,
            dynamic_axes={"batched_images": {0: "batch", 2: "height", 3: "width"}, "batched_point_coords": {2: "num_points"}, "batched_point_labels": {2: "num_points"}})
    _export(onnx_models.OnnxEfficientSamEncoder(model=sam), (torch.randn(1, 3, 1080, 1920),), folder / f"{name}_encoder.onnx", opset_version=17,
            input_names=["batched_images"], output_names=["image_embeddings"], verbose=False, dynamic_axes={"batched_images": {0: "batch", 2: "height", 3: "width"}})
    dim = sam.prompt_encoder.embed_dim
    _export(onnx_models.OnnxEfficientSamDecoder(model=sam),
            (torch.randn(1, dim, 64, 64), torch.randint(0, 1080, (1, 1, 5, 2)).float(), torch.randint(0, 4, (1, 1, 5)).float(), torch.tensor([1080, 1920], dtype=torch.long)),
            folder / f"{name}_decoder.onnx", opset_version=17, input_names=["image_embeddings", "batched_point_coords", "batched_point_labels", "orig_im_size"],
            output_names=["output_masks", "iou_predictions"], verbose=False,
            dynamic_axes={"image_embeddings": {0: "batch"}, "batched_point_coords": {2: "num_points"}, "batched_point_labels": {2: "num_points"}})


def export_samexporter_sam2(model, encoder_path: Path, decoder_path: Path) -> None:
    """samexporter/export_sam2.py: SAM2ImageEncoder (`image` -> high_res_feats_0/1, image_embed)
    and SAM2ImageDecoder (multimask, low-res `masks` and `iou_predictions`)."""
    from samexporter.export_sam2 import SAM2ImageDecoder, SAM2ImageEncoder

    img = torch.randn(1, 3, 1024, 1024)
    encoder = SAM2ImageEncoder(model).cpu()
    feats0, feats1, embed = encoder(img)
    _export(encoder, img, encoder_path, opset_version=18, input_names=["image"], output_names=["high_res_feats_0", "high_res_feats_1", "image_embed"])
    decoder = SAM2ImageDecoder(model, multimask_output=True).cpu()
    args = (embed, feats0, feats1, torch.randint(0, 1024, (1, 5, 2)).float(), torch.randint(0, 1, (1, 5)).float(), torch.randn(1, 1, 256, 256), torch.tensor([1], dtype=torch.float))
    _export(decoder, args, decoder_path, opset_version=18,
            input_names=["image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input", "has_mask_input"],
            output_names=["masks", "iou_predictions"],
            dynamic_axes={"point_coords": {0: "num_labels", 1: "num_points"}, "point_labels": {0: "num_labels", 1: "num_points"},
                          "mask_input": {0: "num_labels"}, "has_mask_input": {0: "num_labels"}})


class HfSamVision(nn.Module):
    """optimum's SAMModelPatcher, split variant, vision_encoder.onnx."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        pe = self.model.get_image_wide_positional_embeddings().repeat(pixel_values.shape[0], 1, 1, 1)
        return self.model.vision_encoder(pixel_values, return_dict=True)[0], pe


class HfSamDecoder(nn.Module):
    """optimum's SAMModelPatcher, split variant, prompt_encoder_mask_decoder.onnx: no boxes, no
    mask input, multimask output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image_positional_embeddings, image_embeddings, input_points, input_labels):
        sparse, dense = self.model.prompt_encoder(input_points=input_points, input_labels=input_labels, input_boxes=None, input_masks=None)
        out = self.model.mask_decoder(image_embeddings=image_embeddings, image_positional_embeddings=image_positional_embeddings, sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense, multimask_output=True, attention_similarity=None, target_embedding=None)
        return out[1], out[0]


def export_hf_sam(model, folder: Path) -> None:
    """The transformers.js / optimum layout of SAM and SlimSAM: onnx/vision_encoder.onnx and
    onnx/prompt_encoder_mask_decoder.onnx (optimum's SamOnnxConfig names and dynamic axes)."""
    onnx = folder / "onnx"
    _export(HfSamVision(model), (torch.randn(1, 3, 1024, 1024),), onnx / "vision_encoder.onnx", opset_version=14, input_names=["pixel_values"],
            output_names=["image_embeddings", "image_positional_embeddings"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "image_embeddings": {0: "batch_size"}, "image_positional_embeddings": {0: "batch_size"}})
    dim = model.config.prompt_encoder_config.hidden_size
    args = (torch.randn(1, dim, 64, 64), torch.randn(1, dim, 64, 64), torch.randint(0, 1024, (1, 1, 2, 2)).float(), torch.ones(1, 1, 2, dtype=torch.long))
    points = {0: "batch_size", 1: "point_batch_size", 2: "nb_points_per_image"}
    _export(HfSamDecoder(model), args, onnx / "prompt_encoder_mask_decoder.onnx", opset_version=14,
            input_names=["image_positional_embeddings", "image_embeddings", "input_points", "input_labels"], output_names=["iou_scores", "pred_masks"],
            dynamic_axes={"image_positional_embeddings": {0: "batch_size"}, "image_embeddings": {0: "batch_size"}, "input_points": points, "input_labels": points,
                          "iou_scores": {0: "batch_size", 1: "point_batch_size"}, "pred_masks": {0: "batch_size", 1: "point_batch_size"}})


class HfSam2Vision(nn.Module):
    """onnx-community's SAM 2.1 vision_encoder.onnx: `pixel_values` -> image_embeddings.0/.1/.2."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return tuple(self.model.get_image_embeddings(pixel_values))


class HfSam2Decoder(nn.Module):
    """onnx-community's SAM 2.1 prompt_encoder_mask_decoder.onnx: points, labels and boxes (the
    latter possibly none: [B, 0, 4]), the three feature maps. transformers' prompt encoder pads
    the points only when boxes are None and concatenates box embeddings [B, boxes, 3, C] to point
    embeddings [B, P, N, C], which an empty box tensor cannot join; so, as the published graph
    must, the prompt is embedded with the prompt encoder's own parts: points unpadded (callers add
    SAM's padding point to a prompt without a box, as transformers would), each box as its three
    tokens, all in one token list."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_points, input_labels, input_boxes, e0, e1, e2):
        encoder = self.model.prompt_encoder
        points = encoder._embed_points(input_points, input_labels, pad=False)
        boxes = encoder._embed_boxes(input_boxes)
        sparse = torch.cat([points, boxes.reshape(boxes.shape[0], 1, -1, boxes.shape[-1]).expand(points.shape[0], points.shape[1], -1, -1)], dim=2)
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(points.shape[0], -1, *encoder.image_embedding_size)
        pe = self.model.get_image_wide_positional_embeddings().repeat(e2.shape[0], 1, 1, 1)
        out = self.model.mask_decoder(image_embeddings=e2, image_positional_embeddings=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=True, high_resolution_features=[e0, e1])
        masks, iou, _, object_scores = out
        return iou, masks, object_scores


def export_hf_sam2(model, folder: Path) -> None:
    onnx = folder / "onnx"
    _export(HfSam2Vision(model), (torch.randn(1, 3, 1024, 1024),), onnx / "vision_encoder.onnx", opset_version=17, input_names=["pixel_values"],
            output_names=["image_embeddings.0", "image_embeddings.1", "image_embeddings.2"], dynamic_axes={"pixel_values": {0: "batch_size"}})
    e = HfSam2Vision(model)(torch.randn(1, 3, 1024, 1024))
    args = (torch.randint(0, 1024, (1, 1, 2, 2)).float(), torch.ones(1, 1, 2, dtype=torch.long), torch.tensor([[[100.0, 100.0, 600.0, 500.0]]]), *e)
    points = {0: "batch_size", 1: "point_batch_size", 2: "num_points"}
    _export(HfSam2Decoder(model), args, onnx / "prompt_encoder_mask_decoder.onnx", opset_version=17,
            input_names=["input_points", "input_labels", "input_boxes", "image_embeddings.0", "image_embeddings.1", "image_embeddings.2"],
            output_names=["iou_scores", "pred_masks", "object_score_logits"],
            dynamic_axes={"input_points": points, "input_labels": points, "input_boxes": {0: "batch_size", 1: "num_boxes"},
                          "iou_scores": {0: "batch_size", 1: "point_batch_size"}, "pred_masks": {0: "batch_size", 1: "point_batch_size"},
                          "object_score_logits": {0: "batch_size", 1: "point_batch_size"}})
