"""Tiny SAM: Segment Anything's architecture at a width that trains on two CPU cores.

The prompt encoder and the mask decoder follow SAM's modules (random-Fourier positional
encoding, label embeddings, mask downscaling, a two-way transformer with 1+3 mask tokens and
an IoU head). The image encoder is a small convolutional pyramid instead of a ViT.

The encoder works on a 512x512 frame: SAM's 1024x1024 input average-pooled 2x2 (export puts
the pool in front, so the ONNX files take SAM's exact input; training renders its images
straight into the 512 frame). A context pyramid sees the frame pooled once more to 256 px and
gives 64 channels of features at 64x64, the grid of SAM's image embedding; a detail branch sees
the 512 frame itself and gives a 12-channel map at 256x256, the resolution of SAM's low-res
masks, with the context features mixed in so its edges know what they belong to.

The 256 channels of `image_embeddings` carry both: channels 0-63 the context features, channels
64-255 the detail map in its own memory order (12 rows of 256x256 read as 192 rows of 64x64).
The decoder reads each mask twice: coarsely from the image tokens at 64x64, upsampled
bilinearly to 256x256, plus a per-mask linear combination of the detail map. No pixel shuffle
or space-to-depth anywhere: those gave the masks of earlier versions a 4x4 checkerboard.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 256
GRID = 64  # image_embeddings are GRID x GRID
LOWRES = 256  # low_res_masks are LOWRES x LOWRES
IMG_SIZE = 1024
FRAME = 512  # the encoder's input frame: SAM's 1024 input pooled 2x2
CONTEXT_CH = 64  # decoder width; the context part of the embedding
DETAIL_CH = 12  # detail map channels at LOWRES x LOWRES, in the other 192 embedding channels
COARSE_CH = 32  # per-token features the coarse masks are read from


class LayerNorm2d(nn.Module):
    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.GELU())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: cheap on CPU, and the 5x5 depthwise widens the receptive field."""

    def __init__(self, c: int, expand: int = 2, k: int = 5, identity: bool = False) -> None:
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(conv_bn(c, h, 1), conv_bn(h, h, k, groups=h), conv_bn(h, c, 1, act=False))
        if identity:  # a block added to a trained model starts as a no-op
            nn.init.zeros_(self.block[2][1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class GlobalAttention(nn.Module):
    """One transformer layer over the coarsest grid, so every location sees the whole image."""

    def __init__(self, c: int, heads: int = 4, identity: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.pos = nn.Parameter(torch.zeros(1, c, 16, 16))
        if identity:  # a layer added to a trained model starts as a no-op
            for p in (self.attn.out_proj.weight, self.attn.out_proj.bias, self.mlp[2].weight, self.mlp[2].bias):
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = (x + self.pos).flatten(2).transpose(1, 2)
        n = self.norm1(t)
        t = t + self.attn(n, n, n, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class ImageEncoder(nn.Module):
    """512x512 normalised frame -> [B, 256, 64, 64] embedding (context + detail map).

    The context pyramid keeps the layout of the earlier 256 px model (its trained weights load
    by name), with blocks added as no-ops where the grid is small and they cost little, and a
    wider 16x16 stage beside it; the detail branch is new."""

    def __init__(self) -> None:
        super().__init__()
        self.s128 = nn.Sequential(conv_bn(3, 32, s=2), MBConv(32))
        self.s64 = nn.Sequential(conv_bn(32, 64, s=2), MBConv(64), MBConv(64), MBConv(64, identity=True))
        self.s32 = nn.Sequential(conv_bn(64, 96, s=2), MBConv(96), MBConv(96), MBConv(96, identity=True), MBConv(96, identity=True))
        self.s16 = nn.Sequential(
            conv_bn(96, 128, s=2), MBConv(128), GlobalAttention(128), MBConv(128), GlobalAttention(128, identity=True), MBConv(128, identity=True)
        )
        # Width where it is cheap: a second 16x16 stage of 192 channels, three transformer layers
        # over its 256 tokens, added to the first through a projection that starts at zero (so a
        # checkpoint without it loads as the same function).
        self.s16_wide = nn.Sequential(conv_bn(96, 192, s=2), GlobalAttention(192), GlobalAttention(192), GlobalAttention(192))
        self.wide_out = nn.Conv2d(192, 128, 1)
        nn.init.zeros_(self.wide_out.weight)
        nn.init.zeros_(self.wide_out.bias)
        self.lat32 = nn.Conv2d(128, 96, 1)
        self.fuse32 = MBConv(96)
        self.lat64 = nn.Conv2d(96, 64, 1)
        self.fuse64 = nn.Sequential(MBConv(64), MBConv(64), MBConv(64, identity=True))
        self.out = nn.Sequential(nn.Conv2d(64, CONTEXT_CH, 1), LayerNorm2d(CONTEXT_CH))
        # Detail: the 512 frame's own pixels at stride 2, plus the context features upsampled.
        self.fine_stem = conv_bn(3, 16, s=2)
        self.fine_context = nn.Conv2d(64, 16, 1)
        # Dense 3x3 convolutions: at 256x256 they train several times faster on a CPU than the
        # depthwise blocks of the pyramid.
        self.fine = nn.Sequential(conv_bn(16, 16), conv_bn(16, 16), nn.Conv2d(16, DETAIL_CH, 1), LayerNorm2d(DETAIL_CH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f64 = self.s64(self.s128(F.avg_pool2d(x, 2)))
        f32 = self.s32(f64)
        f16 = self.s16(f32) + self.wide_out(self.s16_wide(f32))
        f32 = self.fuse32(f32 + F.interpolate(self.lat32(f16), scale_factor=2.0, mode="bilinear", align_corners=False))
        f64 = self.fuse64(f64 + F.interpolate(self.lat64(f32), scale_factor=2.0, mode="bilinear", align_corners=False))
        fine = self.fine_stem(x) + F.interpolate(self.fine_context(f64), scale_factor=4.0, mode="bilinear", align_corners=False)
        detail = self.fine(fine)
        return torch.cat([self.out(f64), detail.reshape(detail.shape[0], -1, GRID, GRID)], dim=1)


class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, size: int) -> torch.Tensor:
        ones = torch.ones((size, size))
        y = (ones.cumsum(0) - 0.5) / size
        x = (ones.cumsum(1) - 0.5) / size
        return self._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)  # C x H x W


class PromptEncoder(nn.Module):
    """SAM's prompt encoder, with the label arithmetic of SAM's ONNX export (labels -1..3)."""

    def __init__(self, dim: int = CONTEXT_CH, mask_chans: int = 16) -> None:
        super().__init__()
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, dim) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, 2, 2),
            LayerNorm2d(mask_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, 2, 2),
            LayerNorm2d(mask_chans),
            nn.GELU(),
            nn.Conv2d(mask_chans, dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        coords = (coords + 0.5) / IMG_SIZE
        emb = self.pe_layer._pe_encoding(coords)
        lab = labels.unsqueeze(-1)
        emb = emb * (lab != -1).to(emb.dtype)
        emb = emb + self.not_a_point_embed.weight * (lab == -1).to(emb.dtype)
        for i in range(4):
            emb = emb + self.point_embeddings[i].weight * (lab == i).to(emb.dtype)
        return emb

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        has = has_mask_input.reshape(-1, 1, 1, 1)
        return has * self.mask_downscaling(mask_input) + (1 - has) * self.no_mask_embed.weight.reshape(1, -1, 1, 1)


class Attention(nn.Module):
    """SAM's multi-head attention. `few` names the side that holds the handful of prompt tokens
    when the other holds the 4096 image tokens ("queries", "keys" or None): with `head_masks`
    set, as export sets it, the heads are computed without splitting the image side into heads,
    so the exported graph has no transposes of image-sized tensors. The same function;
    training keeps the plain form."""

    def __init__(self, dim: int, heads: int, downsample: int = 1, few: str | None = None) -> None:
        super().__init__()
        self.inner = dim // downsample
        self.heads = heads
        self.q_proj = nn.Linear(dim, self.inner)
        self.k_proj = nn.Linear(dim, self.inner)
        self.v_proj = nn.Linear(dim, self.inner)
        self.out_proj = nn.Linear(self.inner, dim)
        self.few = few
        self.head_masks = False

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.head_masks and self.few is not None:
            return self.out_proj(self._masked_heads(self.q_proj(q), self.k_proj(k), self.v_proj(v)))
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], self.inner))

    def _masked_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Each prompt token is repeated once per head with the other heads' channels zeroed
        ([B, T, C] -> [B, H*T, C]); a full-width product with an image token then gives that
        head's score, and the image side stays [B, 4096, C] throughout."""
        b, t = (q if self.few == "queries" else k).shape[:2]
        width = self.inner // self.heads
        mask = (torch.arange(self.inner) // width == torch.arange(self.heads)[:, None]).to(q.dtype)  # [H, C]
        q = q / math.sqrt(width)
        if self.few == "queries":
            q = (q[:, None] * mask[None, :, None]).reshape(b, self.heads * t, self.inner)
            out = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v  # [B, H*T, C]: head h's rows hold every head's mix
            return (out.reshape(b, self.heads, t, self.inner) * mask[None, :, None]).sum(1)
        k = (k[:, None] * mask[None, :, None]).reshape(b, self.heads * t, self.inner)
        v = (v[:, None] * mask[None, :, None]).reshape(b, self.heads * t, self.inner)
        scores = (q @ k.transpose(-2, -1)).reshape(b, -1, self.heads, t)
        return torch.softmax(scores, dim=-1).reshape(b, -1, self.heads * t) @ v


class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_t2i = Attention(dim, heads, 2, few="queries")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.cross_i2t = Attention(dim, heads, 2, few="keys")
        self.norm4 = nn.LayerNorm(dim)
        self.skip_first_pe = skip_first_pe

    def forward(self, q: torch.Tensor, k: torch.Tensor, q_pe: torch.Tensor, k_pe: torch.Tensor):
        if self.skip_first_pe:
            q = self.self_attn(q, q, q)
        else:
            qq = q + q_pe
            q = q + self.self_attn(qq, qq, q)
        q = self.norm1(q)
        q = self.norm2(q + self.cross_t2i(q + q_pe, k + k_pe, k))
        q = self.norm3(q + self.mlp(q))
        k = self.norm4(k + self.cross_i2t(k + k_pe, q + q_pe, q))
        return q, k


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int, depth: int = 2, heads: int = 4, mlp_dim: int = 256) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TwoWayBlock(dim, heads, mlp_dim, i == 0) for i in range(depth)])
        self.final_attn = Attention(dim, heads, 2, few="queries")
        self.norm_final = nn.LayerNorm(dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor):
        k = src.flatten(2).permute(0, 2, 1)
        k_pe = pos.flatten(2).permute(0, 2, 1)
        q = tokens
        for layer in self.layers:
            q, k = layer(q, k, tokens, k_pe)
        q = self.norm_final(q + self.final_attn(q + tokens, k + k_pe, k))
        return q, k


class MLP(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, layers: int) -> None:
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """SAM's mask decoder (1 + 3 mask tokens, IoU head) with a head that reads each mask at two
    scales: hyper . coarse(image tokens) at 64x64, upsampled bilinearly (as SAM's own masks are
    upsampled after it), plus hyper . detail(detail map) at 256x256. Both parts are linear in
    the mask's hypernetwork output, so nothing image-sized is built per mask but the masks."""

    def __init__(self, dim: int = CONTEXT_CH, num_multimask: int = 3) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.transformer = TwoWayTransformer(dim)
        hyper = dim // 8
        self.coarse_proj = nn.Linear(dim, COARSE_CH)
        self.coarse_norm = nn.LayerNorm(COARSE_CH)
        self.coarse_read = nn.Linear(COARSE_CH, hyper)
        self.detail_read = nn.Linear(DETAIL_CH, hyper)
        self.hypernet = nn.ModuleList([MLP(dim, dim, hyper, 3) for _ in range(self.num_mask_tokens)])
        self.iou_head = MLP(dim, 128, self.num_mask_tokens, 3)

    def forward(
        self,
        embeddings: torch.Tensor,
        pos: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ):
        """embeddings [I, 256, 64, 64]; sparse [B, N, C]; dense [B, C, 64, 64].

        Prompt set b belongs to image image_index[b]; without an index every prompt set
        belongs to the single image (I = 1), as in the ONNX export.
        """
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        context, detail = embeddings[:, :CONTEXT_CH], embeddings[:, CONTEXT_CH:]
        if image_index is not None:
            context, detail = context[image_index], detail[image_index]
        # Expanded to the prompt batch even where it is 1: with a batch of 1 fixed in the graph,
        # onnxruntime fuses each residual add and layer norm over the image tokens into a
        # SkipLayerNormalization, which ran slower on these CPUs than the two ops it replaces.
        # The positional encoding stays one image's: a constant onnxruntime folds, broadcast.
        src = (context + dense).expand(b, -1, -1, -1)
        hs, src_out = self.transformer(src, pos.unsqueeze(0), tokens)
        hyper = torch.stack([self.hypernet[i](hs[:, 1 + i]) for i in range(self.num_mask_tokens)], dim=1)  # [B, M, h]
        m = self.num_mask_tokens
        features = F.gelu(self.coarse_norm(self.coarse_proj(src_out)))  # [B, 4096, COARSE_CH]
        coarse = features @ (hyper @ self.coarse_read.weight).transpose(1, 2) + (hyper @ self.coarse_read.bias)[:, None]  # [B, 4096, M]
        coarse = coarse.transpose(1, 2).reshape(b, m, GRID, GRID)
        rows = detail.reshape(detail.shape[0], DETAIL_CH, LOWRES * LOWRES)
        fine = (hyper @ self.detail_read.weight) @ rows + (hyper @ self.detail_read.bias)[..., None]  # [B, M, 65536]
        masks = F.interpolate(coarse, scale_factor=LOWRES / GRID, mode="bilinear", align_corners=False) + fine.reshape(b, m, LOWRES, LOWRES)
        return masks, self.iou_head(hs[:, 0])


def prompt_maps(coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Dense maps of the prompts on the GRID x GRID token grid: Gaussians around positive
    clicks (two widths), around negative clicks, and the inside of the box. SAM learns where a
    click is from positional encodings alone, which takes far more training than two CPU
    cores give; these maps hand the decoder that location directly. They are computed from
    `point_coords` and `point_labels` inside the graph, so the ONNX interface is unchanged."""
    cell = (torch.arange(GRID, dtype=coords.dtype) + 0.5) * (IMG_SIZE / GRID)
    dx = cell[None, None, None, :] - coords[..., 0, None, None]  # [B, N, 1, G]
    dy = cell[None, None, :, None] - coords[..., 1, None, None]  # [B, N, G, 1]
    d2 = dx**2 + dy**2
    pos = (labels == 1).to(coords.dtype)[..., None, None]
    neg = (labels == 0).to(coords.dtype)[..., None, None]
    near, wide = torch.exp(-d2 / (2 * 32.0**2)), torch.exp(-d2 / (2 * 128.0**2))
    tl = (labels == 2).to(coords.dtype)
    br = (labels == 3).to(coords.dtype)
    x0, y0 = (coords[..., 0] * tl).sum(1), (coords[..., 1] * tl).sum(1)
    x1, y1 = (coords[..., 0] * br).sum(1), (coords[..., 1] * br).sum(1)
    has_box = tl.amax(1)
    edge = 8.0
    inside_x = torch.sigmoid((cell[None, :] - x0[:, None]) / edge) * torch.sigmoid((x1[:, None] - cell[None, :]) / edge)
    inside_y = torch.sigmoid((cell[None, :] - y0[:, None]) / edge) * torch.sigmoid((y1[:, None] - cell[None, :]) / edge)
    box = inside_y[:, :, None] * inside_x[:, None, :] * has_box[:, None, None]
    return torch.stack([(near * pos).amax(1), (wide * pos).amax(1), (near * neg).amax(1), box], dim=1)


class TinySam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder()
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()
        self.prompt_maps = nn.Conv2d(4, CONTEXT_CH, 1)

    def for_export(self) -> "TinySam":
        """Switch to forms of the same function that onnxruntime runs faster: attention heads
        by masking (Attention). Training keeps the plain forms, so that its numbers do not move
        with these."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.head_masks = True
        return self

    def decode(
        self,
        embeddings: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits [B, 4, 256, 256] and predicted IoU [B, 4] for B prompt sets."""
        sparse = self.prompt_encoder.embed_points(coords, labels)
        dense = self.prompt_encoder.embed_mask(mask_input, has_mask_input) + self.prompt_maps(prompt_maps(coords, labels))
        pos = self.prompt_encoder.pe_layer.grid(GRID)
        return self.mask_decoder(embeddings, pos, sparse, dense, image_index)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
