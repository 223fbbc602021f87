"""Reading images and labels at run time (no OpenMMLab import, no download).

- Robust reading: :func:`load_rgb_image` (8-bit RGB with documented
  conversions, :class:`ImageReadError` naming the file), a header-only check
  of a whole folder before training (:func:`check_images`), errors of
  DataLoader workers delivered intact (:class:`CarryErrors`), label masks
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
    BadImagesError,
    ImageFolderDataset,
    ImageTooSmallError,
    ScanReport,
    check_images,
    find_image_files,
    read_image_size,
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
from lightly_glare.data.worker_errors import (
    CarryErrors,
    collate_carrying_errors,
    raise_carried,
)

__all__ = [
    "AERIAL_BUILDINGS_METAINFO",
    "AERIAL_ROADS_METAINFO",
    "BadImagesError",
    "CarryErrors",
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
    "check_images",
    "check_label_values",
    "collate_carrying_errors",
    "derive_seed",
    "draw_order",
    "find_image_files",
    "load_image_and_mask",
    "load_label_mask",
    "load_rgb_image",
    "raise_carried",
    "read_image_size",
    "stretch_to_uint8",
]
