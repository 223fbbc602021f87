"""Real elpv data: downloads the 87 MB elpv-dataset wheel into the cache once.

The images are CC-BY-NC-SA-4.0: they stay in the cache and in tmp folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightly_glare.data import ImageFolderDataset
from lightly_glare.data_preparation import load_elpv_labels, prepare_elpv


def _read(path: Path) -> Image.Image:
    """Opens, decodes and closes an image file."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


@pytest.fixture(scope="module")
def elpv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("elpv")
    prepare_elpv(root)
    return root


def test_images_labels_and_split(elpv: Path) -> None:
    records = load_elpv_labels(elpv)
    assert len(records) == 2624
    assert [r.file for r in records[:2]] == [
        "images/cell0001.png",
        "images/cell0002.png",
    ]
    splits = [r.split for r in records]
    assert splits.count("train") == 1968 and splits.count("test") == 656
    order = np.random.default_rng(0).permutation(2624)
    assert {i for i, s in enumerate(splits) if s == "train"} == set(
        order[:1968].tolist()
    )
    assert {round(r.defect_probability, 4) for r in records} == {
        0.0,
        0.3333,
        0.6667,
        1.0,
    }
    assert {r.cell_type for r in records} == {"mono", "poly"}
    assert "CC-BY-NC-SA-4.0" in (elpv / "LICENSE_NOTE.txt").read_text()
    for record in records[::400]:
        image = _read(elpv / record.file)
        assert image.mode == "L" and image.size == (300, 300)


def test_summary_and_idempotent(elpv: Path) -> None:
    manifest = prepare_elpv(elpv)
    summary = manifest["summary"]
    assert summary["train"]["images"] == 1968 and summary["test"]["images"] == 656
    total = {
        p: summary["train"]["defect_probability"].get(p, 0)
        + summary["test"]["defect_probability"].get(p, 0)
        for p in ("0.0", "0.3333", "0.6667", "1.0")
    }
    assert total == {"0.0": 1508, "0.3333": 295, "0.6667": 106, "1.0": 715}


def test_folder_dataset_reads_cells_as_rgb(elpv: Path) -> None:
    dataset = ImageFolderDataset(elpv / "images")
    assert len(dataset) == 2624
    image, _, name = dataset[0]
    assert name == "cell0001.png" and image.mode == "RGB" and image.size == (300, 300)
