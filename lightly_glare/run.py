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
from torch.utils.data import DataLoader, Subset

from lightly_glare.data import DrawSampler, ImageFolderDataset, SeededDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import DEFAULT_HEAD_INIT_IMAGES, GLARE, save_atomic
from lightly_glare.models.export import architecture_of
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
    export_job,
)
from lightly_glare.training import (
    pretrain as pretrain_loop,
)

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
    img_size: int = 224,
    steps: int = 1000,
    resume: bool = False,
    save_every: int = 100,
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
        >>> run = lightly_glare.pretrain("runs/vits", "images/", "dino_deitsmall16.pth",
        ...                              model="vit_small_patch16_224", steps=300)
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
        FileNotFoundError: ``data`` or ``checkpoint`` does not exist.
        ResumeError: ``out`` holds a run and ``resume`` is False; ``resume``
            is True but ``out`` holds no run, or one with other settings or
            other images (the differences are named).
        NoTrainingStepsError: Fewer images than a batch, ``steps`` < 1, or a
            resumed run that is already finished.
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
    for name, path in (("checkpoint", checkpoint), ("data", data)):
        if not Path(path).exists():
            raise FileNotFoundError(f"pretrain(): {name} {str(path)!r} does not exist.")
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
    state = _run_state(out, resume)
    bar = ProgressBar() if progress else None
    printer = log or (bar.write if bar else print)
    chosen = default_device() if device is None else torch.device(device)
    config = job.config(chosen)
    amp = bool(config.amp)  # resolved for the device by job.config
    printer(f"GLARE pre-training of {model} on {chosen}, bf16 autocast {amp}")
    glare, criterion, images = build_folder_pretraining(
        job, chosen, printer, initialize_heads=state is None
    )
    if len(images) < job.batch_size:
        raise NoTrainingStepsError(
            f"No training step: {len(images)} image(s) in {data} and batch_size="
            f"{job.batch_size}. Add images or lower the batch size."
        )
    settings = _settings(job, images)
    prior = PretrainHistory()
    start = 0
    if state is not None:
        start = _restore(state, settings, glare, criterion, out / CHECKPOINT)
        prior = PretrainHistory(
            losses=state["losses"],
            terms=state["terms"],
            teacher=state.get("teacher", []),  # runs before the diagnostics: none
        )
        printer(f"  resumed {out / CHECKPOINT} at step {start}/{steps}")
    loader = DataLoader(
        SeededDataset(images, job.seed),
        batch_size=job.batch_size,
        sampler=DrawSampler(len(images), job.seed, start=start * job.batch_size),
        drop_last=True,
        num_workers=job.workers,
        pin_memory=chosen.type == "cuda",
        generator=torch.Generator().manual_seed(job.seed),
    )
    metrics: list[JsonlMetrics | TensorBoardMetrics] = [
        JsonlMetrics(out / METRICS, start),
        TensorBoardMetrics(out / TENSORBOARD, start),
    ]
    saver = _CheckpointSaver(out / CHECKPOINT, save_every, settings, prior)
    own: list[StepCallback] = [
        *metrics,
        saver,
        UniformTeacherWarning(printer),
        *([bar] if bar else []),
    ]
    try:
        history = pretrain_loop(
            glare,
            criterion,
            iter(loader),
            config,
            batch_size=job.batch_size,
            device=chosen,
            log=printer,
            callbacks=[*own, *callbacks],
            start_step=start,
            optimizer_state=state["optimizer"] if state else None,
        )
    finally:
        for closable in (*metrics, *([bar] if bar else [])):
            closable.close()
    full = PretrainHistory(
        losses=prior.losses + history.losses,
        terms=prior.terms + history.terms,
        teacher=prior.teacher + history.teacher,
        seconds=history.seconds,
    )
    records = read_metrics(out / METRICS)
    plot_losses(records, out / FIGURE)
    export_job(glare, job, full.losses, out / BACKBONE)
    _export_timm(glare, out)
    printer(
        f"  {len(images)} images, steps {start}-{steps} in {history.seconds:.0f}s, "
        f"loss {full.losses[0]:.3f} -> {full.losses[-1]:.3f}; wrote {out}"
    )
    for line in teacher_summary(records):
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
) -> int:
    """Loads the run's state into ``model``, ``criterion`` and torch's RNG.

    Returns:
        The step to continue at.
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
    if step >= int(settings["steps"]):
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


def _export_timm(model: GLARE, out: Path) -> None:
    """Writes ``timm_vit.pth`` (frozen ViT) and ``adapters.pth`` (teacher)."""
    save_atomic(model.backbone.vit.state_dict(), out / TIMM_VIT)
    save_atomic(
        {
            "state_dict": model.teacher_adapters.state_dict(),
            "meta": {"architecture": architecture_of(model.backbone)},
        },
        out / ADAPTERS,
    )
