from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from lightly.data import LightlyDataset
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightly_glare.data import (
    CarryErrors,
    ImageFolderDataset,
    ImageReadError,
    ImageTooSmallError,
    check_images,
    collate_carrying_errors,
    find_image_files,
    raise_carried,
    read_image_size,
)
from tests.conftest import real_photo


def _make_folder(root: Path) -> list[str]:
    """A small tree of real images in several formats; returns relative names."""
    photo = real_photo()
    (root / "b_sub").mkdir(parents=True)
    photo.resize((64, 48)).save(root / "a.jpg")
    photo.convert("L").resize((40, 40)).save(root / "b_sub" / "grey.PNG")
    photo.resize((50, 50)).quantize(8).save(root / "b_sub" / "palette.png")
    tifffile.imwrite(root / "c16.tif", (np.arange(900).reshape(30, 30) * 70))
    (root / "notes.txt").write_text("not an image, wrong extension: ignored")
    (root / ".hidden.png").write_text("hidden files are ignored")
    return ["a.jpg", "b_sub/grey.PNG", "b_sub/palette.png", "c16.tif"]


def _add_bad_files(root: Path) -> list[str]:
    data = (root / "a.jpg").read_bytes()
    (root / "z_truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "b_sub" / "text.png").write_text("hello")
    return ["b_sub/text.png", "z_truncated.jpg"]


def test_lists_recursively_sorted_and_returns_lightly_items(tmp_path: Path) -> None:
    names = _make_folder(tmp_path)
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.filenames == names
    for index, name in enumerate(names):
        image, target, filename = dataset[index]
        assert image.mode == "RGB" and target == 0 and filename == name
    assert dataset[3][0].size == (30, 30)


def test_same_filenames_as_lightly_dataset(tmp_path: Path) -> None:
    photo = real_photo()
    for name in ["b.png", "a.jpg", "c.png"]:
        photo.resize((32, 32)).save(tmp_path / name)
    ours = ImageFolderDataset(tmp_path)
    theirs = LightlyDataset(str(tmp_path))
    assert ours.filenames == theirs.get_filenames()
    assert [ours[i][1:] for i in range(3)] == [theirs[i][1:] for i in range(3)]


def test_transform_and_default_collate(tmp_path: Path) -> None:
    _make_folder(tmp_path)
    transform = v2.Compose(
        [v2.ToImage(), v2.Resize((16, 16)), v2.ToDtype(torch.float32, scale=True)]
    )
    loader = DataLoader(ImageFolderDataset(tmp_path, transform=transform), 4)
    images, targets, filenames = next(iter(loader))
    assert images.shape == (4, 3, 16, 16)
    assert targets.tolist() == [0, 0, 0, 0]
    assert filenames[0] == "a.jpg"


def test_empty_folder_names_folder_and_extensions(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError) as info:
        ImageFolderDataset(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert ".png" in str(info.value) and ".tiff" in str(info.value)
    with pytest.raises(ValueError, match=r"\.webp"):
        ImageFolderDataset(tmp_path, extensions=["webp"])
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataset(tmp_path / "missing")


def test_bad_file_raises_lazily_naming_it(tmp_path: Path) -> None:
    _make_folder(tmp_path)
    _add_bad_files(tmp_path)
    dataset = ImageFolderDataset(tmp_path)  # construction does not decode
    assert len(dataset) == 6
    with pytest.raises(ImageReadError, match="z_truncated.jpg"):
        dataset[5]
    with pytest.raises(ImageReadError, match="text.png"):
        dataset[dataset.filenames.index("b_sub/text.png")]


def test_scan_and_verify(tmp_path: Path) -> None:
    names = _make_folder(tmp_path)
    bad = _add_bad_files(tmp_path)
    report = ImageFolderDataset(tmp_path).scan()
    assert report.good == names
    assert [name for name, _ in report.bad] == bad
    assert "not an image" in report.bad[0][1]
    with pytest.raises(ImageReadError) as info:
        ImageFolderDataset(tmp_path, verify=True)
    assert "2 of 6 files" in str(info.value)
    assert all(name in str(info.value) for name in bad)


def test_skip_bad_reports_never_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = _make_folder(tmp_path)
    bad = _add_bad_files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lightly_glare.data.image_folder"):
        dataset = ImageFolderDataset(tmp_path, skip_bad=True)
    assert dataset.filenames == names
    assert [name for name, _ in dataset.skipped] == bad
    warning = caplog.text
    assert "skipped 2 bad file(s) of 6" in warning
    assert all(name in warning for name in bad)
    assert [dataset[i][2] for i in range(len(dataset))] == names


def test_all_bad_with_skip_bad(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("text")
    with pytest.raises(ValueError, match=r"All 1 files .* are bad"):
        ImageFolderDataset(tmp_path, skip_bad=True)


def test_min_size_raises_or_skips(tmp_path: Path) -> None:
    _make_folder(tmp_path)  # sizes 64x48, 40x40, 50x50, 30x30
    dataset = ImageFolderDataset(tmp_path, min_size=41)
    with pytest.raises(ImageTooSmallError, match=r"grey\.PNG.*40x40.*min_size=41"):
        dataset[1]
    assert dataset[0][0].size == (64, 48)  # not upscaled, large enough
    skipping = ImageFolderDataset(tmp_path, min_size=41, skip_bad=True)
    assert skipping.filenames == ["a.jpg", "b_sub/palette.png"]
    assert [name for name, _ in skipping.skipped] == ["b_sub/grey.PNG", "c16.tif"]


def test_check_images_lists_every_bad_file_at_once_from_the_headers(
    tmp_path: Path,
) -> None:
    good = _make_folder(tmp_path)
    bad = _add_bad_files(tmp_path)
    real_photo().resize((1, 1)).save(tmp_path / "tiny.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    real_photo().save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header intact
    files = find_image_files(tmp_path, (".jpg", ".png", ".tif"))
    loads: list[object] = []
    headers = check_images(files, tmp_path, min_size=8, progress=loads.append)
    assert loads == list(range(1, len(files) + 1))  # called after every file
    unreadable = {*bad, "tiny.png", "empty.jpg"}
    # The header check cannot see the missing data of cut.png...
    assert dict(headers.bad).keys() == unreadable
    assert headers.too_small == 1
    assert "1x1 px, smaller than min_size=8" in dict(headers.bad)["tiny.png"]
    assert sorted(headers.good) == sorted([*good, "cut.png"])
    # ...the decoding check does, as training would.
    decoded = check_images(files, tmp_path, min_size=8, decode=True)
    assert dict(decoded.bad).keys() == {*unreadable, "cut.png"}
    assert read_image_size(tmp_path / "a.jpg") == (64, 48)
    assert read_image_size(tmp_path / "c16.tif") == (30, 30)


def test_check_images_reads_headers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_folder(tmp_path)
    files = find_image_files(tmp_path, (".jpg", ".png"))

    def no_decoding(*args: object) -> None:
        raise AssertionError("pixels decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    assert len(check_images(files, tmp_path).good) == len(files)


@pytest.mark.parametrize("workers", [0, 1])
def test_image_errors_of_workers_arrive_as_the_same_image_error(
    tmp_path: Path, workers: int
) -> None:
    _make_folder(tmp_path)
    (tmp_path / "b_sub" / "text.png").write_text("hello")
    dataset = ImageFolderDataset(tmp_path, transform=v2.Compose([v2.ToImage()]))
    loader = DataLoader(
        CarryErrors(dataset),
        batch_size=1,
        num_workers=workers,
        collate_fn=lambda items: collate_carrying_errors(
            items, collate=lambda x: len(x)
        ),
    )
    with pytest.raises(ImageReadError) as caught:
        list(raise_carried(loader))
    error = caught.value
    assert type(error) is ImageReadError  # not torch's RuntimeError wrapper
    assert error.path == str(tmp_path / "b_sub" / "text.png")
    assert str(error) == (
        f"Cannot read image '{error.path}': not an image file (Pillow cannot "
        "identify its format)."
    )
    assert "Traceback" not in str(error) and "\n" not in str(error)
