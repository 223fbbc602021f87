"""A plain-PyTorch GLARE pre-training loop with DINO's schedules.

Used by ``tools/demo.py``; the Lightly-style examples in ``examples/`` spell the
same loop out for copy-and-adapt, and the OpenMMLab path runs it through
mmengine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE

#: A lightly-style batch: ``((views, geometry), targets, filenames)``.
Batch = tuple[tuple[list[Tensor], Tensor], Any, Any]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops instead of going on."""


@dataclass
class PretrainConfig:
    """Optimisation settings (GLARE spec §8; DINO's defaults).

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


@dataclass
class PretrainHistory:
    """What :func:`pretrain` measured, one entry per step."""

    losses: list[float] = field(default_factory=list)
    terms: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


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
        yield from batches


def pretrain(
    model: GLARE,
    criterion: GlareLoss,
    batches: Iterable[Batch],
    config: PretrainConfig,
    batch_size: int,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> PretrainHistory:
    """Runs GLARE continual pre-training for ``config.steps`` steps.

    Each step: EMA teacher update (cosine momentum), forward of both views,
    :class:`GlareLoss`, backward, gradient clipping, AdamW step. bf16 autocast on
    CUDA. A non-finite loss stops with :class:`NonFiniteLossError` before the
    weights are touched.

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

    Returns:
        The per-step losses and loss terms.
    """
    peak = config.base_lr * batch_size / 256
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=peak)
    history = PretrainHistory()
    use_bf16 = torch.device(device).type == "cuda"
    start = time.perf_counter()
    model.train()
    for step, ((views, geometry), _, _) in zip(
        range(config.steps), _endless(batches), strict=False
    ):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak, config)
        model.update_teacher(
            cosine_schedule(
                step, config.steps, config.momentum_start, config.momentum_end
            )
        )
        views = [view.to(device, non_blocking=True) for view in views]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = criterion(model(views, geometry.to(device)))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"Non-finite GLARE loss at step {step}: "
                f"{ {k: float(v) for k, v in criterion.last_terms.items()} }. "
                "Lower the learning rate or raise the teacher temperature."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.trainable_parameters(), config.clip_grad)
        optimizer.step()
        history.losses.append(loss.item())
        history.terms.append({k: float(v) for k, v in criterion.last_terms.items()})
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            elapsed = time.perf_counter() - start
            speed = (step + 1) * batch_size / elapsed
            eta = (config.steps - step - 1) * batch_size / speed
            terms = " ".join(f"{k}={v:.3f}" for k, v in history.terms[-1].items())
            log(
                f"  step {step + 1}/{config.steps} loss={history.losses[-1]:.4f} "
                f"({terms}) {speed:.1f} img/s, eta {eta:.0f}s"
            )
    history.seconds = time.perf_counter() - start
    return history
