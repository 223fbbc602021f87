"""Offline brain-MRI segmentation data from the ``nilearn`` package (PyPI).

``nilearn==0.14.1`` (BSD-3) ships the MNI ICBM152 2009a symmetric template:
a T1 volume and grey/white-matter probability maps
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``,
197 x 233 x 189 voxels of 1 mm, uint8). They are read from the wheel with
``nibabel`` (nilearn is never installed or imported).

Preparation (:func:`prepare_mri`):

- volumes are reoriented to RAS (``nibabel.as_closest_canonical``); axial slice
  ``z`` is shown with anterior up and the subject's left on the left
  (``flipud(volume[:, :, z].T)``, 233 x 197 px);
- the T1 is kept as stored when it is uint8 (it is), otherwise stretched to 8
  bits over the volume (0.5 / 99.5 % percentiles); images are saved as RGB;
- **labels**: probabilities are the maps divided by 255 (integer maps: by their
  dtype's maximum). A voxel is tissue when ``p_gm + p_wm >= tissue_threshold``
  (default 0.5, i.e. tissue is more likely than not); tissue voxels are white
  matter (2) when ``p_wm > p_gm`` and grey matter (1) otherwise; all other
  voxels are 0 (background and CSF). No voxel is ignored (255);
- slices whose tissue fraction exceeds ``min_brain_fraction`` (default 5 %)
  are kept;
- **split by contiguous slice blocks**: block ``z // block_size`` (default 10)
  goes to val when ``block % val_every == val_every - 1`` (default 5: slices
  40-49, 90-99, 140-149). Train slices closer than ``gap`` (default 2) to a val
  slice are dropped from both train and unlabeled: neighbouring slices of one
  template brain are nearly identical, and the gap limits that leakage (it
  cannot remove it: every slice shows the same brain);
- unlabeled slices for continual pre-training are the train slices.

Layout written under ``out``::

    img_dir/{train,val}/mni152_z040.png    RGB T1 slices
    ann_dir/{train,val}/mni152_z040.png    labels 0/1/2
    unlabeled/mni152_z012.png              RGB T1 slices (train slices only)
    manifest.json                          parameters, slices, counts, frequencies
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightly_glare.data.image_io import stretch_to_uint8
from lightly_glare.data.metainfo import MRI_METAINFO
from lightly_glare.data_preparation.cache import (
    fetch_distribution,
    import_data_extra,
    read_member,
)
from lightly_glare.data_preparation.manifest import (
    PREPARATION_VERSION,
    Printer,
    StagedOutput,
    class_frequencies,
    grey_to_rgb,
    quiet,
    reuse_prepared,
    save_png,
)

NILEARN_VERSION = "0.14.1"
_MEMBER = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _nibabel() -> Any:
    return import_data_extra("nibabel", "Reading the MNI template")


def read_nifti_bytes(data: bytes) -> NDArray[Any]:
    """The voxel array (RAS orientation, stored dtype) of a (gzipped) NIfTI file."""
    nibabel = _nibabel()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    image = nibabel.as_closest_canonical(nibabel.Nifti1Image.from_bytes(data))
    return np.asarray(image.dataobj)


def to_probability(array: NDArray[Any]) -> NDArray[np.float64]:
    """Probability map in [0, 1]: integers divided by their dtype's maximum."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float64) / float(np.iinfo(array.dtype).max)
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def tissue_labels(
    p_gm: NDArray[np.float64],
    p_wm: NDArray[np.float64],
    tissue_threshold: float = 0.5,
) -> NDArray[np.uint8]:
    """Labels 0 (background/CSF), 1 (GM), 2 (WM) from probability maps.

    Tissue where ``p_gm + p_wm >= tissue_threshold``; then WM where
    ``p_wm > p_gm``, else GM (ties go to GM).
    """
    tissue = (p_gm + p_wm) >= tissue_threshold
    labels = np.where(p_wm > p_gm, 2, 1).astype(np.uint8)
    labels[~tissue] = 0
    return labels


def axial_slice(volume: NDArray[Any], z: int) -> NDArray[Any]:
    """Axial slice ``z`` of a RAS volume, anterior up, subject's left on the left."""
    return np.flipud(volume[:, :, z].T)


def slice_splits(
    slices: list[int], block_size: int = 10, val_every: int = 5, gap: int = 2
) -> dict[int, str]:
    """Assigns each slice index to ``train``, ``val`` or ``gap`` (dropped).

    Block ``z // block_size`` is val when ``block % val_every == val_every - 1``;
    a non-val slice within ``gap`` slices of a val slice is ``gap``.
    """
    if block_size < 1 or val_every < 2 or gap < 0:
        raise ValueError(
            "Expected block_size >= 1, val_every >= 2, gap >= 0, got "
            f"{block_size}, {val_every}, {gap}."
        )
    val = {z for z in slices if (z // block_size) % val_every == val_every - 1}
    splits = {}
    for z in slices:
        if z in val:
            splits[z] = "val"
        elif any(abs(z - v) <= gap for v in val):
            splits[z] = "gap"
        else:
            splits[z] = "train"
    return splits


def prepare_mri(
    out: str | os.PathLike[str],
    min_brain_fraction: float = 0.05,
    tissue_threshold: float = 0.5,
    block_size: int = 10,
    val_every: int = 5,
    gap: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Printer = quiet,
) -> dict[str, Any]:
    """Builds the MNI152 axial-slice GM/WM segmentation set and unlabeled slices.

    See the module docstring for the labels, the split and the layout.
    Idempotent: a folder already prepared with the same parameters is returned
    as is.

    Args:
        out: Output folder (its ``img_dir``, ``ann_dir``, ``unlabeled`` and
            ``manifest.json`` entries are replaced).
        min_brain_fraction: Keep slices with more tissue than this fraction of
            their pixels. Defaults to 0.05.
        tissue_threshold: Minimum ``p_gm + p_wm`` of a tissue voxel. Defaults
            to 0.5.
        block_size: Slices per contiguous split block. Defaults to 10.
        val_every: Every ``val_every``-th block goes to val. Defaults to 5.
        gap: Train slices this close to a val slice are dropped. Defaults to 2.
        cache_dir: Download cache. Defaults to
            :func:`~lightly_glare.data_preparation.cache.default_cache_dir`.
        force: Rebuild even if ``out`` is already prepared. Defaults to False.
        log: Progress printer (e.g. ``print``). Defaults to silent.

    Returns:
        The manifest: ``params``, ``sources``, ``summary`` (slices per split,
        class pixel frequencies), ``slices`` (index, split, tissue fraction)
        and ``files``.

    Raises:
        DataDownloadError: If ``nilearn==0.14.1`` cannot be obtained.
    """
    root = Path(out)
    params = {
        "min_brain_fraction": min_brain_fraction,
        "tissue_threshold": tissue_threshold,
        "block_size": block_size,
        "val_every": val_every,
        "gap": gap,
    }
    prepared = reuse_prepared(root, "mri", params, force, log)
    if prepared is not None:
        return prepared
    log(f"mri: fetching nilearn=={NILEARN_VERSION}")
    wheel = fetch_distribution("nilearn", NILEARN_VERSION, cache_dir)
    log("mri: reading the MNI ICBM152 2009a T1, GM and WM volumes")
    t1_8bit, labels = _read_volumes(wheel, tissue_threshold)
    fractions = (labels > 0).mean(axis=(0, 1))
    kept = [int(z) for z in np.flatnonzero(fractions > min_brain_fraction)]
    splits = slice_splits(kept, block_size, val_every, gap)
    masks: dict[str, list[NDArray[np.uint8]]] = {"train": [], "val": []}
    with StagedOutput(root) as stage:
        records = [
            _write_slice(stage.path, t1_8bit, labels, z, splits[z], fractions, masks)
            for z in kept
        ]
        manifest: dict[str, Any] = {
            "dataset": "mri",
            "version": PREPARATION_VERSION,
            "params": params,
            "sources": {f"nilearn=={NILEARN_VERSION}": wheel.name},
            "summary": _summary(t1_8bit.shape, splits, masks),
            "slices": records,
        }
        stage.commit(manifest)
    return manifest


def _read_volumes(
    wheel: Path, tissue_threshold: float
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """The 8-bit T1 volume and its tissue labels, from the nilearn wheel."""
    t1, gm, wm = (
        read_nifti_bytes(read_member(wheel, _MEMBER.format(k)))
        for k in ("t1", "gm", "wm")
    )
    if not t1.shape == gm.shape == wm.shape:
        raise ValueError(f"Volume shapes differ: {t1.shape}, {gm.shape}, {wm.shape}.")
    t1_8bit = t1 if t1.dtype == np.uint8 else stretch_to_uint8(t1)
    labels = tissue_labels(to_probability(gm), to_probability(wm), tissue_threshold)
    return t1_8bit, labels


def _summary(
    shape: tuple[int, ...],
    splits: dict[int, str],
    masks: dict[str, list[NDArray[np.uint8]]],
) -> dict[str, Any]:
    """The manifest's ``summary``: slices per split, class pixel frequencies."""
    classes = tuple(MRI_METAINFO["classes"])
    return {
        "volume_shape": list(shape),
        "slices": {
            split: sum(s == split for s in splits.values())
            for split in ("train", "val", "gap")
        },
        "unlabeled": len(masks["train"]),
        "class_pixel_frequencies": {
            split: class_frequencies(m, classes) for split, m in masks.items()
        },
    }


def _write_slice(
    folder: Path,
    t1_8bit: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    z: int,
    split: str,
    fractions: NDArray[np.floating[Any]],
    masks: dict[str, list[NDArray[np.uint8]]],
) -> dict[str, Any]:
    """Writes axial slice ``z`` into its split (none for ``gap``); its record.

    The slice's mask is appended to ``masks[split]``; train slices are also
    written, image only, to ``unlabeled``.
    """
    name = f"mni152_z{z:03d}.png"
    record: dict[str, Any] = {
        "z": z,
        "split": split,
        "tissue_fraction": round(float(fractions[z]), 4),
    }
    if split == "gap":
        return record
    image = grey_to_rgb(axial_slice(t1_8bit, z))
    mask = axial_slice(labels, z)
    save_png(image, folder / "img_dir" / split / name)
    save_png(mask, folder / "ann_dir" / split / name)
    masks[split].append(mask)
    record["image"] = f"img_dir/{split}/{name}"
    record["ann"] = f"ann_dir/{split}/{name}"
    if split == "train":
        save_png(image, folder / "unlabeled" / name)
        record["unlabeled"] = f"unlabeled/{name}"
    return record
