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

from lightly_glare.argument_types import field_type
from lightly_glare.models import DEFAULT_OUTPUT_DIM
from lightly_glare.precision import AMP_HELP
from lightly_glare.pretraining.fields import dataclass_fields
from lightly_glare.pretraining.folder import pretrain_folder
from lightly_glare.pretraining.job import SHORT_SCHEDULE, FolderPretraining
from lightly_glare.pretraining.loop import PretrainHistory, StepCallback
from lightly_glare.pretraining.monitoring import ProgressBar, UniformTeacherWarning

#: The :class:`FolderPretraining` fields the tools' options set, with their
#: help (``%(default)s`` is the field's default, or :data:`SHORT_SCHEDULE`'s).
OPTION_HELP = {
    "steps": "optimizer steps",
    "batch_size": "images per step",
    "base_lr": "learning rate per 256 images (DINO: 5e-4 for 100-epoch schedules; "
    "10x for the few dozen steps a CPU affords)",
    "momentum_start": "teacher EMA momentum at step 0, cosine to 1 (DINO: 0.996 for "
    "long schedules; over a few dozen steps the exported teacher would then keep "
    "~1 %% of what the student learned; from a few hundred steps on, 0.9 lets the "
    "teacher collapse to uniform: use 0.996, docs/results_log.md)",
    "output_dim": "head output size (default: %(default)s; library default: "
    f"{DEFAULT_OUTPUT_DIM})",
    "hidden_dim": "head hidden size (DINO: 2048)",
    "adapter_bottleneck": "hidden size of every UniAdapter (default: embed_dim // "
    "12, 32 for the ViT-S/14; recorded in the export, so loaders build adapters of "
    "this size)",
    "num_regions": "most regions drawn per image from the teacher's attention "
    "heads, at most one per head (default: 6)",
    "head_warmup_steps": "first steps that train only the heads, adapters fixed "
    "(LP-FT)",
    "local_patches_per_view": "patch pairs per image and view of each local term, "
    "sampled among the valid ones, or 'all' (default: %(default)s; cost per K in "
    "docs/PERFORMANCE.md)",
    "student_drop_path": "share of the rows whose frozen attention / MLP branch the "
    "student skips in each block, as DINOv2 trains its students (default: "
    "%(default)s; docs/PERFORMANCE.md)",
    "patch_augmentation": "the student's patch distortion for the local distortion "
    "term",
    "amp": AMP_HELP,
    "workers": "DataLoader workers",
    "head_init": "heads the checkpoint lacks: fitted to the data before the first "
    "step ('data'; 'auto' when the checkpoint has no heads) or DINO's random "
    "initialisation ('random')",
    "freeze_heads": "train only the adapters: the heads keep their initialisation "
    "(from the data or the checkpoint)",
}
#: The fields the options set, in the order of ``--help``.
PRETRAINING_OPTIONS = tuple(OPTION_HELP)
#: Metavariables of the options that have one.
METAVARS = {
    "adapter_bottleneck": "B",
    "local_patches_per_view": "K",
    "student_drop_path": "P",
}


def add_pretraining_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of a short continual pre-training to a tool's parser.

    One option per :class:`FolderPretraining` field in
    :data:`PRETRAINING_OPTIONS`, named after it (``--output-dim`` sets
    ``output_dim``), typed and parsed as ``lightly-glare pretrain`` parses the
    field (:mod:`lightly_glare.pretraining.fields`), with the field's default
    or that of :data:`SHORT_SCHEDULE` (a few dozen steps on 2 CPU cores); read
    them back with :func:`pretraining_job`.

    Args:
        parser: The tool's parser.
    """
    group = parser.add_argument_group("GLARE continual pre-training")
    typed = dataclass_fields(FolderPretraining, PRETRAINING_OPTIONS)
    for name, field in typed.items():
        flag = "--" + name.replace("_", "-")
        default = SHORT_SCHEDULE.get(name, field.default)
        if field.is_switch:
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=OPTION_HELP[name],
            )
            continue
        group.add_argument(
            flag,
            type=None if field.choices else field_type(field),
            choices=field.choices,
            default=default,
            metavar=METAVARS.get(name),
            help=OPTION_HELP[name],
        )


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
