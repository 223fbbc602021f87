"""Class names and palettes of the prepared real datasets (mmseg ``METAINFO`` form).

Each dict has the keys mmseg's ``BaseSegDataset.METAINFO`` uses: ``classes``
(a tuple of names; label value ``i`` is ``classes[i]``, 255 is ignored) and
``palette`` (one ``[R, G, B]`` per class, for visualisation). The OpenMMLab
dataset classes reuse them, e.g. ``METAINFO = AERIAL_BUILDINGS_METAINFO``
(mmseg deep-copies it).
"""

from __future__ import annotations

from typing import Any

#: solaris ``sample_geotiff.tif`` + footprints rasterised from
#: ``geotiff_labels.geojson`` (buildings; :mod:`lightly_glare.data_preparation.aerial`).
AERIAL_BUILDINGS_METAINFO: dict[str, Any] = {
    "classes": ("background", "building"),
    "palette": [[0, 0, 0], [255, 0, 0]],
}

#: solaris ``road_mask_input.tif`` + ``sample_road_raster_mask.tif`` (roads).
AERIAL_ROADS_METAINFO: dict[str, Any] = {
    "classes": ("background", "road"),
    "palette": [[0, 0, 0], [255, 255, 0]],
}

#: MNI ICBM152 2009a axial slices (nilearn): tissue classes from the GM/WM maps.
MRI_METAINFO: dict[str, Any] = {
    "classes": ("background", "grey_matter", "white_matter"),
    "palette": [[0, 0, 0], [128, 128, 128], [255, 255, 255]],
}

#: elpv solar cells: image-level defect probabilities (no masks), two cell types.
#: Data licence CC-BY-NC-SA-4.0: download it, never redistribute it.
ELPV_METAINFO: dict[str, Any] = {
    "classes": ("functional", "defective"),
    "defect_probabilities": (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0),
    "cell_types": ("mono", "poly"),
    "license": "CC-BY-NC-SA-4.0",
}
