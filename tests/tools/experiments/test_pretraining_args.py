"""tools/experiments/pretraining_args.py: the experiment tools' options."""

import argparse
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from torch import Tensor

from lightly_glare.models import (
    DEFAULT_STUDENT_DROP_PATH,
    AttentionRegionSampler,
    glare_terms,
)
from lightly_glare.models import adapted_vit as adapted_vit_module
from lightly_glare.pretraining.folder import pretrain_folder
from lightly_glare.pretraining.job import FolderPretraining
from tests.conftest import load_tool
from tests.test_training import _folder_job


def pretraining_parser() -> tuple[ModuleType, argparse.ArgumentParser]:
    """The tool module and a parser holding its options."""
    tool = load_tool("experiments/pretraining_args")
    parser = argparse.ArgumentParser()
    tool.add_pretraining_arguments(parser)
    return tool, parser


def check_refuses_patch_counts(
    parse_args: Callable[[list[str]], argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A tool refuses ``--local-patches-per-view`` 0, -2 and x, naming the value."""
    for bad in ("0", "-2", "x"):
        with pytest.raises(SystemExit):
            parse_args(["--local-patches-per-view", bad])
        error = capsys.readouterr().err
        assert "argument --local-patches-per-view: expected a positive integer " \
            f"or 'all', got '{bad}'" in error  # fmt: skip


def test_options_set_every_listed_field() -> None:
    tool, parser = pretraining_parser()
    args = parser.parse_args([])
    job = tool.pretraining_job(args, "vit_small_patch14_dinov2", "x", "f", 28, 0)
    assert isinstance(job, FolderPretraining)
    for name in tool.PRETRAINING_OPTIONS:
        assert getattr(job, name) == getattr(args, name), name


def test_head_options_reach_the_job() -> None:
    tool, parser = pretraining_parser()
    assert (parser.parse_args([]).head_init, parser.parse_args([]).freeze_heads) == (
        "auto",
        False,
    )
    args = parser.parse_args(["--head-init", "random", "--freeze-heads"])
    job = tool.pretraining_job(args, "vit_small_patch14_dinov2", "x", "f", 28, 0)
    assert (job.head_init, job.freeze_heads) == ("random", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--head-init", "kmeans"])


def test_adapter_bottleneck_option_sets_the_job_and_refuses_non_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tool, parser = pretraining_parser()
    default = parser.parse_args([])
    assert default.adapter_bottleneck is None  # the library's embed_dim // 12
    assert (
        tool.pretraining_job(
            default, "vit_small_patch14_dinov2", "x", "f", 28, 0
        ).adapter_bottleneck
        is None
    )
    args = parser.parse_args(["--adapter-bottleneck", "16"])
    job = tool.pretraining_job(args, "vit_small_patch14_dinov2", "x", "f", 28, 0)
    assert job.adapter_bottleneck == 16
    for bad in ("0", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--adapter-bottleneck", bad])
        error = capsys.readouterr().err
        assert f"--adapter-bottleneck: expected a positive integer, got {bad}" in error


def test_local_patches_per_view_takes_k_or_all_and_refuses_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, parser = pretraining_parser()
    for value, count in (("all", None), ("4", 4)):
        args = parser.parse_args(["--local-patches-per-view", value])
        assert args.local_patches_per_view == count
    check_refuses_patch_counts(parser.parse_args, capsys)


def test_student_drop_path_reaches_the_job_and_the_model(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tool, parser = pretraining_parser()
    assert parser.parse_args([]).student_drop_path == DEFAULT_STUDENT_DROP_PATH
    args = parser.parse_args(["--student-drop-path", "0.5", "--steps", "1"])
    job = tool.pretraining_job(
        args, "vit_small_patch14_dinov2", "unused", tmp_path, 28, 0
    )
    assert job.student_drop_path == 0.5
    rows: list[int] = []
    folder_job = _folder_job(tmp_path, student_drop_path=job.student_drop_path)
    original = adapted_vit_module.add_sampled_residual

    def counting(x: Tensor, branch: Any, kept: int | None, *rest: Any) -> Tensor:
        rows.append(x.shape[0] if kept is None else kept)
        return original(x, branch, kept, *rest)

    monkeypatch.setattr(adapted_vit_module, "add_sampled_residual", counting)
    pretrain_folder(folder_job, tmp_path / "dp.pth", log=lambda _: None)
    # teacher: 2 views x batch 2 rows per branch; student: half of them
    assert set(rows) == {4, 2}
    for bad in ("1", "-0.1", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--student-drop-path", bad])
        error = capsys.readouterr().err
        assert f"--student-drop-path: expected a number in [0, 1), got {bad}" in error


def test_pretrain_folder_draws_at_most_num_regions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[int] = []
    forward = AttentionRegionSampler.forward

    def spy(self: AttentionRegionSampler, *args: Any, **kwargs: Any) -> Any:
        masks, valid = forward(self, *args, **kwargs)
        drawn.append(masks.shape[1])
        return masks, valid

    monkeypatch.setattr(AttentionRegionSampler, "forward", spy)
    tool, parser = pretraining_parser()
    args = parser.parse_args(["--num-regions", "2", "--steps", "2"])
    job = tool.pretraining_job(
        args, "vit_small_patch14_dinov2", "unused", tmp_path, 28, 0
    )
    assert job.num_regions == 2
    pretrain_folder(
        _folder_job(tmp_path, num_regions=job.num_regions),
        tmp_path / "out.pth",
        log=lambda _: None,
    )
    assert drawn and set(drawn) == {2}  # ViT-S has 6 heads; 6 without the option


def test_pretrain_folder_samples_local_patches_per_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[int, ...]] = []
    sample = glare_terms.sample_patches

    def spy(candidates: Tensor, count: int, *args: Any) -> tuple[Tensor, Tensor]:
        index, valid = sample(candidates, count, *args)
        drawn.append(tuple(index.shape))
        return index, valid

    monkeypatch.setattr(glare_terms, "sample_patches", spy)
    tool, parser = pretraining_parser()
    assert parser.parse_args([]).local_patches_per_view == 2  # the default
    assert (
        parser.parse_args(["--local-patches-per-view", "all"]).local_patches_per_view
        is None
    )
    args = parser.parse_args(["--local-patches-per-view", "3", "--steps", "2"])
    job = tool.pretraining_job(
        args, "vit_small_patch14_dinov2", "unused", tmp_path, 28, 0
    )
    assert job.local_patches_per_view == 3
    folder_job = _folder_job(
        tmp_path, local_patches_per_view=job.local_patches_per_view
    )
    pretrain_folder(folder_job, tmp_path / "k3.pth", log=lambda _: None)
    # 2 steps x 2 local terms, each (2 views * batch 2, K) pairs
    assert drawn == [(4, 3)] * 4
    drawn.clear()
    folder_job.local_patches_per_view = None
    pretrain_folder(folder_job, tmp_path / "all.pth", log=lambda _: None)
    assert not drawn  # K = all: every valid patch, nothing sampled


def test_pretrain_with_progress_draws_a_bar_and_keeps_the_log_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = load_tool("experiments/pretraining_args")
    job = _folder_job(tmp_path)
    export, history = tool.pretrain_with_progress(job, tmp_path / "out.pth")
    assert export.is_file() and len(history.losses) == job.steps
    captured = capsys.readouterr()
    # The bar, on standard error: step, loss and terms, images/s, data-wait share.
    bar = captured.err.replace("\r", "\n").splitlines()
    final = [line for line in bar if f"{job.steps}/{job.steps}" in line][-1]
    assert final.startswith("GLARE: 100%")
    for shown in ("loss=", "global=", "local_matching=", "img/s", "data "):
        assert shown in final, (shown, final)
    # The plain lines, on standard output (a tool's log file).
    assert f"step {job.steps}/{job.steps} loss=" in captured.out
    assert "images, 2 steps in" in captured.out


def test_pretrain_with_progress_warns_of_a_uniform_teacher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = load_tool("experiments/pretraining_args")
    warning = tool.UniformTeacherWarning
    monkeypatch.setattr(  # any teacher counts as uniform, from the first step
        tool,
        "UniformTeacherWarning",
        lambda log: warning(log, patience=1, threshold=0.0),
    )
    tool.pretrain_with_progress(_folder_job(tmp_path), tmp_path / "out.pth")
    out = capsys.readouterr().out
    assert out.count("warning: the teacher has stayed within 100 % of uniform") == 1
