"""Every shipped mmseg config: loads, builds, and has the documented settings."""

from __future__ import annotations

import ast
import copy
import functools
import re
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import lightly_glare.openmmlab  # noqa: F401  (mmcv fallback before mmseg)
from lightly_glare.data import (
    AERIAL_BUILDINGS_METAINFO,
    AERIAL_ROADS_METAINFO,
    MRI_METAINFO,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "mmseg_configs"
#: The paper's ViT-B/16 UperNet recipes, by dataset (mmseg's naming).
VIT_B16 = {
    "ade20k": "segmentation/upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py",
    "pascal_context": "segmentation/"
    "upernet_glare-vit-b16_mln_4xb4-80k_pascal-context-59-480x480.py",
    "cityscapes": "segmentation/"
    "upernet_glare-vit-b16_mln_4xb4-80k_cityscapes-512x1024.py",
    "loveda": "segmentation/upernet_glare-vit-b16_mln_4xb4-80k_loveda-512x512.py",
}
#: The README's short names of those recipes: ``glare_<dataset>.py`` aliases.
ENTRY_CONFIGS = [f"glare_{key}.py" for key in VIT_B16]
#: Every config except the ``_base_`` pieces, relative to CONFIG_DIR.
ALL_CONFIGS = sorted(
    str(p.relative_to(CONFIG_DIR))
    for p in CONFIG_DIR.rglob("*.py")
    if "_base_" not in p.relative_to(CONFIG_DIR).parts
)
#: UperNet fine-tuning configs (the pretrain/ ones: test_pretrain_configs.py).
SEG_CONFIGS = [
    name
    for name in ALL_CONFIGS
    if name in ENTRY_CONFIGS or name.startswith("segmentation/")
]
#: mmseg's config naming: ``{algorithm}_{backbone}[_{neck}]_{gpus}x{batch}-{schedule}_
#: {data}-{crop}``, e.g. ``upernet_glare-vit-s16_mln_4xb4-160k_ade20k-512x512``.
NAME_PATTERN = re.compile(
    r"(?P<algorithm>[a-z0-9]+(?:-[a-z0-9]+)*)"
    r"_(?P<components>[a-z0-9]+(?:-[a-z0-9]+)*(?:_[a-z0-9]+(?:-[a-z0-9]+)*)*?)"
    r"_(?P<gpus>\d+)xb(?P<batch>\d+)-(?P<schedule>\d+(?:k|iter))"
    r"_(?P<data>[a-z0-9]+(?:-[a-z0-9]+)*?)-(?P<crop>\d+(?:x\d+)?)\.py"
)
#: Where each kind of config lives.
FOLDERS = {
    "segmentation": "upernet",
    "pretrain": "glare",
    "pretrain/ablations": "glare-",
}


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
#: The ViT-S/16 twin of each ViT-B/16 entry config.
VIT_S16 = {
    "ade20k": "segmentation/upernet_glare-vit-s16_mln_4xb4-160k_ade20k-512x512.py",
    "pascal_context": "segmentation/"
    "upernet_glare-vit-s16_mln_4xb4-80k_pascal-context-59-480x480.py",
    "cityscapes": "segmentation/"
    "upernet_glare-vit-s16_mln_4xb4-80k_cityscapes-512x1024.py",
    "loveda": "segmentation/upernet_glare-vit-s16_mln_4xb4-80k_loveda-512x512.py",
}
BENCHMARK_CONFIGS = {
    name: (key, arch)
    for key, s16 in VIT_S16.items()
    for name, arch in (
        (f"glare_{key}.py", "vit_base_patch16_224"),
        (VIT_B16[key], "vit_base_patch16_224"),
        (s16, "vit_small_patch16_224"),
    )
}
#: mmseg's ViT UperNet feature blocks (and the paper's baseline protocol).
PAPER_OUT_INDICES = (2, 5, 8, 11)


@functools.cache
def _load(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / name))


def load(name: str) -> Config:
    """A fresh copy of the parsed config (parsing takes about a second)."""
    return copy.deepcopy(_load(name))


#: Offline real datasets (prepare_data tool): short name -> expected.
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
    "segmentation/upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_"
    f"{key.replace('_', '-')}-126x126.py": key
    for key in OFFLINE
}


def test_every_config_is_covered() -> None:
    assert set(BENCHMARK_CONFIGS) | set(OFFLINE_CONFIGS) == set(SEG_CONFIGS)
    assert len(SEG_CONFIGS) == 15  # 4 short aliases, 4 ViT-B/16, 4 ViT-S/16, 3 CPU


def test_layout_entry_configs_and_folders_by_purpose() -> None:
    """Top level: the four paper entry configs; the rest in folders by purpose."""
    top = sorted(p.name for p in CONFIG_DIR.glob("*.py"))
    assert top == sorted(ENTRY_CONFIGS)
    for name in ALL_CONFIGS:
        if name in ENTRY_CONFIGS:
            continue
        folder, _, stem = name.rpartition("/")
        assert folder in FOLDERS, name
        assert stem.startswith(FOLDERS[folder]), name
    assert any(name.startswith("pretrain/ablations/") for name in ALL_CONFIGS)


@pytest.mark.parametrize(
    "name", [name for name in ALL_CONFIGS if name not in ENTRY_CONFIGS]
)
def test_config_name_follows_mmseg_pattern(name: str) -> None:
    match = NAME_PATTERN.fullmatch(Path(name).name)
    assert match, f"{name} does not follow {NAME_PATTERN.pattern}"
    cfg = load(name)
    # The name's batch is the per-GPU batch of the config.
    assert cfg.train_dataloader.batch_size == int(match["batch"])
    schedule = match["schedule"]
    iters = (
        int(schedule[:-4]) if schedule.endswith("iter") else 1000 * int(schedule[:-1])
    )
    assert cfg.train_cfg.max_iters == iters


def _statements(path: Path) -> list[ast.stmt]:
    return ast.parse(path.read_text()).body


def test_no_config_is_a_bare_alias() -> None:
    """No file only re-exports another (one name per setup), and no two configs
    (entry, segmentation or pre-training) resolve to the same settings."""
    for path in CONFIG_DIR.rglob("*.py"):
        targets = [
            target.id
            for stmt in _statements(path)
            if isinstance(stmt, ast.Assign)
            for target in stmt.targets
            if isinstance(target, ast.Name)
        ]
        if path.relative_to(CONFIG_DIR).as_posix() in ENTRY_CONFIGS:
            continue  # the README's short names: aliases by design (below)
        assert targets != ["_base_"], f"{path} is a bare alias of its _base_"
    resolved: dict[str, str] = {}
    for name in ALL_CONFIGS:
        if name in ENTRY_CONFIGS:
            continue  # equal to its recipe: test_short_names_are_aliases_of_recipes
        text = load(name).pretty_text
        assert text not in resolved, f"{name} duplicates {resolved.get(text)}"
        resolved[text] = name


def test_vit_s16_configs_are_their_entry_config_plus_the_vit_s16_piece() -> None:
    for key, name in VIT_S16.items():
        statements = _statements(CONFIG_DIR / name)
        assert len(statements) == 2, name
        base = statements[0]
        assert isinstance(base, ast.Assign)
        assert ast.literal_eval(base.value) == [
            "./" + VIT_B16[key].removeprefix("segmentation/"),
            "../_base_/models/upernet_glare-vit-s16_mln.py",
        ]


@pytest.mark.parametrize("key", sorted(VIT_B16))
def test_short_names_are_aliases_of_recipes(key: str) -> None:
    """``glare_<dataset>.py`` only names its mmseg-named recipe (a comment and
    ``_base_``, nothing else) and resolves to exactly the recipe's settings."""
    statements = _statements(CONFIG_DIR / f"glare_{key}.py")
    assert len(statements) == 1
    base = statements[0]
    assert isinstance(base, ast.Assign)
    assert [ast.unparse(target) for target in base.targets] == ["_base_"]
    assert ast.literal_eval(base.value) == ["./" + VIT_B16[key]]
    recipe = load(VIT_B16[key])
    alias = load(f"glare_{key}.py")
    assert alias.to_dict() == recipe.to_dict()
    assert alias.pretty_text == recipe.pretty_text


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
    assert backbone.freeze_backbone is False  # the paper fine-tunes the whole network
    assert cfg.model.neck.type == "MultiLevelNeck"
    assert list(cfg.model.neck.scales) == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.type == "UPerHead"


@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_paper_protocol_out_indices(name: str) -> None:
    """mmseg's ViT-B UperNet blocks (2, 5, 8, 11), for every 12-block ViT."""
    assert tuple(load(name).model.backbone.out_indices) == PAPER_OUT_INDICES


@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_config_uses_fail_safe_hooks(name: str) -> None:
    """Atomic checkpoints; a non-finite loss stops before its checkpoint."""
    cfg = load(name)
    assert cfg.default_hooks.checkpoint.type == "AtomicCheckpointHook"
    assert [hook.type for hook in cfg.custom_hooks] == ["NonFiniteLossHook"]


def test_no_weight_decay_on_norms_biases_and_embeddings() -> None:
    """timm's / DINO's rule: no decay on 1-D parameters (every norm, bias and
    LayerScale), the positional embedding and the class token; 0.01 elsewhere."""
    cfg = load("glare_ade20k.py")
    dim = 48
    cfg.model.backbone.update(
        arch=dict(embed_dim=dim, depth=4, num_heads=3, patch_size=16, init_values=1.0),
        img_size=(64, 64),
        out_indices=(0, 1, 2, 3),
        checkpoint=None,
    )
    cfg.model.neck.update(in_channels=[dim] * 4, out_channels=dim)
    cfg.model.decode_head.update(in_channels=[dim] * 4, channels=16)
    cfg.model.auxiliary_head.update(in_channels=dim, channels=16)
    init_default_scope("mmseg")
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {
        id(param): group["weight_decay"]
        for group in optim_wrapper.optimizer.param_groups
        for param in group["params"]
    }
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    assert any(".ls1." in name for name in names)  # LayerScale is covered
    assert any("adapters" in name and "norm" in name for name in names)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        flat = param.ndim <= 1 or name.endswith(("pos_embed", "cls_token"))
        assert decay[id(param)] == (0.0 if flat else 0.01), name


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
