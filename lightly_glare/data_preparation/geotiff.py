"""Reading the solaris GeoTIFFs and rasterising GeoJSON building footprints.

What :mod:`lightly_glare.data_preparation.aerial` needs of the geospatial
formats, without GDAL: the first page and nodata value of a TIFF, the pixel
grid of a north-up GeoTIFF, and an even-odd polygon fill of footprints onto it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightly_glare.data_preparation.cache import import_data_extra


def _tifffile() -> Any:
    return import_data_extra("tifffile", "Reading the solaris GeoTIFFs")


def read_tiff_bytes(data: bytes) -> tuple[NDArray[Any], float | None]:
    """The first page of a TIFF held in memory and its GDAL nodata value."""
    with _tifffile().TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        tag = page.tags.get("GDAL_NODATA")
        nodata = float(str(tag.value).strip("\x00 ")) if tag is not None else None
        return np.asarray(page.asarray()), nodata


def read_pixel_grid(data: bytes) -> tuple[float, float, float, float]:
    """A north-up GeoTIFF's ``(x0, y0, pixel_width, pixel_height)``.

    ``(x0, y0)`` are the CRS coordinates of the top-left corner of pixel
    (0, 0), from the ``ModelTiepointTag`` and ``ModelPixelScaleTag``.

    Raises:
        ValueError: If the tags are missing or the tie point is not at pixel
            (0, 0).
    """
    with _tifffile().TiffFile(io.BytesIO(data)) as tiff:
        tags = tiff.pages[0].tags
        tiepoint, scale = tags.get("ModelTiepointTag"), tags.get("ModelPixelScaleTag")
        if tiepoint is None or scale is None:
            raise ValueError("The GeoTIFF has no tie point or pixel scale tags.")
        i, j, _, x0, y0, _ = tiepoint.value[:6]
        if i != 0 or j != 0:
            raise ValueError(f"Tie point at pixel ({i}, {j}); expected (0, 0).")
        return float(x0), float(y0), float(scale.value[0]), float(scale.value[1])


def _inside_ring(
    ring: NDArray[np.float64], columns: NDArray[np.float64], rows: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Even-odd test of points ``(columns, rows)`` against a closed ring (K, 2)."""
    inside = np.zeros(np.broadcast(columns, rows).shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(ring[:-1], ring[1:], strict=True):
        if ya == yb:
            continue  # a horizontal edge is never crossed by a horizontal ray
        crosses = (ya > rows) != (yb > rows)
        x_cross = xa + (rows - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (columns < x_cross)
    return inside


def rasterize_footprints(
    geojson: dict[str, Any],
    shape: tuple[int, int],
    grid: tuple[float, float, float, float],
) -> NDArray[np.uint8]:
    """Burns GeoJSON (multi)polygons into a 0/1 mask of the image's grid.

    A pixel is labelled when its centre lies inside a polygon (even-odd rule
    over the polygon's rings, so holes are excluded).

    Args:
        geojson: A FeatureCollection in the image's CRS.
        shape: ``(height, width)`` of the image.
        grid: ``(x0, y0, pixel_width, pixel_height)`` from
            :func:`read_pixel_grid` (north-up: rows grow southwards).

    Returns:
        ``(height, width)`` uint8 mask.

    Raises:
        ValueError: If a geometry is not a polygon.
    """
    x0, y0, pixel_width, pixel_height = grid
    mask = np.zeros(shape, dtype=np.uint8)
    for feature in geojson["features"]:
        geometry: dict[str, Any] = feature.get("geometry") or {}
        kind = geometry.get("type")
        coordinates: list[Any] = geometry.get("coordinates") or []
        if kind not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"Expected polygon footprints, got a {kind} geometry.")
        for polygon in [coordinates] if kind == "Polygon" else coordinates:
            rings = [  # in pixel units: column, row
                np.stack(
                    [
                        (np.asarray(ring)[:, 0] - x0) / pixel_width,
                        (y0 - np.asarray(ring)[:, 1]) / pixel_height,
                    ],
                    axis=1,
                )
                for ring in polygon
            ]
            low = np.clip(np.floor(rings[0].min(axis=0)).astype(int), 0, None)
            high = np.minimum(np.ceil(rings[0].max(axis=0)).astype(int), shape[::-1])
            if (high <= low).any():
                continue  # entirely outside the image
            rows = np.arange(low[1], high[1])[:, None] + 0.5  # pixel centres
            columns = np.arange(low[0], high[0])[None, :] + 0.5
            inside = np.zeros((len(rows), columns.shape[1]), dtype=bool)
            for ring in rings:
                inside ^= _inside_ring(ring, columns, rows)
            mask[low[1] : high[1], low[0] : high[0]] |= inside.astype(np.uint8)
    return mask
