"""Train the tiny SAM on procedural scenes, simulating a person clicking.

Each step: encode a batch of scenes once; decode a first prompt per target (one click, or a
box); then add 1..max_corrective corrective clicks sampled from the error of the previous
mask, feeding the previous low-res logits back as `mask_input` half of the time, and decode
again. Losses are SAM's: 20 x focal + dice on the 256x256 low-res logits (the best of the
three multimask outputs for a lone click), and MSE between predicted and actual IoU.

    python train.py --config config.json --out runs/main
    python train.py --config config-phase2.json --out runs/phase2   # starts from runs/main
    python train.py --config config-phase3.json --out runs/phase3   # starts from runs/phase2
    python train.py --config config-phase4.json --out runs/phase4   # starts from runs/phase3
    python train.py --config config-phase5.json --out runs/phase5   # starts from runs/phase4

Runs are reproducible: fixed seeds, a fixed number of steps, one data worker. `--minutes`
is a safety cap that stops early (and then the run is no longer the committed one).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data import FRAME, SceneBatches, corrective_click, interior_point, noisy_box, normalise_pad, to_sam_frame, SCALE
from model import TinySam, count_params
from scenes import make_scene, random_size

DEFAULTS = {
    "seed": 1,
    "steps": 1500,
    "images_per_step": 8,
    "targets_per_image": 3,
    "box_fraction": 0.3,
    "max_corrective": 3,
    "mask_input_fraction": 0.5,
    "lr": 2e-3,
    "weight_decay": 0.01,
    "warmup_steps": 100,
    "threads": 2,
    "val_every": 100,
    "val_scenes": 48,
    "val_seed": 424242,
    # Stop after this many steps of the `steps`-long schedule (null: run it all). The learning
    # rate follows the full schedule either way, so a stopped run is reproduced exactly.
    "stop_after": None,
    # Start from another run's checkpoint (a path relative to the config file) instead of random
    # weights: a second phase with a fresh optimiser, its own seed (new scenes) and warm restart.
    "init_from": None,
    # The step that checkpoint must have reached, so a phase never starts from a half-done run.
    "init_step": None,
    # Keep BatchNorm statistics fixed (the layers still learn their scale and bias): needed when
    # the start is a checkpoint rebuilt from ONNX (from_onnx.py), whose BatchNorms are identities.
    "freeze_bn": False,
    # The decoder's 256x256 refinement convolution (model.MaskDecoder). Starting a run without it
    # from a checkpoint that has it drops those weights: the rest of the model carries over.
    "refine": True,
}


def mask_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """20 x sigmoid focal + dice per mask: logits [B, T, H, W], gt [B, H, W] -> [B, T]."""
    g = gt[:, None].float().expand_as(logits)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, g, reduction="none")
    pt = p * g + (1 - p) * (1 - g)
    focal = ((0.25 * g + 0.75 * (1 - g)) * ce * (1 - pt) ** 2).mean(dim=(2, 3))
    inter = (p * g).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(2, 3)) + g.sum(dim=(2, 3)) + 1)
    return 20 * focal + dice


def mask_iou(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    g = gt[:, None].expand_as(pred)
    inter = (pred & g).sum(dim=(2, 3)).float()
    union = (pred | g).sum(dim=(2, 3)).float()
    return inter / union.clamp(min=1)


def add_clicks(coords, labels, prev: torch.Tensor, gt: torch.Tensor, rng):
    """Append one corrective click per prompt set (a padding point where the mask is perfect)."""
    pred, g = (prev > 0).numpy(), gt.numpy()
    new_c, new_l = [], []
    for i in range(len(pred)):
        click = corrective_click(pred[i], g[i], rng)
        if click is None:
            new_c.append([0.0, 0.0])
            new_l.append(-1.0)
        else:
            new_c.append([to_sam_frame(click[0]), to_sam_frame(click[1])])
            new_l.append(float(click[2]))
    return (
        torch.cat([coords, torch.tensor(new_c, dtype=torch.float32)[:, None]], dim=1),
        torch.cat([labels, torch.tensor(new_l, dtype=torch.float32)[:, None]], dim=1),
    )


def first_choice(logits: torch.Tensor, iou_pred: torch.Tensor, is_click: torch.Tensor) -> torch.Tensor:
    """The mask a caller keeps after the first prompt: for a lone click the multimask output
    with the best predicted IoU (SAM's ambiguity rule), else the single-mask output."""
    best = iou_pred[:, 1:].argmax(dim=1) + 1
    pick = torch.where(is_click, best, torch.zeros_like(best))
    return logits[torch.arange(len(logits)), pick]


def train_mode(model: TinySam, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def train_step(model, batch, cfg, rng) -> dict[str, float]:
    images, gt, coords, labels, index = batch["images"], batch["gt"], batch["coords"], batch["labels"], batch["index"]
    b = len(gt)
    emb = model.image_encoder(images)
    is_click = labels[:, 0] == 1
    no_mask = torch.zeros(b, 1, FRAME, FRAME)
    logits, iou_pred = model.decode(emb, coords, labels, no_mask, torch.zeros(b), index)
    losses = mask_loss(logits, gt)
    loss_first = (losses[:, 0] + is_click.float() * losses[:, 1:].min(dim=1).values).mean()
    iou_true = mask_iou(logits.detach(), gt)
    loss_iou = F.mse_loss(iou_pred, iou_true)

    use_mask = torch.from_numpy(rng.random(b) < cfg["mask_input_fraction"]).float()
    prev = first_choice(logits.detach(), iou_pred.detach(), is_click)
    rounds = int(rng.integers(1, cfg["max_corrective"] + 1))
    for r in range(rounds):
        coords, labels = add_clicks(coords, labels, prev, gt, rng)
        mask_in = prev[:, None] * use_mask[:, None, None, None]
        if r < rounds - 1:
            with torch.no_grad():
                out, _ = model.decode(emb, coords, labels, mask_in, use_mask, index)
            prev = out[:, 0]
    logits2, iou_pred2 = model.decode(emb, coords, labels, mask_in, use_mask, index)
    loss_corr = mask_loss(logits2[:, :1], gt)[:, 0].mean()
    loss_iou = loss_iou + F.mse_loss(iou_pred2[:, :1], mask_iou(logits2[:, :1].detach(), gt))
    loss = loss_first + loss_corr + loss_iou
    loss.backward()
    return {
        "loss": float(loss.detach()),
        "iou_first": float(iou_true.gather(1, torch.where(is_click, iou_pred[:, 1:].argmax(1) + 1, 0)[:, None]).mean()),
        "iou_corrected": float(mask_iou(logits2[:, :1].detach(), gt).mean()),
        "rounds": rounds,
    }


def make_val_set(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        w, h = random_size(rng, FRAME)
        scene = make_scene(rng, w, h)
        for m in scene.masks[:2]:
            gt = np.zeros((FRAME, FRAME), bool)
            gt[:h, :w] = m
            out.append((normalise_pad(scene.image, FRAME), gt))
    return out


@torch.no_grad()
def validate(model, val, freeze_bn: bool) -> dict[str, float]:
    """Model-frame IoU of a centre click, an exact box, and 3 clicks (centre + 2 corrective)."""
    model.eval()
    images = torch.from_numpy(np.stack([v[0] for v in val]))
    gt = torch.from_numpy(np.stack([v[1] for v in val]))
    emb = torch.cat([model.image_encoder(images[i : i + 16]) for i in range(0, len(images), 16)])
    idx = torch.arange(len(val))
    b = len(val)
    zero_m, zero_h = torch.zeros(b, 1, FRAME, FRAME), torch.zeros(b)
    clicks = [interior_point(v[1], None) for v in val]
    coords = torch.tensor([[[to_sam_frame(x), to_sam_frame(y)], [0, 0]] for x, y in clicks], dtype=torch.float32)
    labels = torch.tensor([[1, -1]] * b, dtype=torch.float32)
    logits, iou_pred = model.decode(emb, coords, labels, zero_m, zero_h, idx)
    prev = first_choice(logits, iou_pred, torch.ones(b, dtype=torch.bool))
    one = mask_iou(prev[:, None], gt)[:, 0]
    for _ in range(2):
        coords, labels = add_clicks(coords, labels, prev, gt, None)
        out, _ = model.decode(emb, coords, labels, prev[:, None], torch.ones(b), idx)
        prev = out[:, 0]
    three = mask_iou(prev[:, None], gt)[:, 0]
    boxes = torch.from_numpy(np.stack([noisy_box(v[1], None) * SCALE for v in val])).reshape(b, 2, 2)
    blog, _ = model.decode(emb, boxes, torch.tensor([[2, 3]] * b, dtype=torch.float32), zero_m, zero_h, idx)
    box = mask_iou(blog[:, :1], gt)[:, 0]
    train_mode(model, freeze_bn)
    return {"val_1click": float(one.mean()), "val_box": float(box.mean()), "val_3click": float(three.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="JSON file overriding the defaults")
    ap.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and log.jsonl")
    ap.add_argument("--steps", type=int, help="override the number of steps (smoke runs)")
    ap.add_argument("--minutes", type=float, default=float("inf"), help="stop early after this many minutes")
    args = ap.parse_args()

    cfg = dict(DEFAULTS)
    if args.config:
        cfg.update(json.loads(args.config.read_text()))
    if args.steps is not None:
        cfg["steps"] = args.steps
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown config keys: {sorted(unknown)}")
    # The config keeps the path as written (it is recorded in checkpoints and manifests).
    init_from = (args.config.parent if args.config else Path.cwd()) / cfg["init_from"] if cfg["init_from"] else None

    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(cfg["threads"])
    # Denormal floats in tiny late-training gradients make CPU kernels many times slower.
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(cfg["seed"] + 1)
    args.out.mkdir(parents=True, exist_ok=True)
    model = TinySam(refine=cfg["refine"])
    if init_from:
        ck = torch.load(init_from, map_location="cpu")
        if cfg["init_step"] is not None and ck["step"] != cfg["init_step"]:
            raise SystemExit(f"{init_from} is at step {ck['step']}, the config expects {cfg['init_step']}")
        state = ck["model"]
        if not cfg["refine"]:
            state = {k: v for k, v in state.items() if not k.startswith("mask_decoder.refine.")}
        model.load_state_dict(state)
    train_mode(model, cfg["freeze_bn"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    total = cfg["steps"]

    def lr_at(step: int) -> float:
        if step < cfg["warmup_steps"]:
            return (step + 1) / cfg["warmup_steps"]
        t = (step - cfg["warmup_steps"]) / max(1, total - cfg["warmup_steps"])
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    data = torch.utils.data.DataLoader(
        SceneBatches(cfg["seed"], cfg["images_per_step"], cfg["targets_per_image"], cfg["box_fraction"]),
        batch_size=None,
        num_workers=1,
        prefetch_factor=4,
    )
    val = make_val_set(cfg["val_seed"], cfg["val_scenes"])
    log = (args.out / "log.jsonl").open("w")
    print(json.dumps({"config": cfg, "params": count_params(model)}), file=log, flush=True)
    start = time.time()
    recent: list[dict[str, float]] = []
    step = 0
    for step, batch in enumerate(data):
        if step >= (cfg["stop_after"] or total) or (time.time() - start) / 60 > args.minutes:
            break
        opt.zero_grad(set_to_none=True)
        stats = train_step(model, batch, cfg, rng)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent.append(stats)
        if (step + 1) % cfg["val_every"] == 0 or step + 1 == (cfg["stop_after"] or total):
            row = {
                "step": step + 1,
                "minutes": round((time.time() - start) / 60, 2),
                "lr": sched.get_last_lr()[0],
                **{k: round(float(np.mean([r[k] for r in recent])), 4) for k in ("loss", "iou_first", "iou_corrected")},
                **{k: round(v, 4) for k, v in validate(model, val, cfg["freeze_bn"]).items()},
            }
            recent = []
            print(json.dumps(row), file=log, flush=True)
            print(json.dumps(row), flush=True)
            torch.save({"model": model.state_dict(), "config": cfg, "step": step + 1}, args.out / "checkpoint.pt")
    if step < (cfg["stop_after"] or total):
        torch.save({"model": model.state_dict(), "config": cfg, "step": step}, args.out / "checkpoint.pt")


if __name__ == "__main__":
    main()
