"""Resuming a one-call run: what it must share with the run it continues.

A run checkpoint holds the run's settings (:func:`run_settings`); a resumed run
must have the same (only :data:`NOT_COMPARED` may change), read through
:data:`LEGACY_SETTINGS` (settings added since) and :data:`RENAMED_SETTINGS`
(settings renamed since), so that a run written by an older version resumes
exactly or is refused naming the difference (:func:`restore`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import Subset

from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import DEFAULT_HEAD_INIT_IMAGES, GLARE
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.loop import NoTrainingStepsError
from lightly_glare.pretraining.run_files import (
    CHECKPOINT,
    FINAL_FILES,
    FROZEN_PREFIX,
    RUN_FORMAT,
)

#: Options that do not change the computed numbers (may differ on resume).
NOT_COMPARED = ("workers",)
#: Settings added after runs were first written, with the value such runs used.
LEGACY_SETTINGS: dict[str, Any] = {
    "student_drop_path": 0.0,
    "head_init": "random",
    "head_init_images": DEFAULT_HEAD_INIT_IMAGES,
}
#: Settings renamed since runs were first written: old name to new name (a run
#: checkpoint that holds the old name resumes under the new one).
RENAMED_SETTINGS = {"arch": "model", "folder": "data"}


class ResumeError(ValueError):
    """A run cannot be started or continued in ``out`` as asked."""


def run_settings(job: FolderPretraining, images: Subset[Any]) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    values = {
        f.name: getattr(job, f.name)
        for f in dataclasses.fields(job)
        if f.name not in NOT_COMPARED
    }
    folder = cast(ImageFolderDataset, images.dataset)
    names = "\n".join(str(folder.files[i]) for i in images.indices)
    digest = hashlib.sha256(names.encode()).hexdigest()[:16]
    values |= {
        "checkpoint": str(Path(job.checkpoint).resolve()),
        "data": str(Path(job.data).resolve()),
        "weights": dict(job.weights),
        "indices": None if job.indices is None else list(job.indices),
        "images": f"{len(images)} files, sha256 {digest}",
    }
    return values


def run_state(out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, None for a fresh run; refuses mix-ups."""
    path = out / CHECKPOINT
    if not resume:
        if path.exists():
            raise ResumeError(
                f"{out} holds a run ({CHECKPOINT}). Pass resume=True to continue "
                "it, or choose another out (nothing was overwritten)."
            )
        found = [name for name in FINAL_FILES if (out / name).exists()]
        if found:
            raise ResumeError(
                f"{out} holds files of a run ({', '.join(found)}) but no "
                f"{CHECKPOINT} to continue it from; a new run would overwrite "
                "them. Choose another out, or delete them (nothing was "
                "overwritten)."
            )
        return None
    if not path.exists():
        raise ResumeError(
            f"resume=True but {out} holds no run ({path} does not exist). Start "
            "it with resume=False."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise ResumeError(f"Cannot read {path}: {error}") from error
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise ResumeError(f"{path} is not a lightly-glare run checkpoint.")
    return state


def restore(
    state: Mapping[str, Any],
    settings: Mapping[str, Any],
    model: GLARE,
    criterion: GlareLoss,
    path: Path,
    missing_exports: Sequence[str] = (),
) -> int:
    """Loads the run's state into ``model``, ``criterion`` and torch's RNG.

    Args:
        state: The run checkpoint.
        settings: The settings of the run asked for.
        model: Receives the trained state.
        criterion: Receives the loss's centers.
        path: The checkpoint's file (for messages).
        missing_exports: Exports absent from ``out``: a finished run is then
            restored to write them, else refused.

    Returns:
        The step to continue at (the last step of a finished run).
    """
    renamed = {RENAMED_SETTINGS.get(k, k): v for k, v in state["settings"].items()}
    saved = {**LEGACY_SETTINGS, **renamed}
    differ = [
        f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}"
        for k in sorted(set(saved) | set(settings))
        if saved.get(k) != settings.get(k)
    ]
    if differ:
        raise ResumeError(
            f"{path} was written with other settings; resume needs the same "
            f"(only {', '.join(NOT_COMPARED)} may change). Differences: "
            + "; ".join(differ)
        )
    step = int(state["step"])
    if step >= int(settings["steps"]) and not missing_exports:
        raise NoTrainingStepsError(
            f"{path}: the run is finished ({step}/{settings['steps']} steps); "
            "nothing to resume. Its exports are next to it."
        )
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    lost = [k for k in missing if not k.startswith(FROZEN_PREFIX)]
    if lost or unexpected:
        raise ResumeError(
            f"{path} does not fit the model: missing {lost[:5]}, unexpected "
            f"{unexpected[:5]}."
        )
    criterion.load_state_dict(state["criterion"])
    torch.set_rng_state(state["rng"]["cpu"])
    if torch.cuda.is_available() and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return step
