"""GLARE's transforms (pure PyTorch + torchvision + lightly; no OpenMMLab import).

:class:`GlareTransform`: two augmented views of an image with their crop
geometry, in the ``(5,)`` format of :func:`view_geometry`.

The batch-side operations that GLARE applies inside its forward pass live in
:mod:`lightly_glare.models`: patch correspondences between views
(:mod:`lightly_glare.models.geometry`) and the patch-level augmentations
(:mod:`lightly_glare.models.patch_augmentations`). The patch augmentations are
re-exported here as well, because users pick one when they build
:class:`~lightly_glare.models.GLARE` (``patch_augmentation=PatchNoise()``);
``from lightly_glare.transforms import PatchBlur`` keeps working.
"""

from lightly_glare.models.geometry import (
    GEOMETRY_SIZE,
    patch_grid_mask_to_pixels,
    view_geometry,
)
from lightly_glare.models.patch_augmentations import (
    PATCH_AUGMENTATIONS,
    PatchAugmentation,
    PatchBlur,
    PatchColorJitter,
    PatchMasking,
    PatchNoise,
    build_patch_augmentation,
)
from lightly_glare.transforms.glare_transform import (
    Box,
    GlareTransform,
    RandomGaussianBlur,
    RandomSolarization,
    box_overlap,
)

__all__ = [
    "GEOMETRY_SIZE",
    "PATCH_AUGMENTATIONS",
    "Box",
    "GlareTransform",
    "PatchAugmentation",
    "PatchBlur",
    "PatchColorJitter",
    "PatchMasking",
    "PatchNoise",
    "RandomGaussianBlur",
    "RandomSolarization",
    "box_overlap",
    "build_patch_augmentation",
    "patch_grid_mask_to_pixels",
    "view_geometry",
]
