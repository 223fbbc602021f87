"""Every shipped mmseg config: loads, builds, and has the documented settings."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import lightly_glare.openmmlab  # noqa: F401  (mmcv fallback before mmseg)
from lightly_glare.data import (
    AERIAL_BUILDINGS_METAINFO,
    AERIAL_ROADS_METAINFO,
    MRI_METAINFO,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "mmseg_configs"
#: Segmentation configs (the glare_pretrain_* ones are tested with the pretrainer).
SEG_CONFIGS = sorted(
    p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("glare_pretrain")
)


class Expected(NamedTuple):
    dataset: str
    data_root: str
    num_classes: int
    crop: tuple[int, int]
    max_iters: int


BENCHMARKS = {
    "ade20k": Expected(
        "ADE20KDataset", "data/ade/ADEChallengeData2016", 150, (512, 512), 160000
    ),
    "pascal_context": Expected(
        "PascalContextDataset59", "data/VOCdevkit/VOC2010/", 59, (480, 480), 80000
    ),
    "cityscapes": Expected(
        "CityscapesDataset", "data/cityscapes/", 19, (512, 1024), 80000
    ),
    "loveda": Expected("LoveDADataset", "data/loveDA", 7, (512, 512), 80000),
}
#: Short entry name -> full mmseg-style name (ViT-B/16), and the ViT-S/16 twin.
FULL_NAMES = {
    "ade20k": "upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py",
    "pascal_context": "upernet_glare-vit-b16_mln_4xb4-80k_pascal-context-59-480x480.py",
    "cityscapes": "upernet_glare-vit-b16_mln_4xb4-80k_cityscapes-512x1024.py",
    "loveda": "upernet_glare-vit-b16_mln_4xb4-80k_loveda-512x512.py",
}
BENCHMARK_CONFIGS = {
    name: (key, arch)
    for key, full in FULL_NAMES.items()
    for name, arch in (
        (f"glare_{key}.py", "vit_base_patch16_224"),
        (full, "vit_base_patch16_224"),
        (full.replace("vit-b16", "vit-s16"), "vit_small_patch16_224"),
    )
}


@functools.cache
def _load(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / name))


def load(name: str) -> Config:
    """A fresh copy of the parsed config (parsing takes about a second)."""
    return copy.deepcopy(_load(name))


#: Offline real datasets (tools/prepare_data.py): short name -> expected.
OFFLINE = {
    "aerial_buildings": (
        "AerialBuildingsDataset",
        "data/aerial/buildings",
        AERIAL_BUILDINGS_METAINFO,
    ),
    "aerial_roads": ("AerialRoadsDataset", "data/aerial/roads", AERIAL_ROADS_METAINFO),
    "mri_tissue": ("MRITissueDataset", "data/mri", MRI_METAINFO),
}
OFFLINE_CONFIGS = {
    name: key
    for key in OFFLINE
    for name in (
        f"glare_{key}.py",
        "upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_"
        f"{key.replace('_', '-')}-126x126.py",
    )
}


def test_every_config_is_covered() -> None:
    assert set(BENCHMARK_CONFIGS) | set(OFFLINE_CONFIGS) == set(SEG_CONFIGS)
    assert len(SEG_CONFIGS) == 18


@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_config_imports_plugin_and_uses_glare_vit(name: str) -> None:
    cfg = load(name)
    assert cfg.custom_imports == {
        "imports": ["lightly_glare.openmmlab"],
        "allow_failed_imports": False,
    }
    assert cfg.default_scope == "mmseg"
    backbone = cfg.model.backbone
    assert backbone.type == "GlareViT"
    assert cfg.model.pretrained is None  # would be passed to GlareViT otherwise
    assert backbone.checkpoint_type == "glare"
    assert backbone.freeze_backbone is False  # spec §9: whole network fine-tuned
    assert tuple(backbone.out_indices) == (3, 5, 7, 11)
    assert cfg.model.neck.type == "MultiLevelNeck"
    assert list(cfg.model.neck.scales) == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.type == "UPerHead"


@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_config_uses_fail_safe_hooks(name: str) -> None:
    """Atomic checkpoints; a non-finite loss stops before its checkpoint."""
    cfg = load(name)
    assert cfg.default_hooks.checkpoint.type == "AtomicCheckpointHook"
    assert [hook.type for hook in cfg.custom_hooks] == ["NonFiniteLossHook"]


@pytest.mark.parametrize("short", sorted(FULL_NAMES) + sorted(OFFLINE))
def test_short_name_aliases_full_config(short: str) -> None:
    full = FULL_NAMES.get(short) or next(
        name
        for name, key in OFFLINE_CONFIGS.items()
        if key == short and "_mln_" in name
    )
    assert load(f"glare_{short}.py").to_dict() == load(full).to_dict()


@pytest.mark.parametrize("name", sorted(OFFLINE_CONFIGS))
def test_offline_dataset_classes_and_cpu_settings(name: str) -> None:
    dataset, data_root, metainfo = OFFLINE[OFFLINE_CONFIGS[name]]
    cfg = load(name)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == dataset
        assert loader.dataset.data_root == data_root
    registered = DATASETS.get(dataset).METAINFO
    assert registered["classes"] == metainfo["classes"]
    assert registered["palette"] == metainfo["palette"]
    num_classes = len(metainfo["classes"])
    assert cfg.model.decode_head.num_classes == num_classes
    assert cfg.model.auxiliary_head.num_classes == num_classes
    assert cfg.model.backbone.arch == "vit_small_patch14_dinov2"
    assert tuple(cfg.model.backbone.img_size) == (126, 126)  # 9 x 9 patches
    assert tuple(cfg.model.data_preprocessor.size) == (126, 126)
    # CPU: plain BN (SyncBN needs a process group), short schedule.
    assert cfg.model.decode_head.norm_cfg.type == "BN"
    assert cfg.model.auxiliary_head.norm_cfg.type == "BN"
    assert cfg.train_cfg.max_iters == 500
    warmup, poly = cfg.param_scheduler
    assert (warmup.end, poly.begin, poly.end) == (50, 50, 500)
    assert cfg.optim_wrapper.optimizer.lr == 6e-5


@pytest.mark.parametrize("name", sorted(BENCHMARK_CONFIGS))
def test_benchmark_dataset_classes_and_sizes(name: str) -> None:
    key, arch = BENCHMARK_CONFIGS[name]
    expected = BENCHMARKS[key]
    cfg = load(name)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == expected.dataset
        assert loader.dataset.data_root == expected.data_root
    metainfo = DATASETS.get(expected.dataset).METAINFO
    assert len(metainfo["classes"]) == expected.num_classes
    assert len(metainfo["palette"]) == expected.num_classes
    assert cfg.model.decode_head.num_classes == expected.num_classes
    assert cfg.model.auxiliary_head.num_classes == expected.num_classes
    crop = expected.crop
    assert tuple(cfg.model.backbone.img_size) == crop
    assert tuple(cfg.model.data_preprocessor.size) == crop
    random_crop = next(
        t for t in cfg.train_dataloader.dataset.pipeline if t.type == "RandomCrop"
    )
    assert tuple(random_crop.crop_size) == crop
    assert cfg.model.backbone.arch == arch
    dim = 768 if "base" in arch else 384
    assert list(cfg.model.neck.in_channels) == [dim] * 4
    assert cfg.model.neck.out_channels == dim
    assert list(cfg.model.decode_head.in_channels) == [dim] * 4
    assert cfg.model.auxiliary_head.in_channels == dim
    assert cfg.train_dataloader.batch_size == 4  # 4xb4


@pytest.mark.parametrize("name", sorted(BENCHMARK_CONFIGS))
def test_benchmark_schedule(name: str) -> None:
    max_iters = BENCHMARKS[BENCHMARK_CONFIGS[name][0]].max_iters
    cfg = load(name)
    assert cfg.optim_wrapper.type == "OptimWrapper"
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == (
        "AdamW",
        6e-5,
        0.01,
    )
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ("LinearLR", 0, 1500)
    assert (poly.type, poly.begin, poly.end, poly.power) == (
        "PolyLR",
        1500,
        max_iters,
        1.0,
    )
    assert cfg.train_cfg.max_iters == max_iters
    assert cfg.train_cfg.val_interval == max_iters // 10
    assert cfg.default_hooks.checkpoint.interval == max_iters // 10


@pytest.mark.slow
@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_config_model_builds_and_runs(name: str) -> None:
    """Builds the segmentor and runs a small image through it (eval mode)."""
    cfg = load(name)
    init_default_scope("mmseg")
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    size = 4 * model.backbone.adapted.patch_size  # a 4 x 4 patch grid
    with torch.no_grad():
        logits = model(torch.rand(1, 3, size, size), mode="tensor")
    num_classes = cfg.model.decode_head.num_classes
    # UPerHead predicts at the neck's finest level: 4 x the patch grid.
    assert logits.shape == (1, num_classes, 16, 16)
    assert torch.isfinite(logits).all()
