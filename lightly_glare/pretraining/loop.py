"""The plain-PyTorch GLARE pre-training loop with DINO's schedules.

:func:`train_steps` runs the optimizer steps of a built model and loss over any
iterable of lightly-style batches; :class:`PretrainConfig` holds the
optimisation settings and :class:`StepEvent` is what step callbacks (progress,
metrics, checkpoints; :mod:`~lightly_glare.pretraining.monitoring`) receive.
The pieces a Lightly script takes (``parameter_groups``, ``learning_rate``,
``check_loss``, ``steps_per_epoch``) are used by ``examples/``; the job around
the loop is :mod:`~lightly_glare.pretraining.job`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightly_glare.loss import GlareLoss, statistics_scalars
from lightly_glare.models import GLARE
from lightly_glare.models.defaults import MOMENTUM_END, MOMENTUM_START
from lightly_glare.precision import resolve_amp

#: DINO's learning rate per 256 images.
BASE_LR = 5e-4

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
    """Optimisation settings of :func:`train_steps` (DINO's defaults).

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
    base_lr: float = BASE_LR
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    clip_grad: float = 3.0
    momentum_start: float = MOMENTUM_START
    momentum_end: float = MOMENTUM_END
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
    """What :func:`train_steps` measured, one entry per step.

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
    """What a step callback of :func:`train_steps` receives after each step.

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


def train_steps(
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
    with ``config.amp``, ``torch.compile`` with ``config.compile``; the
    student's adapters stay fixed during ``config.head_warmup_steps``. A
    non-finite loss stops with :class:`NonFiniteLossError` before the weights
    are touched.

    Args:
        model: The GLARE model (already on ``device``).
        criterion: The loss (already on ``device``).
        batches: Lightly-style batches ``((views, geometry), targets,
            filenames)``, re-iterated as needed (e.g. the seeded loader of
            :func:`~lightly_glare.pretraining.folder.seeded_loader`).
        config: Optimisation settings.
        batch_size: Images per batch, for the learning-rate scaling.
        device: Where to run.
        log: Progress printer.
        callbacks: Called in order after every step with a :class:`StepEvent`.
        start_step: Continue a run at this step (``batches`` must then start
            with that step's batch): the learning rate and the EMA momentum
            are functions of the step.
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
    steps = _Steps(model, criterion, config, batch_size, device, log, optimizer_state)
    stream = _endless(batches)
    try:
        for step in range(start_step, config.steps):
            fetch = time.perf_counter()
            *views, geometry = next(stream)[0]
            event = steps.run(step, views, geometry, fetch)
            for callback in callbacks:
                callback(event)
    finally:  # also after an error: the model is handed back trainable
        for parameter in steps.adapters:
            parameter.requires_grad_(True)
    steps.history.seconds = time.perf_counter() - steps.start
    return steps.history


class _Steps:
    """The state of :func:`train_steps` and one optimizer step."""

    def __init__(
        self,
        model: GLARE,
        criterion: GlareLoss,
        config: PretrainConfig,
        batch_size: int,
        device: torch.device | str,
        log: Callable[[str], None],
        optimizer_state: Mapping[str, Any] | None,
    ) -> None:
        self.model, self.criterion, self.config = model, criterion, config
        self.batch_size, self.device, self.log = batch_size, device, log
        self.peak = config.base_lr * batch_size / 256
        groups = parameter_groups(model, config.weight_decay)
        self.optimizer = fused_adamw(groups, self.peak, device)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(dict(optimizer_state))
        self.history = PretrainHistory()
        self.start = time.perf_counter()
        model.train()
        adapters = model.backbone.adapters
        self.adapters = [p for p in adapters.parameters() if p.requires_grad]
        _check_head_warmup(model, self.adapters, config.head_warmup_steps)
        self.amp = resolve_amp(config.amp, device)

        def forward_loss(views: list[Tensor], geometry: Tensor) -> Tensor:
            return criterion(model(views, geometry))

        self.forward_loss = (
            torch.compile(forward_loss) if config.compile else forward_loss
        )

    def run(
        self, step: int, views: list[Tensor], geometry: Tensor, fetch: float
    ) -> StepEvent:
        """Step ``step`` on a batch fetched from ``fetch`` (a perf counter) on."""
        data_seconds = time.perf_counter() - fetch
        config, model, history = self.config, self.model, self.history
        for parameter in self.adapters:
            parameter.requires_grad_(step >= config.head_warmup_steps)
        lr = learning_rate(step, self.peak, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        momentum = cosine_schedule(
            step, config.steps, config.momentum_start, config.momentum_end
        )
        model.update_teacher(momentum)
        self._optimize(step, views, geometry)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            self.log(
                _progress(history, step + 1, config.steps, self.batch_size, self.start)
            )
        return StepEvent(
            step=step + 1,
            steps=config.steps,
            loss=history.losses[-1],
            terms=history.terms[-1],
            teacher=history.teacher[-1],
            lr=lr,
            momentum=momentum,
            images=self.batch_size,
            step_seconds=time.perf_counter() - fetch,
            data_seconds=data_seconds,
            model=model,
            criterion=self.criterion,
            optimizer=self.optimizer,
            history=history,
        )

    def _optimize(self, step: int, views: list[Tensor], geometry: Tensor) -> None:
        """Forward, loss check, backward, clipping and AdamW step; records them."""
        device, criterion = self.device, self.criterion
        views = [view.to(device, non_blocking=True) for view in views]
        with torch.autocast(
            torch.device(device).type, dtype=torch.bfloat16, enabled=self.amp
        ):
            loss = self.forward_loss(views, geometry.to(device))
        check_loss(loss, step, criterion.last_terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad > 0:
            nn.utils.clip_grad_norm_(
                self.model.trainable_parameters(), self.config.clip_grad
            )
        self.optimizer.step()
        history = self.history
        history.losses.append(loss.item())
        history.terms.append({k: float(v) for k, v in criterion.last_terms.items()})
        history.teacher.append(
            statistics_scalars(criterion.last_statistics, history.terms[-1])
        )


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
