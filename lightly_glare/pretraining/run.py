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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from lightly_glare.data import ImageReadError
from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE
from lightly_glare.models.defaults import IMG_SIZE
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
from lightly_glare.pretraining.resume import restore, run_settings, run_state
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
    METRICS,
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
#: Optimizer steps of a run.
STEPS = 1000
#: A run writes its checkpoint every this many steps (and at the end).
SAVE_EVERY = 100


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
        skip_bad: Train without bad images (see ``min_size``); False: refuse them.
        min_size: Shorter side in pixels below which an image is bad; None: any.
        verify_images: Decode every image before training, not only its header.
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
        FileNotFoundError: ``data`` or ``checkpoint`` does not exist.
        BadImagesError: Bad images and not ``skip_bad`` (all listed), or all bad.
        OutFolderError: ``out`` is a file, not writable, or its disk too full.
        OutputWriteError: A file of the run could not be written (named).
        ResumeError: ``out`` holds a run and not ``resume``, or ``resume`` and
            no run or one with other settings or images (differences named).
        NoTrainingStepsError: Fewer images than a batch, or ``steps`` < 1.
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
        self.state = run_state(out, resume)
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
        settings = run_settings(job, images)
        prior, start = PretrainHistory(), 0
        if state is not None:
            missing = [name for name in EXPORTS if not (out / name).is_file()]
            start = restore(
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
