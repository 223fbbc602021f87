"""GLARE pre-training through mmengine: logging, resume, export (tiny, CPU)."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import lightly_glare.openmmlab  # noqa: F401  (registers the modules)
from lightly_glare.models import UniAdapterViT, load_adapted_backbone
from lightly_glare.openmmlab.pretrain import (
    GlareInfiniteSampler,
    GlarePretrainDataset,
    GlarePretrainer,
    GlareTeacherEMAHook,
)
from lightly_glare.weights.ssl_checkpoints import create_vit
from tests.conftest import real_photo

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "mmseg_configs" / "glare_pretrain_vit-s14-dinov2_aerial-112.py"
ARCH = "vit_tiny_patch16_224"
VIT_CFG = {"depth": 2}  # vit_tiny with 2 blocks: a few 0.1 s per iteration


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 64 px crops of a real photograph."""
    root = tmp_path_factory.mktemp("unlabeled")
    photo = real_photo()
    for i, (left, top) in enumerate([(0, 0), (200, 0), (0, 250), (250, 300)]):
        crop = photo.crop((left, top, left + 256, top + 256)).resize((64, 64))
        crop.save(root / f"crop_{i}.png")
    return root


def tiny_cfg(work_dir: Path, data_root: Path, max_iters: int) -> Config:
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict(
        {
            "model.arch": ARCH,
            "model.img_size": 32,
            "model.vit_cfg": VIT_CFG,
            "model.checkpoint": None,
            "model.output_dim": 64,
            "model.hidden_dim": 32,
            "model.head_bottleneck_dim": 16,
            "model.adapter_bottleneck": 8,
            "train_dataloader.batch_size": 2,
            "train_dataloader.num_workers": 0,
            "train_dataloader.persistent_workers": False,
            "train_dataloader.dataset.data_root": str(data_root),
            "train_dataloader.dataset.input_size": 32,
            "train_cfg.max_iters": max_iters,
            "default_hooks.logger.interval": 1,
            "log_processor.window_size": 1,  # log every step's own loss
            "default_hooks.checkpoint.interval": 1,
            "optim_wrapper.optimizer.lr": 1e-3,
        }
    )
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.5, by_epoch=False, begin=0, end=2),
        dict(type="CosineAnnealingLR", eta_min=1e-6, by_epoch=False, begin=2, end=4),
    ]
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f"glare_{uuid.uuid4().hex[:8]}"  # a fresh logger each
    cfg.log_level = "WARNING"
    return cfg


class StopAfter(Hook):
    """Simulates a killed job: raises after the checkpoint of an iteration."""

    priority = "LOWEST"

    def __init__(self, iters: int) -> None:
        self.iters = iters

    def after_train_iter(
        self, runner: Any, batch_idx: int, *args: Any, **kw: Any
    ) -> None:
        if runner.iter + 1 >= self.iters:
            raise KeyboardInterrupt("simulated interruption")


def train(cfg: Config, stop_after: int | None = None) -> Runner:
    runner = Runner.from_cfg(cfg)
    if stop_after is not None:
        runner.register_hook(StopAfter(stop_after))
    runner.train()
    return runner


def losses(work_dir: Path) -> dict[int, float]:
    """``iteration -> loss`` from every run's scalars.json in work_dir."""
    found: dict[int, float] = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "loss" in record:
                found[int(record["step"])] = float(record["loss"])
    return found


def terms(work_dir: Path) -> list[dict[str, float]]:
    path = min(work_dir.glob("*/vis_data/scalars.json"))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(
    image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Runner]:
    work_dir = tmp_path_factory.mktemp("full")
    runner = train(tiny_cfg(work_dir, image_dir, max_iters=4))
    return work_dir, runner


@pytest.mark.slow  # a few runs of 4 iterations: ~20-40 s
def test_run_logs_finite_loss(full_run: tuple[Path, Runner]) -> None:
    work_dir, _ = full_run
    records = terms(work_dir)
    assert [int(r["step"]) for r in records] == [1, 2, 3, 4]
    for record in records:
        parts = [v for k, v in record.items() if k.startswith("term_")]
        assert len(parts) == 4  # the four GLARE terms
        assert torch.isfinite(torch.tensor([record["loss"], *parts])).all()
        # The logged loss is the optimised total, not total + parts.
        assert record["loss"] == pytest.approx(sum(parts), rel=1e-4)
    assert (work_dir / "iter_4.pth").is_file()


@pytest.mark.slow  # a few runs of 4 iterations: ~20-40 s
def test_resume_repeats_uninterrupted_run(
    full_run: tuple[Path, Runner], image_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path, image_dir, max_iters=4), stop_after=2)
    assert (tmp_path / "iter_2.pth").is_file()
    assert not (tmp_path / "iter_3.pth").exists()
    cfg = tiny_cfg(tmp_path, image_dir, max_iters=4)
    cfg.resume = True
    train(cfg)
    expected = losses(full_run[0])
    found = losses(tmp_path)
    assert sorted(found) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert found[step] == pytest.approx(expected[step], abs=1e-6)
    resumed = torch.load(tmp_path / "iter_4.pth", weights_only=True)["state_dict"]
    full = torch.load(full_run[0] / "iter_4.pth", weights_only=True)["state_dict"]
    assert resumed.keys() == full.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=1e-6)


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a few runs of 4 iterations: ~20-40 s
@pytest.mark.parametrize("which", ["teacher", "student"])
def test_export_matches_trained_backbone(
    full_run: tuple[Path, Runner], image_dir: Path, tmp_path: Path, which: str
) -> None:
    work_dir, runner = full_run
    config = tmp_path / "pretrain_tiny.py"
    tiny_cfg(work_dir, image_dir, max_iters=4).dump(str(config))
    out = tmp_path / "backbone.pth"
    tool = load_tool("export_backbone")
    tool.main(
        [
            str(work_dir / "iter_4.pth"),
            str(out),
            "--config",
            str(config),
            "--which",
            which,
        ]
    )

    model = runner.model
    assert isinstance(model, GlarePretrainer)
    glare = model.glare
    adapters = glare.teacher_adapters if which == "teacher" else glare.backbone.adapters
    backbone = UniAdapterViT(create_vit(ARCH, img_size=32, **VIT_CFG), bottleneck=8)
    meta = load_adapted_backbone(backbone, out)
    assert meta["arch"] == ARCH and meta["which"] == which
    x = torch.randn(2, 3, 32, 32)
    glare.eval()
    backbone.eval()
    with torch.no_grad():
        expected = glare.backbone.forward_features(x, adapters=adapters).tokens
        found = backbone.forward_features(x).tokens
    torch.testing.assert_close(found, expected, rtol=0, atol=0)
    # The adapters trained: the export differs from the initial backbone.
    assert any(p.abs().sum() > 0 for p in adapters.parameters())


def test_dataset_draws_depend_on_seed_and_index(image_dir: Path) -> None:
    dataset = GlarePretrainDataset(str(image_dir), input_size=32, seed=3)
    (views_a, geometry_a) = dataset[5]["inputs"]
    torch.manual_seed(123)  # the global RNG does not matter
    (views_b, geometry_b) = dataset[5]["inputs"]
    torch.testing.assert_close(geometry_a, geometry_b, rtol=0, atol=0)
    torch.testing.assert_close(views_a[1], views_b[1], rtol=0, atol=0)
    _, geometry_c = dataset[1]["inputs"]  # same image, other epoch
    assert not torch.equal(geometry_a, geometry_c)
    sampler = GlareInfiniteSampler(dataset, seed=0)
    first = [index for index, _ in zip(sampler, range(8), strict=False)]
    assert sorted(first) == list(range(8))  # epoch 0: 0..3, epoch 1: 4..7
    assert sorted(first[:4]) == [0, 1, 2, 3]


def test_ema_hook_momentum_schedule() -> None:
    hook = GlareTeacherEMAHook()
    assert hook.momentum(-1, 10) == pytest.approx(0.996)
    assert hook.momentum(9, 10) == pytest.approx(1.0)
    assert hook.momentum(50, 10) == pytest.approx(1.0)
    assert 0.996 < hook.momentum(4, 10) < 1.0


def test_non_finite_loss_raises(image_dir: Path) -> None:
    model = GlarePretrainer(
        ARCH,
        img_size=32,
        vit_cfg=VIT_CFG,
        output_dim=64,
        hidden_dim=32,
        head_bottleneck_dim=16,
    )
    dataset = GlarePretrainDataset(str(image_dir), input_size=32)
    views, geometry = dataset[0]["inputs"]
    batch = (
        [v[None].repeat(2, 1, 1, 1) for v in views],
        geometry[None].repeat(2, 1, 1),
    )
    out = model(batch)
    assert set(out) == {
        "loss",
        "term_global",
        "term_regional",
        "term_local_distortion",
        "term_local_matching",
    }
    assert out["loss"].requires_grad
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")
    batch[0][0][:] = float("nan")
    with pytest.raises(RuntimeError, match="Non-finite GLARE loss"):
        model(batch)


@pytest.mark.parametrize(
    ("name", "arch", "size", "batch", "iters", "out", "hidden"),
    [
        (CONFIG.name, "vit_small_patch14_dinov2", 112, 16, 300, 2048, 512),
        (
            "glare_pretrain_vit-b16_224.py",
            "vit_base_patch16_224",
            224,
            64,
            20000,
            8192,
            2048,
        ),
    ],
)
def test_pretrain_configs(
    name: str, arch: str, size: int, batch: int, iters: int, out: int, hidden: int
) -> None:
    cfg = Config.fromfile(str(CONFIG.parent / name))
    assert cfg.default_scope == "mmseg"
    assert cfg.custom_imports.imports == ["lightly_glare.openmmlab"]
    assert cfg.model.type == "GlarePretrainer"
    assert (cfg.model.arch, cfg.model.img_size) == (arch, size)
    assert (cfg.model.output_dim, cfg.model.hidden_dim) == (out, hidden)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.train_dataloader.dataset.input_size == size
    assert cfg.train_cfg.max_iters == iters
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.lr == pytest.approx(5e-4 * batch / 256)
    assert optimizer.weight_decay == 0.04
    assert cfg.optim_wrapper.clip_grad.max_norm == 3.0
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == cosine.begin == iters // 10
    assert cosine.end == iters and cosine.eta_min == 1e-6
    assert [h.type for h in cfg.custom_hooks] == ["GlareTeacherEMAHook"]
    assert cfg.default_hooks.checkpoint.save_last
