"""One call: GLARE continual pre-training of a checkpoint on an image folder.

:func:`pretrain` (also ``lightly_glare.pretrain`` and ``lightly-glare pretrain
out=... data=... checkpoint=... model=...``) checks its inputs
(:mod:`~lightly_glare.pretraining.run_checks`), builds the job of
:class:`~lightly_glare.pretraining.job.FolderPretraining`, trains it on the
job's one path (:func:`~lightly_glare.pretraining.folder.train_job`) and leaves
in ``out/`` (:mod:`~lightly_glare.pretraining.run_files`):

- ``checkpoint.pth``: the run's state every ``save_every`` steps (atomic);
  continue with ``resume=True``.
- ``metrics.jsonl``: one line per step: loss, its terms, the teacher's
  entropy, batch entropy and KL per term (fractions of log K), lr, EMA
  momentum, images/s, data-wait share.
- ``tensorboard/``: the same scalars as TensorBoard events.
- ``losses.png``: the loss and its terms over the steps.
- ``adapted_backbone.pth``: frozen ViT + teacher adapters, for ``GlareViT``
  (``checkpoint_type='glare'``) and
  :func:`~lightly_glare.models.load_adapted_backbone`.
- ``timm_vit.pth``: the frozen ViT as a plain timm state dict.
- ``adapters.pth``: the teacher's adapters and their architecture.

The adapters cannot be merged into timm weights: each adds
``s * W_up(ReLU(W_down(LN(h))))`` beside a block's MLP, with its own layer
norm and a ReLU, which no change of the MLP's weights (GELU, the block's own
norm) reproduces. ``timm_vit.pth`` is therefore the unchanged frozen ViT (the
start checkpoint in timm's layout) and the adaptation lives in
``adapters.pth``; ``adapted_backbone.pth`` holds both for lightly-glare's
loaders.

Resume is exact: the data order and the augmentations depend only on the seed
and the step (:mod:`lightly_glare.data.seeded`), the learning rate and EMA
momentum are functions of the step, and the checkpoint holds the adapters,
heads and teacher, the loss's centers, the optimizer, the step and torch's RNG
state (the region sampler and patch distortion draw from it). A resumed run
therefore computes the same losses as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import Subset

from lightly_glare.data import ImageFolderDataset, ImageReadError
from lightly_glare.loss import GlareLoss
from lightly_glare.models import DEFAULT_HEAD_INIT_IMAGES, GLARE
from lightly_glare.pretraining.folder import build_folder_job, train_job
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.loop import (
    NoTrainingStepsError,
    PretrainHistory,
    StepCallback,
)
from lightly_glare.pretraining.monitoring import (
    JsonlMetrics,
    ProgressBar,
    TensorBoardMetrics,
    UniformTeacherWarning,
    read_metrics,
    teacher_summary,
)
from lightly_glare.pretraining.run_checks import (
    DEFAULT_MIN_SIZE,
    check_data,
    check_free_space,
    check_inputs,
    check_out_folder,
    unverified,
)
from lightly_glare.pretraining.run_files import (
    CHECKPOINT,
    EXPORTS,
    FINAL_FILES,
    FROZEN_PREFIX,
    METRICS,
    RUN_FORMAT,
    TENSORBOARD,
    CheckpointSaver,
    drop_torn_line,
    guarded,
    write_outputs,
    writing,
)

#: :class:`FolderPretraining` fields that :func:`pretrain` names itself.
NAMED_FIELDS = ("model", "checkpoint", "data", "img_size", "steps")
#: :class:`FolderPretraining` fields passed as ``**options``.
OPTIONS = tuple(
    f.name for f in dataclasses.fields(FolderPretraining) if f.name not in NAMED_FIELDS
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
#: Input size of the views of a run.
IMG_SIZE = 224
#: Optimizer steps of a run.
STEPS = 1000
#: A run writes its checkpoint every this many steps (and at the end).
SAVE_EVERY = 100


class ResumeError(ValueError):
    """A run cannot be started or continued in ``out`` as asked."""


@dataclass(frozen=True)
class PretrainRun:
    """What :func:`pretrain` wrote and measured.

    Attributes:
        out: The run's folder.
        history: Losses and terms of every step of the run (also those before
            a resume).
        device: Where it trained.
        amp: Whether bf16 autocast was on.
        start_step: The step this call started at (0, or the resumed step).
    """

    out: Path
    history: PretrainHistory
    device: torch.device
    amp: bool
    start_step: int

    def path(self, name: str) -> Path:
        """A file of the run, e.g. ``run.path(BACKBONE)``."""
        return self.out / name


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pretrain(
    out: str | Path,
    data: str | Path,
    checkpoint: str | Path,
    *,
    model: str,
    img_size: int = IMG_SIZE,
    steps: int = STEPS,
    resume: bool = False,
    save_every: int = SAVE_EVERY,
    skip_bad: bool = False,
    min_size: int | None = DEFAULT_MIN_SIZE,
    verify_images: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[StepCallback] = (),
    **options: Any,
) -> PretrainRun:
    """GLARE continual pre-training of ``checkpoint`` on the images in ``data``.

    Trains :class:`~lightly_glare.pretraining.job.FolderPretraining` (frozen
    timm ViT ``model`` from ``checkpoint``, UniAdapters, student/teacher heads,
    all four terms) for ``steps`` steps on two views per image (``img_size``
    px) and writes the files listed in :mod:`lightly_glare.pretraining.run`.

    Example:
        >>> run = lightly_glare.pretrain(
        ...     "runs/vits", "images/", "dino_deitsmall16_pretrain.pth",
        ...     model="vit_small_patch16_224", steps=300)
        >>> run.path("adapted_backbone.pth")

    Args:
        out: The run's folder (created).
        data: Folder of unlabeled images (searched recursively).
        checkpoint: Local SSL checkpoint of ``model`` (DINO, DINOv2, iBOT, timm).
        model: timm model name of the checkpoint, e.g. ``"vit_small_patch14_dinov2"``.
        img_size: Input size of the views, a multiple of the patch size.
        steps: Optimizer steps of the whole run.
        resume: Continue the run in ``out`` (same settings; ``workers`` may differ).
        save_every: Write the checkpoint every this many steps (and at the end).
        skip_bad: Train without the bad images (unreadable, or smaller than
            ``min_size``), saying how many; False: refuse, listing them all.
        min_size: Shorter side in pixels below which an image is bad; None: any.
        verify_images: Decode every image before training (catches corrupt
            pixel data) instead of reading the headers only.
        device: Where to train. None: CUDA when available, else the CPU.
        progress: Draw a progress bar; off, progress lines go to ``log``.
        log: Printer of progress lines. None: ``print`` (above the bar).
        callbacks: Further step callbacks, called after the run's own.
        **options: Further :class:`~lightly_glare.pretraining.job.FolderPretraining`
            fields (``batch_size``, ``seed``, ``weights``, ``amp``, ``head_init``,
            ...; :data:`OPTIONS`), documented there.

    Returns:
        The run: its folder, every step's losses, the device.

    Raises:
        TypeError: An unknown option (the closest is named).
        ValueError: ``model`` is not a timm model (the closest are named).
        FileNotFoundError: ``data`` or ``checkpoint`` does not exist (or
            ``NotADirectoryError`` / ``IsADirectoryError``: the wrong kind).
        BadImagesError: Bad images and not ``skip_bad`` (all listed), or all bad.
        ImageReadError: An image that passed the check fails to decode.
        OutFolderError: ``out`` is a file, not writable, or its disk too full.
        OutputWriteError: A file of the run could not be written (named).
        ResumeError: ``out`` holds a run and not ``resume``, or ``resume`` and
            no run, or one with other settings or images (differences named).
        NoTrainingStepsError: Fewer images than a batch, ``steps`` < 1, or a
            finished and exported run resumed.
        NonFiniteLossError: The loss became NaN or infinite.
    """
    _check_options(options, save_every, min_size)
    check_inputs(data, checkpoint, model)
    job = FolderPretraining(
        model=model,
        checkpoint=checkpoint,
        data=data,
        img_size=img_size,
        steps=steps,
        **options,
    )
    job.config("cpu")  # refuses steps < 1 before anything is built
    run = _Run(job, Path(out), resume, progress, log, device)
    return run.train(save_every, skip_bad, min_size, verify_images, callbacks)


def _check_options(
    options: Mapping[str, Any], save_every: int, min_size: int | None
) -> None:
    """Refuses unknown options (naming the closest) and out-of-range values."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        hints = [difflib.get_close_matches(k, OPTIONS, n=1) for k in unknown]
        named = ", ".join(
            f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
            for k, h in zip(unknown, hints, strict=True)
        )
        raise TypeError(f"pretrain() got unknown options {named}. Options: {OPTIONS}.")
    if save_every < 1:
        raise ValueError(f"save_every must be at least 1, got {save_every}.")
    if min_size is not None and min_size < 1:
        raise ValueError(f"min_size must be at least 1 or None, got {min_size}.")


class _Run:
    """One call of :func:`pretrain`: its folder, state, printer and device."""

    def __init__(
        self,
        job: FolderPretraining,
        out: Path,
        resume: bool,
        progress: bool,
        log: Callable[[str], None] | None,
        device: str | torch.device | None,
    ) -> None:
        self.job, self.out, self.progress = job, out, progress
        check_out_folder(out)
        self.state = _run_state(out, resume)
        self.bar = ProgressBar() if progress else None
        self.printer = log or (self.bar.write if self.bar else print)
        self.device = default_device() if device is None else torch.device(device)
        self.amp = bool(job.config(self.device).amp)  # resolved for the device

    def build(
        self, skip_bad: bool, min_size: int | None, verify_images: bool
    ) -> tuple[GLARE, GlareLoss, Subset[Any]]:
        """Checks the images and the disk, then builds the model (heads fitted)."""
        job, out, printer = self.job, self.out, self.printer
        if self.state is None and (out / METRICS).exists():
            printer(
                f"  replacing {out / METRICS} and {TENSORBOARD}/: a run that stopped "
                "before its first checkpoint"
            )
        bad = check_data(job, min_size, skip_bad, verify_images, self.progress, printer)
        check_free_space(out, job)
        printer(
            f"GLARE pre-training of {job.model} on {self.device}, bf16 autocast "
            f"{self.amp}"
        )
        try:  # the head initialisation reads images too
            built = build_folder_job(
                job, self.device, printer, self.state is None, skip_files=bad
            )
        except ImageReadError as error:
            raise unverified(error, verify_images) from None
        if len(built[2]) < job.batch_size:
            raise NoTrainingStepsError(
                f"No training step: {len(built[2])} image(s) in {job.data} and "
                f"batch_size={job.batch_size}. Add images or lower the batch size."
            )
        return built

    def train(
        self,
        save_every: int,
        skip_bad: bool,
        min_size: int | None,
        verify_images: bool,
        callbacks: Sequence[StepCallback],
    ) -> PretrainRun:
        """Builds, restores, trains and exports the run (see :func:`pretrain`)."""
        job, out, state, printer = self.job, self.out, self.state, self.printer
        glare, criterion, images = self.build(skip_bad, min_size, verify_images)
        settings = _settings(job, images)
        prior, start = PretrainHistory(), 0
        if state is not None:
            missing = [name for name in EXPORTS if not (out / name).is_file()]
            start = _restore(
                state, settings, glare, criterion, out / CHECKPOINT, missing
            )
            prior = PretrainHistory(
                losses=state["losses"],
                terms=state["terms"],
                teacher=state.get("teacher", []),  # runs before the diagnostics: none
            )
            printer(f"  resumed {out / CHECKPOINT} at step {start}/{job.steps}")
            if start >= job.steps:  # finished, but its exports are missing
                printer(
                    f"  the run is finished; writing its missing {', '.join(missing)}"
                )
                write_outputs(glare, job, prior.losses, out)
                return PretrainRun(out, prior, self.device, self.amp, start)
        drop_torn_line(out / METRICS)
        saver = CheckpointSaver(out / CHECKPOINT, save_every, settings, prior)
        history = self._steps(
            glare, criterion, images, start, saver, callbacks, verify_images
        )
        full = PretrainHistory(
            losses=prior.losses + history.losses,
            terms=prior.terms + history.terms,
            teacher=prior.teacher + history.teacher,
            seconds=history.seconds,
        )
        write_outputs(glare, job, full.losses, out)
        printer(
            f"  {len(images)} images, steps {start}-{job.steps} in "
            f"{history.seconds:.0f}s, loss {full.losses[0]:.3f} -> "
            f"{full.losses[-1]:.3f}; wrote {out}"
        )
        for line in teacher_summary(read_metrics(out / METRICS)):
            printer(line)
        return PretrainRun(out, full, self.device, self.amp, start)

    def _steps(
        self,
        glare: GLARE,
        criterion: GlareLoss,
        images: Subset[Any],
        start: int,
        saver: CheckpointSaver,
        callbacks: Sequence[StepCallback],
        verify_images: bool,
    ) -> PretrainHistory:
        """The steps from ``start`` on, with the run's metrics and checkpoints."""
        out, bar = self.out, self.bar
        with writing(out / METRICS):
            metrics: list[JsonlMetrics | TensorBoardMetrics] = [
                JsonlMetrics(out / METRICS, start),
                TensorBoardMetrics(out / TENSORBOARD, start),
            ]
        own: list[StepCallback] = [
            *guarded(metrics),
            saver,
            UniformTeacherWarning(self.printer),
            *([bar] if bar else []),
        ]
        try:
            return train_job(
                self.job,
                glare,
                criterion,
                images,
                self.device,
                self.printer,
                [*own, *callbacks],
                start_step=start,
                optimizer_state=self.state["optimizer"] if self.state else None,
            )
        except ImageReadError as error:
            raise unverified(error, verify_images) from None
        finally:
            for closable in (*metrics, *([bar] if bar else [])):
                closable.close()


def _settings(job: FolderPretraining, images: Subset[Any]) -> dict[str, Any]:
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


def _run_state(out: Path, resume: bool) -> dict[str, Any] | None:
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


def _restore(
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
