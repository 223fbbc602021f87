"""One call: GLARE continual pre-training of a checkpoint on an image folder.

:func:`pretrain` (also ``lightly_glare.pretrain`` and ``lightly-glare pretrain
out=... data=... checkpoint=... model=...``) builds the job of
:class:`~lightly_glare.training.FolderPretraining`, trains it with the plain
loop of :func:`lightly_glare.training.pretrain`, and leaves in ``out/``:

- ``checkpoint.pth``: the run's state every ``save_every`` steps (atomic);
  continue with ``resume=True``.
- ``metrics.jsonl``: one line per step: loss, its terms, the teacher's
  entropy, batch entropy and KL per term (fractions of log K), lr, EMA
  momentum, images/s, data-wait share.
- ``tensorboard/``: the same scalars as TensorBoard events.
- ``losses.png``: the loss and its terms over the steps.
- ``adapted_backbone.pth``: frozen ViT + teacher adapters, for ``GlareViT``
  (``checkpoint_type='glare'``) and
  :func:`~lightly_glare.weights.load_adapted_backbone`.
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

import contextlib
import dataclasses
import difflib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import Subset

from lightly_glare.data import (
    IMAGE_EXTENSIONS,
    BadImagesError,
    ImageFolderDataset,
    ImageReadError,
    check_images,
    find_image_files,
    raise_carried,
)
from lightly_glare.loss import GlareLoss
from lightly_glare.models import DEFAULT_HEAD_INIT_IMAGES, GLARE
from lightly_glare.monitoring import (
    JsonlMetrics,
    ProgressBar,
    TensorBoardMetrics,
    UniformTeacherWarning,
    plot_losses,
    read_metrics,
    teacher_summary,
)
from lightly_glare.training import (
    FolderPretraining,
    NoTrainingStepsError,
    PretrainHistory,
    StepCallback,
    StepEvent,
    build_folder_pretraining,
    build_job_model,
    export_job,
    seeded_loader,
)
from lightly_glare.training import (
    pretrain as pretrain_loop,
)
from lightly_glare.weights.checkpoint_io import save_atomic
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
#: :class:`FolderPretraining` fields that :func:`pretrain` names itself.
NAMED_FIELDS = ("arch", "checkpoint", "folder", "img_size", "steps")
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
#: The frozen ViT: restored from the start checkpoint, not saved in the run's.
_FROZEN_PREFIX = "backbone.vit."
#: The files the end of a run writes (a finished run without them re-exports).
EXPORTS = (BACKBONE, TIMM_VIT, ADAPTERS)
#: Files that only a run that reached its end writes: never overwritten.
FINAL_FILES = (FIGURE, *EXPORTS)
#: Default ``min_size``: images with a shorter side below it are bad files.
DEFAULT_MIN_SIZE = 32
#: Folders holding more images than this get a progress bar for their check.
CHECK_PROGRESS_FROM = 1000
#: Bad files listed in the message (all are counted).
LISTED_BAD_FILES = 100
#: Free space asked beyond the estimated size of the run's files.
SPACE_MARGIN = 1.1


class ResumeError(ValueError):
    """A run cannot be started or continued in ``out`` as asked."""


class OutFolderError(ValueError):
    """``out`` cannot hold the run: not a folder, not writable, or too full."""


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
            f"Cannot write {self.path}: {_write_cause(self.path, cause)}. The files "
            "written before are intact; fix the cause, then resume=True continues "
            "from the last checkpoint."
        )


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
    img_size: int = 224,
    steps: int = 1000,
    resume: bool = False,
    save_every: int = 100,
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

    Builds :class:`~lightly_glare.training.FolderPretraining` (frozen timm ViT
    ``model`` from ``checkpoint``, UniAdapters, student/teacher heads, all four
    terms), trains it for ``steps`` optimizer steps on two views per image
    (``img_size`` px), and writes the checkpoint, metrics and exports listed in
    :mod:`lightly_glare.run` into ``out``.

    Example:
        >>> run = lightly_glare.pretrain(
        ...     "runs/vits", "images/", "dino_deitsmall16_pretrain.pth",
        ...     model="vit_small_patch16_224", steps=300)
        >>> run.path("adapted_backbone.pth")

    Args:
        out: The run's folder (created).
        data: Folder of unlabeled images (searched recursively).
        checkpoint: Local SSL checkpoint of ``model`` (DINO, DINOv2, iBOT,
            timm layouts; see :func:`~lightly_glare.weights.create_vit`).
        model: timm model name of the checkpoint, e.g.
            ``"vit_small_patch14_dinov2"``.
        img_size: Input size of the views, a multiple of the patch size.
        steps: Optimizer steps of the whole run.
        resume: Continue the run whose checkpoint is in ``out`` (with the same
            settings; ``workers`` may differ).
        save_every: Write the checkpoint every this many steps (and at the end).
        skip_bad: Train without the bad images (unreadable, or smaller than
            ``min_size``) and say how many were left out; False: refuse the
            run, listing them all. The images are checked before the model is
            built.
        min_size: Shorter image side in pixels below which an image is bad
            (it would be upscaled into the views); None: no minimum.
        verify_images: Decode every image before training (catches truncated
            or corrupt pixel data; a full decode per image) instead of reading
            the headers only (0.2 s for 5,000 small JPEGs; decoding: 0.9 s).
        device: Where to train. None: CUDA when available, else the CPU.
        progress: Draw a progress bar (step, loss and terms, images/s, ETA,
            data-wait share); off, progress lines go to ``log``.
        log: Printer of progress lines. None: ``print`` (above the bar).
        callbacks: Further step callbacks, called after the run's own.
        **options: Further :class:`~lightly_glare.training.FolderPretraining`
            fields: ``batch_size``, ``seed``, ``weights``, ``output_dim``,
            ``hidden_dim``, ``adapter_bottleneck``, ``workers``, ``base_lr``,
            ``momentum_start``, ``amp`` (None: bf16 where the device has it
            natively), ``local_patches_per_view``, ``student_drop_path``,
            ``num_regions``, ``head_warmup_steps``, ``patch_augmentation``,
            ``checkpoint_heads``, ``freeze_heads``, ``head_init`` (``"auto"``:
            heads the checkpoint lacks are fitted to the data before the first
            step), ``head_init_images``, ``indices``.

    Returns:
        The run: its folder, every step's losses, the device.

    Raises:
        TypeError: An unknown option (the message names the closest).
        ValueError: ``model`` is not a timm model (the closest are named).
        FileNotFoundError: ``data`` or ``checkpoint`` does not exist.
        NotADirectoryError: ``data`` is a file.
        BadImagesError: Bad images in ``data`` and ``skip_bad`` is False (all
            are listed), or all are bad.
        ImageReadError: An image that passed the header check cannot be
            decoded during training (the message names it; ``verify_images``
            finds such files before training).
        OutFolderError: ``out`` is a file, cannot be created or written, or
            its disk has less free space than the run's files need.
        OutputWriteError: A file of the run could not be written (the message
            names it and the cause, e.g. a full disk).
        ResumeError: ``out`` holds a run (or files of one) and ``resume`` is
            False; ``resume`` is True but ``out`` holds no run, or one with
            other settings or other images (the differences are named).
        NoTrainingStepsError: Fewer images than a batch, ``steps`` < 1, or a
            resumed run that is already finished and exported (a finished run
            whose exports are missing writes them).
        NonFiniteLossError: The loss became NaN or infinite (the last
            checkpoint stays intact).
    """
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
    _check_inputs(data, checkpoint, model)
    job = FolderPretraining(
        arch=model,
        checkpoint=checkpoint,
        folder=data,
        img_size=img_size,
        steps=steps,
        **options,
    )
    job.config("cpu")  # refuses steps < 1 before anything is built
    out = Path(out)
    _check_out_folder(out)
    state = _run_state(out, resume)
    bar = ProgressBar() if progress else None
    printer = log or (bar.write if bar else print)
    if state is None and (out / METRICS).exists():
        printer(
            f"  replacing {out / METRICS} and {TENSORBOARD}/: a run that stopped "
            "before its first checkpoint"
        )
    bad = _check_data(job, min_size, skip_bad, verify_images, progress, printer)
    _check_free_space(out, job)
    chosen = default_device() if device is None else torch.device(device)
    config = job.config(chosen)
    amp = bool(config.amp)  # resolved for the device by job.config
    printer(f"GLARE pre-training of {model} on {chosen}, bf16 autocast {amp}")
    try:  # the head initialisation reads images too
        glare, criterion, images = build_folder_pretraining(
            job, chosen, printer, initialize_heads=state is None, skip_files=bad
        )
    except ImageReadError as error:
        raise _unverified(error, verify_images) from None
    if len(images) < job.batch_size:
        raise NoTrainingStepsError(
            f"No training step: {len(images)} image(s) in {data} and batch_size="
            f"{job.batch_size}. Add images or lower the batch size."
        )
    settings = _settings(job, images)
    prior = PretrainHistory()
    start = 0
    if state is not None:
        missing = [name for name in EXPORTS if not (out / name).is_file()]
        start = _restore(state, settings, glare, criterion, out / CHECKPOINT, missing)
        prior = PretrainHistory(
            losses=state["losses"],
            terms=state["terms"],
            teacher=state.get("teacher", []),  # runs before the diagnostics: none
        )
        printer(f"  resumed {out / CHECKPOINT} at step {start}/{steps}")
        if start >= steps:  # finished, but its exports are missing (a full disk)
            printer(f"  the run is finished; writing its missing {', '.join(missing)}")
            _write_outputs(glare, job, prior.losses, out)
            return PretrainRun(out, prior, chosen, amp, start)
    _drop_torn_line(out / METRICS)
    loader = seeded_loader(job, images, start, pin_memory=chosen.type == "cuda")
    with _writing(out / METRICS):
        metrics: list[JsonlMetrics | TensorBoardMetrics] = [
            JsonlMetrics(out / METRICS, start),
            TensorBoardMetrics(out / TENSORBOARD, start),
        ]
    saver = _CheckpointSaver(out / CHECKPOINT, save_every, settings, prior)
    own: list[StepCallback] = [
        *_guarded(metrics),
        saver,
        UniformTeacherWarning(printer),
        *([bar] if bar else []),
    ]
    try:
        history = pretrain_loop(
            glare,
            criterion,
            raise_carried(loader),
            config,
            batch_size=job.batch_size,
            device=chosen,
            log=printer,
            callbacks=[*own, *callbacks],
            start_step=start,
            optimizer_state=state["optimizer"] if state else None,
        )
    except ImageReadError as error:
        raise _unverified(error, verify_images) from None
    finally:
        for closable in (*metrics, *([bar] if bar else [])):
            closable.close()
    full = PretrainHistory(
        losses=prior.losses + history.losses,
        terms=prior.terms + history.terms,
        teacher=prior.teacher + history.teacher,
        seconds=history.seconds,
    )
    _write_outputs(glare, job, full.losses, out)
    printer(
        f"  {len(images)} images, steps {start}-{steps} in {history.seconds:.0f}s, "
        f"loss {full.losses[0]:.3f} -> {full.losses[-1]:.3f}; wrote {out}"
    )
    for line in teacher_summary(read_metrics(out / METRICS)):
        printer(line)
    return PretrainRun(out, full, chosen, amp, start)


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
        "folder": str(Path(job.folder).resolve()),
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
    saved = {**LEGACY_SETTINGS, **state["settings"]}
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
    lost = [k for k in missing if not k.startswith(_FROZEN_PREFIX)]
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


class _CheckpointSaver:
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
        if event.step % self.every and event.step != event.steps:
            return
        model = {
            k: v
            for k, v in event.model.state_dict().items()
            if not k.startswith(_FROZEN_PREFIX)
        }
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        with _writing(self.path):
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


def _write_outputs(
    model: GLARE, job: FolderPretraining, losses: Sequence[float], out: Path
) -> None:
    """Writes the loss figure and the three exports of a trained run."""
    with _writing(out / FIGURE):
        plot_losses(read_metrics(out / METRICS), out / FIGURE)
    with _writing(out / BACKBONE):
        export_job(model, job, losses, out / BACKBONE)
    _export_timm(model, out)


def _export_timm(model: GLARE, out: Path) -> None:
    """Writes ``timm_vit.pth`` (frozen ViT) and ``adapters.pth`` (teacher)."""
    with _writing(out / TIMM_VIT):
        save_atomic(model.backbone.vit.state_dict(), out / TIMM_VIT)
    with _writing(out / ADAPTERS):
        save_atomic(
            {
                "state_dict": model.teacher_adapters.state_dict(),
                "meta": {"architecture": architecture_of(model.backbone)},
            },
            out / ADAPTERS,
        )


def _check_inputs(data: str | Path, checkpoint: str | Path, model: str) -> None:
    """Refuses a missing ``data`` folder or ``checkpoint``, or an unknown model."""
    for name, path in (("checkpoint", checkpoint), ("data", data)):
        if not Path(path).exists():
            raise FileNotFoundError(f"pretrain(): {name} {str(path)!r} does not exist.")
    if not Path(data).is_dir():
        raise NotADirectoryError(
            f"pretrain(): data {str(data)!r} is a file, not a folder: pass the "
            "folder holding the images (searched recursively)."
        )
    if Path(checkpoint).is_dir():
        raise IsADirectoryError(
            f"pretrain(): checkpoint {str(checkpoint)!r} is a folder: pass the "
            "checkpoint file (.pth)."
        )
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ValueError(
            f"pretrain(): model {model!r} is not a timm model.{hint} Pass the "
            "timm name the checkpoint was trained with; timm.list_models('vit_*') "
            "lists them."
        )


def _check_out_folder(out: Path) -> None:
    """``out`` is (or is created as) a folder this process can write in."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(
            f"out {str(out)!r} is a file, not a folder: pass a folder for the "
            "run's files (it is created when missing)."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise OutFolderError(
            f"Cannot write in out {str(out)!r}: {error.strerror or error}. Pass a "
            "folder you can write in (not on a read-only file system)."
        ) from error


def _check_data(
    job: FolderPretraining,
    min_size: int | None,
    skip_bad: bool,
    decode: bool,
    progress: bool,
    printer: Callable[[str], None],
) -> set[Path]:
    """Checks every image of the run before the model is built.

    Returns:
        The bad files to leave out (empty unless ``skip_bad``).

    Raises:
        BadImagesError: Bad files and not ``skip_bad`` (all listed), or only
            bad files.
    """
    root = Path(job.folder)
    files = find_image_files(root, IMAGE_EXTENSIONS)
    if job.indices is not None:
        files = [files[i] for i in job.indices if 0 <= i < len(files)]
    bar = None
    if progress and len(files) > CHECK_PROGRESS_FROM:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="checking images", unit="img")
    try:
        report = check_images(
            files,
            root,
            min_size=min_size,
            decode=decode,
            progress=(lambda done: bar.update(1)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    if not report.bad:
        return set()
    if not skip_bad or not report.good:
        fix = (
            "nothing to train on; fix or replace them"
            if report.good == []
            else "fix or remove them, or pass skip_bad=True to train without them"
        )
        if min_size is not None and report.too_small:
            fix += f" (min_size={min_size} sets the smallest shorter side; None: any)"
        raise BadImagesError(root, report, fix + ".", listed=LISTED_BAD_FILES)
    printer(
        f"  skipped {len(report.bad)} of {len(files)} images (skip_bad=True; "
        f"{report.too_small} smaller than min_size={min_size}):\n"
        + report.summary(LISTED_BAD_FILES)
    )
    return {root / name for name, _ in report.bad}


def estimate_output_bytes(job: FolderPretraining) -> dict[str, int]:
    """The sizes of the files a run of ``job`` writes, without building it.

    The model is built on the ``meta`` device (no memory, no weights read), so
    the sizes follow from the architecture: the run checkpoint holds the
    trainable modules of student and teacher and the optimizer's two moments,
    the exports the frozen ViT and the teacher's adapters.

    Args:
        job: The run's job.

    Returns:
        File name in ``out`` to its size in bytes (metrics and events, which
        grow by a few hundred bytes a step, are not counted).
    """
    with torch.device("meta"):
        vit = cast(
            VisionTransformer,
            timm.create_model(job.arch, img_size=job.img_size, num_classes=0),
        )
        model, criterion = build_job_model(job, vit)

    def size(tensors: Any) -> int:
        return sum(int(t.numel() * t.element_size()) for t in tensors)

    state = model.state_dict()
    trained = size(v for k, v in state.items() if not k.startswith(_FROZEN_PREFIX))
    moments = 2 * size(model.trainable_parameters())
    vit_bytes = size(vit.state_dict().values())
    adapters = size(model.teacher_adapters.state_dict().values())
    return {
        CHECKPOINT: trained + moments + size(criterion.state_dict().values()),
        BACKBONE: vit_bytes + adapters,
        TIMM_VIT: vit_bytes,
        ADAPTERS: adapters,
    }


def _check_free_space(out: Path, job: FolderPretraining) -> None:
    """Refuses to start when ``out``'s disk cannot hold the run's files.

    Counts the files' estimated sizes (:func:`estimate_output_bytes`), less
    those already in ``out`` (a resumed run replaces them), plus the largest
    once more: an atomic write holds the old file and the new one at once.
    """
    try:
        sizes = estimate_output_bytes(job)
    except Exception:  # e.g. not a ViT: the model build names the problem
        return
    present = sum(
        (out / name).stat().st_size for name in sizes if (out / name).is_file()
    )
    need = int((sum(sizes.values()) - present + max(sizes.values())) * SPACE_MARGIN)
    free = shutil.disk_usage(out).free
    if free < need:
        each = ", ".join(f"{name} {_mb(size)}" for name, size in sizes.items())
        raise OutFolderError(
            f"out {str(out)!r} has {_mb(free)} free, but the run writes about "
            f"{_mb(need)} ({each}, and room for one atomic replacement). Free "
            "space on that disk or choose an out on another one."
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"


def _drop_torn_line(path: Path) -> None:
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
        with _writing(path):
            path.write_text(head + "\n" if head else "", encoding="utf-8")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
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


def _write_cause(path: Path, cause: BaseException) -> str:
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
        return f"the disk is full ({_mb(free)} free; {detail})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror + (f" ({cause.filename})" if cause.filename else "")
    return detail


def _guarded(
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
        with _writing(self.path):
            self.callback(event)


def _unverified(error: ImageReadError, verified: bool) -> ImageReadError:
    """``error`` with the advice for a file that failed during training."""
    if verified:
        return error
    return ImageReadError(
        error.path,
        f"{error.reason} The check before training reads image headers only; "
        "verify_images=True decodes every image first (with skip_bad=True such "
        "files are then left out).",
    )
