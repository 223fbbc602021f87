"""mmseg datasets for the offline real data (``prepare_data`` tool).

The data are prepared by ``tools/dataset_converters/prepare_data.py``.

Each prepared folder has mmseg's standard layout: ``img_dir/{train,val}/*.png``
(RGB) and ``ann_dir/{train,val}/*.png`` (label values ``0 .. C-1``, no ignore
label, so ``reduce_zero_label=False``). Class names and palettes come from
:mod:`lightly_glare.data.metainfo`.
"""

from __future__ import annotations

from typing import Any

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from lightly_glare.data import (
    AERIAL_BUILDINGS_METAINFO,
    AERIAL_ROADS_METAINFO,
    MRI_METAINFO,
)
from lightly_glare.openmmlab.config_validation import validate_arguments


@validate_arguments
class PreparedSegDataset(BaseSegDataset):
    """Base of the prepared datasets: PNG images and PNG label maps.

    Its arguments, and those of ``BaseSegDataset`` it forwards, are checked at
    build time (:func:`~lightly_glare.openmmlab.config_validation.validate_arguments`,
    inherited by the registered subclasses).

    Args:
        img_suffix (str): Suffix of the images. Defaults to '.png'.
        seg_map_suffix (str): Suffix of the label maps. Defaults to '.png'.
        reduce_zero_label (bool): Whether label 0 is ignored. Defaults to False
            (0 is the background class).
        **kwargs: Further arguments of ``BaseSegDataset`` (``data_root``,
            ``data_prefix``, ``pipeline``, ...).
    """

    def __init__(
        self,
        img_suffix: str = ".png",
        seg_map_suffix: str = ".png",
        reduce_zero_label: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs,
        )


@DATASETS.register_module()
class AerialBuildingsDataset(PreparedSegDataset):
    """solaris aerial tiles with building footprints (background, building).

    Prepared by ``tools/dataset_converters/prepare_data.py aerial --out OUT``
    into ``OUT/buildings``
    (see :func:`lightly_glare.data_preparation.prepare_aerial`).
    """

    METAINFO = AERIAL_BUILDINGS_METAINFO


@DATASETS.register_module()
class AerialRoadsDataset(PreparedSegDataset):
    """solaris aerial tiles with road masks (background, road).

    Prepared by ``tools/dataset_converters/prepare_data.py aerial --out OUT``
    into ``OUT/roads``
    (see :func:`lightly_glare.data_preparation.prepare_aerial`).
    """

    METAINFO = AERIAL_ROADS_METAINFO


@DATASETS.register_module()
class MRITissueDataset(PreparedSegDataset):
    """MNI152 T1 axial slices: background/CSF, grey matter, white matter.

    Prepared by ``tools/dataset_converters/prepare_data.py mri --out OUT``
    into ``OUT`` (see
    :func:`lightly_glare.data_preparation.prepare_mri`).
    """

    METAINFO = MRI_METAINFO
