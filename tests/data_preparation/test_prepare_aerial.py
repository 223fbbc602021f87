"""Real solaris data: downloads solaris 0.2.1 / 0.4.0 (28 MB) into the cache once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lightly_glare.data import (
    AERIAL_BUILDINGS_METAINFO,
    AERIAL_ROADS_METAINFO,
    ImageFolderDataset,
    load_image_and_mask,
    stretch_to_uint8,
)
from lightly_glare.data_preparation import (
    fetch_distribution,
    prepare_aerial,
    read_member,
)
from lightly_glare.data_preparation.aerial import (
    AERIAL_SCENES,
    num_val_rows,
    read_scene_mask,
)
from lightly_glare.data_preparation.geotiff import (
    rasterize_footprints,
    read_pixel_grid,
    read_tiff_bytes,
)

TILE = 128


def _read(path: Path) -> Image.Image:
    """Opens, decodes and closes an image file."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


@pytest.fixture(scope="module")
def aerial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("aerial")
    return root, prepare_aerial(root, tile_size=TILE)


def _boxes(tiles: list[dict[str, Any]], source: str, split: str) -> list[tuple]:
    return [
        (t["top"], t["left"], t["top"] + t["size"], t["left"] + t["size"])
        for t in tiles
        if t["source"] == source and t["split"] == split
    ]


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_counts(aerial: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = aerial
    summary = manifest["summary"]
    # 900 px -> 7 x 7 tiles, 2 bottom rows val; 1300 px -> 10 x 10, 3 rows val.
    assert summary["buildings"]["tiles"] == {"train": 35, "val": 14}
    assert summary["roads"]["tiles"] == {"train": 70, "val": 30}
    for dataset in ("buildings", "roads"):
        for split, count in summary[dataset]["tiles"].items():
            images = sorted((root / dataset / "img_dir" / split).glob("*.png"))
            anns = sorted((root / dataset / "ann_dir" / split).glob("*.png"))
            assert len(images) == len(anns) == count
            assert [p.name for p in images] == [p.name for p in anns]
    assert summary["landsat"] == "included"
    unlabeled = summary["unlabeled"]
    assert unlabeled["buildings"] == 35 and unlabeled["roads"] == 70
    assert unlabeled["landsat"] > 200
    assert len(list((root / "unlabeled").glob("*.png"))) == unlabeled["total"]


def test_train_val_unlabeled_do_not_overlap(
    aerial: tuple[Path, dict[str, Any]],
) -> None:
    _, manifest = aerial
    tiles = manifest["tiles"]
    for source in ("buildings", "roads"):
        train = _boxes(tiles, source, "train")
        val = _boxes(tiles, source, "val")
        unlabeled = _boxes(tiles, source, "unlabeled")
        assert train and val
        assert not any(_overlap(a, b) for a in train + unlabeled for b in val)
        # labelled tiles of one split never overlap each other either
        assert not any(_overlap(a, b) for i, a in enumerate(train) for b in train[:i])
        assert max(box[2] for box in train) <= min(box[0] for box in val)


def test_tiles_are_rgb8_with_valid_masks(aerial: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = aerial
    classes = {"buildings": 2, "roads": 2}
    seen = {"buildings": set(), "roads": set()}
    for tile in manifest["tiles"]:
        if tile["split"] == "unlabeled":
            image = _read(root / tile["image"])
            assert image.mode == "RGB" and image.size == (TILE, TILE)
            continue
        image, mask = load_image_and_mask(
            root / tile["image"], root / tile["ann"], classes[tile["source"]]
        )
        assert _read(root / tile["image"]).mode == "RGB"
        assert image.size == (TILE, TILE)
        assert _read(root / tile["ann"]).mode == "L"
        seen[tile["source"]] |= set(np.unique(mask).tolist())
    assert seen == {"buildings": {0, 1}, "roads": {0, 1}}


def test_tiles_match_the_source_rasters(aerial: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = aerial
    wheel = fetch_distribution("solaris", "0.2.1")
    for scene in AERIAL_SCENES:
        raw, _ = read_tiff_bytes(read_member(wheel, scene.image_member))
        scene_mask = read_scene_mask(scene, wheel)
        stretched = stretch_to_uint8(raw)
        tiles = [t for t in manifest["tiles"] if t["source"] == scene.name]
        for tile in tiles[:: max(len(tiles) // 12, 1)]:
            window = np.s_[
                tile["top"] : tile["top"] + TILE, tile["left"] : tile["left"] + TILE
            ]
            image = np.asarray(_read(root / tile["image"]))
            np.testing.assert_array_equal(image[..., 0], stretched[window])
            np.testing.assert_array_equal(image[..., 1], image[..., 2])
            if "ann" in tile:
                mask = np.asarray(_read(root / tile["ann"]))
                np.testing.assert_array_equal(mask, scene_mask[window])


def test_class_frequencies(aerial: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = aerial
    for dataset, metainfo in [
        ("buildings", AERIAL_BUILDINGS_METAINFO),
        ("roads", AERIAL_ROADS_METAINFO),
    ]:
        frequencies = manifest["summary"][dataset]["class_pixel_frequencies"]
        for split in ("train", "val"):
            masks = [
                np.asarray(_read(p))
                for p in (root / dataset / "ann_dir" / split).glob("*.png")
            ]
            foreground = float(np.mean([m.mean() for m in masks]))
            assert frequencies[split][metainfo["classes"][1]] == pytest.approx(
                foreground, abs=1e-5
            )
            assert 0.005 < foreground < 0.5


def test_unlabeled_folder_loads(aerial: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = aerial
    dataset = ImageFolderDataset(root / "unlabeled")
    assert len(dataset) == manifest["summary"]["unlabeled"]["total"]
    image, target, name = dataset[0]
    assert image.size == (TILE, TILE) and target == 0 and name.endswith(".png")


def test_idempotent_and_force(aerial: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = aerial
    some_tile = root / manifest["tiles"][0]["image"]
    mtime = some_tile.stat().st_mtime_ns
    messages: list[str] = []
    again = prepare_aerial(root, tile_size=TILE, log=messages.append)
    assert again == manifest
    assert some_tile.stat().st_mtime_ns == mtime
    assert any("already prepared" in m for m in messages)
    assert not list(root.glob(".staging-*"))


def test_stride_and_no_landsat(tmp_path: Path) -> None:
    manifest = prepare_aerial(
        tmp_path, tile_size=TILE, unlabeled_stride=64, landsat=False
    )
    assert manifest["summary"]["landsat"] == "not requested"
    unlabeled = manifest["summary"]["unlabeled"]
    # train regions 640 x 896 and 896 x 1300 px: (640-128)/64+1 = 9 rows x 13 cols
    assert unlabeled["buildings"] == 9 * 13 and unlabeled["roads"] == 13 * 19
    assert unlabeled["landsat"] == 0
    for source in ("buildings", "roads"):
        val = _boxes(manifest["tiles"], source, "val")
        for box in _boxes(manifest["tiles"], source, "unlabeled"):
            assert not any(_overlap(box, v) for v in val)
    # a stray file is removed by a forced rebuild
    stray = tmp_path / "buildings" / "img_dir" / "train" / "stray.png"
    stray.write_bytes(b"x")
    prepare_aerial(tmp_path, tile_size=TILE, unlabeled_stride=64, landsat=False)
    assert stray.exists()  # same parameters, files present: untouched
    prepare_aerial(
        tmp_path, tile_size=TILE, unlabeled_stride=64, landsat=False, force=True
    )
    assert not stray.exists()


def test_num_val_rows() -> None:
    assert num_val_rows(7, 0.25) == 2
    assert num_val_rows(10, 0.25) == 3
    assert num_val_rows(1, 0.5) == 0
    assert num_val_rows(4, 0.0) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        num_val_rows(4, 1.0)


def _square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y - side], [x, y - side], [x, y]]


def test_rasterize_footprints_exact_pixels() -> None:
    # 10 x 10 grid, top-left corner at (100, 50), 2 CRS units per pixel.
    grid = (100.0, 50.0, 2.0, 2.0)
    outer = _square(104.0, 46.0, 12.0)  # columns and rows 2..7
    hole = _square(108.0, 42.0, 4.0)  # columns and rows 4..5
    corner = _square(100.0, 50.0, 2.0)  # pixel (0, 0)
    beyond = _square(80.0, 50.0, 6.0)  # left of the image
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {"geometry": {"type": "Polygon", "coordinates": [outer, hole]}},
            {"geometry": {"type": "MultiPolygon", "coordinates": [[corner], [beyond]]}},
        ],
    }
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[2:8, 2:8] = 1
    expected[4:6, 4:6] = 0
    expected[0, 0] = 1
    np.testing.assert_array_equal(
        rasterize_footprints(geojson, (10, 10), grid), expected
    )
    with pytest.raises(ValueError, match="LineString"):
        rasterize_footprints(
            {"features": [{"geometry": {"type": "LineString", "coordinates": []}}]},
            (10, 10),
            grid,
        )


def test_building_labels_are_this_images_footprints() -> None:
    # solaris's sample_fp_mask.tif belongs to another tile; the labels are the
    # footprint polygons of geotiff_labels.geojson on the GeoTIFF's own grid.
    wheel = fetch_distribution("solaris", "0.2.1")
    scene = next(s for s in AERIAL_SCENES if s.name == "buildings")
    image_bytes = read_member(wheel, scene.image_member)
    x0, y0, width, height = read_pixel_grid(image_bytes)
    assert (x0, y0, width, height) == (733601.0, 3725139.0, 0.5, 0.5)
    mask = read_scene_mask(scene, wheel)
    assert mask.shape == (900, 900)
    import json

    features = json.loads(read_member(wheel, scene.labels_member))["features"]
    assert len(features) == 43
    polygon_area = 0.0
    for feature in features:
        alone = rasterize_footprints(
            {"features": [feature]}, mask.shape, (x0, y0, width, height)
        )
        assert alone.any() and not (alone & (1 - mask)).any()
        ring = np.asarray(feature["geometry"]["coordinates"][0])[:, :2]
        x, y = ring[:, 0], ring[:, 1]  # shoelace area in CRS units
        polygon_area += 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    assert mask.sum() * width * height == pytest.approx(polygon_area, rel=0.05)
    assert 0.03 < mask.mean() < 0.06
    old, _ = read_tiff_bytes(read_member(wheel, "solaris/data/sample_fp_mask.tif"))
    old = old > 0
    iou = (old & (mask > 0)).sum() / (old | (mask > 0)).sum()
    assert iou < 0.1
