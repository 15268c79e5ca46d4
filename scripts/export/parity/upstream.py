"""Imports the upstream SAM-family projects from their source folders, as fetched from GitHub,
without installing them: `--upstream DIR` holds one folder per project, named owner+repo
(facebookresearch+segment-anything, facebookresearch+sam2, ChaoningZhang+MobileSAM,
chongzhou96+EdgeSAM, yformer+EfficientSAM, vietanhdev+samexporter).

Two of them import, at module level, tools this machine's wheel store lacks and that building
a model from its classes does not use: sam2/__init__.py and build_sam.py use Hydra (hydra-core,
for its YAML configs; samexporter's export_sam2.py imports build_sam) and hieradet.py imports
iopath for checkpoint loading; EdgeSAM's build_sam.py reads its training
config with yacs, its Sam class imports mmdet/mmengine for the optional RPN head of its
training and its transformer imports loralib for optional LoRA layers. Their packages are therefore registered by path (their __init__ is not run) and those
imports get empty stand-ins. The model code itself runs unchanged.

The wheel store's torchvision is a CUDA build next to a CPU torch: its C ops do not load, and
importing it fails while registering fake kernels for two of them. The transforms the predictors
use are pure Python, so the two op schemas are declared first (`torchvision_cpu()`).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

REPOS = {
    "segment_anything": "facebookresearch+segment-anything",
    "sam2": "facebookresearch+sam2",
    "mobile_sam": "ChaoningZhang+MobileSAM",
    "edge_sam": "chongzhou96+EdgeSAM",
    "efficient_sam": "yformer+EfficientSAM",
    "samexporter": "vietanhdev+samexporter",
}


def torchvision_cpu() -> None:
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 (kept alive in the module)
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_torchvision_lib"] = lib
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        import torchvision  # noqa: F401


def _stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module


def setup(upstream: Path) -> None:
    """Makes the upstream packages importable from `upstream`."""
    torchvision_cpu()
    missing = [repo for repo in REPOS.values() if not (upstream / repo).is_dir()]
    if missing:
        raise SystemExit(f"--upstream {upstream}: missing {', '.join(missing)} (fetch them from GitHub)")
    # Packages registered by path: their __init__ would import what is not installed.
    for package in ("sam2", "edge_sam"):
        module = types.ModuleType(package)
        module.__path__ = [str(upstream / REPOS[package] / package)]
        sys.modules[package] = module
    _stub("hydra", compose=None, initialize_config_module=None, initialize_config_dir=None)
    _stub("hydra.utils", instantiate=None)
    _stub("hydra.core")
    _stub("hydra.core.global_hydra", GlobalHydra=None)
    _stub("omegaconf", OmegaConf=None)
    _stub("iopath")
    _stub("iopath.common")
    _stub("iopath.common.file_io", g_pathmgr=None)
    _stub("yacs")
    _stub("yacs.config", CfgNode=type("CfgNode", (dict,), {}))
    for name in ("mmdet", "mmdet.models", "projects", "projects.EfficientDet"):
        _stub(name)
    _stub("mmdet.models.dense_heads", RPNHead=None, CenterNetUpdateHead=None)
    _stub("mmdet.models.necks", FPN=None)
    _stub("projects.EfficientDet.efficientdet")
    _stub("mmengine", ConfigDict=dict)
    _stub("loralib", Linear=None)
    for package in ("segment_anything", "mobile_sam", "efficient_sam", "samexporter"):
        sys.path.insert(0, str(upstream / REPOS[package]))
    # EfficientSAM's ONNX wrappers are a top-level module of its repo.
    sys.path.insert(0, str(upstream / REPOS["efficient_sam"]))


def load(name: str):
    return importlib.import_module(name)
