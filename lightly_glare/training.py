"""A plain-PyTorch GLARE pre-training loop with DINO's schedules.

Used by ``tools/experiments/demo.py``; the Lightly-style examples in
``examples/`` spell the same loop out for copy-and-adapt, and the OpenMMLab
path runs it through mmengine.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightly.utils.scheduler import cosine_schedule
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from lightly_glare.data import (
    CarryErrors,
    DrawSampler,
    ImageFolderDataset,
    SeededDataset,
    collate_carrying_errors,
    raise_carried,
)
from lightly_glare.loss import (
    ALL_TERMS,
    LOCAL_DISTORTION,
    GlareLoss,
    statistics_scalars,
)
from lightly_glare.models import (
    DEFAULT_HEAD_INIT_IMAGES,
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    DEFAULT_OUTPUT_DIM,
    DEFAULT_STUDENT_DROP_PATH,
    GLARE,
    AttentionRegionSampler,
    GlareProjectionHead,
    initialize_heads_from_data,
)
from lightly_glare.precision import resolve_amp
from lightly_glare.transforms import (
    GlareTransform,
    build_patch_augmentation,
)
from lightly_glare.weights import (
    create_vit,
    load_projection_heads,
    read_ssl_checkpoint,
)

#: A lightly-style batch: ``([view_0, view_1, geometry], targets, filenames)``.
Batch = tuple[list[Tensor], Any, Any]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops instead of going on."""


class NoTrainingStepsError(ValueError):
    """A run would take no optimizer step (and would export untrained weights)."""


def steps_per_epoch(loader: DataLoader[Any]) -> int:
    """Batches one pass over ``loader`` yields; refuses a loader that yields none.

    A ``DataLoader`` with ``drop_last=True`` over fewer images than one batch
    yields nothing: a loop over it would finish at once and export the
    untrained model. Call this before training.

    Args:
        loader: The training loader.

    Returns:
        ``len(loader)``, at least 1.

    Raises:
        NoTrainingStepsError: If the loader yields no batch; the message names
            the image count and the batch size.
    """
    steps = len(loader)
    if steps == 0:
        images = len(loader.dataset)  # type: ignore[arg-type]
        raise NoTrainingStepsError(
            f"No training step: {images} image(s) with batch_size="
            f"{loader.batch_size} and drop_last={loader.drop_last} give 0 batches. "
            "Add images, lower the batch size, or set drop_last=False."
        )
    return steps


def check_loss(loss: Tensor, step: int, terms: Mapping[str, Tensor]) -> None:
    """Stops training on a NaN or infinite loss, before the weights change.

    Args:
        loss: The step's total loss.
        step: The step number, for the message.
        terms: The loss's parts (``GlareLoss.last_terms``), for the message.

    Raises:
        NonFiniteLossError: If ``loss`` is not finite. The message names the
            step and the value of every term.
    """
    if not torch.isfinite(loss):
        values = {name: float(value) for name, value in terms.items()}
        raise NonFiniteLossError(
            f"Non-finite GLARE loss at step {step}: {values}. Check the start "
            "checkpoint and the input images first (non-finite weights or "
            "pixels), then lower the learning rate or raise the teacher "
            "temperature."
        )


@dataclass
class PretrainConfig:
    """Optimisation settings (DINO's defaults; docs/ARCHITECTURE.md).

    Attributes:
        steps: Optimizer steps.
        base_lr: Learning rate per 256 images (scaled by batch / 256).
        min_lr: Final learning rate of the cosine schedule.
        warmup_fraction: Fraction of steps with linear learning-rate warm-up.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        clip_grad: Gradient-norm clipping; 0 disables it.
        momentum_start: EMA momentum of the teacher at step 0 (cosine to
            ``momentum_end``).
        momentum_end: EMA momentum at the last step.
        log_every: Print progress every this many steps.
        amp: Mixed precision: forward and loss under ``torch.autocast`` with
            bfloat16 on the device's type (CUDA or CPU; fp32's exponent range,
            so no loss scaling). The weights, gradients and optimizer state
            stay fp32. None (default): where the device has native bf16
            (:func:`~lightly_glare.precision.native_bf16`); True / False force
            it on / off.
        compile: Run the forward and the loss through ``torch.compile`` (one
            graph: with ``local_patches_per_view`` set the step has no
            data-dependent shapes). The first steps pay the compilation.
        head_warmup_steps: First steps in which only the heads and the region
            pooling train while the student's adapters stay fixed (ours; the
            LP-FT argument of Kumar et al., ICLR 2022: gradients through
            randomly initialised heads distort good pre-trained features).
            These steps also skip the backward pass through the backbone.
            0: off.

    Raises:
        ValueError: If ``head_warmup_steps`` is negative or leaves no step in
            which the adapters train.
    """

    steps: int
    base_lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    clip_grad: float = 3.0
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    log_every: int = 10
    amp: bool | None = None
    compile: bool = False
    head_warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise NoTrainingStepsError(
                f"steps must be at least 1, got {self.steps}: the run would export "
                "an untrained model."
            )
        if not 0 <= self.head_warmup_steps < self.steps:
            raise ValueError(
                f"head_warmup_steps must be in [0, steps) = [0, {self.steps}), "
                f"got {self.head_warmup_steps}: the adapters would never train."
            )


@dataclass
class PretrainHistory:
    """What :func:`pretrain` measured, one entry per step.

    Attributes:
        losses: The total loss of each step.
        terms: The loss's parts of each step.
        teacher: The teacher diagnostics of each step
            (:func:`~lightly_glare.loss.statistics_scalars`: entropy, batch
            entropy and KL per term, as fractions of log K).
        seconds: Wall time of the steps.
    """

    losses: list[float] = field(default_factory=list)
    terms: list[dict[str, float]] = field(default_factory=list)
    teacher: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class StepEvent:
    """What a step callback of :func:`pretrain` receives after each step.

    Attributes:
        step: Steps done so far (1 after the first step).
        steps: Steps of the whole run.
        loss: The step's total loss.
        terms: The loss's parts (``GlareLoss.last_terms``).
        teacher: The teacher diagnostics per term
            (:func:`~lightly_glare.loss.statistics_scalars`).
        lr: The step's learning rate.
        momentum: The teacher's EMA momentum of the step.
        images: Images of the step (the batch size).
        step_seconds: Wall time of the step, data loading included.
        data_seconds: Part of ``step_seconds`` spent waiting for the batch.
        model: The model being trained.
        criterion: The loss module (its state: e.g. DINO's centers).
        optimizer: The optimizer (its state, for resumable checkpoints).
        history: The losses of the steps run so far in this call.
    """

    step: int
    steps: int
    loss: float
    terms: dict[str, float]
    teacher: dict[str, float]
    lr: float
    momentum: float
    images: int
    step_seconds: float
    data_seconds: float
    model: GLARE
    criterion: GlareLoss
    optimizer: torch.optim.Optimizer
    history: PretrainHistory


#: Called after every optimizer step (progress bars, metric files, checkpoints).
StepCallback = Callable[[StepEvent], None]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Trainable parameters split into decayed weights and undecayed norms/biases.

    Args:
        model: The model whose ``requires_grad`` parameters are optimised.
        weight_decay: Decay of the weight matrices.

    Returns:
        Two parameter groups for ``torch.optim.AdamW``.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


#: Devices where ``torch.optim.AdamW(fused=True)`` has a kernel.
FUSED_ADAMW_DEVICES = frozenset({"cpu", "cuda"})


def fused_adamw(
    groups: list[dict[str, object]], lr: float, device: torch.device | str
) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where the device has one.

    The per-parameter (CPU) and foreach implementations spend about 50-85 ms
    per step on the 15.5 M trainable parameters of GLARE with DINOv2-S/14 (two
    8192-output heads) on a 2-core CPU; the fused kernel about 10 ms (ours,
    timed with the optimizer step alone).

    Args:
        groups: Parameter groups (:func:`parameter_groups`).
        lr: Learning rate of every group.
        device: The parameters' device; fused on CPU and CUDA, the default
            implementation elsewhere.

    Returns:
        The optimizer.
    """
    fused = torch.device(device).type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def learning_rate(step: int, peak: float, config: PretrainConfig) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``config.min_lr``."""
    warmup = max(1, int(config.warmup_fraction * config.steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.min_lr + 0.5 * (peak - config.min_lr) * (
        1 + math.cos(math.pi * progress)
    )


def _endless(batches: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise NoTrainingStepsError(
                "No batches to train on: the data holds fewer images than one "
                "batch (a DataLoader with drop_last=True yields nothing then)."
            )


def pretrain(
    model: GLARE,
    criterion: GlareLoss,
    batches: Iterable[Batch],
    config: PretrainConfig,
    batch_size: int,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    callbacks: Sequence[StepCallback] = (),
    start_step: int = 0,
    optimizer_state: Mapping[str, Any] | None = None,
) -> PretrainHistory:
    """Runs GLARE continual pre-training for ``config.steps`` steps.

    Each step: EMA teacher update (cosine momentum), forward of both views,
    :class:`GlareLoss`, backward, gradient clipping, AdamW step; bf16 autocast
    with ``config.amp`` (by default where ``device`` has native bf16),
    ``torch.compile`` with ``config.compile``; the student's adapters stay fixed
    during the first ``config.head_warmup_steps``. A non-finite loss stops with
    :class:`NonFiniteLossError` before the weights are touched.

    Args:
        model: The GLARE model (already on ``device``).
        criterion: The loss (already on ``device``).
        batches: Iterable of lightly-style batches ``((views, geometry),
            targets, filenames)``, re-iterated as needed (e.g. a ``DataLoader``
            over :class:`~lightly_glare.data.ImageFolderDataset` with
            :class:`~lightly_glare.transforms.GlareTransform`).
        config: Optimisation settings.
        batch_size: Images per batch, for the learning-rate scaling.
        device: Where to run.
        log: Progress printer.
        callbacks: Called in order after every step with a :class:`StepEvent`.
        start_step: Continue a run at this step (``batches`` must then start
            with that step's batch). The learning rate and the EMA momentum
            are functions of the step, so the step is the schedules' state.
        optimizer_state: ``state_dict()`` of the run's optimizer at
            ``start_step``.

    Returns:
        The per-step losses and loss terms of the steps run in this call.

    Raises:
        NoTrainingStepsError: If ``start_step`` leaves no step to run.
    """
    if isinstance(batches, DataLoader):
        steps_per_epoch(batches)
    if not 0 <= start_step < config.steps:
        raise NoTrainingStepsError(
            f"start_step must be in [0, steps) = [0, {config.steps}), got "
            f"{start_step}: no step would run (the run is finished)."
        )
    peak = config.base_lr * batch_size / 256
    groups = parameter_groups(model, config.weight_decay)
    optimizer = fused_adamw(groups, peak, device)
    if optimizer_state is not None:
        optimizer.load_state_dict(dict(optimizer_state))
    history = PretrainHistory()
    start = time.perf_counter()
    model.train()
    adapters = model.backbone.adapters
    trained_adapters = [p for p in adapters.parameters() if p.requires_grad]
    _check_head_warmup(model, trained_adapters, config.head_warmup_steps)
    amp = resolve_amp(config.amp, device)

    def forward_loss(views: list[Tensor], geometry: Tensor) -> Tensor:
        return criterion(model(views, geometry))

    if config.compile:
        forward_loss = torch.compile(forward_loss)
    stream = _endless(batches)
    try:
        for step in range(start_step, config.steps):
            fetch = time.perf_counter()
            *views, geometry = next(stream)[0]
            data_seconds = time.perf_counter() - fetch
            for parameter in trained_adapters:
                parameter.requires_grad_(step >= config.head_warmup_steps)
            lr = learning_rate(step, peak, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            momentum = cosine_schedule(
                step, config.steps, config.momentum_start, config.momentum_end
            )
            model.update_teacher(momentum)
            views = [view.to(device, non_blocking=True) for view in views]
            with torch.autocast(
                torch.device(device).type, dtype=torch.bfloat16, enabled=amp
            ):
                loss = forward_loss(views, geometry.to(device))
            check_loss(loss, step, criterion.last_terms)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.trainable_parameters(), config.clip_grad)
            optimizer.step()
            history.losses.append(loss.item())
            history.terms.append({k: float(v) for k, v in criterion.last_terms.items()})
            history.teacher.append(
                statistics_scalars(criterion.last_statistics, history.terms[-1])
            )
            if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
                log(_progress(history, step + 1, config.steps, batch_size, start))
            event = StepEvent(
                step=step + 1,
                steps=config.steps,
                loss=history.losses[-1],
                terms=history.terms[-1],
                teacher=history.teacher[-1],
                lr=lr,
                momentum=momentum,
                images=batch_size,
                step_seconds=time.perf_counter() - fetch,
                data_seconds=data_seconds,
                model=model,
                criterion=criterion,
                optimizer=optimizer,
                history=history,
            )
            for callback in callbacks:
                callback(event)
    finally:  # also after an error: the model is handed back trainable
        for parameter in trained_adapters:
            parameter.requires_grad_(True)
    history.seconds = time.perf_counter() - start
    return history


def _check_head_warmup(
    model: nn.Module, adapters: Sequence[nn.Parameter], warmup_steps: int
) -> None:
    """Refuses a head warm-up in which nothing would train (frozen heads)."""
    adapter_ids = {id(p) for p in adapters}
    warmed = [
        p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids
    ]
    if warmup_steps > 0 and not warmed:
        raise ValueError(
            f"head_warmup_steps={warmup_steps} trains only the heads and the region "
            "pooling, but none of them is trainable (freeze_heads=True and a "
            "parameter-free pooling): set head_warmup_steps=0."
        )


def _progress(
    history: PretrainHistory, done: int, steps: int, batch_size: int, start: float
) -> str:
    """One progress line: step, loss and its terms, images/s and time left."""
    speed = len(history.losses) * batch_size / (time.perf_counter() - start)
    eta = (steps - done) * batch_size / speed
    terms = " ".join(f"{k}={v:.3f}" for k, v in history.terms[-1].items())
    return (
        f"  step {done}/{steps} loss={history.losses[-1]:.4f} ({terms}) "
        f"{speed:.1f} img/s, eta {eta:.0f}s"
    )


#: Settings of a short continual pre-training (a few dozen steps on 2 CPU
#: cores), used by the experiment tools' options; the library's own defaults
#: (DINO's) are those of :class:`FolderPretraining` and the components.
SHORT_SCHEDULE: dict[str, Any] = {
    "steps": 40,
    "batch_size": 16,
    "base_lr": 5e-3,
    "momentum_start": 0.9,
    "output_dim": 2048,
    "hidden_dim": 512,
}


#: How the projection heads start when the checkpoint has none (ours; see
#: :attr:`FolderPretraining.head_init`).
HEAD_INITS = ("auto", "data", "random")


def check_head_init(head_init: str, images: int) -> None:
    """Refuses an unknown ``head_init`` or an empty initialisation sample.

    Raises:
        ValueError: Naming the value and the valid ones.
    """
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}.")
    if images < 1:
        raise ValueError(f"head_init_images must be at least 1, got {images}.")


@dataclass
class FolderPretraining:
    """GLARE continual pre-training of a local SSL checkpoint on an image folder.

    The whole job of :func:`pretrain_folder`, as used by the experiment tools
    (``tools/experiments/``): build the ViT, loss and model, train, export. The
    field names are the components' argument names and the tools' flags
    (``output_dim`` is ``--output-dim``).

    Attributes:
        arch: timm model name of the checkpoint.
        checkpoint: Local SSL checkpoint (any layout
            :func:`~lightly_glare.weights.create_vit` reads).
        folder: Unlabeled images (searched recursively).
        img_size: Input size of the views (a multiple of the patch size).
        steps: Optimizer steps.
        indices: Train on these images only, by position in the folder's
            sorted file list (``ImageFolderDataset.files``); None: all.
        batch_size: Images per step.
        seed: Seed of head initialisation, data order and augmentations
            (:func:`folder_loader`): jobs that differ only in their loss
            weights start from the same heads and see the same views in the
            same order.
        weights: Weight of each term (``global``, ``regional``,
            ``local_distortion``, ``local_matching``); a term left out has
            weight 1, a term weighted 0 is not computed.
        output_dim: Output size of the projection heads
            (:class:`~lightly_glare.models.GlareProjectionHead`).
        hidden_dim: Hidden size of the heads (DINO: 2048).
        adapter_bottleneck: Hidden size of every UniAdapter (None:
            ``embed_dim // 12``, 32 for ViT-S, 64 for ViT-B; ours; see
            :class:`~lightly_glare.models.UniAdapterViT`). The export records
            it, so loaders build adapters of this size.
        workers: DataLoader worker processes.
        base_lr: Learning rate per 256 images.
        momentum_start: EMA momentum of the teacher at step 0 (cosine to 1).
            DINO's 0.996 suits long schedules; over a few dozen steps the
            teacher (which is exported) then keeps about 1 % of what the
            student learned, so short runs need a lower value (0.9).
        amp: bf16 autocast; None: where the device has native bf16 (see
            :class:`PretrainConfig`).
        local_patches_per_view: Patch pairs per image and view of each local
            term (see :class:`~lightly_glare.models.GLARE`; None: every valid
            patch).
        student_drop_path: Sample-skipping stochastic depth of the student's
            frozen blocks (see :class:`~lightly_glare.models.GLARE`).
        num_regions: Most regions drawn per image from the teacher's attention
            heads, at most one per head (None: the sampler's default, 6).
        head_warmup_steps: See :class:`PretrainConfig`.
        patch_augmentation: The student's patch distortion for L_loc1, by name
            (``"blur"``, ``"noise"``, ``"color_jitter"``, ``"mask"``; see
            :func:`~lightly_glare.transforms.build_patch_augmentation`).
        checkpoint_heads: Start the heads from the checkpoint's projection
            heads when it has them (DINO / iBOT / DINOv2 training checkpoints;
            ``output_dim`` and ``hidden_dim`` must then be the checkpoint's).
        freeze_heads: Train only the adapters (load the checkpoint's heads
            or initialise them from the data then: frozen random heads give
            the adapters no signal).
        head_init: How heads that the checkpoint did not provide start
            (ours): ``"data"`` fits them to the data before the first step
            (:func:`~lightly_glare.models.initialize_heads_from_data`: centred
            input, prototypes by spherical k-means; the loss's centres start
            at the mean teacher output), so the teacher is sharp from step 0;
            ``"random"`` keeps DINO's random initialisation (the teacher of a
            random head is near uniform); ``"auto"`` (default) is ``"data"``
            unless the checkpoint's heads were loaded.
        head_init_images: Images read to initialise the heads from the data.
    """

    arch: str
    checkpoint: str | Path
    folder: str | os.PathLike[str]
    img_size: int
    steps: int
    indices: Sequence[int] | None = None
    batch_size: int = 16
    seed: int = 0
    weights: Mapping[str, float] = field(default_factory=dict)
    output_dim: int = DEFAULT_OUTPUT_DIM
    hidden_dim: int = 2048
    adapter_bottleneck: int | None = None
    workers: int = 2
    base_lr: float = 5e-4
    momentum_start: float = 0.996
    amp: bool | None = None
    local_patches_per_view: int | None = DEFAULT_LOCAL_PATCHES_PER_VIEW
    student_drop_path: float = DEFAULT_STUDENT_DROP_PATH
    num_regions: int | None = None
    head_warmup_steps: int = 0
    patch_augmentation: str = "blur"
    checkpoint_heads: bool = True
    freeze_heads: bool = False
    head_init: str = "auto"
    head_init_images: int = DEFAULT_HEAD_INIT_IMAGES

    def __post_init__(self) -> None:
        check_head_init(self.head_init, self.head_init_images)

    def config(self, device: torch.device | str) -> PretrainConfig:
        """The optimisation settings of the job on ``device``.

        Args:
            device: Where the job trains (``amp=None`` turns bf16 on where the
                device has it natively, :func:`~lightly_glare.precision.native_bf16`).

        Returns:
            The :class:`PretrainConfig` of :func:`pretrain`; its ``amp`` is
            resolved for ``device`` (True or False, never None).
        """
        return PretrainConfig(
            steps=self.steps,
            base_lr=self.base_lr,
            momentum_start=self.momentum_start,
            amp=resolve_amp(self.amp, device),
            head_warmup_steps=self.head_warmup_steps,
        )


def build_folder_pretraining(
    job: FolderPretraining,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    initialize_heads: bool = True,
    skip_files: Collection[Path] = (),
) -> tuple[GLARE, GlareLoss, Subset[Any]]:
    """The model (on ``device``), loss and images of ``job``, before training.

    Args:
        job: What to train.
        device: Where to train.
        log: Progress printer.
        initialize_heads: Apply ``job.head_init`` (False: leave the heads as
            built, e.g. before a resumed run loads its own).
        skip_files: Files of the folder to leave out of the chosen images
            (e.g. unreadable ones a check found).

    Returns:
        The GLARE model, its loss and the chosen images (items
        ``([view_0, view_1, geometry], target, filename)`` of
        :class:`~lightly_glare.transforms.GlareTransform`).

    Raises:
        ValueError: If ``job.weights`` names an unknown term.
    """
    torch.manual_seed(job.seed)
    # Read once for the ViT and the heads (a ViT-B DINO checkpoint is ~350 MB).
    checkpoint = read_ssl_checkpoint(job.checkpoint)
    vit = create_vit(job.arch, checkpoint, img_size=job.img_size, source=job.checkpoint)
    model, criterion = build_job_model(job, vit)
    criterion.to(device)
    loaded: list[str] = []
    if job.checkpoint_heads:
        heads = load_projection_heads(
            checkpoint, source=job.checkpoint, input_dim=vit.embed_dim
        )
        loaded = model.load_heads(heads)
        log(f"  heads from the checkpoint: {', '.join(loaded) or 'none found'}")
    model.to(device)
    log(f"  terms {model.terms}; {model.backbone.report}")
    folder = ImageFolderDataset(job.folder, transform=GlareTransform(job.img_size))
    indices = range(len(folder)) if job.indices is None else job.indices
    skipped = set(skip_files)
    images = Subset(folder, [i for i in indices if folder.files[i] not in skipped])
    if initialize_heads and resolve_head_init(job.head_init, bool(loaded)) == "data":
        _initialize_heads(model, criterion, job, images, device, log)
    return model, criterion, images


def build_job_model(
    job: FolderPretraining, vit: VisionTransformer
) -> tuple[GLARE, GlareLoss]:
    """The GLARE model and loss of ``job`` around ``vit`` (heads as built).

    Args:
        job: Its term weights, head sizes and model options are used.
        vit: The frozen ViT (on any device, ``meta`` included).

    Returns:
        The model and its loss.

    Raises:
        ValueError: If ``job.weights`` names an unknown term.
    """
    unknown = set(job.weights) - set(ALL_TERMS)
    if unknown:
        raise ValueError(f"Unknown terms {sorted(unknown)}; terms are {ALL_TERMS}.")
    weights = {term: job.weights.get(term, 1.0) for term in ALL_TERMS}
    criterion = GlareLoss(
        output_dim=job.output_dim,
        global_weight=weights["global"],
        regional_weight=weights["regional"],
        local_distortion_weight=weights["local_distortion"],
        local_matching_weight=weights["local_matching"],
    )
    distortion = None
    if LOCAL_DISTORTION in criterion.active_terms:
        distortion = build_patch_augmentation(job.patch_augmentation)
    model = GLARE(
        vit,
        head=GlareProjectionHead(
            vit.embed_dim, hidden_dim=job.hidden_dim, output_dim=job.output_dim
        ),
        terms=criterion.active_terms,
        adapter_bottleneck=job.adapter_bottleneck,
        freeze_heads=job.freeze_heads,
        region_sampler=AttentionRegionSampler(num_regions=job.num_regions),
        patch_augmentation=distortion,
        local_patches_per_view=job.local_patches_per_view,
        student_drop_path=job.student_drop_path,
    )
    return model, criterion


def resolve_head_init(head_init: str, checkpoint_heads_loaded: bool) -> str:
    """``"data"`` or ``"random"``: what ``head_init`` means for a checkpoint.

    Args:
        head_init: ``"auto"``, ``"data"`` or ``"random"``.
        checkpoint_heads_loaded: Whether the checkpoint's heads were loaded.

    Returns:
        ``"auto"`` resolved: ``"random"`` (keep the loaded heads) when the
        checkpoint provided heads, else ``"data"``.
    """
    if head_init == "auto":
        return "random" if checkpoint_heads_loaded else "data"
    return head_init


def _initialize_heads(
    model: GLARE,
    criterion: GlareLoss,
    job: FolderPretraining,
    images: Subset[Any],
    device: torch.device | str,
    log: Callable[[str], None],
) -> None:
    """Fits the heads and the loss's centres to a sample of ``images``."""
    wanted = min(job.head_init_images, len(images))
    loader = seeded_loader(
        job, images, batch_size=min(job.batch_size, wanted), drop_last=False
    )
    start = time.perf_counter()
    fitted = initialize_heads_from_data(
        model,
        raise_carried(loader),
        images=wanted,
        seed=job.seed,
        amp=bool(resolve_amp(job.amp, device)),
        progress=_head_init_progress(log),
    )
    criterion.set_centers(fitted.centers)
    log(
        f"  heads initialised from {wanted} images in "
        f"{time.perf_counter() - start:.0f}s ({fitted.describe()})"
    )


def _head_init_progress(log: Callable[[str], None]) -> Callable[[int, int], None]:
    """A progress printer of the head initialisation: a line per quarter."""
    printed = [0]

    def progress(done: int, total: int) -> None:
        quarter = 4 * done // total
        if quarter > printed[0]:
            printed[0] = quarter
            log(f"  initialising the heads from the data: {done}/{total} images")

    return progress


def folder_loader(job: FolderPretraining, dataset: Dataset[Any]) -> Iterator[Any]:
    """The endless, seeded batches of ``job`` over ``dataset``.

    The order is a permutation per epoch drawn from ``job.seed``
    (:class:`~lightly_glare.data.DrawSampler`) and draw ``k`` is augmented under
    the seed ``(job.seed, k)`` (:class:`~lightly_glare.data.SeededDataset`):
    the batches depend only on the seed, not on the worker count nor on what
    the model drew from torch's RNG in between (the region sampler, the patch
    distortion). Two jobs that differ only in their loss weights therefore see
    the same views in the same order.

    Args:
        job: Its ``seed``, ``batch_size`` and ``workers`` are used.
        dataset: The images (from :func:`build_folder_pretraining`).

    Returns:
        An endless iterator of batches (incomplete batches are dropped).

    Raises:
        NoTrainingStepsError: If ``dataset`` fills no batch.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size < job.batch_size:
        raise NoTrainingStepsError(
            f"{size} image(s) with batch_size={job.batch_size} and drop_last=True "
            "give 0 batches: add images or lower the batch size."
        )
    return raise_carried(seeded_loader(job, dataset))


def seeded_loader(
    job: FolderPretraining,
    dataset: Dataset[Any],
    start_step: int = 0,
    batch_size: int | None = None,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """The DataLoader of ``job``'s seeded draws over ``dataset``.

    Draw ``k`` is the ``k``-th item of the seed's permutations
    (:class:`~lightly_glare.data.DrawSampler`), augmented under ``(seed, k)``
    (:class:`~lightly_glare.data.SeededDataset`). An error raised in a worker
    travels intact in the batch: iterate with
    :func:`~lightly_glare.data.raise_carried` to raise it as it was.

    Args:
        job: Its ``seed``, ``batch_size`` and ``workers`` are used.
        dataset: The images.
        start_step: First step to draw (a resumed run's step).
        batch_size: Images per batch (None: ``job.batch_size``).
        drop_last: Drop an incomplete last batch of an epoch.
        pin_memory: Pin the batches (for CUDA).

    Returns:
        The loader (endless: the sampler draws epoch after epoch).
    """
    size = len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        CarryErrors(SeededDataset(dataset, job.seed)),
        batch_size=batch_size or job.batch_size,
        sampler=DrawSampler(size, job.seed, start=start_step * job.batch_size),
        drop_last=drop_last,
        num_workers=job.workers,
        collate_fn=collate_carrying_errors,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(job.seed),
    )


def pretrain_folder(
    job: FolderPretraining,
    out: str | Path,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    extra_meta: Mapping[str, Any] | None = None,
    callbacks: Sequence[StepCallback] = (),
) -> tuple[Path, PretrainHistory]:
    """Runs ``job`` and exports the adapted backbone (teacher adapters).

    Args:
        job: What to train.
        out: Destination of the export (written atomically).
        device: Where to train.
        log: Progress printer.
        extra_meta: Stored in the export's meta besides the architecture, the
            seed and the per-step losses.
        callbacks: Step callbacks of :func:`pretrain` (e.g.
            :class:`~lightly_glare.monitoring.ProgressBar`).

    Returns:
        The export's path and the training history.

    Raises:
        NoTrainingStepsError: If the chosen images fill no batch.
    """
    model, criterion, dataset = build_folder_pretraining(job, device, log)
    history = pretrain(
        model,
        criterion,
        folder_loader(job, dataset),
        job.config(device),
        batch_size=job.batch_size,
        device=device,
        log=log,
        callbacks=callbacks,
    )
    log(
        f"  {len(dataset)} images, {job.steps} steps in {history.seconds:.0f}s, "
        f"loss {history.losses[0]:.3f} -> {history.losses[-1]:.3f}"
    )
    return export_job(model, job, history.losses, out, extra_meta), history


def export_job(
    model: GLARE,
    job: FolderPretraining,
    losses: Sequence[float],
    out: str | Path,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Exports the adapted backbone (teacher adapters) of a trained ``job``.

    Args:
        model: The trained model.
        job: What was trained.
        losses: The per-step losses, stored in the meta.
        out: Destination (written atomically).
        extra_meta: Stored in the meta besides the architecture, the seed and
            the losses.

    Returns:
        ``out``.
    """
    meta = {
        "timm_name": job.arch,
        "img_size": job.img_size,
        "seed": job.seed,
        "losses": list(losses),
        **(extra_meta or {}),
    }
    return model.export_backbone(out, extra_meta=meta)
