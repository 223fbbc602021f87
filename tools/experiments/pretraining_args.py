"""Command-line options of a short GLARE continual pre-training.

The experiment tools beside this file (``demo.py``, ``segmentation_ablation.py``,
``classification_transfer.py``) share these options; the library itself
(:mod:`lightly_glare.pretraining`) takes a :class:`FolderPretraining` and has no
command-line code. A tool imports this module from its own folder (Python puts
a script's folder first on ``sys.path``; ``lightly-glare COMMAND`` does too).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightly_glare.argument_types import drop_rate, patch_count, positive_int
from lightly_glare.models import (
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    DEFAULT_OUTPUT_DIM,
    DEFAULT_STUDENT_DROP_PATH,
)
from lightly_glare.precision import AMP_HELP
from lightly_glare.pretraining.folder import pretrain_folder
from lightly_glare.pretraining.job import HEAD_INITS, SHORT_SCHEDULE, FolderPretraining
from lightly_glare.pretraining.loop import PretrainHistory, StepCallback
from lightly_glare.pretraining.monitoring import ProgressBar, UniformTeacherWarning
from lightly_glare.transforms import PATCH_AUGMENTATIONS

#: The :class:`FolderPretraining` fields the tools' options set.
PRETRAINING_OPTIONS = (
    "steps",
    "batch_size",
    "base_lr",
    "momentum_start",
    "output_dim",
    "hidden_dim",
    "adapter_bottleneck",
    "num_regions",
    "head_warmup_steps",
    "local_patches_per_view",
    "student_drop_path",
    "patch_augmentation",
    "amp",
    "workers",
    "head_init",
    "freeze_heads",
)


def add_pretraining_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of a short continual pre-training to a tool's parser.

    One option per :class:`FolderPretraining` field in
    :data:`PRETRAINING_OPTIONS`, named after it (``--output-dim`` sets
    ``output_dim``), with the defaults of :data:`SHORT_SCHEDULE` (a few dozen
    steps on 2 CPU cores); read them back with :func:`pretraining_job`.

    Args:
        parser: The tool's parser.
    """
    group = parser.add_argument_group("GLARE continual pre-training")
    group.add_argument(
        "--steps", type=int, default=SHORT_SCHEDULE["steps"], help="optimizer steps"
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=SHORT_SCHEDULE["batch_size"],
        help="images per step",
    )
    group.add_argument(
        "--base-lr",
        type=float,
        default=SHORT_SCHEDULE["base_lr"],
        help="learning rate per 256 images (DINO: 5e-4 for 100-epoch schedules; "
        "10x for the few dozen steps a CPU affords)",
    )
    group.add_argument(
        "--momentum-start",
        type=float,
        default=SHORT_SCHEDULE["momentum_start"],
        help="teacher EMA momentum at step 0, cosine to 1 (DINO: 0.996 for long "
        "schedules; over a few dozen steps the exported teacher would then keep "
        "~1 %% of what the student learned)",
    )
    group.add_argument(
        "--output-dim",
        type=int,
        default=SHORT_SCHEDULE["output_dim"],
        help=f"head output size (library default: {DEFAULT_OUTPUT_DIM})",
    )
    group.add_argument(
        "--hidden-dim",
        type=int,
        default=SHORT_SCHEDULE["hidden_dim"],
        help="head hidden size (DINO: 2048)",
    )
    group.add_argument(
        "--adapter-bottleneck",
        type=positive_int,
        default=None,
        metavar="B",
        help="hidden size of every UniAdapter (default: embed_dim // 12, 32 for "
        "the ViT-S/14; recorded in the export, so loaders build adapters of "
        "this size)",
    )
    group.add_argument(
        "--num-regions",
        type=int,
        default=None,
        help="most regions drawn per image from the teacher's attention heads, "
        "at most one per head (default: 6)",
    )
    group.add_argument(
        "--head-warmup-steps",
        type=int,
        default=0,
        help="first steps that train only the heads, adapters fixed (LP-FT)",
    )
    group.add_argument(
        "--head-init",
        choices=HEAD_INITS,
        default="auto",
        help="heads the checkpoint lacks: fitted to the data before the first step "
        "('data'; 'auto' when the checkpoint has no heads) or DINO's random "
        "initialisation ('random')",
    )
    group.add_argument(
        "--freeze-heads",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="train only the adapters: the heads keep their initialisation (from "
        "the data or the checkpoint)",
    )
    group.add_argument(
        "--local-patches-per-view",
        type=patch_count,
        default=DEFAULT_LOCAL_PATCHES_PER_VIEW,
        metavar="K",
        help="patch pairs per image and view of each local term, sampled among "
        f"the valid ones, or 'all' (default: {DEFAULT_LOCAL_PATCHES_PER_VIEW}; "
        "cost per K in docs/PERFORMANCE.md)",
    )
    group.add_argument(
        "--student-drop-path",
        type=drop_rate,
        default=DEFAULT_STUDENT_DROP_PATH,
        metavar="P",
        help="share of the rows whose frozen attention / MLP branch the student "
        "skips in each block, as DINOv2 trains its students (default: "
        f"{DEFAULT_STUDENT_DROP_PATH}; docs/PERFORMANCE.md)",
    )
    group.add_argument(
        "--patch-augmentation",
        choices=sorted(PATCH_AUGMENTATIONS),
        default="blur",
        help="the student's patch distortion for the local distortion term",
    )
    group.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help=AMP_HELP
    )
    group.add_argument("--workers", type=int, default=2, help="DataLoader workers")


def pretraining_job(
    args: argparse.Namespace,
    model: str,
    checkpoint: str | Path,
    data: str | os.PathLike[str],
    img_size: int,
    seed: int,
    weights: Mapping[str, float] | None = None,
    indices: Sequence[int] | None = None,
) -> FolderPretraining:
    """The :class:`FolderPretraining` described by :func:`add_pretraining_arguments`.

    Args:
        args: Parsed options.
        model: timm model name of ``checkpoint``.
        checkpoint: Local SSL checkpoint.
        data: Folder of unlabeled images.
        img_size: Input size of the views.
        seed: Seed of the run.
        weights: Term weights (see :class:`FolderPretraining`).
        indices: Images of ``data`` to train on (None: all).

    Returns:
        The job.
    """
    return FolderPretraining(
        model=model,
        checkpoint=checkpoint,
        data=data,
        img_size=img_size,
        seed=seed,
        weights=dict(weights or {}),
        indices=indices,
        **{name: getattr(args, name) for name in PRETRAINING_OPTIONS},
    )


def pretrain_with_progress(
    job: FolderPretraining,
    out: str | Path,
    callbacks: Sequence[StepCallback] = (),
    **kwargs: Any,
) -> tuple[Path, PretrainHistory]:
    """:func:`~lightly_glare.pretraining.folder.pretrain_folder` with a progress bar.

    The bar (:class:`~lightly_glare.pretraining.monitoring.ProgressBar`, drawn
    on standard error) shows the step, the loss and its terms, images/s, the
    time left and the share of time spent waiting for data. The plain progress
    lines still go to standard output, printed above the bar, so a tool's log
    file keeps them, with the warning of
    :class:`~lightly_glare.pretraining.monitoring.UniformTeacherWarning` when
    the teacher stays near uniform.
    tqdm comes with lightly (a core dependency), as for the one-call run.

    Args:
        job: What to train.
        out: Destination of the export.
        callbacks: Step callbacks run besides the bar.
        **kwargs: Further arguments of ``pretrain_folder`` (``device``,
            ``extra_meta``).

    Returns:
        The export's path and the training history.
    """
    bar = ProgressBar()
    try:
        watch = UniformTeacherWarning(bar.write)  # says when the teacher is uniform
        return pretrain_folder(
            job, out, log=bar.write, callbacks=[bar, watch, *callbacks], **kwargs
        )
    finally:
        bar.close()
