"""A job on an image folder: its model and images, its seeded batches, its run.

:func:`build_folder_job` reads the checkpoint once, builds the model
(:func:`~lightly_glare.pretraining.job.build_job`) and chooses the images;
:func:`seeded_loader` is the one DataLoader of a job; :func:`train_job` is the
one path that trains a job, used by :func:`pretrain_folder` (train and
export, the experiment tools) and by the one-call :func:`lightly_glare.pretrain`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lightly_glare.data import (
    CarryErrors,
    DrawSampler,
    ImageFolderDataset,
    SeededDataset,
    collate_carrying_errors,
    raise_carried,
)
from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE, initialize_heads_from_data
from lightly_glare.precision import resolve_amp
from lightly_glare.pretraining.job import (
    FolderPretraining,
    build_job,
    load_checkpoint_heads,
    resolve_head_init,
)
from lightly_glare.pretraining.loop import (
    NoTrainingStepsError,
    PretrainHistory,
    StepCallback,
    train_steps,
)
from lightly_glare.transforms import GlareTransform
from lightly_glare.weights import create_vit, read_ssl_checkpoint


def build_folder_job(
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
    vit = create_vit(
        job.model, checkpoint, img_size=job.img_size, source=job.checkpoint
    )
    model, criterion = build_job(job, vit)
    criterion.to(device)
    loaded: list[str] = []
    if job.checkpoint_heads:
        loaded = load_checkpoint_heads(model, checkpoint, job.checkpoint)
        log(f"  heads from the checkpoint: {', '.join(loaded) or 'none found'}")
    model.to(device)
    log(f"  terms {model.terms}; {model.backbone.report}")
    folder = ImageFolderDataset(job.data, transform=GlareTransform(job.img_size))
    indices = range(len(folder)) if job.indices is None else job.indices
    skipped = set(skip_files)
    images = Subset(folder, [i for i in indices if folder.files[i] not in skipped])
    if initialize_heads and resolve_head_init(job.head_init, bool(loaded)) == "data":
        _initialize_heads(model, criterion, job, images, device, log)
    return model, criterion, images


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


def folder_loader(
    job: FolderPretraining,
    dataset: Dataset[Any],
    start_step: int = 0,
    pin_memory: bool = False,
) -> Iterator[Any]:
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
        dataset: The images (from :func:`build_folder_job`).
        start_step: First step to draw (a resumed run's step).
        pin_memory: Pin the batches (for CUDA).

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
    return raise_carried(seeded_loader(job, dataset, start_step, pin_memory=pin_memory))


def seeded_loader(
    job: FolderPretraining,
    dataset: Dataset[Any],
    start_step: int = 0,
    batch_size: int | None = None,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """The DataLoader of ``job``'s seeded draws over ``dataset`` (the only one).

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


def train_job(
    job: FolderPretraining,
    model: GLARE,
    criterion: GlareLoss,
    images: Dataset[Any],
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    callbacks: Sequence[StepCallback] = (),
    start_step: int = 0,
    optimizer_state: Mapping[str, Any] | None = None,
) -> PretrainHistory:
    """Trains a built job on its seeded batches: the one folder-run path.

    :func:`pretrain_folder` and the one-call :func:`lightly_glare.pretrain`
    (checkpoints, resume) both train through it.

    Args:
        job: What to train (its optimisation settings, seed and loader).
        model: The model of :func:`build_folder_job` (on ``device``).
        criterion: Its loss.
        images: Its images.
        device: Where to train.
        log: Progress printer.
        callbacks: Step callbacks of :func:`train_steps`.
        start_step: Continue at this step (a resumed run).
        optimizer_state: The optimizer's state at ``start_step``.

    Returns:
        The history of the steps run.
    """
    pin_memory = torch.device(device).type == "cuda"
    return train_steps(
        model,
        criterion,
        folder_loader(job, images, start_step, pin_memory),
        job.config(device),
        batch_size=job.batch_size,
        device=device,
        log=log,
        callbacks=callbacks,
        start_step=start_step,
        optimizer_state=optimizer_state,
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
        callbacks: Step callbacks of :func:`train_steps` (e.g.
            :class:`~lightly_glare.pretraining.monitoring.ProgressBar`).

    Returns:
        The export's path and the training history.

    Raises:
        NoTrainingStepsError: If the chosen images fill no batch.
    """
    model, criterion, dataset = build_folder_job(job, device, log)
    history = train_job(job, model, criterion, dataset, device, log, callbacks)
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
        "timm_name": job.model,  # the export format's key
        "img_size": job.img_size,
        "seed": job.seed,
        "losses": list(losses),
        **(extra_meta or {}),
    }
    return model.export_backbone(out, extra_meta=meta)
