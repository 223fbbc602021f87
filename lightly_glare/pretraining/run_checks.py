"""What the one-call run checks before it builds anything.

The inputs exist and ``model`` is a timm model (:func:`check_inputs`), ``out``
is a folder this process can write in (:func:`check_out_folder`) on a disk
with room for the run's files (:func:`check_free_space`), and every image
reads (:func:`check_data`).
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from lightly_glare.data import (
    IMAGE_EXTENSIONS,
    BadImagesError,
    ImageReadError,
    check_images,
    find_image_files,
)
from lightly_glare.pretraining.job import FolderPretraining, build_job
from lightly_glare.pretraining.run_files import (
    ADAPTERS,
    BACKBONE,
    CHECKPOINT,
    FROZEN_PREFIX,
    TIMM_VIT,
    mb,
)

#: Default ``min_size``: images with a shorter side below it are bad files.
DEFAULT_MIN_SIZE = 32
#: Folders holding more images than this get a progress bar for their check.
CHECK_PROGRESS_FROM = 1000
#: Bad files listed in the message (all are counted).
LISTED_BAD_FILES = 100
#: Free space asked beyond the estimated size of the run's files.
SPACE_MARGIN = 1.1


class OutFolderError(ValueError):
    """``out`` cannot hold the run: not a folder, not writable, or too full."""


def check_inputs(data: str | Path, checkpoint: str | Path, model: str) -> None:
    """Refuses a missing ``data`` folder or ``checkpoint``, or an unknown model."""
    for name, path in (("checkpoint", checkpoint), ("data", data)):
        if not Path(path).exists():
            raise FileNotFoundError(f"pretrain(): {name} {str(path)!r} does not exist.")
    if not Path(data).is_dir():
        raise NotADirectoryError(
            f"pretrain(): data {str(data)!r} is a file, not a folder: pass the "
            "folder holding the images (searched recursively)."
        )
    if Path(checkpoint).is_dir():
        raise IsADirectoryError(
            f"pretrain(): checkpoint {str(checkpoint)!r} is a folder: pass the "
            "checkpoint file (.pth)."
        )
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ValueError(
            f"pretrain(): model {model!r} is not a timm model.{hint} Pass the "
            "timm name the checkpoint was trained with; timm.list_models('vit_*') "
            "lists them."
        )


def check_out_folder(out: Path) -> None:
    """``out`` is (or is created as) a folder this process can write in."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(
            f"out {str(out)!r} is a file, not a folder: pass a folder for the "
            "run's files (it is created when missing)."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise OutFolderError(
            f"Cannot write in out {str(out)!r}: {error.strerror or error}. Pass a "
            "folder you can write in (not on a read-only file system)."
        ) from error


def check_data(
    job: FolderPretraining,
    min_size: int | None,
    skip_bad: bool,
    decode: bool,
    progress: bool,
    printer: Callable[[str], None],
) -> set[Path]:
    """Checks every image of the run before the model is built.

    Returns:
        The bad files to leave out (empty unless ``skip_bad``).

    Raises:
        BadImagesError: Bad files and not ``skip_bad`` (all listed), or only
            bad files.
    """
    root = Path(job.data)
    files = find_image_files(root, IMAGE_EXTENSIONS)
    if job.indices is not None:
        files = [files[i] for i in job.indices if 0 <= i < len(files)]
    bar = None
    if progress and len(files) > CHECK_PROGRESS_FROM:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="checking images", unit="img")
    try:
        report = check_images(
            files,
            root,
            min_size=min_size,
            decode=decode,
            progress=(lambda done: bar.update(1)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    if not report.bad:
        return set()
    if not skip_bad or not report.good:
        fix = (
            "nothing to train on; fix or replace them"
            if report.good == []
            else "fix or remove them, or pass skip_bad=True to train without them"
        )
        if min_size is not None and report.too_small:
            fix += f" (min_size={min_size} sets the smallest shorter side; None: any)"
        raise BadImagesError(root, report, fix + ".", listed=LISTED_BAD_FILES)
    printer(
        f"  skipped {len(report.bad)} of {len(files)} images (skip_bad=True; "
        f"{report.too_small} smaller than min_size={min_size}):\n"
        + report.summary(LISTED_BAD_FILES)
    )
    return {root / name for name, _ in report.bad}


def estimate_output_bytes(job: FolderPretraining) -> dict[str, int]:
    """The sizes of the files a run of ``job`` writes, without building it.

    The model is built on the ``meta`` device (no memory, no weights read), so
    the sizes follow from the architecture: the run checkpoint holds the
    trainable modules of student and teacher and the optimizer's two moments,
    the exports the frozen ViT and the teacher's adapters.

    Args:
        job: The run's job.

    Returns:
        File name in ``out`` to its size in bytes (metrics and events, which
        grow by a few hundred bytes a step, are not counted).
    """
    with torch.device("meta"):
        vit = cast(
            VisionTransformer,
            timm.create_model(job.model, img_size=job.img_size, num_classes=0),
        )
        model, criterion = build_job(job, vit)

    def size(tensors: Any) -> int:
        return sum(int(t.numel() * t.element_size()) for t in tensors)

    state = model.state_dict()
    trained = size(v for k, v in state.items() if not k.startswith(FROZEN_PREFIX))
    moments = 2 * size(model.trainable_parameters())
    vit_bytes = size(vit.state_dict().values())
    adapters = size(model.teacher_adapters.state_dict().values())
    return {
        CHECKPOINT: trained + moments + size(criterion.state_dict().values()),
        BACKBONE: vit_bytes + adapters,
        TIMM_VIT: vit_bytes,
        ADAPTERS: adapters,
    }


def check_free_space(out: Path, job: FolderPretraining) -> None:
    """Refuses to start when ``out``'s disk cannot hold the run's files.

    Counts the files' estimated sizes (:func:`estimate_output_bytes`), less
    those already in ``out`` (a resumed run replaces them), plus the largest
    once more: an atomic write holds the old file and the new one at once.
    """
    try:
        sizes = estimate_output_bytes(job)
    except Exception:  # e.g. not a ViT: the model build names the problem
        return
    present = sum(
        (out / name).stat().st_size for name in sizes if (out / name).is_file()
    )
    need = int((sum(sizes.values()) - present + max(sizes.values())) * SPACE_MARGIN)
    free = shutil.disk_usage(out).free
    if free < need:
        each = ", ".join(f"{name} {mb(size)}" for name, size in sizes.items())
        raise OutFolderError(
            f"out {str(out)!r} has {mb(free)} free, but the run writes about "
            f"{mb(need)} ({each}, and room for one atomic replacement). Free "
            "space on that disk or choose an out on another one."
        )


def unverified(error: ImageReadError, verified: bool) -> ImageReadError:
    """``error`` with the advice for a file that failed during training."""
    if verified:
        return error
    return ImageReadError(
        error.path,
        f"{error.reason} The check before training reads image headers only; "
        "verify_images=True decodes every image first (with skip_bad=True such "
        "files are then left out).",
    )
