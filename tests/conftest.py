"""Shared fixtures: tiny timm ViTs that exercise the real code paths quickly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]

#: Tiny ViT variants with a 4 x 4 patch grid: plain (DINO-like) and
#: LayerScale + register tokens + patch 7 (DINOv2-like).
VIT_VARIANTS: dict[str, dict[str, object]] = {
    "plain": {"img_size": 32, "patch_size": 8},
    "dinov2_like": {
        "img_size": 28,
        "patch_size": 7,
        "init_values": 0.1,
        "reg_tokens": 2,
    },
}


#: Marks of a test that needs a CUDA device: skipped without one, selected by
#: ``pytest -m cuda`` (benchmarks/gpu_suite.sh runs them on a GPU).
NEEDS_CUDA = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
#: Devices of the tests parametrised over devices.
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


def make_vit(variant: str = "plain", **overrides: object) -> VisionTransformer:
    """A small, randomly initialised timm ViT (the same classes as ViT-S/B)."""
    kwargs: dict[str, object] = {
        "embed_dim": 48,
        "depth": 3,
        "num_heads": 3,
        "num_classes": 0,
        **VIT_VARIANTS[variant],
        **overrides,
    }
    vit = VisionTransformer(**kwargs)  # type: ignore[arg-type]
    with torch.no_grad():  # non-trivial norms: equivalence tests must not be easy
        for name, param in vit.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.1)
    return vit.eval()


def image_size(vit: VisionTransformer) -> int:
    return int(vit.patch_embed.img_size[0])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def torch_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The files ``torch.load`` reads during the test, in order."""
    reads: list[object] = []
    load = torch.load

    def counting_load(file: object, *args: Any, **kwargs: Any) -> Any:
        reads.append(file)
        return load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    return reads


def real_photo() -> Image.Image:
    """A real photograph shipped with matplotlib (Grace Hopper, 512 x 600 px)."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as image:
        return image.convert("RGB")


def make_ade_folder(
    root: Path, counts: tuple[int, int] = (4, 2), size: tuple[int, int] = (256, 192)
) -> None:
    """Real photo crops in ADE20k layout; labels 1..4 from grey levels (0: ignore).

    Args:
        root: The dataset root (``images/`` and ``annotations/`` are made in it).
        counts: Number of training and validation images.
        size: Crop width and height in pixels.
    """
    photo = real_photo()
    width, height = size
    for split, count in zip(("training", "validation"), counts, strict=True):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(count):
            crop = photo.crop((40 * i, 30 * i, 40 * i + width, 30 * i + height))
            name = f"ADE_{split}_{i:08d}"
            crop.save(root / "images" / split / f"{name}.jpg")
            label = (np.asarray(crop.convert("L")) // 64 + 1).astype(np.uint8)
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")


@pytest.fixture(scope="module")
def roads_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 px crops of a real photo in the prepared aerial layout. Train tiles
    are labelled all road, all background, and by brightness; val by brightness.

    Used by the tests of lightly_glare.openmmlab.analysis and of the tools
    that run it (tools/analysis_tools).
    """
    root = tmp_path_factory.mktemp("roads")
    photo = real_photo()
    labels = {
        "train": ("road", "background", "bright"),
        "val": ("bright", "bright"),
    }
    for split, kinds in labels.items():
        (root / "img_dir" / split).mkdir(parents=True)
        (root / "ann_dir" / split).mkdir(parents=True)
        for i, kind in enumerate(kinds):
            crop = photo.crop((60 * i, 90 * i, 60 * i + 128, 90 * i + 128))
            grey = np.asarray(crop.convert("L"))
            label = {
                "road": np.ones_like(grey),
                "background": np.zeros_like(grey),
                "bright": (grey > 128).astype(np.uint8),
            }[kind]
            name = f"{kind}_{i}.png"
            crop.save(root / "img_dir" / split / name)
            Image.fromarray(label).save(root / "ann_dir" / split / name)
    return root


def load_tool(name: str) -> ModuleType:
    """Imports ``tools/<name>.py`` as a module (registered in ``sys.modules``).

    ``name`` is the path below ``tools/`` without ``.py``, e.g.
    ``"model_converters/export_backbone"``. The tool's folder is on
    ``sys.path`` while it is imported, as when ``python tools/...py`` runs it,
    so that it finds the helper modules beside it.
    """
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
