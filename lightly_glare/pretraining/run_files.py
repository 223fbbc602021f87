"""The files of a one-call run in ``out/``: names, guarded writes, checkpoint, exports.

Every file is written atomically or appended to, and a failed write raises
:class:`OutputWriteError` naming the file and its cause (:func:`writing`), so
a run stopped by a full disk continues with ``resume=True`` once the cause is
fixed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lightly_glare.models import GLARE
from lightly_glare.pretraining.folder import export_job
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.loop import PretrainHistory, StepCallback, StepEvent
from lightly_glare.pretraining.monitoring import (
    JsonlMetrics,
    TensorBoardMetrics,
    plot_losses,
    read_metrics,
)
from lightly_glare.weights import save_atomic
from lightly_glare.weights.export import architecture_of

#: The files of a run in ``out/``.
CHECKPOINT = "checkpoint.pth"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
FIGURE = "losses.png"
BACKBONE = "adapted_backbone.pth"
TIMM_VIT = "timm_vit.pth"
ADAPTERS = "adapters.pth"
#: ``format`` of a run checkpoint.
RUN_FORMAT = "lightly-glare-run"
#: The frozen ViT: restored from the start checkpoint, not saved in the run's.
FROZEN_PREFIX = "backbone.vit."
#: The files the end of a run writes (a finished run without them re-exports).
EXPORTS = (BACKBONE, TIMM_VIT, ADAPTERS)
#: Files that only a run that reached its end writes: never overwritten.
FINAL_FILES = (FIGURE, *EXPORTS)


class OutputWriteError(OSError):
    """Writing a file of the run failed (full disk, lost permission, ...).

    The message names the file and the cause. The files written before are
    intact (every write is atomic or appends), so the run can continue with
    ``resume=True`` once the cause is fixed.

    Attributes:
        path: The file that could not be written.
    """

    def __init__(self, path: str | os.PathLike[str], cause: BaseException) -> None:
        self.path = Path(path)
        super().__init__(
            f"Cannot write {self.path}: {write_cause(self.path, cause)}. The files "
            "written before are intact; fix the cause, then resume=True continues "
            "from the last checkpoint."
        )


class CheckpointSaver:
    """Step callback writing the run's state every ``every`` steps, atomically."""

    def __init__(
        self,
        path: Path,
        every: int,
        settings: Mapping[str, Any],
        prior: PretrainHistory,
    ) -> None:
        self.path = path
        self.every = every
        self.settings = dict(settings)
        self.prior = prior

    def __call__(self, event: StepEvent) -> None:
        """Writes the checkpoint after every ``every``-th step and the last."""
        if event.step % self.every and event.step != event.steps:
            return
        model = {
            k: v
            for k, v in event.model.state_dict().items()
            if not k.startswith(FROZEN_PREFIX)
        }
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        with writing(self.path):
            self._save(event, model, cuda)

    def _save(self, event: StepEvent, model: dict[str, Any], cuda: Any) -> None:
        save_atomic(
            {
                "format": RUN_FORMAT,
                "step": event.step,
                "settings": self.settings,
                "model": model,
                "criterion": event.criterion.state_dict(),
                "optimizer": event.optimizer.state_dict(),
                "rng": {"cpu": torch.get_rng_state(), "cuda": cuda},
                "losses": self.prior.losses + event.history.losses,
                "terms": self.prior.terms + event.history.terms,
                "teacher": self.prior.teacher + event.history.teacher,
            },
            self.path,
        )


def write_outputs(
    model: GLARE, job: FolderPretraining, losses: Sequence[float], out: Path
) -> None:
    """Writes the loss figure and the three exports of a trained run."""
    with writing(out / FIGURE):
        plot_losses(read_metrics(out / METRICS), out / FIGURE)
    with writing(out / BACKBONE):
        export_job(model, job, losses, out / BACKBONE)
    export_timm(model, out)


def export_timm(model: GLARE, out: Path) -> None:
    """Writes ``timm_vit.pth`` (frozen ViT) and ``adapters.pth`` (teacher)."""
    with writing(out / TIMM_VIT):
        save_atomic(model.backbone.vit.state_dict(), out / TIMM_VIT)
    with writing(out / ADAPTERS):
        save_atomic(
            {
                "state_dict": model.teacher_adapters.state_dict(),
                "meta": {"architecture": architecture_of(model.backbone)},
            },
            out / ADAPTERS,
        )


def mb(size: int) -> str:
    """``size`` bytes in words: megabytes from 1 MB on."""
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"


def drop_torn_line(path: Path) -> None:
    """Removes a torn last line of ``metrics.jsonl`` (a kill or a full disk).

    Only the last line can be torn (the file is appended to, a line at a time);
    its step is after the checkpoint's, so a resume drops it anyway.
    """
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    head, _, last = text.rstrip("\n").rpartition("\n")
    try:
        json.loads(last)
    except json.JSONDecodeError:
        with writing(path):
            path.write_text(head + "\n" if head else "", encoding="utf-8")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turns a failed write of ``path`` into an :class:`OutputWriteError`.

    torch.save on a full disk raises ``RuntimeError: [enforce fail at
    inline_container.cc...] unexpected pos`` without a path; OSError names
    the temporary file at best.
    """
    try:
        yield
    except OSError as error:
        raise OutputWriteError(path, error) from error
    except RuntimeError as error:
        if "inline_container" not in str(error) and "PytorchStreamWriter" not in str(
            error
        ):
            raise
        raise OutputWriteError(path, error) from error


def write_cause(path: Path, cause: BaseException) -> str:
    """The cause of a failed write, in words."""
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        return f"the disk is full ({cause.strerror or 'no space left on device'})"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    detail = f"{type(cause).__name__}: {first}"
    if free is not None and free < 2**20 * 64:
        return f"the disk is full ({mb(free)} free; {detail})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror + (f" ({cause.filename})" if cause.filename else "")
    return detail


def guarded(
    metrics: Sequence[JsonlMetrics | TensorBoardMetrics],
) -> list[StepCallback]:
    """``metrics`` as step callbacks whose write errors name their file."""
    return [
        _WriteErrors(m, m.path if isinstance(m, JsonlMetrics) else m.log_dir)
        for m in metrics
    ]


class _WriteErrors:
    """A step callback whose write errors name ``path`` and their cause."""

    def __init__(self, callback: StepCallback, path: Path) -> None:
        self.callback = callback
        self.path = path

    def __call__(self, event: StepEvent) -> None:
        with writing(self.path):
            self.callback(event)
