from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from lightly_glare.data import LabelMaskError, load_image_and_mask, load_label_mask
from tests.conftest import real_photo


def _save_mask(path: Path, mask: np.ndarray, mode: str = "L") -> Path:
    Image.fromarray(mask.astype(np.uint8), mode).save(path)
    return path


def _photo(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    real_photo().resize(size).save(path)
    return path


def test_valid_mask_with_ignore(tmp_path: Path) -> None:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:10] = 2
    mask[20:] = 255
    path = _save_mask(tmp_path / "mask.png", mask)
    loaded = load_label_mask(path, num_classes=3)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, mask)


def test_palette_mask_gives_indices(tmp_path: Path) -> None:
    mask = np.arange(4, dtype=np.uint8).repeat(5).reshape(4, 5)
    image = Image.fromarray(mask, "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    image.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(load_label_mask(tmp_path / "palette.png", 4), mask)


def test_out_of_range_values_named(tmp_path: Path) -> None:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[0, :3] = 7
    mask[1, :2] = 200
    path = _save_mask(tmp_path / "bad_values.png", mask)
    with pytest.raises(LabelMaskError) as info:
        load_label_mask(path, num_classes=3)
    message = str(info.value)
    assert "bad_values.png" in message
    assert "7 (3 px)" in message and "200 (2 px)" in message
    assert "0..2" in message and "ignore_index 255" in message
    assert isinstance(info.value, ValueError)


def test_ignore_index_is_configurable(tmp_path: Path) -> None:
    mask = np.full((4, 4), 255, dtype=np.uint8)
    path = _save_mask(tmp_path / "all_ignored.png", mask)
    with pytest.raises(LabelMaskError, match=r"255 \(16 px\)"):
        load_label_mask(path, num_classes=2, ignore_index=254)


def test_rgb_mask_rejected(tmp_path: Path) -> None:
    path = _photo(tmp_path / "colour_mask.png")
    with pytest.raises(LabelMaskError, match=r"colour_mask\.png.*mode RGB"):
        load_label_mask(path, num_classes=3)


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    image = _photo(tmp_path / "image.png", (40, 30))
    mask = _save_mask(tmp_path / "mask.png", np.zeros((30, 41), dtype=np.uint8))
    with pytest.raises(LabelMaskError) as info:
        load_image_and_mask(image, mask, num_classes=2)
    message = str(info.value)
    assert "mask.png" in message and "image.png" in message
    assert "41x30" in message and "40x30" in message
    with pytest.raises(LabelMaskError, match="41x30"):
        load_label_mask(mask, 2, image_size=(40, 30))


def test_image_and_mask_ok(tmp_path: Path) -> None:
    image_path = _photo(tmp_path / "image.png", (40, 30))
    labels = np.random.default_rng(0).integers(0, 3, size=(30, 40))
    mask_path = _save_mask(tmp_path / "mask.png", labels)
    image, mask = load_image_and_mask(image_path, mask_path, num_classes=3)
    assert image.mode == "RGB" and mask.shape == (image.height, image.width)
    np.testing.assert_array_equal(mask, labels)


def test_tiff_and_16bit_masks(tmp_path: Path) -> None:
    labels = np.zeros((6, 7), dtype=np.uint16)
    labels[2:4] = 299
    tifffile.imwrite(tmp_path / "mask.tif", labels)
    loaded = load_label_mask(tmp_path / "mask.tif", num_classes=300)
    assert loaded.dtype == np.int64  # 299 classes do not fit with ignore 255
    np.testing.assert_array_equal(loaded, labels)
    Image.fromarray(labels).save(tmp_path / "mask16.png")
    with pytest.raises(LabelMaskError, match=r"299 \(14 px\)"):
        load_label_mask(tmp_path / "mask16.png", num_classes=3)


def test_unreadable_mask(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(LabelMaskError, match=r"mask\.png"):
        load_label_mask(path, 2)
    with pytest.raises(LabelMaskError, match="does not exist"):
        load_label_mask(tmp_path / "missing.png", 2)
