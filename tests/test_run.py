"""The one-call run: lightly_glare.pretrain and `lightly-glare pretrain`."""

import errno
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightly_glare
from lightly_glare import cli, precision
from lightly_glare.data import BadImagesError, ImageReadError, draw_order
from lightly_glare.models import UniAdapterViT
from lightly_glare.pretraining import cli as pretrain_cli
from lightly_glare.pretraining import run, run_checks, run_files
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.loop import NoTrainingStepsError, StepEvent
from lightly_glare.pretraining.monitoring import read_metrics
from lightly_glare.pretraining.resume import ResumeError
from lightly_glare.pretraining.run_checks import OutFolderError, estimate_output_bytes
from lightly_glare.pretraining.run_files import (
    ADAPTERS,
    BACKBONE,
    CHECKPOINT,
    FIGURE,
    METRICS,
    TENSORBOARD,
    TIMM_VIT,
    OutputWriteError,
)
from lightly_glare.weights import load_adapted_backbone
from tests.conftest import real_photo
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
    return Path(job.data), Path(job.checkpoint)


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
    with (out / METRICS).open("a") as metrics_file:  # what a kill mid-line leaves
        metrics_file.write('{"step": 4, "loss/tot')
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
    # A run written before FolderPretraining's arch / folder became model /
    # data resumes under the new names (RENAMED_SETTINGS).
    state["settings"]["arch"] = state["settings"].pop("model")
    state["settings"]["folder"] = state["settings"].pop("data")
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

    job = FolderPretraining(
        model=ARCH,
        checkpoint=checkpoint,
        data=data,
        img_size=28,
        steps=3,
        output_dim=32,
        hidden_dim=32,
        adapter_bottleneck=8,
        weights={"regional": 0.0},
    )
    for name, size in estimate_output_bytes(job).items():  # the free-space check's
        written = run.path(name).stat().st_size
        assert abs(written - size) <= 0.05 * size + 2**16, (name, written, size)


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
    assert capsys.readouterr().err.startswith(
        "lightly-glare pretrain: Error: ResumeError: "
    )
    assert cli.main(["pretrain", *args, "stepz=1"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().err
    assert cli.main(["pretrain", "--help"]) == 0
    assert "weights.TERM" in capsys.readouterr().out
    assert "pretrain" in cli.usage(cli.find_tools())


def _bad_images(folder: Path, truncated: bool = False) -> list[str]:
    """Adds bad files to a copy of the test images; returns their names."""
    (folder / "notes.png").write_text("not an image")
    real_photo().resize((1, 1)).save(folder / "tiny.png")
    names = ["notes.png", "tiny.png"]
    if truncated:  # its header is fine: only decoding finds it
        real_photo().save(folder / "cut.png")
        data = (folder / "cut.png").read_bytes()
        (folder / "cut.png").write_bytes(data[: len(data) // 2])
        names.append("cut.png")
    return names


def _not_built(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was built before the check")


def test_bad_images_are_all_listed_before_the_model_is_built(
    tmp_path: Path, inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, checkpoint = inputs
    folder = tmp_path / "images"
    shutil.copytree(data, folder)
    _bad_images(folder)
    monkeypatch.setattr(run, "build_folder_job", _not_built)
    with pytest.raises(BadImagesError) as caught:
        lightly_glare.pretrain(tmp_path / "out", folder, checkpoint, **TINY)
    message = str(caught.value)
    assert message.startswith(
        f"2 of 6 files in '{folder}' are not usable images (1 smaller than "
        "min_size): fix or remove them, or pass skip_bad=True"
    )
    assert "notes.png: not an image file" in message
    assert "tiny.png: image is 1x1 px, smaller than min_size=32" in message
    with pytest.raises(BadImagesError, match="1 of 6 files"):  # only notes.png
        lightly_glare.pretrain(
            tmp_path / "out", folder, checkpoint, min_size=None, **TINY
        )


def test_skip_bad_trains_without_them_and_a_worker_error_is_one_line(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint = inputs
    folder = tmp_path / "images"
    shutil.copytree(data, folder)
    _bad_images(folder, truncated=True)
    lines: list[str] = []
    options = {**TINY, "workers": 1, "log": lines.append}
    done = lightly_glare.pretrain(
        tmp_path / "verified",
        folder,
        checkpoint,
        steps=2,
        skip_bad=True,
        verify_images=True,
        **options,
    )
    assert len(done.history.losses) == 2
    skipped = next(line for line in lines if "skipped" in line)
    assert "skipped 3 of 7 images (skip_bad=True; 1 smaller than" in skipped
    assert all(name in skipped for name in ("notes.png", "tiny.png", "cut.png"))

    # Headers only: cut.png is drawn by a worker within 3 steps of 2 images.
    args = [
        f"out={tmp_path / 'headers'}",
        f"data={folder}",
        f"checkpoint={checkpoint}",
        f"model={ARCH}",
        "img_size=28",
        "steps=3",
        "batch_size=2",
        "output_dim=32",
        "hidden_dim=32",
        "workers=1",
        "progress=false",
        "skip_bad=true",
    ]
    capsys.readouterr()
    assert cli.main(["pretrain", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        "lightly-glare pretrain: Error: ImageReadError: Cannot read image "
        f"'{folder / 'cut.png'}': corrupt or truncated image data"
    )
    assert "verify_images=True" in err
    with (tmp_path / "headers" / METRICS).open("a") as metrics_file:
        metrics_file.write('{"step": 3, "loss/to')  # torn, and no checkpoint
    with pytest.raises(ImageReadError, match="cut.png"):  # the same out: no
        cli.main(["--debug", "pretrain", *args])  # checkpoint, metrics replaced


def test_out_is_checked_before_the_model_is_built(
    tmp_path: Path, inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, checkpoint = inputs
    monkeypatch.setattr(run, "build_folder_job", _not_built)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(OutFolderError, match="out '.*a_file' is a file, not a folder"):
        lightly_glare.pretrain(a_file, data, checkpoint, **TINY)
    with pytest.raises(OutFolderError, match="Cannot write in out '.*a_file/run'"):
        lightly_glare.pretrain(a_file / "run", data, checkpoint, **TINY)

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(run_checks.tempfile, "TemporaryFile", read_only)
        with pytest.raises(OutFolderError, match="Read-only file system"):
            lightly_glare.pretrain(tmp_path / "ro", data, checkpoint, **TINY)

    usage = shutil.disk_usage(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(
            run_checks.shutil, "disk_usage", lambda path: usage._replace(free=2**20)
        )
        with pytest.raises(OutFolderError) as caught:
            lightly_glare.pretrain(tmp_path / "full", data, checkpoint, **TINY)
    assert "has 1 MB free, but the run writes about" in str(caught.value)
    assert "adapted_backbone.pth 8" in str(caught.value)  # ViT-S/14: ~84 MB

    leftover = tmp_path / "leftover"
    leftover.mkdir()
    (leftover / BACKBONE).write_bytes(b"an export of another run")
    with pytest.raises(ResumeError, match="holds files of a run .adapted_backbone"):
        lightly_glare.pretrain(leftover, data, checkpoint, **TINY)
    assert (leftover / BACKBONE).read_bytes() == b"an export of another run"


def test_a_full_disk_names_the_file_and_resume_writes_the_missing_exports(
    tmp_path: Path, inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, checkpoint = inputs
    out = tmp_path / "run"
    save = torch.save

    def full_disk(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "losses" in obj.get("meta", {}):  # the export
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, file, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full_disk)
        with pytest.raises(OutputWriteError) as caught:
            lightly_glare.pretrain(out, data, checkpoint, steps=2, **TINY)
    assert str(caught.value).startswith(
        f"Cannot write {out / BACKBONE}: the disk is full (No space left on device)"
    )
    assert "resume=True continues" in str(caught.value)
    assert not (out / BACKBONE).exists() and (out / CHECKPOINT).exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []

    again = lightly_glare.pretrain(out, data, checkpoint, steps=2, resume=True, **TINY)
    assert again.start_step == 2 and len(again.history.losses) == 2
    assert all((out / name).is_file() for name in (BACKBONE, TIMM_VIT, ADAPTERS))
    state = torch.load(out / CHECKPOINT, weights_only=True)
    teacher = torch.load(out / ADAPTERS, weights_only=True)["state_dict"]
    for key, value in teacher.items():  # the trained teacher, not a fresh one
        assert torch.equal(value, state["model"][f"teacher.adapters.{key}"])
    with pytest.raises(NoTrainingStepsError, match="Its exports are next to it"):
        lightly_glare.pretrain(out, data, checkpoint, steps=2, resume=True, **TINY)


def test_torch_save_errors_on_a_full_disk_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        run_checks.shutil, "disk_usage", lambda path: usage._replace(free=0)
    )
    torch_error = RuntimeError(
        "[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 0"
    )
    with pytest.raises(OutputWriteError) as caught:
        with run_files.writing(tmp_path / CHECKPOINT):
            raise torch_error
    assert str(caught.value).startswith(
        f"Cannot write {tmp_path / CHECKPOINT}: the disk is full (0 bytes free; "
        "RuntimeError: [enforce fail at inline_container.cc:672]"
    )
    with pytest.raises(RuntimeError, match="other"):  # not a write error: unchanged
        with run_files.writing(tmp_path / CHECKPOINT):
            raise RuntimeError("other")


def test_every_mistake_ends_as_one_line_with_exit_1(
    tmp_path: Path,
    inputs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, checkpoint = inputs
    monkeypatch.setattr(run, "build_folder_job", _not_built)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    a_file = next(data.iterdir())

    def one_line(**keys: object) -> str:
        given = {"out": tmp_path / "out", "data": data, "checkpoint": checkpoint}
        given |= {"model": ARCH, "progress": "false", **keys}
        args = [f"{key}={value}" for key, value in given.items()]
        capsys.readouterr()
        assert cli.main(["pretrain", *args]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("lightly-glare pretrain: Error: "), err
        return err

    assert "model 'vit_smal_patch14_dinov2' is not a timm model. Closest: " in (
        one_line(model="vit_smal_patch14_dinov2")
    )
    assert "vit_small_patch14_dinov2" in one_line(model="vit_smal_patch14_dinov2")
    assert f"data '{a_file}' is a file, not a folder" in one_line(data=a_file)
    assert f"out '{a_file}' is a file, not a folder" in one_line(out=a_file)
    assert "checkpoint '/nowhere.pth' does not exist" in one_line(
        checkpoint="/nowhere.pth"
    )

    args = [
        f"out={a_file}",
        f"data={data}",
        f"checkpoint={checkpoint}",
        f"model={ARCH}",
    ]
    with pytest.raises(OutFolderError):  # --debug anywhere in the pretrain args
        cli.main(["pretrain", *args, "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(OutFolderError):
        cli.main(["pretrain", *args])


def test_the_image_check_draws_a_progress_bar_on_large_folders(
    tmp_path: Path,
    inputs: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, checkpoint = inputs
    monkeypatch.setattr(run, "build_folder_job", _not_built)
    options = {**TINY, "progress": True, "log": None}
    for threshold, shown in ((4, False), (3, True)):  # 4 images
        monkeypatch.setattr(run_checks, "CHECK_PROGRESS_FROM", threshold)
        with pytest.raises(AssertionError, match="built before the check"):
            lightly_glare.pretrain(tmp_path / "out", data, checkpoint, **options)
        err = capsys.readouterr().err
        assert ("checking images" in err and "4/4" in err) == shown, err
    with pytest.raises(ValueError, match="min_size must be at least 1 or None"):
        lightly_glare.pretrain(tmp_path / "out", data, checkpoint, min_size=0, **TINY)
