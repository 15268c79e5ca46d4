"""Train the tiny SAM on real photographs and procedural scenes, simulating a person clicking.

Each step: encode a batch of images once; decode a first prompt per target (one click, or a
box); then add 1..max_corrective corrective clicks sampled from the error of the previous
mask, feeding the previous low-res logits back as `mask_input` most of the time, and decode
again. Losses are SAM's: 20 x focal + dice on the 256x256 low-res logits against soft ground
truth (the best of the three multimask outputs for a lone click), and MSE between predicted
and actual IoU.

    python train.py --config config-real1.json --out runs/real1
    python train.py --config config-real1.json --out runs/real1 --resume   # after a stop

A run checkpoints every `save_every` steps (model, optimiser, schedule, step) and `--resume`
continues from there: the data stream is then reseeded from the step, so a resumed run is not
bit-identical to an unbroken one. `--minutes` stops early (the checkpoint is kept, so the run
can be resumed); a phase of the committed configs fits in 150 minutes on two cores.
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

from data import SCALE, Batches, corrective_click, interior_point, noisy_box, normalise_pad, to_sam_frame
from model import FRAME, LOWRES, TinySam, count_params
from real import TRAIN_ROOT, area_downscale, validation_samples
from scenes import make_scene, random_size

DEFAULTS = {
    "seed": 1,
    "steps": 1500,
    "images_per_step": 8,
    "targets_per_image": 3,
    "box_fraction": 0.3,
    "max_corrective": 3,
    "mask_input_fraction": 0.5,
    # Weight of the predicted-IoU loss: the IoU head picks a lone click's mask among the three.
    "iou_loss_weight": 1.0,
    "lr": 2e-3,
    "weight_decay": 0.01,
    "warmup_steps": 100,
    "threads": 2,
    "val_every": 100,
    "save_every": 25,
    "val_scenes": 48,
    "val_seed": 424242,
    # How many of the held-out real targets validation uses (null: all of them, 108).
    "val_real": None,
    # Stop after this many steps of the `steps`-long schedule (null: run it all). The learning
    # rate follows the full schedule either way.
    "stop_after": None,
    # Start from another run's checkpoint (a path relative to the config file) instead of random
    # weights: a new phase with a fresh optimiser, its own seed and a warm restart. Weights load
    # by name where the shapes agree; the rest keep their initialisation (both lists are logged),
    # so a checkpoint of an earlier architecture seeds the parts that carried over.
    "init_from": None,
    # The step that checkpoint must have reached, so a phase never starts from a half-done run.
    "init_step": None,
    # Keep BatchNorm statistics fixed (the layers still learn their scale and bias): needed when
    # the start is a checkpoint rebuilt from ONNX (from_onnx.py), whose BatchNorms are identities.
    "freeze_bn": False,
    # What the images are (real.RealSamples): relative weights of the real sets, the share of
    # procedural scenes, and the probabilities of copy-paste and of a two-object target.
    "data": {"sets": {"coco-mval": 3, "coco128-seg": 2, "weizmann-horse": 1, "bsds500": 1.5, "camvid": 1}, "synthetic": 0.2, "paste": 0.3, "union": 0.1},
}


def mask_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """20 x sigmoid focal + dice per mask: logits [B, T, H, W], gt [B, H, W] (soft: the share of
    each cell the object covers) -> [B, T]."""
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
    g = (gt[:, None] >= 0.5).expand_as(pred)
    inter = (pred & g).sum(dim=(2, 3)).float()
    union = (pred | g).sum(dim=(2, 3)).float()
    return inter / union.clamp(min=1)


def add_clicks(coords, labels, prev: torch.Tensor, gt: torch.Tensor, rng):
    """Append one corrective click per prompt set (a padding point where the mask is perfect)."""
    pred, g = (prev > 0).numpy(), gt.numpy() >= 0.5
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
    no_mask = torch.zeros(b, 1, LOWRES, LOWRES)
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
    loss = loss_first + loss_corr + cfg["iou_loss_weight"] * loss_iou
    loss.backward()
    return {
        "loss": float(loss.detach()),
        "iou_first": float(iou_true.gather(1, torch.where(is_click, iou_pred[:, 1:].argmax(1) + 1, 0)[:, None]).mean()),
        "iou_corrected": float(mask_iou(logits2[:, :1].detach(), gt).mean()),
        "rounds": rounds,
    }


def make_val_set(seed: int, n: int, n_real: int | None) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Fixed validation targets, (image in the encoder frame, soft low-res ground truth): the
    held-out real pairs (real.validation_samples, the first `n_real`) and `n` procedural scenes."""
    real = []
    for image, mask in validation_samples(TRAIN_ROOT, FRAME, n_real):
        full = np.zeros((FRAME, FRAME), bool)
        full[: mask.shape[0], : mask.shape[1]] = mask
        real.append((normalise_pad(image, FRAME), area_downscale(full, FRAME // LOWRES)))
    rng = np.random.default_rng(seed)
    synthetic = []
    while len(synthetic) < n:
        w, h = random_size(rng, FRAME)
        scene = make_scene(rng, w, h)
        for m in scene.masks[:2]:
            full = np.zeros((FRAME, FRAME), bool)
            full[:h, :w] = m
            synthetic.append((normalise_pad(scene.image, FRAME), area_downscale(full, FRAME // LOWRES)))
    return {"real": real, "synthetic": synthetic[:n]}


@torch.no_grad()
def validate(model, val: dict, freeze_bn: bool) -> dict[str, float]:
    """Low-res IoU of a click at the innermost point, an exact box, and 3 clicks (that click + 2
    corrective), on each validation set."""
    model.eval()
    out = {}
    for name, targets in val.items():
        out |= {f"{name}_{k}": v for k, v in _validate(model, targets).items()}
    train_mode(model, freeze_bn)
    return out


def _validate(model, val: list) -> dict[str, float]:
    images = torch.from_numpy(np.stack([v[0] for v in val]))
    gt = torch.from_numpy(np.stack([v[1] for v in val]))
    binary = gt.numpy() >= 0.5
    emb = torch.cat([model.image_encoder(images[i : i + 8]) for i in range(0, len(images), 8)])
    idx = torch.arange(len(val))
    b = len(val)
    zero_m, zero_h = torch.zeros(b, 1, LOWRES, LOWRES), torch.zeros(b)
    clicks = [interior_point(m, None) for m in binary]
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
    boxes = torch.from_numpy(np.stack([noisy_box(m, None) * SCALE for m in binary])).reshape(b, 2, 2)
    blog, _ = model.decode(emb, boxes, torch.tensor([[2, 3]] * b, dtype=torch.float32), zero_m, zero_h, idx)
    box = mask_iou(blog[:, :1], gt)[:, 0]
    return {"1click": round(float(one.mean()), 4), "box": round(float(box.mean()), 4), "3click": round(float(three.mean()), 4)}


def load_init(model: TinySam, path: Path, step: int | None) -> dict[str, list[str]]:
    """Weights of another run's checkpoint, by name where the shapes agree (see DEFAULTS)."""
    ck = torch.load(path, map_location="cpu")
    if step is not None and ck["step"] != step:
        raise SystemExit(f"{path} is at step {ck['step']}, the config expects {step}")
    own = model.state_dict()
    taken = {k: v for k, v in ck["model"].items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(own | taken)
    return {"loaded": len(taken), "new": sorted(k for k in own if k not in taken), "dropped": sorted(k for k in ck["model"] if k not in taken)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="JSON file overriding the defaults")
    ap.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and log.jsonl")
    ap.add_argument("--steps", type=int, help="override the number of steps (smoke runs)")
    ap.add_argument("--minutes", type=float, default=float("inf"), help="stop after this many minutes of this invocation (resumable)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
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
    model = TinySam()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    total = cfg["steps"]

    def lr_at(step: int) -> float:
        if step < cfg["warmup_steps"]:
            return (step + 1) / cfg["warmup_steps"]
        t = (step - cfg["warmup_steps"]) / max(1, total - cfg["warmup_steps"])
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ckpt_path = args.out / "checkpoint.pt"
    first_step, minutes_before = 0, 0.0
    if args.resume:
        if not ckpt_path.is_file():
            raise SystemExit(f"--resume: {ckpt_path} does not exist")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if {**DEFAULTS, **ck["config"]} != cfg:
            raise SystemExit(f"--resume: {ckpt_path} was made with another config")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["schedule"])
        rng.bit_generator.state = ck["rng"]
        first_step, minutes_before = ck["step"], ck["minutes"]
        log = (args.out / "log.jsonl").open("a")
    else:
        init = load_init(model, init_from, cfg["init_step"]) if init_from else None
        log = (args.out / "log.jsonl").open("w")
        print(json.dumps({"config": cfg, "params": count_params(model), "init": init}), file=log, flush=True)
    train_mode(model, cfg["freeze_bn"])
    data = torch.utils.data.DataLoader(
        # A resumed run draws a new stream: the loader's position cannot be saved.
        Batches(cfg["seed"] * 100_003 + first_step, cfg["images_per_step"], cfg["targets_per_image"], cfg["box_fraction"], cfg["data"]),
        batch_size=None,
        num_workers=1,
        prefetch_factor=4,
    )
    val = make_val_set(cfg["val_seed"], cfg["val_scenes"], cfg["val_real"])
    start = time.time()
    end = cfg["stop_after"] or total

    def save(step: int) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "schedule": sched.state_dict(),
            "rng": rng.bit_generator.state,
            "config": cfg,
            "step": step,
            "minutes": minutes_before + (time.time() - start) / 60,
        }
        torch.save(state, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)  # never a half-written checkpoint

    recent: list[dict[str, float]] = []
    step = first_step
    for batch in data:
        if step >= end or (time.time() - start) / 60 > args.minutes:
            break
        opt.zero_grad(set_to_none=True)
        stats = train_step(model, batch, cfg, rng)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        recent.append(stats)
        if step % cfg["val_every"] == 0 or step == end:
            row = {
                "step": step,
                "minutes": round(minutes_before + (time.time() - start) / 60, 2),
                "lr": sched.get_last_lr()[0],
                **{k: round(float(np.mean([r[k] for r in recent])), 4) for k in ("loss", "iou_first", "iou_corrected")},
                **validate(model, val, cfg["freeze_bn"]),
            }
            recent = []
            print(json.dumps(row), file=log, flush=True)
            print(json.dumps(row), flush=True)
        if step % cfg["save_every"] == 0 or step == end:
            save(step)
    save(step)


if __name__ == "__main__":
    main()
