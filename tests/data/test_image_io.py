from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from lightly_glare.data import (
    ImageReadError,
    array_to_rgb,
    load_rgb_image,
    stretch_to_uint8,
)
from tests.conftest import real_photo


def _read(path: Path) -> Image.Image:
    """Opens, decodes and closes an image file."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


def _photo_png(path: Path) -> Path:
    real_photo().resize((96, 80)).save(path)
    return path


def _ramp16(height: int = 40, width: int = 50) -> np.ndarray:
    """A 16-bit image using only the upper range: stretching must rescale it."""
    ramp = np.linspace(20_000, 50_000, height * width).reshape(height, width)
    return ramp.astype(np.uint16)


def _assert_monotonic(source: np.ndarray, result: np.ndarray) -> None:
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(result.ravel()[order].astype(np.int64)) >= 0)


def _assert_rgb8(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert image.mode == "RGB"
    assert image.size == size
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.shape == (size[1], size[0], 3)
    return array


def test_rgb_photo_roundtrip(tmp_path: Path) -> None:
    path = _photo_png(tmp_path / "photo.png")
    image = load_rgb_image(path)
    _assert_rgb8(image, (96, 80))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(_read(path)))


def test_truncated_png_raises_naming_file(tmp_path: Path) -> None:
    path = _photo_png(tmp_path / "photo.png")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated.png") as info:
        load_rgb_image(truncated)
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(truncated)
    assert "truncated" in info.value.reason or "corrupt" in info.value.reason


def test_text_file_with_png_extension(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png.*not an image"):
        load_rgb_image(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty"):
        load_rgb_image(empty)
    with pytest.raises(ImageReadError, match="no such file"):
        load_rgb_image(tmp_path / "missing.png")


@pytest.mark.filterwarnings("ignore:Truncated File Read:UserWarning")
def test_corrupt_tiff(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, _ramp16())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=r"bad\.tif"):
        load_rgb_image(path)


def test_greyscale_replicated(tmp_path: Path) -> None:
    grey = real_photo().convert("L").resize((64, 48))
    grey.save(tmp_path / "grey.png")
    array = _assert_rgb8(load_rgb_image(tmp_path / "grey.png"), (64, 48))
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], np.asarray(grey))


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    rgb = np.asarray(real_photo().resize((64, 48)))
    alpha = np.zeros((48, 64), dtype=np.uint8)
    alpha[:, 32:] = 255  # right half opaque
    alpha[:24, :32] = 128  # top-left quarter half transparent
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    array = _assert_rgb8(load_rgb_image(tmp_path / "rgba.png"), (64, 48))
    np.testing.assert_array_equal(array[:, 32:], rgb[:, 32:])
    assert array[24:, :32].max() == 0
    expected = (rgb[:24, :32].astype(np.int64) * 128 + 127) // 255
    np.testing.assert_array_equal(array[:24, :32], expected)


def test_la_composited_on_black(tmp_path: Path) -> None:
    grey = np.full((10, 12), 200, dtype=np.uint8)
    alpha = np.full((10, 12), 255, dtype=np.uint8)
    alpha[:, :6] = 0
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    array = _assert_rgb8(load_rgb_image(tmp_path / "la.png"), (12, 10))
    assert array[:, :6].max() == 0 and array[:, 6:].min() == 200


def test_palette_expanded(tmp_path: Path) -> None:
    photo = real_photo().resize((64, 48))
    palette_image = photo.quantize(colors=16)
    palette_image.save(tmp_path / "palette.png")
    assert _read(tmp_path / "palette.png").mode == "P"
    array = _assert_rgb8(load_rgb_image(tmp_path / "palette.png"), (64, 48))
    np.testing.assert_array_equal(array, np.asarray(palette_image.convert("RGB")))
    assert len(np.unique(array.reshape(-1, 3), axis=0)) <= 16


def test_palette_with_transparency(tmp_path: Path) -> None:
    indices = np.zeros((8, 8), dtype=np.uint8)
    indices[:, 4:] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 0  # index 0 (red) is transparent
    image.save(tmp_path / "transparent.png", transparency=0)
    array = load_rgb_image(tmp_path / "transparent.png")
    array = np.asarray(array)
    assert array[:, :4].max() == 0  # transparent red -> black
    np.testing.assert_array_equal(array[:, 4:], np.broadcast_to([0, 255, 0], (8, 4, 3)))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_stretch(tmp_path: Path, suffix: str) -> None:
    ramp = _ramp16()
    path = tmp_path / f"ramp16{suffix}"
    if suffix == ".png":
        Image.fromarray(ramp).save(path)
        assert _read(path).mode.startswith("I;16")
    else:
        tifffile.imwrite(path, ramp)
    array = _assert_rgb8(load_rgb_image(path), (50, 40))
    grey = array[..., 0]
    np.testing.assert_array_equal(grey, array[..., 2])
    assert grey.min() == 0 and grey.max() == 255  # full 8-bit range used
    _assert_monotonic(ramp, grey)
    # 0.5 % / 99.5 % percentiles: about 0.5 % of the pixels saturate at each end.
    assert 0.002 < (grey == 0).mean() < 0.01
    assert 0.002 < (grey == 255).mean() < 0.01


def test_16bit_tiff_outliers_clipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(1000, 50, size=(100, 100)).astype(np.uint16)
    values[0, :5] = 65535  # 5 hot pixels
    tifffile.imwrite(tmp_path / "hot.tif", values)
    grey = np.asarray(load_rgb_image(tmp_path / "hot.tif"))[..., 0]
    assert (grey[0, :5] == 255).all()
    # without the stretch, the hot pixels would squash the rest into a few levels
    assert len(np.unique(grey)) > 200
    _assert_monotonic(values, grey)


def test_float_tiff_with_nan(tmp_path: Path) -> None:
    values = np.linspace(-1.0, 1.0, 30 * 20, dtype=np.float32).reshape(30, 20)
    values[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "float.tif", values)
    grey = np.asarray(load_rgb_image(tmp_path / "float.tif"))[..., 0]
    assert grey[0, 0] == 0
    assert grey.max() == 255
    finite = np.isfinite(values)
    _assert_monotonic(values[finite], grey[finite])


def test_planar_rgb16_tiff(tmp_path: Path) -> None:
    planar = np.stack([_ramp16(), _ramp16()[::-1], _ramp16() // 2])  # (3, 40, 50)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb")
    array = _assert_rgb8(load_rgb_image(tmp_path / "planar.tif"), (50, 40))
    assert array[0, 0, 0] < array[-1, -1, 0]  # red increases down the ramp
    assert array[0, 0, 1] > array[-1, -1, 1]  # green decreases


def test_8bit_tiff_kept(tmp_path: Path) -> None:
    rgb = np.asarray(real_photo().resize((32, 24)))
    tifffile.imwrite(tmp_path / "photo.tiff", rgb, photometric="rgb")
    np.testing.assert_array_equal(
        np.asarray(load_rgb_image(tmp_path / "photo.tiff")), rgb
    )


def test_multispectral_rejected() -> None:
    with pytest.raises(ImageReadError, match="multispectral"):
        array_to_rgb(np.zeros((8, 8, 6), dtype=np.uint16), "scene.tif")


def test_stretch_constant_and_validation() -> None:
    np.testing.assert_array_equal(
        stretch_to_uint8(np.full((3, 3), 7, dtype=np.uint16)), np.zeros((3, 3))
    )
    with pytest.raises(ValueError, match="percentiles"):
        stretch_to_uint8(np.zeros(3), percentiles=(50.0, 10.0))
    values = np.array([[-9999, 10, 20], [30, 40, -9999]], dtype=np.int16)
    out = stretch_to_uint8(values, percentiles=(0, 100), valid=values != -9999)
    np.testing.assert_array_equal(out, [[0, 0, 85], [170, 255, 0]])
