"""GLARE pre-training through mmengine: logging, resume, export (tiny, CPU)."""

from __future__ import annotations

import builtins
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from mmseg.registry import MODELS
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

import lightly_glare.openmmlab  # noqa: F401  (registers the modules)
from lightly_glare.models import UniAdapterViT
from lightly_glare.openmmlab.backbone import GlareViT
from lightly_glare.openmmlab.config_validation import ConfigArgumentError
from lightly_glare.openmmlab.hooks import GlareTeacherEMAHook
from lightly_glare.openmmlab.pretrain_data import (
    GlareInfiniteSampler,
    GlarePretrainDataset,
)
from lightly_glare.openmmlab.pretrainer import GlarePretrainer
from lightly_glare.pretraining.loop import (
    NonFiniteLossError,
    NoTrainingStepsError,
    parameter_groups,
)
from lightly_glare.transforms import PatchNoise
from lightly_glare.weights import load_projection_heads
from lightly_glare.weights.checkpoint_io import CheckpointMismatchError
from lightly_glare.weights.export import load_adapted_backbone
from lightly_glare.weights.ssl_checkpoints import create_vit
from tests.conftest import load_tool, real_photo
from tests.weights.test_checkpoint_heads import official_head, reference

ROOT = Path(__file__).resolve().parents[2]
#: The CPU-sized aerial pre-training config (not an ablation of it).
CONFIG = next(
    path
    for path in sorted((ROOT / "mmseg_configs").rglob("*vit-s14-dinov2*aerial-126.py"))
    if "ablations" not in path.parts
)
ARCH = "vit_tiny_patch16_224"
VIT_CFG = {"depth": 2}  # vit_tiny with 2 blocks: a few 0.1 s per iteration
#: --cfg-options that shrink a pre-training config to a tiny CPU run.
TINY_MODEL: dict[str, Any] = {
    "model.backbone.arch": ARCH,
    "model.backbone.img_size": 32,
    "model.backbone.checkpoint": None,
    "model.backbone.adapter_bottleneck": 8,
    "model.head.output_dim": 64,
    "model.head.hidden_dim": 32,
    "model.head.bottleneck_dim": 16,
    "train_dataloader.dataset.transform.input_size": 32,
}
TERMS = ["term_global", "term_regional", "term_local_distortion", "term_local_matching"]
#: The teacher diagnostics logged per term (fractions of log K).
TEACHER = [
    f"teacher_{term.removeprefix('term_')}_{key}"
    for term in TERMS
    for key in ("entropy", "batch_entropy", "kl")
]


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
            **TINY_MODEL,
            "model.backbone.vit_cfg": VIT_CFG,
            "train_dataloader.batch_size": 2,
            "train_dataloader.num_workers": 0,
            "train_dataloader.persistent_workers": False,
            "train_dataloader.dataset.data_root": str(data_root),
            "train_cfg.max_iters": max_iters,
            "default_hooks.logger.interval": 1,
            "log_processor.window_size": 1,  # log every step's own loss
            "default_hooks.checkpoint.interval": 1,
            "optim_wrapper.optimizer.lr": 1e-3,
            "randomness.deterministic": True,
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


class PoisonAdapters(Hook):
    """Writes NaN into the student's adapters before iteration ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner: Any, *args: Any, **kw: Any) -> None:
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.glare.backbone.adapters[0].down.weight.fill_(torch.nan)


def train(cfg: Config, *hooks: Hook) -> Runner:
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return runner


def records(work_dir: Path) -> list[dict[str, float]]:
    """Every logged training record of every run in ``work_dir``, in order.

    A killed run may have left a truncated last line; it is skipped.
    """
    found = []
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in record:
                found.append(record)
    return found


def losses(work_dir: Path) -> dict[int, float]:
    """``iteration -> loss`` from every run's scalars.json in work_dir."""
    return {int(r["step"]): float(r["loss"]) for r in records(work_dir)}


@pytest.fixture(scope="module")
def full_run(
    image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Runner]:
    work_dir = tmp_path_factory.mktemp("full")
    runner = train(tiny_cfg(work_dir, image_dir, max_iters=4))
    return work_dir, runner


def test_run_logs_finite_loss(full_run: tuple[Path, Runner]) -> None:
    work_dir, _ = full_run
    logged = records(work_dir)
    assert [int(r["step"]) for r in logged] == [1, 2, 3, 4]
    hook = GlareTeacherEMAHook()
    for record in logged:
        parts = [record[name] for name in TERMS]
        assert torch.isfinite(torch.tensor([record["loss"], *parts])).all()
        # The logged loss is the optimised total, not total + parts.
        assert record["loss"] == pytest.approx(sum(parts), rel=1e-4)
        assert record["teacher_temp"] == pytest.approx(0.04)
        assert all(0 < record[name] <= 1 + 1e-6 for name in TEACHER if "kl" not in name)
        step = int(record["step"])
        assert record["ema_momentum"] == pytest.approx(hook.momentum(step - 1, 4))
    assert logged[-1]["ema_momentum"] == pytest.approx(1.0)
    assert (work_dir / "iter_4.pth").is_file()


def test_tensorboard_events_hold_the_logged_loss_and_terms(
    full_run: tuple[Path, Runner],
) -> None:
    work_dir, _ = full_run
    logged = records(work_dir)
    vis_data = min(work_dir.glob("*/vis_data"))
    events = EventAccumulator(str(vis_data))
    events.Reload()
    assert {"loss", *TERMS} <= set(events.Tags()["scalars"])
    for tag in ("loss", *TERMS):
        read = [(e.step, e.value) for e in events.Scalars(tag)]
        assert read == [
            (int(r["step"]), pytest.approx(r[tag], rel=1e-6)) for r in logged
        ], tag


def test_resume_repeats_uninterrupted_run(
    full_run: tuple[Path, Runner], image_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path, image_dir, max_iters=4), StopAfter(2))
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


class SimulatedKill(BaseException):
    """The process dies here: nothing after it runs, no ``except`` catches it."""


class DiesHalfway:
    """A file whose first write matching ``dies`` writes half, then kills."""

    def __init__(self, file: Any, dies: Any) -> None:
        self.file = file
        self.dies = dies

    def __enter__(self) -> DiesHalfway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, data: Any) -> int:
        if not self.dies(data):
            return int(self.file.write(data))
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise SimulatedKill(f"killed while writing {self.file.name}")


def die_while_writing(monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """Kills the run halfway through writing ``what`` of iteration 3.

    ``'checkpoint'``: the bytes of ``iter_3.pth``; ``'pointer'``: the
    ``last_checkpoint`` text naming it. Whatever file name the writer uses
    (the final one or a temporary one) contains ``iter_3.pth`` or
    ``last_checkpoint``.
    """
    real_open = builtins.open
    part = "iter_3.pth" if what == "checkpoint" else "last_checkpoint"

    def dies(data: Any) -> bool:
        return what == "checkpoint" or str(data).endswith("iter_3.pth")

    def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and isinstance(file, str | os.PathLike):
            if part in Path(file).name:
                return DiesHalfway(handle, dies)
        return handle

    monkeypatch.setattr(builtins, "open", faulty_open)
    monkeypatch.setattr(io, "open", faulty_open)  # pathlib's


@pytest.mark.parametrize("what", ["checkpoint", "pointer"])
def test_kill_while_saving_keeps_latest_checkpoint_and_resumes(
    full_run: tuple[Path, Runner],
    image_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
) -> None:
    """A kill during saving leaves ``last_checkpoint`` naming a complete file.

    With ``max_keep_ckpts=1``: mmengine's own hook deletes ``iter_2.pth``
    before writing ``iter_3.pth`` and writes both files in place.
    """
    cfg = tiny_cfg(tmp_path, image_dir, max_iters=4)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    die_while_writing(monkeypatch, what)
    with pytest.raises(SimulatedKill):
        train(cfg)
    monkeypatch.undo()
    latest = Path((tmp_path / "last_checkpoint").read_text())
    assert latest == tmp_path / "iter_2.pth"
    state = torch.load(latest, weights_only=True)
    assert state["meta"]["iter"] == 2
    if what == "checkpoint":
        assert not (tmp_path / "iter_3.pth").exists()  # no truncated file
    else:
        assert torch.load(tmp_path / "iter_3.pth", weights_only=True)["meta"]["iter"]
    assert list(tmp_path.glob(".*.partial"))  # what the killed run left

    cfg = tiny_cfg(tmp_path, image_dir, max_iters=4)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    cfg.resume = True
    train(cfg)
    expected = losses(full_run[0])
    found = losses(tmp_path)
    for step in (1, 2, 3, 4):
        assert found[step] == pytest.approx(expected[step], abs=1e-6)
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_4.pth")
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_4.pth"]
    assert not list(tmp_path.glob(".*.partial"))  # removed when training started


def test_non_finite_loss_stops_and_keeps_last_checkpoint(
    image_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(NonFiniteLossError, match="Non-finite GLARE loss at step 3"):
        train(tiny_cfg(tmp_path, image_dir, max_iters=4), PoisonAdapters(at=3))
    assert not (tmp_path / "iter_3.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text().endswith("iter_2.pth")
    state = torch.load(tmp_path / "iter_2.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_optimizer_decays_and_fuses_like_plain_loop(
    full_run: tuple[Path, Runner],
) -> None:
    """mmengine's paramwise_cfg gives the plain loop's decay / no-decay split;
    the AdamW is fused, as the plain loop's on the CPU."""
    _, runner = full_run
    decay, no_decay = parameter_groups(runner.model, weight_decay=0.04)
    expected_decay = {id(p) for p in decay["params"]}
    expected_no_decay = {id(p) for p in no_decay["params"]}
    found: dict[bool, set[int]] = {True: set(), False: set()}
    for group in runner.optim_wrapper.optimizer.param_groups:
        for param in group["params"]:
            if param.requires_grad:
                found[group["weight_decay"] > 0].add(id(param))
                assert group["weight_decay"] in (0.0, 0.04)
    assert found[True] == expected_decay and found[False] == expected_no_decay
    assert expected_decay and expected_no_decay
    assert all(group["fused"] for group in runner.optim_wrapper.optimizer.param_groups)


@pytest.mark.parametrize(
    ("which", "pass_config"), [("teacher", False), ("student", True)]
)
def test_export_matches_trained_backbone(
    full_run: tuple[Path, Runner],
    image_dir: Path,
    tmp_path: Path,
    which: str,
    pass_config: bool,
) -> None:
    work_dir, runner = full_run
    out = tmp_path / "backbone.pth"
    args = [str(work_dir / "iter_4.pth"), str(out), "--which", which]
    if pass_config:
        config = tmp_path / "pretrain_tiny.py"
        tiny_cfg(work_dir, image_dir, max_iters=4).dump(str(config))
        args += ["--config", str(config)]
    load_tool("model_converters/export_backbone").main(
        args
    )  # else: the checkpoint's config

    model = runner.model
    assert isinstance(model, GlarePretrainer)
    glare = model.glare
    adapters = glare.teacher_adapters if which == "teacher" else glare.backbone.adapters
    backbone = UniAdapterViT(create_vit(ARCH, img_size=32, **VIT_CFG), bottleneck=8)
    meta = load_adapted_backbone(backbone, out)
    assert meta["arch"] == ARCH and meta["which"] == which and meta["iteration"] == 4
    x = torch.randn(2, 3, 32, 32)
    glare.eval()
    backbone.eval()
    with torch.no_grad():
        expected = glare.backbone.forward_features(x, adapters=adapters).tokens
        found = backbone.forward_features(x).tokens
    torch.testing.assert_close(found, expected, rtol=0, atol=0)
    # The adapters trained: their zero-initialised up-projections moved.
    assert all(adapter.up.weight.abs().sum() > 0 for adapter in adapters)


def test_export_loads_into_mmseg_backbone(
    full_run: tuple[Path, Runner], tmp_path: Path
) -> None:
    """The mmseg GlareViT loads the export strictly and sees the teacher's features."""
    work_dir, runner = full_run
    out = tmp_path / "backbone.pth"
    load_tool("model_converters/export_backbone").main(
        [str(work_dir / "iter_4.pth"), str(out)]
    )
    arch = {"patch_size": 16, "embed_dim": 192, "num_heads": 3, **VIT_CFG}
    backbone = GlareViT(
        arch=arch,
        img_size=32,
        out_indices=(0, 1),
        adapter_bottleneck=8,
        checkpoint=str(out),
    )
    backbone.init_weights()
    backbone.eval()
    glare = runner.model.glare
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = backbone(x)
        teacher = glare.backbone.forward_features(
            x, adapters=glare.teacher_adapters, intermediate_indices=(0, 1)
        )
    assert teacher.intermediates is not None
    for feature, tokens in zip(features, teacher.intermediates, strict=True):
        patches = tokens[:, 1:].transpose(1, 2).reshape(2, 192, 2, 2)
        torch.testing.assert_close(feature, patches, rtol=0, atol=0)


def test_dataset_draws_depend_on_seed_and_index(image_dir: Path) -> None:
    dataset = GlarePretrainDataset(str(image_dir), transform=TRANSFORM, seed=3)
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


def test_a_run_with_no_iteration_is_refused(image_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path / "work", image_dir, max_iters=0)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(NoTrainingStepsError, match="train_cfg.max_iters=0"):
        runner.train()
    assert not list((tmp_path / "work").glob("*.pth"))


def test_ema_hook_momentum_schedule() -> None:
    hook = GlareTeacherEMAHook()
    assert hook.momentum(-1, 10) == pytest.approx(0.996)
    assert hook.momentum(9, 10) == pytest.approx(1.0)
    assert hook.momentum(50, 10) == pytest.approx(1.0)
    assert 0.996 < hook.momentum(4, 10) < 1.0
    with pytest.raises(ValueError, match="momenta"):
        GlareTeacherEMAHook(momentum_start=1.5)


TRANSFORM = {"type": "GlareTransform", "input_size": 32}


def tiny_head(output_dim: int = 64) -> dict[str, Any]:
    return {"type": "GlareProjectionHead", "output_dim": output_dim,
            "hidden_dim": 32, "bottleneck_dim": 16}  # fmt: skip


def tiny_pretrainer(**kwargs: Any) -> GlarePretrainer:
    backbone = {"type": "UniAdapterViT", "arch": ARCH, "img_size": 32,
                "vit_cfg": VIT_CFG}  # fmt: skip
    return GlarePretrainer(backbone=backbone, head=tiny_head(), **kwargs)


def one_batch(image_dir: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
    dataset = GlarePretrainDataset(str(image_dir), transform=TRANSFORM)
    views, geometry = dataset[0]["inputs"]
    return (
        [v[None].repeat(2, 1, 1, 1) for v in views],
        geometry[None].repeat(2, 1, 1),
    )


def test_non_finite_loss_raises(image_dir: Path) -> None:
    model = tiny_pretrainer()
    batch = one_batch(image_dir)
    out = model(batch)
    assert set(out) == {"loss", "teacher_temp", *TERMS, *TEACHER}
    for name in TEACHER:
        if not name.endswith("_kl"):
            assert 0 < float(out[name]) <= 1 + 1e-6, name
    assert out["loss"].requires_grad
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")
    batch[0][0][:] = float("nan")
    with pytest.raises(RuntimeError, match="Non-finite GLARE loss"):
        model(batch)


def test_heads_are_fitted_to_the_data_unless_random(image_dir: Path) -> None:
    """GlareHeadInitHook's work: heads and centres fitted, teacher copies them."""
    dataset = GlarePretrainDataset(str(image_dir), transform=TRANSFORM)
    random = tiny_pretrainer(head_init="random")
    before = {k: v.clone() for k, v in random.state_dict().items()}
    assert random.initialize_heads(dataset) is None
    assert all(torch.equal(v, random.state_dict()[k]) for k, v in before.items())
    model = tiny_pretrainer(head_init="data", head_init_images=3)
    fitted = model.initialize_heads(dataset)
    assert fitted is not None and fitted.samples["head"] >= 6  # 3 images x 2 views
    glare = model.glare
    for name, student in (
        ("head", glare.student_head),
        ("patch_head", glare.student_patch_head),
    ):
        teacher = glare.teacher[name].state_dict()
        assert all(torch.equal(v, teacher[k]) for k, v in student.state_dict().items())
    center = model.criterion.global_loss.center.flatten()
    assert torch.equal(center, fitted.centers["global"])
    with pytest.raises(ValueError, match="head_init must be one of"):
        tiny_pretrainer(head_init="kmeans")


def test_parts_are_built_from_nested_configs(image_dir: Path) -> None:
    """Each part comes from its own config; sizes flow from backbone and heads."""
    model = tiny_pretrainer(
        patch_head=tiny_head(output_dim=48),
        region_sampler={"type": "AttentionRegionSampler", "num_regions": 2},
        region_pooling={"type": "CrossAttentionRegionPooling", "learnable": True},
        patch_augmentation={"type": "PatchNoise", "patch_ratio": 0.5},
        loss={"type": "GlareLoss", "regional_weight": 0.5},
        local_patches_per_view=3,
        student_drop_path=0.25,
    )
    glare = model.glare
    assert isinstance(glare.patch_augmentation, PatchNoise)
    assert glare.patch_augmentation.patch_ratio == 0.5
    assert glare.region_sampler.num_regions == 2
    assert glare.region_pooling.learnable and glare.region_pooling.dim == 192
    assert (glare.student_head.input_dim, glare.student_head.output_dim) == (192, 64)
    assert glare.student_patch_head.output_dim == 48
    assert model.criterion.weights["regional"] == 0.5
    assert model.criterion.global_loss.center.shape[-1] == 64
    assert model.criterion.pair_losses["local_matching"].output_dim == 48
    assert glare.local_patches_per_view == 3
    assert glare.student_drop_path == 0.25
    out = model(one_batch(image_dir))
    assert torch.isfinite(out["loss"])


def test_unknown_key_in_a_nested_config_is_named() -> None:
    with pytest.raises(ConfigArgumentError, match="'patch_ration'.*'patch_ratio'"):
        tiny_pretrainer(patch_augmentation={"type": "PatchBlur", "patch_ration": 0.2})
    with pytest.raises(ConfigArgumentError, match="'regional_wieght'"):
        tiny_pretrainer(loss={"type": "GlareLoss", "regional_wieght": 0.0})
    with pytest.raises(ConfigArgumentError, match="UniAdapterViT.*'adapter_bottlenck'"):
        GlarePretrainer(
            backbone={"type": "UniAdapterViT", "arch": ARCH, "adapter_bottlenck": 8}
        )
    with pytest.raises(ConfigArgumentError, match="GlareTransform.*'input_sise'"):
        GlarePretrainDataset(
            "unused", transform={"type": "GlareTransform", "input_sise": 32}
        )


def test_patch_augmentation_is_built_only_for_the_distortion_term() -> None:
    model = tiny_pretrainer(
        patch_augmentation={"type": "PatchMasking"},
        loss={"type": "GlareLoss", "local_distortion_weight": 0.0},
    )
    assert model.glare.patch_augmentation is None  # the student sees clean views
    assert "local_distortion" not in model.glare.terms


def test_teacher_temperature_warmup_follows_steps(image_dir: Path) -> None:
    model = tiny_pretrainer(
        loss={
            "type": "GlareLoss",
            "teacher_temp": 0.07,
            "warmup_teacher_temp": 0.04,
            "warmup_teacher_temp_epochs": 2,
        }
    )
    batch = one_batch(image_dir)
    temps = [float(model(batch)["teacher_temp"]) for _ in range(4)]
    assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert int(model.num_steps) == 4
    model.eval()  # evaluation does not advance the schedule
    model(batch)
    assert int(model.num_steps) == 4


@pytest.mark.parametrize(
    ("pattern", "arch", "size", "batch", "iters", "out", "hidden"),
    [
        (
            "*vit-s14-dinov2*aerial-126.py",
            "vit_small_patch14_dinov2",
            126,
            16,
            300,
            2048,
            512,
        ),
        ("*vit-b16*224.py", "vit_base_patch16_224", 224, 64, 20000, 8192, 2048),
    ],
)
def test_pretrain_configs(
    pattern: str, arch: str, size: int, batch: int, iters: int, out: int, hidden: int
) -> None:
    (path,) = (
        p for p in (ROOT / "mmseg_configs").rglob(pattern) if "ablations" not in p.parts
    )
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == "mmseg"
    assert cfg.custom_imports.imports == ["lightly_glare.openmmlab"]
    model = cfg.model
    assert model.type == "GlarePretrainer"
    assert model.backbone.type == "UniAdapterViT"
    assert (model.backbone.arch, model.backbone.img_size) == (arch, size)
    assert model.head.type == "GlareProjectionHead"
    assert (model.head.output_dim, model.head.hidden_dim) == (out, hidden)
    assert model.loss.type == "GlareLoss"
    assert cfg.train_dataloader.batch_size == batch
    transform = cfg.train_dataloader.dataset.transform
    assert (transform.type, transform.input_size) == ("GlareTransform", size)
    assert cfg.train_cfg.max_iters == iters
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.lr == pytest.approx(5e-4 * batch / 256)
    assert optimizer.weight_decay == 0.04
    assert cfg.optim_wrapper.clip_grad.max_norm == 3.0
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == cosine.begin == iters // 10
    assert cosine.end == iters and cosine.eta_min == 1e-6
    assert (model.head_init, model.head_init_images) == ("auto", 512)
    assert [h.type for h in cfg.custom_hooks] == [
        "GlareHeadInitHook",
        "GlareTeacherEMAHook",
    ]
    assert cfg.default_hooks.checkpoint.type == "AtomicCheckpointHook"
    assert cfg.default_hooks.checkpoint.save_last


def _ddp_worker(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    """One rank of a gloo run: 3 train steps + EMA updates, then save the state."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # the same initial heads on both ranks
    model = tiny_pretrainer()
    ddp = MMDistributedDataParallel(module=model, device_ids=None)
    optim_wrapper = build_optim_wrapper(
        ddp, dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-2))
    )
    dataset = GlarePretrainDataset(root, transform=TRANSFORM)
    sampler = GlareInfiniteSampler(dataset, seed=0)  # this rank's share
    batches = DataLoader(dataset, 2, sampler=sampler, collate_fn=default_collate)
    hook = GlareTeacherEMAHook()
    logged = []
    for step, batch in zip(range(3), batches, strict=False):
        logged.append(ddp.train_step(batch, optim_wrapper)["loss"].item())
        model.glare.update_teacher(hook.momentum(step, 3))
    torch.save({"state": model.state_dict(), "losses": logged}, f"{out}/{rank}.pth")
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes: ~30 s
def test_distributed_ranks_stay_identical(image_dir: Path, tmp_path: Path) -> None:
    """Under MMDistributedDataParallel (gloo, CPU) without find_unused_parameters,
    ranks see different images but keep identical adapters, heads, teacher and
    loss centers."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, port, str(image_dir), str(tmp_path)), nprocs=2
    )
    ranks = [torch.load(tmp_path / f"{r}.pth", weights_only=True) for r in (0, 1)]
    assert ranks[0]["losses"] != ranks[1]["losses"]  # different data per rank
    assert torch.isfinite(torch.tensor(ranks[0]["losses"])).all()
    state_0, state_1 = ranks[0]["state"], ranks[1]["state"]
    assert int(state_0["num_steps"]) == 3
    for key in state_0:
        torch.testing.assert_close(state_0[key], state_1[key], rtol=0, atol=0)
    initial = tiny_pretrainer().state_dict()  # the adapters did train
    up = "glare.teacher.adapters.0.up.weight"
    assert initial[up].abs().sum() == 0 < state_0[up].abs().sum()


# --- tools/train.py as a user runs it (subprocesses) --------------------------


def dino_checkpoint(path: Path, output_dim: int = 64) -> Path:
    """A tiny ViT in DINO's training-checkpoint layout: teacher with its head.

    The head has :func:`tiny_head`'s sizes (TINY_MODEL's) for ``output_dim``
    64, so that it loads into the shipped config shrunk by TINY_MODEL.
    """
    vit = timm.create_model(ARCH, pretrained=False, num_classes=0, **VIT_CFG)
    head = official_head(dim=192, hidden=32, bottleneck=16, out_dim=output_dim)
    state = {f"module.backbone.{k}": v for k, v in vit.state_dict().items()}
    state |= {f"module.head.{k}": v for k, v in head.items()}
    torch.save({"teacher": state}, path)
    return path


@pytest.fixture(scope="module")
def ssl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dino_checkpoint(tmp_path_factory.mktemp("ssl") / "dino_tiny.pth")


def test_pretrainer_starts_from_the_checkpoint_heads(tmp_path: Path) -> None:
    checkpoint = dino_checkpoint(tmp_path / "dino.pth")
    head = {k.removeprefix("module.head."): v for k, v in
            torch.load(checkpoint, weights_only=True)["teacher"].items()
            if k.startswith("module.head.")}  # fmt: skip
    backbone = {"type": "UniAdapterViT", "arch": ARCH, "img_size": 32,
                "vit_cfg": VIT_CFG, "checkpoint": str(checkpoint)}  # fmt: skip
    tokens = torch.randn(3, 192)
    model = GlarePretrainer(backbone=backbone, head=tiny_head(), freeze_heads=True)
    for module in (model.glare.student_head, model.glare.teacher["patch_head"]):
        torch.testing.assert_close(module(tokens), reference(head, tokens))
    fresh = GlarePretrainer(backbone=backbone, head=tiny_head(), checkpoint_heads=False)
    assert not torch.allclose(fresh.glare.student_head(tokens), reference(head, tokens))
    with pytest.raises(CheckpointMismatchError, match="output_dim=64"):
        GlarePretrainer(backbone=backbone, head=tiny_head(output_dim=32))


def test_pretrainer_reads_the_checkpoint_once(
    tmp_path: Path, torch_loads: list[object]
) -> None:
    checkpoint = dino_checkpoint(tmp_path / "dino.pth")
    backbone = {"type": "UniAdapterViT", "arch": ARCH, "img_size": 32,
                "vit_cfg": VIT_CFG, "checkpoint": str(checkpoint)}  # fmt: skip
    model = GlarePretrainer(backbone=backbone, head=tiny_head())
    assert torch_loads == [checkpoint]
    built = MODELS.build(backbone).vit  # the builder reading the path itself
    state = model.glare.backbone.vit.state_dict()
    assert all(torch.equal(state[k], v) for k, v in built.state_dict().items())
    heads = load_projection_heads(checkpoint).build("teacher")
    assert heads is not None
    tokens = torch.randn(3, 192)
    torch.testing.assert_close(model.glare.student_head(tokens), heads(tokens))
    with pytest.raises(CheckpointMismatchError, match=f"^{checkpoint}: the checkp"):
        GlarePretrainer(backbone=backbone, head=tiny_head(output_dim=32))


def train_command(
    work_dir: Path, data_root: Path, checkpoint: Path, max_iters: int
) -> list[str]:
    """``tools/train.py`` on the shipped config, shrunk with --cfg-options."""
    options = {
        **TINY_MODEL,
        "model.backbone.vit_cfg.depth": VIT_CFG["depth"],
        "model.backbone.checkpoint": checkpoint,
        "train_dataloader.batch_size": 2,
        "train_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "train_dataloader.dataset.data_root": data_root,
        "train_cfg.max_iters": max_iters,
        "default_hooks.logger.interval": 1,
        "log_processor.window_size": 1,
        "default_hooks.checkpoint.interval": 1,
        "randomness.deterministic": True,
    }
    return [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        str(CONFIG),
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        *(f"{key}={value}" for key, value in options.items()),
    ]


def run_to_end(command: list[str]) -> str:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow  # three tools/train.py processes: ~1 min
def test_train_tool_logs_progress_and_resumes_after_kill(
    image_dir: Path, ssl_checkpoint: Path, tmp_path: Path
) -> None:
    command = train_command(tmp_path / "full", image_dir, ssl_checkpoint, 6)
    log = run_to_end(command)
    assert f"GlarePretrainer: {ARCH} at 32 px from {ssl_checkpoint}" in log
    assert f"Heads from {ssl_checkpoint}: student head <- teacher head" in log
    assert "trainable adapter parameters" in log
    for step in range(1, 7):
        assert f"Iter(train) [{step}/6]" in log
    assert "eta:" in log and "loss:" in log and "term_regional:" in log
    expected = losses(tmp_path / "full")
    assert sorted(expected) == list(range(1, 7))
    assert torch.isfinite(torch.tensor(list(expected.values()))).all()
    # The frozen ViT holds the SSL checkpoint's weights after training (the
    # 224 px position embedding resampled to 32 px).
    ssl = torch.load(ssl_checkpoint, weights_only=True)["teacher"]
    final = torch.load(tmp_path / "full" / "iter_6.pth", weights_only=True)
    for key, value in ssl.items():
        if key.startswith("module.head.") or key.endswith("pos_embed"):
            continue
        vit_key = key.replace("module.backbone.", "glare.backbone.vit.")
        torch.testing.assert_close(final["state_dict"][vit_key], value, rtol=0, atol=0)

    # Kill -9 a second run once it has checkpointed iteration 2, then resume.
    killed = tmp_path / "killed"
    command = train_command(killed, image_dir, ssl_checkpoint, 6)
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = killed / "last_checkpoint"
    deadline = time.monotonic() + 300
    while not (marker.is_file() and marker.read_text().endswith("iter_2.pth")):
        assert process.poll() is None, "training ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    first = records(killed)
    run_to_end([*command, "--resume"])
    resumed = records(killed)[len(first) :]
    assert 2 <= int(resumed[0]["step"]) - 1 < 6  # started from a checkpoint
    found = losses(killed)
    assert sorted(found) == list(range(1, 7))
    for step in range(1, 7):
        assert found[step] == pytest.approx(expected[step], abs=1e-6)


def test_bf16_cpu_run_tracks_the_eager_fp32_losses(
    image_dir: Path, tmp_path: Path
) -> None:
    losses = []
    for name, wrapper in (
        ("fp32", "OptimWrapper"),
        ("bf16", "Bf16AutocastOptimWrapper"),
    ):
        cfg = tiny_cfg(tmp_path / name, image_dir, max_iters=2)
        cfg.optim_wrapper.type = wrapper
        runner = Runner.from_cfg(cfg)
        dtypes: list[torch.dtype] = []
        runner.model.glare.backbone.adapters[0].down.register_forward_hook(
            lambda module, inputs, out, dtypes=dtypes: dtypes.append(out.dtype)
        )
        runner.train()
        assert set(dtypes) == {torch.bfloat16 if name == "bf16" else torch.float32}
        losses.append([record["loss"] for record in records(tmp_path / name)])
    assert len(losses[1]) == 2 and all(math.isfinite(loss) for loss in losses[1])
    # bf16 rounds the activations: close to fp32, not equal.
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_compiled_pretrainer_gives_the_eager_losses_and_gradients(
    image_dir: Path,
) -> None:
    batch = one_batch(image_dir)
    runs = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = tiny_pretrainer(compile=compile)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trained, lr=0.1)
        losses, grads = [], []
        # Inductor's own random kernels draw other numbers than eager ones.
        with torch._inductor.config.patch(fallback_random=True):
            for _ in range(2):
                optimizer.zero_grad()
                loss = model(batch)["loss"]
                loss.backward()
                optimizer.step()
                losses.append(float(loss))
                grads.append(torch.cat([p.grad.flatten() for p in trained]))
        runs.append((losses, grads))
    torch._dynamo.reset()
    (eager_losses, eager_grads), (compiled_losses, compiled_grads) = runs
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for eager, compiled in zip(eager_grads, compiled_grads, strict=True):
        # Fused kernels sum in another order: compare near-zero entries on the
        # scale of a typical gradient entry (the largest are ~1000x larger).
        typical = eager.abs().mean().item()
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3 * typical)
