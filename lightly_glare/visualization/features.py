"""The numbers behind the figures: attention maps and PCA of patch features.

Pure and deterministic tensor functions (PyTorch; no matplotlib, no OpenMMLab):

* :func:`attention_maps`: each head's [CLS] attention of the last block over
  the patch grid, and :func:`attention_mass_mask`, the smallest set of patches
  that holds a fraction ``mass`` (0.6) of a head's attention -- the rule GLARE's
  region sampler uses (:func:`lightly_glare.models.attention_mass_masks`),
  following DINO's ``visualize_attention.py``;
* :func:`patch_tokens` and :func:`pca_rgb`: the first three principal
  components of the patch tokens, fitted jointly over several images, as RGB
  (DINOv2's Fig. 1), optionally with the background removed by thresholding
  the first component;
* :func:`preprocess_image`: the center crop and ImageNet normalisation.

The figures are drawn by :mod:`lightly_glare.visualization.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor

from lightly_glare.models.adapted_vit import UniAdapterViT
from lightly_glare.models.defaults import REGION_MASS
from lightly_glare.models.region_sampler import attention_mass_masks

#: ImageNet channel mean and standard deviation (timm / torchvision convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------


def preprocess_image(
    image: Image.Image, img_size: int, patch_size: int
) -> tuple[NDArray[np.uint8], Tensor]:
    """Resizes the shorter side to ``img_size``, center-crops and normalises.

    Args:
        image: Any PIL image (converted to RGB).
        img_size: Side S of the square crop; must be a multiple of
            ``patch_size``.
        patch_size: Patch size of the ViT.

    Returns:
        The crop as uint8 RGB, shape (S, S, 3), and the ImageNet-normalised
        float tensor, shape (3, S, S).

    Raises:
        ValueError: ``img_size`` is not a positive multiple of ``patch_size``.
    """
    if img_size <= 0 or img_size % patch_size != 0:
        nearest = max(1, round(img_size / patch_size)) * patch_size
        raise ValueError(
            f"img_size must be a positive multiple of the patch size {patch_size}, "
            f"got {img_size} (e.g. {nearest})."
        )
    image = image.convert("RGB")
    width, height = image.size
    scale = img_size / min(width, height)
    new_width = max(img_size, round(width * scale))
    new_height = max(img_size, round(height * scale))
    image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left = (new_width - img_size) // 2
    top = (new_height - img_size) // 2
    image = image.crop((left, top, left + img_size, top + img_size))
    rgb = np.asarray(image, dtype=np.uint8).copy()  # (S, S, 3)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0  # (3, S, S)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return rgb, (tensor - mean) / std


def _check_image(backbone: UniAdapterViT, image: Tensor) -> tuple[int, int]:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"Expected one image of shape (3, H, W), got {tuple(image.shape)}."
        )
    height, width = int(image.shape[1]), int(image.shape[2])
    patch = backbone.patch_size
    if height % patch or width % patch:
        raise ValueError(
            f"Image size {height} x {width} is not a multiple of the patch size "
            f"{patch}."
        )
    return backbone.grid_size(height, width)


@torch.no_grad()
def _forward(
    backbone: UniAdapterViT, image: Tensor, return_cls_attention: bool
) -> tuple[Tensor, Tensor | None]:
    """Runs ``backbone`` in eval mode on one image, restoring its mode after."""
    was_training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        output = backbone.forward_features(
            image[None].to(device), return_cls_attention=return_cls_attention
        )
    finally:
        backbone.train(was_training)
    attention = None if output.cls_attention is None else output.cls_attention[0]
    return output.tokens[0], attention


def attention_maps(backbone: UniAdapterViT, image: Tensor) -> Tensor:
    """Last-block [CLS] attention to the patches, per head, on the patch grid.

    The class/register columns are dropped and each head's row is renormalised
    over the patches (as GLARE's region sampler sees it). The backbone runs in
    eval mode without gradients; its training mode is restored afterwards.

    Args:
        backbone: The (adapted) backbone.
        image: One normalised image, shape (3, H, W), H and W multiples of the
            patch size.

    Returns:
        Float32 maps on the CPU, shape (heads, h, w), each summing to 1.
    """
    grid = _check_image(backbone, image)
    _, attention = _forward(backbone, image, return_cls_attention=True)
    assert attention is not None  # requested above
    return attention.float().cpu().reshape(-1, *grid)  # (heads, h, w)


def patch_tokens(
    backbone: UniAdapterViT, image: Tensor
) -> tuple[Tensor, tuple[int, int]]:
    """Patch tokens (after the final norm) of one image and their grid.

    Args:
        backbone: The (adapted) backbone.
        image: One normalised image, shape (3, H, W).

    Returns:
        Float32 tokens on the CPU, shape (N, D) with N = h * w in row-major
        grid order, and the grid (h, w).
    """
    grid = _check_image(backbone, image)
    tokens, _ = _forward(backbone, image, return_cls_attention=False)
    return tokens[backbone.num_prefix_tokens :].float().cpu(), grid  # (N, D)


def attention_mass_mask(maps: Tensor, mass: float = REGION_MASS) -> Tensor:
    """DINO's mask: per head, the fewest patches holding ``mass`` of the attention.

    Args:
        maps: Non-negative maps, shape (heads, h, w); each is renormalised to
            sum to 1 first.
        mass: Fraction of the attention mass to keep, in (0, 1].

    Returns:
        Boolean masks, shape (heads, h, w). The most attended patch is always
        kept.
    """
    if maps.ndim != 3:
        raise ValueError(f"Expected maps of shape (heads, h, w), got {maps.shape}.")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}.")
    flat = maps.float().flatten(1)  # (heads, N)
    flat = flat / flat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return attention_mass_masks(flat, mass).reshape(maps.shape)


# --------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------


def _principal_axes(features: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and the first ``count`` principal axes, with a deterministic sign.

    Exact SVD in float64 of the centred features (no randomised solver). Each
    axis is oriented so that its largest-magnitude loading is positive.

    Args:
        features: Shape (M, D).
        count: Number of axes wanted.

    Returns:
        Mean with shape (D,) and axes with shape (k, D): k <= count axes whose
        singular values are not negligible (above 1e-6 times the largest).
    """
    mean = features.mean(dim=0)  # (D,)
    _, singular, vh = torch.linalg.svd(features - mean, full_matrices=False)
    rank = int((singular > 1e-6 * singular[:1].clamp_min(1e-300)).sum())
    axes = vh[: min(count, rank)]  # (k, D)
    largest = axes.abs().argmax(dim=1)  # (k,)
    signs = axes.gather(1, largest[:, None]).sign()  # (k, 1)
    return mean, axes * torch.where(signs == 0, 1.0, signs)


def _min_max(scores: Tensor) -> Tensor:
    """Scales each column of (M, k) scores to [0, 1]; constant columns give 0."""
    low = scores.min(dim=0).values
    span = scores.max(dim=0).values - low
    return (scores - low) / torch.where(span > 0, span, 1.0)


def _border(grid: tuple[int, int]) -> Tensor:
    """Boolean (h * w,) mask of the patches on the grid's border."""
    h, w = grid
    border = torch.zeros(h, w, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    return border.flatten()


def _checked_grids(
    tokens_list: Sequence[Tensor],
    grid: tuple[int, int] | Sequence[tuple[int, int]],
) -> list[tuple[int, int]]:
    """One (h, w) per image, refusing tensors that do not fit (see pca_rgb)."""
    if not tokens_list:
        raise ValueError("pca_rgb needs at least one image's patch tokens.")
    if all(not isinstance(size, Sequence) for size in grid):  # one (h, w)
        grids = [(int(grid[0]), int(grid[1]))] * len(tokens_list)  # type: ignore[arg-type]
    else:
        grids = [(int(g[0]), int(g[1])) for g in grid]  # type: ignore[index]
    if len(grids) != len(tokens_list):
        raise ValueError(
            f"Got {len(tokens_list)} token tensors but {len(grids)} grids."
        )
    for index, (tokens, (h, w)) in enumerate(zip(tokens_list, grids, strict=True)):
        if tokens.ndim != 2 or tokens.shape[0] != h * w:
            raise ValueError(
                f"Image {index}: expected tokens of shape ({h * w}, D) for grid "
                f"{(h, w)}, got {tuple(tokens.shape)}."
            )
        if tokens.shape[1] != tokens_list[0].shape[1]:
            raise ValueError(
                f"Image {index} has token dimension {tokens.shape[1]}, image 0 "
                f"has {tokens_list[0].shape[1]}."
            )
    return grids


@overload
def pca_rgb(
    patch_tokens: Tensor,
    grid: tuple[int, int],
    remove_background: bool = ...,
    background_threshold: float = ...,
) -> NDArray[np.float32]: ...


@overload
def pca_rgb(
    patch_tokens: Sequence[Tensor],
    grid: tuple[int, int] | Sequence[tuple[int, int]],
    remove_background: bool = ...,
    background_threshold: float = ...,
) -> list[NDArray[np.float32]]: ...


def pca_rgb(
    patch_tokens: Tensor | Sequence[Tensor],
    grid: tuple[int, int] | Sequence[tuple[int, int]],
    remove_background: bool = False,
    background_threshold: float = 0.0,
) -> NDArray[np.float32] | list[NDArray[np.float32]]:
    """The first three principal components of patch features as RGB.

    The PCA is fitted jointly over all given images, so equal colours mean
    similar features across images (DINOv2, Fig. 1; GLARE, Fig. 5). It is an
    exact float64 SVD of the centred features; each principal axis is oriented
    so that its largest-magnitude loading is positive, so results are
    reproducible. Every component is min-max scaled to [0, 1] over all
    (foreground) patches of all images and becomes one colour channel
    (component 1 red, 2 green, 3 blue).

    Background removal (DINOv2's recipe): a first PCA over all patches; patches
    whose first-component score, in units of its standard deviation, is above
    ``background_threshold`` are foreground (0 is DINOv2's "positive value"
    rule). The sign of the first component is arbitrary, so it is oriented
    (ours) such that the mean score of the patches on the images' borders is
    negative -- objects are assumed to be away from the border. The second PCA, whose
    three components give the colours, is fitted on the foreground patches
    only; background patches are black.

    Args:
        patch_tokens: Patch tokens of one image, shape (N, D) with N = h * w in
            row-major order, or a sequence of such tensors (N may differ).
        grid: The patch grid (h, w), one for all images or one per image.
        remove_background: Apply the background removal above. Defaults to
            False.
        background_threshold: Threshold on the standardised first component.
            Defaults to 0.0.

    Returns:
        For one tensor, a float32 array of shape (h, w, 3) in [0, 1]; for a
        sequence, a list of them. Channels beyond the rank of the centred
        features are 0 (e.g. the blue channel for three clusters).

    Raises:
        ValueError: A tensor is not 2-D, the token dimensions differ or a grid
            does not match its tensor's N.
    """
    single = isinstance(patch_tokens, Tensor)
    tokens_list = [patch_tokens] if isinstance(patch_tokens, Tensor) else patch_tokens
    grids = _checked_grids(tokens_list, grid)
    features = torch.cat([t.detach().cpu().double() for t in tokens_list])  # (M, D)
    foreground = torch.ones(features.shape[0], dtype=torch.bool)  # (M,)
    if remove_background and features.shape[0] > 1:
        mean, axis = _principal_axes(features, 1)  # (D,), (1 or 0, D)
        axis = axis if axis.shape[0] else torch.ones(1, features.shape[1]).double()
        first = ((features - mean) @ axis.T)[:, 0]  # (M,)
        first = first / first.std().clamp_min(1e-12)
        border = torch.cat([_border(g) for g in grids])  # (M,)
        if first[border].mean() > 0:  # orient: the border is background
            first = -first
        foreground = first > background_threshold
    rgb = torch.zeros(features.shape[0], 3, dtype=torch.float64)  # (M, 3)
    if foreground.any():
        selected = features[foreground]  # (F, D)
        mean, axes = _principal_axes(selected, 3)  # (D,), (k, D)
        scores = _min_max((selected - mean) @ axes.T)  # (F, k)
        rgb[foreground, : scores.shape[1]] = scores
    maps = [
        part.reshape(h, w, 3).float().numpy()
        for part, (h, w) in zip(
            rgb.split([t.shape[0] for t in tokens_list]), grids, strict=True
        )
    ]
    return maps[0] if single else maps
