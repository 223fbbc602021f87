"""mmengine hooks: GLARE's teacher update and fail-safe training.

- :class:`GlareHeadInitHook`: fits the heads to the data before the first
  iteration (:meth:`GlarePretrainer.initialize_heads`);
- :class:`GlareTeacherEMAHook`: the EMA update of the GLARE teacher;
- :class:`NonFiniteLossHook`: stops a run at the first NaN or infinite loss,
  before its weights are checkpointed;
- :class:`AtomicCheckpointHook`: mmengine's ``CheckpointHook`` whose
  checkpoints and ``last_checkpoint`` pointer are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightly.utils.scheduler import cosine_schedule
from mmengine.dist import all_reduce, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmseg.registry import HOOKS

from lightly_glare.models.defaults import MOMENTUM_END, MOMENTUM_START
from lightly_glare.openmmlab.config_validation import validate_arguments
from lightly_glare.openmmlab.pretrainer import GlarePretrainer
from lightly_glare.pretraining.loop import NonFiniteLossError, NoTrainingStepsError
from lightly_glare.weights.checkpoint_io import replace_durably

#: Suffix of the files :class:`AtomicCheckpointHook` writes before renaming them.
PARTIAL_SUFFIX = ".partial"


def _pretrainer(runner: Any, hook: str) -> GlarePretrainer:
    """The runner's :class:`GlarePretrainer` (unwrapped); refuses other models."""
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if not isinstance(model, GlarePretrainer):
        raise TypeError(f"{hook} needs a GlarePretrainer, got {type(model).__name__}.")
    return model


@HOOKS.register_module()
@validate_arguments
class GlareHeadInitHook(Hook):
    """Fits the projection heads to the data before a fresh run's first step.

    Calls :meth:`GlarePretrainer.initialize_heads` on the training dataset
    (heads the checkpoint lacks, as the model's ``head_init`` says); a resumed
    run (iteration > 0) keeps the heads of its checkpoint.

    Examples:
        >>> custom_hooks = [dict(type='GlareHeadInitHook')]
    """

    priority = "VERY_HIGH"  # before anything reads the heads

    def before_train(self, runner: Any) -> None:
        """Initialises the heads unless the run resumed."""
        if runner.iter == 0:
            model = _pretrainer(runner, type(self).__name__)
            model.initialize_heads(runner.train_dataloader.dataset)


@HOOKS.register_module()
@validate_arguments
class GlareTeacherEMAHook(Hook):
    """Updates the GLARE teacher after every optimizer step.

    After iteration ``i`` (0-based) the teacher's adapters and heads move with
    momentum ``cosine_schedule(i + 1, max_iters, momentum_start,
    momentum_end)``, as the plain loop in :mod:`lightly_glare.pretraining.loop` does
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
        self,
        momentum_start: float = MOMENTUM_START,
        momentum_end: float = MOMENTUM_END,
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

    def before_train(self, runner: Any) -> None:
        """Refuses a run that would take no step (and export an untrained model).

        Raises:
            NoTrainingStepsError: If ``train_cfg.max_iters`` is below 1 or the
                run is already complete (e.g. resumed at its last iteration).
        """
        if runner.iter >= runner.max_iters:
            raise NoTrainingStepsError(
                f"No training step: the run is at iteration {runner.iter} of "
                f"train_cfg.max_iters={runner.max_iters}. Set max_iters above "
                f"{runner.iter} (or use another --work-dir to start afresh)."
            )

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: Any = None,
    ) -> None:
        """EMA update of the teacher of the runner's :class:`GlarePretrainer`."""
        model = _pretrainer(runner, type(self).__name__)
        momentum = self.momentum(runner.iter, runner.max_iters)
        model.glare.update_teacher(momentum)
        runner.message_hub.update_scalar("train/ema_momentum", momentum)


@HOOKS.register_module()
@validate_arguments
class NonFiniteLossHook(Hook):
    """Stops training at the first iteration whose loss is NaN or infinite.

    Checks the loss entries (keys containing ``'loss'``, the ones mmengine
    sums) of the ``train_step`` outputs after every iteration and raises
    :class:`~lightly_glare.pretraining.loop.NonFiniteLossError` naming the iteration
    and every loss part. Its priority (``ABOVE_NORMAL``) runs it before the
    ``CheckpointHook`` (``VERY_LOW``): the weights the optimizer has just
    updated with non-finite gradients are never saved, and the last checkpoint
    stays the latest one (``--resume`` continues from it). Under distributed
    training every rank stops (one all-reduced flag per iteration), so no rank
    checkpoints weights that a NaN gradient has reached.

    Examples:
        >>> custom_hooks = [dict(type='NonFiniteLossHook')]
    """

    priority = "ABOVE_NORMAL"

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: Any = None,
    ) -> None:
        """Raises if a loss of this iteration (on any rank) is not finite.

        Raises:
            NonFiniteLossError: (a ``RuntimeError``) naming the iteration
                (1-based, as logged), the loss parts and the last checkpoint.
        """
        parts = {
            key: float(value)
            for key, value in (outputs or {}).items()
            if "loss" in key and isinstance(value, torch.Tensor)
        }
        local = any(not math.isfinite(value) for value in parts.values())
        flag = torch.tensor(float(local))
        all_reduce(flag, op="max")
        if not flag.item():
            return
        where = "" if local else " on another rank"
        values = ", ".join(f"{key}={value:.4g}" for key, value in parts.items())
        latest = runner.message_hub.get_info("last_ckpt")
        kept = (
            f"the last checkpoint {latest} is intact (resume with --resume)"
            if latest
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"Non-finite loss{where} at iteration {runner.iter + 1}: {values}. "
            f"Training stopped before saving these weights; {kept}. Lower the "
            "learning rate, enable gradient clipping (optim_wrapper.clip_grad) "
            "or check the data."
        )


@HOOKS.register_module()
@validate_arguments
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that never leaves a corrupt latest checkpoint.

    mmengine 0.10.7 writes ``iter_N.pth`` and the ``last_checkpoint`` pointer
    in place, and with ``max_keep_ckpts`` deletes the outdated checkpoint
    before writing the new one: a job killed while saving can leave a
    truncated checkpoint, an empty pointer, or a pointer to a deleted file, and
    ``--resume`` then fails. For local folders this hook writes each file to
    ``.<name>.partial`` beside it, ``fsync``-s it and renames it into place
    (``os.replace``), in this order: checkpoint, pointer, then deletion of the
    outdated checkpoint. Whenever the process dies, ``last_checkpoint`` names
    a complete checkpoint. Partial files left by a killed run are removed when
    training starts. Other storage backends (and ``FlexibleRunner``) are
    saved by the parent class unchanged; so are ``save_best`` checkpoints.

    Takes the arguments of mmengine's ``CheckpointHook`` (``interval``,
    ``by_epoch``, ``max_keep_ckpts``, ``save_last``, ...).

    Examples:
        >>> default_hooks = dict(checkpoint=dict(
        ...     type='AtomicCheckpointHook', by_epoch=False, interval=100))
    """

    def _is_atomic(self, runner: Any) -> bool:
        return isinstance(self.file_backend, LocalBackend) and isinstance(
            runner, Runner
        )

    def before_train(self, runner: Any) -> None:
        """Resolves the output folder and removes stale partial files."""
        super().before_train(runner)
        if self._is_atomic(runner) and is_main_process():
            for folder in {Path(self.out_dir), Path(runner.work_dir)}:
                for stale in folder.glob(f".*{PARTIAL_SUFFIX}"):
                    stale.unlink()

    def _save_checkpoint_with_step(
        self, runner: Any, step: int, meta: dict[str, Any]
    ) -> None:
        """Saves checkpoint ``step``; mmengine's bookkeeping, reordered."""
        if not self._is_atomic(runner):
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        outdated = None
        if self.max_keep_ckpts > 0 and not (
            self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step
        ):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        partial = f".{filename}{PARTIAL_SUFFIX}"
        runner.save_checkpoint(  # only the main process writes
            self.out_dir,
            partial,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        replace_durably(Path(self.out_dir) / partial, Path(self.last_ckpt))
        pointer = Path(runner.work_dir) / "last_checkpoint"
        pointer_partial = pointer.with_name(f".{pointer.name}{PARTIAL_SUFFIX}")
        pointer_partial.write_text(self.last_ckpt)
        replace_durably(pointer_partial, pointer)
        if outdated is not None:
            old = Path(self.out_dir) / self.filename_tmpl.format(outdated)
            old.unlink(missing_ok=True)
