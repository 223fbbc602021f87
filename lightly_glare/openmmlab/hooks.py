"""mmengine hooks of GLARE pre-training."""

from __future__ import annotations

from typing import Any

from lightly.utils.scheduler import cosine_schedule
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from lightly_glare.openmmlab.pretrain import GlarePretrainer


@HOOKS.register_module()
class GlareTeacherEMAHook(Hook):
    """Updates the GLARE teacher after every optimizer step.

    After iteration ``i`` (0-based) the teacher's adapters and heads move with
    momentum ``cosine_schedule(i + 1, max_iters, momentum_start,
    momentum_end)``, as the plain loop in :mod:`lightly_glare.training` does
    before step ``i + 1`` (DINO's schedule). The momentum depends only on the
    iteration, so a resumed run repeats an uninterrupted one. It is logged as
    ``ema_momentum``.

    Args:
        momentum_start (float): Momentum at iteration 0. Defaults to 0.996
            (DINO).
        momentum_end (float): Momentum at the last iteration. Defaults to 1.0.

    Examples:
        >>> custom_hooks = [dict(type='GlareTeacherEMAHook',
        ...                      momentum_start=0.996, momentum_end=1.0)]
    """

    priority = "NORMAL"  # before the CheckpointHook (VERY_LOW) saves the teacher

    def __init__(
        self, momentum_start: float = 0.996, momentum_end: float = 1.0
    ) -> None:
        if not 0.0 <= momentum_start <= 1.0 or not 0.0 <= momentum_end <= 1.0:
            raise ValueError(
                "EMA momenta must be in [0, 1], got "
                f"momentum_start={momentum_start}, momentum_end={momentum_end}."
            )
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end

    def momentum(self, iteration: int, max_iters: int) -> float:
        """The momentum applied after ``iteration`` of ``max_iters``."""
        step = min(iteration + 1, max_iters)
        return float(
            cosine_schedule(step, max_iters, self.momentum_start, self.momentum_end)
        )

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: Any = None,
    ) -> None:
        """EMA update of the teacher of the runner's :class:`GlarePretrainer`."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, GlarePretrainer):
            raise TypeError(
                "GlareTeacherEMAHook needs a GlarePretrainer, got "
                f"{type(model).__name__}."
            )
        momentum = self.momentum(runner.iter, runner.max_iters)
        model.glare.update_teacher(momentum)
        runner.message_hub.update_scalar("train/ema_momentum", momentum)
