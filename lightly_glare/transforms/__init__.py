"""GLARE's transforms (pure PyTorch + torchvision + lightly; no OpenMMLab import).

Two augmented views with their crop geometry, exact patch correspondences
between views, and patch-level augmentations.
"""

from lightly_glare.transforms.geometry import (
    GEOMETRY_SIZE,
    bilinear_gather,
    crop_overlap,
    map_coords,
    map_patch_centers,
    match_patches,
    nearest_patch_index,
    patch_centers,
    transfer_masks,
    view_geometry,
)
from lightly_glare.transforms.glare_transform import (
    Box,
    GlareTransform,
    RandomGaussianBlur,
    RandomSolarization,
    box_overlap,
)
from lightly_glare.transforms.patch_augmentations import (
    PATCH_AUGMENTATIONS,
    PatchAugmentation,
    PatchBlur,
    PatchColorJitter,
    PatchMasking,
    PatchNoise,
    build_patch_augmentation,
    patch_grid_mask_to_pixels,
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
    "bilinear_gather",
    "box_overlap",
    "build_patch_augmentation",
    "crop_overlap",
    "map_coords",
    "map_patch_centers",
    "match_patches",
    "nearest_patch_index",
    "patch_centers",
    "patch_grid_mask_to_pixels",
    "transfer_masks",
    "view_geometry",
]
