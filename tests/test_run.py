"""The one-call run: lightly_glare.pretrain and `lightly-glare pretrain`."""

import math
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightly_glare
from lightly_glare import cli, precision, pretrain_cli
from lightly_glare.data import draw_order
from lightly_glare.models import UniAdapterViT, load_adapted_backbone
from lightly_glare.monitoring import read_metrics
from lightly_glare.run import (
    ADAPTERS,
    BACKBONE,
    CHECKPOINT,
    FIGURE,
    METRICS,
    TENSORBOARD,
    TIMM_VIT,
    ResumeError,
)
from lightly_glare.training import NoTrainingStepsError, StepEvent
from tests.test_training import _folder_job

ARCH = "vit_small_patch14_dinov2"
#: A tiny run: ViT-S/14 at 28 px (2 x 2 patches), small heads, 2 images a step.
TINY: dict[str, Any] = {
    "model": ARCH,
    "img_size": 28,
    "batch_size": 2,
    "output_dim": 32,
    "hidden_dim": 32,
    "workers": 0,
    "momentum_start": 0.5,
    "progress": False,
    "log": lambda line: None,
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four crops of a real photograph and a ViT-S/14 checkpoint."""
    job = _folder_job(tmp_path_factory.mktemp("inputs"))
    return Path(job.folder), Path(job.checkpoint)


class Interrupt(RuntimeError):
    pass


def stop_after(step: int) -> Any:
    def callback(event: StepEvent) -> None:
        if event.step == step:
            raise Interrupt(f"stopped after step {step}")

    return callback


def test_an_interrupted_run_resumes_with_the_losses_of_an_uninterrupted_one(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    data, checkpoint = inputs
    whole = lightly_glare.pretrain(
        tmp_path / "whole", data, checkpoint, steps=5, save_every=2, **TINY
    )
    assert len(whole.history.losses) == 5 and whole.start_step == 0
    assert all(math.isfinite(v) for v in whole.history.losses)
    assert whole.device == torch.device("cpu")
    assert whole.amp == precision.native_bf16("cpu")  # bf16 where native

    out = tmp_path / "cut"
    with pytest.raises(Interrupt):
        lightly_glare.pretrain(
            out,
            data,
            checkpoint,
            steps=5,
            save_every=2,
            callbacks=[stop_after(3)],
            **TINY,
        )
    assert [r["step"] for r in read_metrics(out / METRICS)] == [1, 2, 3]
    assert not (out / BACKBONE).exists()
    with pytest.raises(ResumeError, match="resume=True"):
        lightly_glare.pretrain(out, data, checkpoint, steps=5, save_every=2, **TINY)
    with pytest.raises(ResumeError, match="base_lr: 0.0005 -> 0.001"):
        lightly_glare.pretrain(
            out, data, checkpoint, steps=5, resume=True, base_lr=1e-3, **TINY
        )
    # A run written before the student_drop_path option trained without it:
    # the default (0.3) is refused, by name, for such a run.
    state = torch.load(out / CHECKPOINT, weights_only=True)
    rate = state["settings"].pop("student_drop_path")
    torch.save(state, out / CHECKPOINT)
    with pytest.raises(ResumeError, match="student_drop_path: 0.0 -> 0.3"):
        lightly_glare.pretrain(out, data, checkpoint, steps=5, resume=True, **TINY)
    state["settings"]["student_drop_path"] = rate
    # ... and with random heads (the run's heads come from its checkpoint, so a
    # resumed run is never initialised from the data again).
    head_init = state["settings"].pop("head_init")
    torch.save(state, out / CHECKPOINT)
    with pytest.raises(ResumeError, match="head_init: 'random' -> 'auto'"):
        lightly_glare.pretrain(out, data, checkpoint, steps=5, resume=True, **TINY)
    state["settings"]["head_init"] = head_init
    torch.save(state, out / CHECKPOINT)

    resumed = lightly_glare.pretrain(
        out, data, checkpoint, steps=5, save_every=2, resume=True, **TINY
    )
    assert resumed.start_step == 2  # the checkpoint of step 2; step 3 runs again
    assert resumed.history.losses == whole.history.losses  # exactly
    assert resumed.history.terms == whole.history.terms
    assert resumed.history.teacher == whole.history.teacher
    metrics = read_metrics(out / METRICS)
    assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5]
    assert [r["loss/total"] for r in metrics] == whole.history.losses
    events = EventAccumulator(str(out / TENSORBOARD))
    events.Reload()  # the events of step 3 before the interruption are purged
    read = [(e.step, e.value) for e in events.Scalars("loss/total")]
    assert read == [
        (step, pytest.approx(loss, rel=1e-6))
        for step, loss in enumerate(whole.history.losses, 1)
    ]
    exported = [
        torch.load(run / BACKBONE, weights_only=True)["state_dict"]
        for run in (tmp_path / "whole", out)
    ]
    assert exported[0].keys() == exported[1].keys()
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])
    with pytest.raises(NoTrainingStepsError, match="finished .5/5 steps"):
        lightly_glare.pretrain(out, data, checkpoint, steps=5, resume=True, **TINY)


def test_the_run_writes_metrics_events_figure_and_exports(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint = inputs
    options = {**TINY, "progress": True, "log": None}
    run = lightly_glare.pretrain(
        tmp_path,
        data,
        checkpoint,
        steps=3,
        weights={"regional": 0.0},
        adapter_bottleneck=8,
        **options,
    )
    printed = capsys.readouterr()
    bar = printed.err
    assert "3/3" in bar and "img/s" in bar and "data " in bar and "loss=" in bar
    assert "heads initialised from 4 images" in printed.out  # head_init="auto"
    assert "teacher per term, step 1 -> 3" in printed.out

    metrics = read_metrics(run.path(METRICS))
    assert [r["loss/total"] for r in metrics] == run.history.losses
    terms = {"global", "local_distortion", "local_matching"}  # regional weighted 0
    assert {k for k in metrics[0] if k.startswith("loss/")} == {
        "loss/total",
        *(f"loss/{t}" for t in terms),
    }
    assert {k for k in metrics[0] if k.startswith("teacher/")} == {
        f"teacher/{t}/{key}"
        for t in terms
        for key in ("entropy", "batch_entropy", "kl")
    }
    for record, logged in zip(metrics, run.history.teacher, strict=True):
        assert {k: record[k] for k in logged} == logged
    for record, logged in zip(metrics, run.history.terms, strict=True):
        assert {t: record[f"loss/{t}"] for t in terms} == logged
        assert 0 <= record["speed/data_wait"] <= 1 and record["speed/images_per_s"] > 0

    events = EventAccumulator(str(run.path(TENSORBOARD)))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert set(tags) == set(metrics[0]) - {"step"}
    for tag in tags:
        read = [(e.step, e.value) for e in events.Scalars(tag)]
        logged = [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in metrics]
        assert read == logged, tag  # float32 in the event file

    with Image.open(run.path(FIGURE)) as figure:
        assert figure.format == "PNG" and figure.width > 300

    vit = timm.create_model(ARCH, img_size=28, num_classes=0)
    vit.load_state_dict(torch.load(run.path(TIMM_VIT), weights_only=True))
    start = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(v, start[k]) for k, v in vit.state_dict().items())
    backbone = UniAdapterViT(
        timm.create_model(ARCH, img_size=28, num_classes=0), bottleneck=8
    )
    meta = load_adapted_backbone(backbone, run.path(BACKBONE))
    assert meta["losses"] == run.history.losses
    adapters = torch.load(run.path(ADAPTERS), weights_only=True)
    assert adapters["meta"]["architecture"]["adapter_bottleneck"] == 8
    for key, value in adapters["state_dict"].items():
        assert torch.equal(value, backbone.adapters.state_dict()[key])
    assert any(adapter.up.weight.abs().sum() > 0 for adapter in backbone.adapters)
    assert (run.path(CHECKPOINT)).exists()


def test_bad_input_is_refused_naming_the_problem(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    data, checkpoint = inputs
    with pytest.raises(TypeError, match="'ouput_dim' .did you mean 'output_dim'"):
        lightly_glare.pretrain(tmp_path, data, checkpoint, ouput_dim=8, **TINY)
    with pytest.raises(FileNotFoundError, match="data .*nowhere"):
        lightly_glare.pretrain(tmp_path, tmp_path / "nowhere", checkpoint, **TINY)
    with pytest.raises(ResumeError, match="holds no run"):
        lightly_glare.pretrain(tmp_path, data, checkpoint, resume=True, **TINY)
    with pytest.raises(NoTrainingStepsError, match="4 image.s. .*batch_size=8"):
        lightly_glare.pretrain(tmp_path, data, checkpoint, **{**TINY, "batch_size": 8})
    with pytest.raises(NoTrainingStepsError, match="steps must be at least 1"):
        lightly_glare.pretrain(tmp_path, data, checkpoint, steps=0, **TINY)
    assert not (tmp_path / CHECKPOINT).exists()


def test_draw_order_resumes_the_same_stream() -> None:
    whole = draw_order(5, seed=3)
    first = [next(whole) for _ in range(17)]
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:10]) == [
        *range(5, 10)
    ]
    for start in (0, 4, 5, 12):
        resumed = draw_order(5, seed=3, start=start)
        assert [next(resumed) for _ in range(17 - start)] == first[start:]


def test_cli_parses_key_values() -> None:
    keys = pretrain_cli.command_keys()
    kwargs = pretrain_cli.parse(
        [
            "out=o",
            "data=d",
            "checkpoint=c.pth",
            "model=m",
            "steps=7",
            "base_lr=1e-3",
            "resume=true",
            "amp=none",
            "indices=0,2",
            "weights.regional=0",
            "weights.global=2",
            "adapter_bottleneck=16",
        ],
        keys,
    )
    assert kwargs == {
        "out": "o",
        "data": "d",
        "checkpoint": "c.pth",
        "model": "m",
        "steps": 7,
        "base_lr": 1e-3,
        "resume": True,
        "amp": None,
        "indices": [0, 2],
        "weights": {"regional": 0.0, "global": 2.0},
        "adapter_bottleneck": 16,
    }
    bad = {
        "steps": "steps=3.5: expected int",
        "stepz=3": "Unknown key 'stepz' .did you mean 'steps'",
        "resume=maybe": "expected true or false",
        "out=a": "out is given twice",
    }
    base = ["out=o", "data=d", "checkpoint=c", "model=m"]
    for arg, message in bad.items():
        with pytest.raises(pretrain_cli.KeyValueError, match=message):
            pretrain_cli.parse([*base, arg if "=" in arg else "steps=3.5"], keys)
    with pytest.raises(pretrain_cli.KeyValueError, match="Missing checkpoint=..."):
        pretrain_cli.parse(["out=o", "data=d", "model=m"], keys)


def test_cli_runs_and_fails_with_one_line(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint = inputs
    args = [
        f"out={tmp_path / 'run'}",
        f"data={data}",
        f"checkpoint={checkpoint}",
        f"model={ARCH}",
        "img_size=28",
        "steps=2",
        "batch_size=2",
        "output_dim=32",
        "hidden_dim=32",
        "workers=0",
        "progress=false",
    ]
    assert cli.main(["pretrain", *args]) == 0
    assert len(read_metrics(tmp_path / "run" / METRICS)) == 2
    assert (tmp_path / "run" / BACKBONE).exists()
    capsys.readouterr()
    assert cli.main(["pretrain", *args]) == 1  # the run exists: refused
    assert "ResumeError" in capsys.readouterr().err
    assert cli.main(["pretrain", *args, "stepz=1"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().err
    assert cli.main(["pretrain", "--help"]) == 0
    assert "weights.TERM" in capsys.readouterr().out
    assert "pretrain" in cli.usage(cli.find_tools())
