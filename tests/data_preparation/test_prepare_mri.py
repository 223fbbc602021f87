"""Real MNI ICBM152 data: downloads nilearn 0.14.1 (11 MB) into the cache once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lightly_glare.data import MRI_METAINFO, load_image_and_mask
from lightly_glare.data_preparation import prepare_mri
from lightly_glare.data_preparation.mri import slice_splits, tissue_labels

pytest.importorskip("nibabel")


def _read(path: Path) -> Image.Image:
    """Opens, decodes and closes an image file."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


@pytest.fixture(scope="module")
def mri(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mri")
    return root, prepare_mri(root)


def test_counts_and_layout(mri: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = mri
    summary = manifest["summary"]
    assert summary["volume_shape"] == [197, 233, 189]
    assert summary["slices"] == {"train": 96, "val": 27, "gap": 10}
    for split in ("train", "val"):
        images = sorted(p.name for p in (root / "img_dir" / split).glob("*.png"))
        anns = sorted(p.name for p in (root / "ann_dir" / split).glob("*.png"))
        assert images == anns and len(images) == summary["slices"][split]
    unlabeled = sorted(p.name for p in (root / "unlabeled").glob("*.png"))
    assert unlabeled == sorted(p.name for p in (root / "img_dir" / "train").glob("*"))


def test_split_blocks_and_gap(mri: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = mri
    by_split: dict[str, list[int]] = {"train": [], "val": [], "gap": []}
    for record in manifest["slices"]:
        by_split[record["split"]].append(record["z"])
        assert record["tissue_fraction"] > 0.05
    assert all((z // 10) % 5 == 4 for z in by_split["val"])
    assert set(by_split["val"]) <= set(range(40, 50)) | set(range(90, 100)) | set(
        range(140, 150)
    )
    assert min(abs(t - v) for t in by_split["train"] for v in by_split["val"]) > 2
    assert all(min(abs(g - v) for v in by_split["val"]) <= 2 for g in by_split["gap"])


def test_images_and_masks(mri: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = mri
    wm_brightness, gm_brightness = [], []
    for record in manifest["slices"]:
        if record["split"] == "gap":
            assert "image" not in record
            continue
        image, mask = load_image_and_mask(
            root / record["image"], root / record["ann"], num_classes=3
        )
        assert _read(root / record["image"]).mode == "RGB"
        assert image.size == (197, 233)  # (W, H): x across, y (anterior up) down
        assert set(np.unique(mask).tolist()) <= {0, 1, 2}
        grey = np.asarray(image)[..., 0]
        assert (mask > 0).mean() == pytest.approx(record["tissue_fraction"], abs=1e-4)
        if (mask == 1).any() and (mask == 2).any():
            gm_brightness.append(grey[mask == 1].mean())
            wm_brightness.append(grey[mask == 2].mean())
    # T1 contrast: white matter is brighter than grey matter in every slice
    # that has both; this checks the label order and the image/mask alignment.
    assert len(wm_brightness) > 100
    assert all(w > g + 10 for w, g in zip(wm_brightness, gm_brightness, strict=True))


def test_class_frequencies(mri: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = mri
    frequencies = manifest["summary"]["class_pixel_frequencies"]
    assert set(frequencies["train"]) == set(MRI_METAINFO["classes"])
    masks = [np.asarray(_read(p)) for p in (root / "ann_dir" / "val").glob("*")]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=3)
    expected = counts / counts.sum()
    assert [frequencies["val"][c] for c in MRI_METAINFO["classes"]] == pytest.approx(
        expected.tolist(), abs=1e-5
    )
    assert frequencies["train"]["grey_matter"] > frequencies["train"]["white_matter"]


def test_idempotent(mri: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = mri
    first = root / manifest["slices"][20]["image"]
    mtime = first.stat().st_mtime_ns
    assert prepare_mri(root) == manifest
    assert first.stat().st_mtime_ns == mtime


def test_tissue_labels_rule() -> None:
    gm = np.array([0.1, 0.3, 0.25, 0.2, 0.0, 0.5])
    wm = np.array([0.1, 0.25, 0.3, 0.2, 0.5, 0.0])
    np.testing.assert_array_equal(tissue_labels(gm, wm), [0, 1, 2, 0, 2, 1])
    np.testing.assert_array_equal(tissue_labels(gm, wm, 0.4), [0, 1, 2, 1, 2, 1])


def test_slice_splits_rule() -> None:
    splits = slice_splits(list(range(30, 60)), block_size=10, val_every=5, gap=2)
    assert [z for z, s in splits.items() if s == "val"] == list(range(40, 50))
    assert [z for z, s in splits.items() if s == "gap"] == [38, 39, 50, 51]
    with pytest.raises(ValueError, match="val_every"):
        slice_splits([1], val_every=1)
