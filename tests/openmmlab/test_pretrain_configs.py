"""Every GLARE pre-training config (mmseg_configs/pretrain/, ablations included):
composed from registered parts, builds, and trains two iterations on real images.

The configs are run as shipped except for the size: a 2-block, 48-dim ViT of the
config's timm architecture (``backbone.vit_cfg``), a 4 x 4 patch grid, small
heads, no SSL checkpoint, 2 images per step.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

import lightly_glare.openmmlab  # noqa: F401  (registers the modules)
from lightly_glare.loss import ALL_TERMS
from lightly_glare.openmmlab.pretrainer import GlarePretrainer
from tests.conftest import real_photo

CONFIG_DIR = Path(__file__).resolve().parents[2] / "mmseg_configs"
PRETRAIN_DIR = CONFIG_DIR / "pretrain"
#: Every pre-training config, relative to mmseg_configs/pretrain/.
PRETRAIN_CONFIGS = sorted(
    str(p.relative_to(PRETRAIN_DIR)) for p in PRETRAIN_DIR.rglob("*.py")
)
ABLATIONS = [name for name in PRETRAIN_CONFIGS if name.startswith("ablations/")]
#: The config the ablations change one part of (CPU-sized, aerial, DINOv2-S/14).
ABLATION_BASE = "glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py"
#: The parts of GlarePretrainer a pre-training config composes, by registered type.
PART_TYPES = {
    "backbone": "UniAdapterViT",
    "head": "GlareProjectionHead",
    "region_sampler": "AttentionRegionSampler",
    "region_pooling": "CrossAttentionRegionPooling",
    "loss": "GlareLoss",
    "data_preprocessor": "GlarePretrainDataPreprocessor",
}
PATCH_AUGMENTATIONS = {"PatchBlur", "PatchNoise", "PatchColorJitter", "PatchMasking"}
#: Flat arguments of the former GlarePretrainer and dataset (now nested parts).
FLAT_KEYS = {
    "arch",
    "img_size",
    "checkpoint",
    "output_dim",
    "hidden_dim",
    "head_bottleneck_dim",
    "adapter_bottleneck",
    "global_weight",
    "regional_weight",
    "local_distortion_weight",
    "local_matching_weight",
    "student_temp",
    "teacher_temp",
    "glare_cfg",
}
#: The tiny size every config is shrunk to.
VIT_CFG = {"depth": 2, "embed_dim": 48, "num_heads": 3}
GRID = 4  # patches per side
HEAD = {"output_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}


@functools.cache
def _load(name: str) -> Config:
    return Config.fromfile(str(PRETRAIN_DIR / name))


def load(name: str) -> Config:
    """A fresh copy of the parsed config."""
    return copy.deepcopy(_load(name))


def patch_size(arch: str) -> int:
    """The patch size in a timm ViT name, e.g. 14 for vit_small_patch14_dinov2."""
    match = re.search(r"patch(\d+)", arch)
    assert match, arch
    return int(match[1])


def tiny(cfg: Config, data_root: Path, work_dir: Path, max_iters: int = 2) -> Config:
    """``cfg`` shrunk to a CPU run of ``max_iters`` steps of 2 images."""
    backbone = cfg.model.backbone
    size = GRID * patch_size(backbone.arch)
    # Assigned, not merged: the shipped parts keep every other key.
    backbone.update(
        img_size=size, checkpoint=None, adapter_bottleneck=8, vit_cfg=dict(VIT_CFG)
    )
    cfg.model.head.update(HEAD)
    loader = cfg.train_dataloader
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    loader.dataset.update(data_root=str(data_root))
    loader.dataset.transform.update(input_size=size)
    cfg.train_cfg.max_iters = max_iters
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.window_size = 1
    cfg.default_hooks.checkpoint.save_last = False
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f"glare_{uuid.uuid4().hex[:8]}"  # a fresh logger each
    cfg.log_level = "WARNING"
    return cfg


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 80 px crops of a real photograph."""
    root = tmp_path_factory.mktemp("unlabeled")
    photo = real_photo()
    for i, (left, top) in enumerate([(0, 0), (200, 0), (0, 250), (250, 300)]):
        crop = photo.crop((left, top, left + 256, top + 256)).resize((80, 80))
        crop.save(root / f"crop_{i}.png")
    return root


class RecordOutputs(Hook):
    """Keeps the logged outputs of every training iteration."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, float]] = []

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        self.outputs.append(
            {k: float(torch.as_tensor(v).detach()) for k, v in (outputs or {}).items()}
        )


def test_configs_are_discovered() -> None:
    assert ABLATION_BASE in PRETRAIN_CONFIGS
    assert any("vit-b16" in name for name in PRETRAIN_CONFIGS)
    assert len(ABLATIONS) >= 7


@pytest.mark.parametrize("name", PRETRAIN_CONFIGS)
def test_config_composes_registered_parts(name: str) -> None:
    cfg = load(name)
    assert cfg.default_scope == "mmseg"
    assert cfg.custom_imports.imports == ["lightly_glare.openmmlab"]
    model = cfg.model
    assert model.type == "GlarePretrainer"
    assert not FLAT_KEYS & set(model), "flat arguments are nested parts now"
    for part, type_name in PART_TYPES.items():
        assert model[part].type == type_name, part
        assert MODELS.get(type_name) is not None, type_name
    assert model.patch_augmentation.type in PATCH_AUGMENTATIONS
    assert model.patch_head is None  # an untied copy of head
    assert "input_dim" not in model.head  # filled in from the backbone
    assert "dim" not in model.region_pooling
    assert not {"output_dim", "patch_output_dim"} & set(model.loss)  # from the heads
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == "GlarePretrainDataset"
    assert not {"input_size", "transform_cfg"} & set(dataset)
    assert dataset.transform.type == "GlareTransform"
    assert dataset.transform.input_size == model.backbone.img_size
    assert model.backbone.img_size % patch_size(model.backbone.arch) == 0


def test_patch_augmentation_base_settings_are_shared_by_all_types() -> None:
    """Only patch_ratio in the base, so an ablation swaps the type in one line."""
    augmentation = load(ABLATION_BASE).model.patch_augmentation
    assert set(augmentation) == {"type", "patch_ratio"}


def _statements(path: Path) -> list[ast.stmt]:
    return ast.parse(path.read_text()).body


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_is_base_comment_and_one_override(name: str) -> None:
    path = PRETRAIN_DIR / name
    lines = path.read_text().splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == f"_base_ = '../{ABLATION_BASE}'"
    assert lines[1].startswith("# Ablation: ")
    _, override = _statements(path)
    assert isinstance(override, ast.Assign)
    assert [ast.unparse(target) for target in override.targets] == ["model"]
    # Only the overridden part differs from the base config.
    ablation, reference = load(name).to_dict(), load(ABLATION_BASE).to_dict()
    changed = {
        key
        for key in ablation["model"]
        if ablation["model"][key] != reference["model"].get(key)
    }
    assert len(changed) == 1, changed
    ablation.pop("model")
    reference.pop("model")
    assert ablation == reference


#: What each ablation changes, read back from the built model.
ABLATION_EXPECTED = {
    "patch-noise": ("augmentation", "PatchNoise"),
    "patch-color-jitter": ("augmentation", "PatchColorJitter"),
    "patch-masking": ("augmentation", "PatchMasking"),
    "no-regional": ("terms", ("global", "local_distortion", "local_matching")),
    "no-local": ("terms", ("global", "regional")),
    "global-only": ("terms", ("global",)),
    "attention-match": ("region_match", "attention"),
}


def test_every_listed_ablation_is_shipped() -> None:
    variants = {
        Path(name).name.split("_")[0].removeprefix("glare-") for name in ABLATIONS
    }
    assert set(ABLATION_EXPECTED) <= variants


@pytest.mark.parametrize("name", PRETRAIN_CONFIGS)
def test_config_builds_with_the_configured_parts(name: str, tmp_path: Path) -> None:
    """MODELS.build of the (tiny) config: the built parts are the configured ones."""
    cfg = tiny(load(name), tmp_path, tmp_path)
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    assert isinstance(model, GlarePretrainer)
    glare = model.glare
    loss = cfg.model.loss
    terms = tuple(t for t in ALL_TERMS if loss.get(f"{t}_weight", 1.0) > 0)
    assert glare.terms == model.criterion.active_terms == terms
    distortion = glare.patch_augmentation
    if "local_distortion" in terms:
        assert distortion is not None
        assert type(distortion).__name__ == cfg.model.patch_augmentation.type
        assert distortion.patch_ratio == cfg.model.patch_augmentation.patch_ratio
    else:
        assert distortion is None  # the student sees clean views
    assert glare.region_match == cfg.model.get("region_match", "geometry")
    assert glare.backbone.embed_dim == VIT_CFG["embed_dim"]
    assert glare.backbone.num_blocks == VIT_CFG["depth"]
    assert glare.student_head.output_dim == HEAD["output_dim"]
    variant = Path(name).name.split("_")[0].removeprefix("glare-")
    if variant in ABLATION_EXPECTED:
        what, value = ABLATION_EXPECTED[variant]
        built = {
            "augmentation": type(distortion).__name__,
            "terms": glare.terms,
            "region_match": glare.region_match,
        }[what]
        assert built == value


@pytest.mark.parametrize("name", PRETRAIN_CONFIGS)
def test_config_trains_two_iterations_on_real_images(
    name: str, image_dir: Path, tmp_path: Path
) -> None:
    """mmengine's Runner, as tools/train.py builds it: two finite steps (~1 s)."""
    cfg = tiny(load(name), image_dir, tmp_path, max_iters=2)
    runner = Runner.from_cfg(cfg)
    record = RecordOutputs()
    runner.register_hook(record)
    before = {
        k: v.detach().clone()
        for k, v in runner.model.named_parameters()
        if v.requires_grad
    }
    runner.train()
    assert len(record.outputs) == 2
    terms = runner.model.criterion.active_terms
    for outputs in record.outputs:
        logged = sorted(
            k.removeprefix("term_") for k in outputs if k.startswith("term_")
        )
        assert logged == sorted(terms)
        values = torch.tensor([outputs["loss"], *(outputs[f"term_{t}"] for t in terms)])
        assert torch.isfinite(values).all()
        assert outputs["loss"] == pytest.approx(
            sum(outputs[f"term_{t}"] for t in terms), rel=1e-4
        )
    after = dict(runner.model.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    assert int(runner.model.num_steps) == 2
