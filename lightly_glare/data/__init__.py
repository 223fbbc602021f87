"""Reading images and labels at run time (no OpenMMLab import, no download).

- Robust reading: :func:`load_rgb_image` (8-bit RGB with documented
  conversions, :class:`ImageReadError` naming the file), label masks
  (:func:`load_label_mask`, :func:`load_image_and_mask`) and the unlabeled
  :class:`ImageFolderDataset` for continual pre-training.
- Class names and palettes for the OpenMMLab dataset classes:
  ``AERIAL_BUILDINGS_METAINFO``, ``AERIAL_ROADS_METAINFO``, ``MRI_METAINFO``,
  ``ELPV_METAINFO``.

Downloading and converting the offline real datasets is
:mod:`lightly_glare.data_preparation` (command line:
``tools/dataset_converters/prepare_data.py``).
"""

from lightly_glare.data.image_folder import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    ImageTooSmallError,
    ScanReport,
)
from lightly_glare.data.image_io import (
    STRETCH_PERCENTILES,
    ImageReadError,
    array_to_rgb,
    load_rgb_image,
    stretch_to_uint8,
)
from lightly_glare.data.masks import (
    LabelMaskError,
    check_label_values,
    load_image_and_mask,
    load_label_mask,
)
from lightly_glare.data.metainfo import (
    AERIAL_BUILDINGS_METAINFO,
    AERIAL_ROADS_METAINFO,
    ELPV_METAINFO,
    MRI_METAINFO,
)
from lightly_glare.data.seeded import (
    DrawSampler,
    SeededDataset,
    derive_seed,
    draw_order,
)

__all__ = [
    "AERIAL_BUILDINGS_METAINFO",
    "AERIAL_ROADS_METAINFO",
    "DrawSampler",
    "ELPV_METAINFO",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ImageReadError",
    "ImageTooSmallError",
    "LabelMaskError",
    "MRI_METAINFO",
    "STRETCH_PERCENTILES",
    "ScanReport",
    "SeededDataset",
    "array_to_rgb",
    "check_label_values",
    "derive_seed",
    "draw_order",
    "load_image_and_mask",
    "load_label_mask",
    "load_rgb_image",
    "stretch_to_uint8",
]
