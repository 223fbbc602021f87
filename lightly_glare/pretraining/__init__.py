"""GLARE continual pre-training: the job, its loop, its one-call run.

- :mod:`~lightly_glare.pretraining.loop`: the plain-PyTorch step loop
  (:func:`train_steps`, DINO's schedules, :class:`StepEvent` for callbacks) and
  the pieces a Lightly script takes (``parameter_groups``, ``learning_rate``,
  ``check_loss``, ``steps_per_epoch``);
- :mod:`~lightly_glare.pretraining.job`: what to train
  (:class:`FolderPretraining`) and the one builder of the model
  (:func:`build_glare`, :func:`build_job`), shared with the mmengine model;
- :mod:`~lightly_glare.pretraining.folder`: a job on an image folder: its
  seeded batches and the one path that trains it (:func:`train_job`,
  :func:`pretrain_folder`);
- :mod:`~lightly_glare.pretraining.run`: the one-call run
  ``lightly_glare.pretrain`` (checkpoints, exact resume, exports), with its
  checks (:mod:`~lightly_glare.pretraining.run_checks`), files
  (:mod:`~lightly_glare.pretraining.run_files`) and resume
  (:mod:`~lightly_glare.pretraining.resume`);
- :mod:`~lightly_glare.pretraining.monitoring`: progress bar, metrics, figure;
- :mod:`~lightly_glare.pretraining.fields`: the typed fields the command lines
  and configs set, read through one type-hint reader;
- :mod:`~lightly_glare.pretraining.cli`: ``lightly-glare pretrain key=value``.
"""

from lightly_glare.pretraining.folder import (
    build_folder_job,
    pretrain_folder,
    seeded_loader,
    train_job,
)
from lightly_glare.pretraining.job import (
    FolderPretraining,
    build_glare,
    build_job,
)
from lightly_glare.pretraining.loop import (
    NonFiniteLossError,
    NoTrainingStepsError,
    PretrainConfig,
    PretrainHistory,
    StepEvent,
    train_steps,
)
from lightly_glare.pretraining.run import PretrainRun, pretrain

__all__ = [
    "FolderPretraining",
    "NoTrainingStepsError",
    "NonFiniteLossError",
    "PretrainConfig",
    "PretrainHistory",
    "PretrainRun",
    "StepEvent",
    "build_folder_job",
    "build_glare",
    "build_job",
    "pretrain",
    "pretrain_folder",
    "seeded_loader",
    "train_job",
    "train_steps",
]
