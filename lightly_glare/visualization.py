"""Attention-map and PCA figures for (adapted) ViT backbones.

Two kinds of figures, as in the GLARE paper:

* **Per-head [CLS] attention of the last block** (GLARE Fig. 2/4, following DINO's
  ``visualize_attention.py``): each head's map over the patch grid, upsampled to
  the image, with the outline of the smallest set of patches that holds a
  fraction ``mass`` (0.6) of the head's attention -- the same rule GLARE's region
  sampler uses (:func:`lightly_glare.models.attention_mass_masks`).
* **PCA of the patch features** (GLARE Fig. 5, following DINOv2's Fig. 1): the
  first three principal components of the patch tokens, fitted jointly over
  several images, shown as RGB; optionally with the background removed by
  thresholding the first component.

The numerical functions (:func:`attention_maps`, :func:`attention_mass_mask`,
:func:`patch_tokens`, :func:`pca_rgb`, :func:`preprocess_image`) are pure and
deterministic. The figure functions import matplotlib lazily and write PNGs of
an exactly known pixel size (see :func:`attention_grid_figure`). No OpenMMLab
import.

Examples:
    >>> image_rgb, image = preprocess_image(Image.open("cat.jpg"), 224, 16)
    >>> maps = attention_maps(backbone, image)  # (heads, 14, 14)
    >>> attention_figure(image_rgb, maps, "attention.png")
    >>> tokens, grid = patch_tokens(backbone, image)  # (196, D), (14, 14)
    >>> pca_figure([image_rgb], [pca_rgb(tokens, grid)], "pca.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_glare.models.adapted_vit import UniAdapterViT
from lightly_glare.models.region_sampler import attention_mass_masks

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: ImageNet channel mean and standard deviation (timm / torchvision convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Figures are drawn at this resolution; a power of two makes every
#: ``pixels / dpi`` exact in floating point, so PNG sizes are exact.
_DPI = 128
#: Height in pixels of the title strip above every panel.
_TITLE_PIXELS = 22
_TITLE_FONT_SIZE = 8.0

Interpolation = Literal["nearest", "bilinear"]

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


def attention_mass_mask(maps: Tensor, mass: float = 0.6) -> Tensor:
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


# --------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------


def _upsample(grid_map: NDArray[Any], height: int, width: int) -> NDArray[Any]:
    """Nearest-neighbour upsampling of an (h, w, ...) map to (height, width, ...)."""
    h, w = grid_map.shape[:2]
    rows = np.minimum(np.arange(height) * h // height, h - 1)
    cols = np.minimum(np.arange(width) * w // width, w - 1)
    return grid_map[rows][:, cols]


def _panel_size(image: NDArray[np.uint8], panel_height: int) -> tuple[int, int]:
    height, width = image.shape[:2]
    return panel_height, max(1, round(panel_height * width / height))


def _new_figure(
    rows: int, columns: int, panel: tuple[int, int]
) -> tuple[Figure, list[list[Axes]]]:
    """A figure of exactly known pixel size with a grid of borderless panels."""
    # A bare Figure (no pyplot): no GUI backend, no global state touched.
    from matplotlib.figure import Figure

    panel_height, panel_width = panel
    cell_height = panel_height + _TITLE_PIXELS
    width, height = columns * panel_width, rows * cell_height
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    axes = []
    for row in range(rows):
        bottom = height - row * cell_height - cell_height
        axes.append(
            [
                figure.add_axes(
                    (
                        column * panel_width / width,
                        bottom / height,
                        panel_width / width,
                        panel_height / height,
                    )
                )
                for column in range(columns)
            ]
        )
    for ax in (ax for row_axes in axes for ax in row_axes):
        ax.set_axis_off()
    return figure, axes


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, format="png")
    return path


def _title(ax: Axes, text: str) -> None:
    ax.set_title(text, fontsize=_TITLE_FONT_SIZE, pad=3)


def _check_rgb(image: NDArray[np.uint8]) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "Expected a uint8 RGB image of shape (H, W, 3), got "
            f"{image.dtype} {image.shape}."
        )


def attention_grid_figure(
    rows: Sequence[tuple[str, NDArray[np.uint8], Tensor]],
    path: str | Path,
    mass: float = 0.6,
    panel_height: int = 224,
    overlay: float = 0.7,
    interpolation: Interpolation = "nearest",
    cmap: str = "inferno",
) -> Path:
    """Writes a PNG with one row per (label, image, attention maps).

    Each row shows the image (titled with the label) followed by one panel per
    head: the head's map upsampled to the image (nearest patch blocks as in
    DINO, or bilinear), drawn over the image with opacity ``overlay`` and
    scaled to the head's own min..max, and the outline (white) of the
    smallest set of patches holding ``mass`` of the head's attention (DINO's
    0.6-mass mask, see :func:`attention_mass_mask`).

    The PNG has exactly ``(1 + max heads) * panel_width`` by ``rows * (
    panel_height + 22)`` pixels, where ``panel_width = round(panel_height * W /
    H)`` of the first image (all images must share the aspect ratio) and 22
    pixels hold each panel's title.

    Args:
        rows: (label, RGB uint8 image of shape (H, W, 3), maps of shape (heads,
            h, w)) per row; rows may have different numbers of heads.
        path: Destination PNG; parent folders are created.
        mass: Attention mass outlined per head. Defaults to 0.6 (DINO).
        panel_height: Height of each panel in pixels. Defaults to 224.
        overlay: Opacity of the heatmap over the image; 1 shows the heatmap
            alone (DINO's look). Defaults to 0.7.
        interpolation: Upsampling of the heatmap. Defaults to "nearest".
        cmap: Matplotlib colour map. Defaults to "inferno".

    Returns:
        The path written.
    """
    if not rows:
        raise ValueError("attention_grid_figure needs at least one row.")
    for label, image, maps in rows:
        _check_rgb(image)
        if maps.ndim != 3:
            raise ValueError(
                f"Row {label!r}: expected maps of shape (heads, h, w), got "
                f"{tuple(maps.shape)}."
            )
    panel = _panel_size(rows[0][1], panel_height)
    columns = 1 + max(int(maps.shape[0]) for _, _, maps in rows)
    figure, axes = _new_figure(len(rows), columns, panel)
    for row_axes, (label, image, maps) in zip(axes, rows, strict=True):
        height, width = image.shape[:2]
        extent = (0.0, float(width), float(height), 0.0)
        row_axes[0].imshow(image, extent=extent, aspect="auto")
        _title(row_axes[0], label)
        masks = attention_mass_mask(maps, mass).numpy()  # (heads, h, w)
        values = maps.float().numpy()  # (heads, h, w)
        for head, ax in enumerate(row_axes[1 : 1 + maps.shape[0]]):
            ax.imshow(image, extent=extent, aspect="auto")
            ax.imshow(
                values[head],
                extent=extent,
                aspect="auto",
                cmap=cmap,
                alpha=overlay,
                interpolation=interpolation,
            )
            outline = _upsample(masks[head].astype(np.float32), height, width)
            if outline.any():
                # Zero padding closes outlines that touch the image border.
                ax.contour(
                    np.arange(-1, width + 1) + 0.5,
                    np.arange(-1, height + 1) + 0.5,
                    np.pad(outline, 1),
                    levels=[0.5],
                    colors="white",
                    linewidths=1.0,
                )
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            _title(ax, f"head {head}")
    return _save(figure, path)


def panel_grid_figure(
    rows: Sequence[tuple[str, Sequence[NDArray[np.uint8]]]],
    path: str | Path,
    column_titles: Sequence[str] | None = None,
    panel_height: int = 160,
) -> Path:
    """Writes a PNG grid of RGB panels, e.g. images, label maps, predictions.

    Panel ``(r, c)`` shows ``rows[r][1][c]`` scaled to the panel with nearest
    interpolation (label maps keep their hard edges). The first row's panels
    are titled with the column titles (the row label when there are none),
    the first panel of every other row with its row label. The PNG has
    exactly ``columns * panel_width`` by ``rows * (panel_height + 22)``
    pixels, ``panel_width = round(panel_height * W / H)`` of the first panel.

    Args:
        rows: (label, RGB uint8 panels of shape (H, W, 3)) per row; every row
            has the same number of panels.
        path: Destination PNG; parent folders are created.
        column_titles: One title per column. Defaults to None.
        panel_height: Height of each panel in pixels. Defaults to 160.

    Returns:
        The path written.
    """
    if not rows or not rows[0][1]:
        raise ValueError("panel_grid_figure needs at least one row and column.")
    columns = len(rows[0][1])
    if column_titles is not None and len(column_titles) != columns:
        raise ValueError(f"{len(column_titles)} column titles for {columns} columns.")
    for label, panels in rows:
        if len(panels) != columns:
            raise ValueError(f"Row {label!r} has {len(panels)} panels, not {columns}.")
        for panel in panels:
            _check_rgb(panel)
    figure, axes = _new_figure(
        len(rows), columns, _panel_size(rows[0][1][0], panel_height)
    )
    for row, (row_axes, (label, panels)) in enumerate(zip(axes, rows, strict=True)):
        for column, (ax, panel) in enumerate(zip(row_axes, panels, strict=True)):
            ax.imshow(panel, aspect="auto", interpolation="nearest")
            if row == 0 and column_titles is not None:
                _title(ax, column_titles[column])
            elif column == 0:
                _title(ax, label)
    return _save(figure, path)


def attention_figure(
    image_rgb: NDArray[np.uint8],
    maps: Tensor,
    path: str | Path,
    mass: float = 0.6,
    label: str = "image",
    **kwargs: Any,
) -> Path:
    """Writes the image and one attention panel per head (one row).

    Args:
        image_rgb: RGB image, uint8, shape (H, W, 3).
        maps: Attention maps, shape (heads, h, w) (see :func:`attention_maps`).
        path: Destination PNG.
        mass: Attention mass outlined per head. Defaults to 0.6 (DINO).
        label: Title of the image panel. Defaults to "image".
        **kwargs: Passed to :func:`attention_grid_figure`.

    Returns:
        The path written.
    """
    return attention_grid_figure([(label, image_rgb, maps)], path, mass, **kwargs)


def compare_attention_figure(
    image_rgb: NDArray[np.uint8],
    maps_by_model: Mapping[str, Tensor],
    path: str | Path,
    mass: float = 0.6,
    **kwargs: Any,
) -> Path:
    """Writes one row of attention panels per model for the same image.

    Args:
        image_rgb: RGB image, uint8, shape (H, W, 3).
        maps_by_model: Model name -> maps of shape (heads, h, w), e.g.
            ``{"DINOv2": before, "GLARE": after}``; rows in this order.
        path: Destination PNG.
        mass: Attention mass outlined per head. Defaults to 0.6 (DINO).
        **kwargs: Passed to :func:`attention_grid_figure`.

    Returns:
        The path written.
    """
    rows = [(name, image_rgb, maps) for name, maps in maps_by_model.items()]
    return attention_grid_figure(rows, path, mass, **kwargs)


def pca_figure(
    images: Sequence[NDArray[np.uint8]],
    pca_maps: Sequence[NDArray[np.float32]] | Mapping[str, Sequence[NDArray[Any]]],
    path: str | Path,
    titles: Sequence[str] | None = None,
    panel_height: int = 224,
) -> Path:
    """Writes the images (first row) above their PCA maps (one row per model).

    The PCA maps (patch grid) are upsampled to the images with nearest
    neighbours, so every patch is one flat block of colour. The PNG has exactly
    ``len(images) * panel_width`` by ``(1 + models) * (panel_height + 22)``
    pixels, ``panel_width = round(panel_height * W / H)`` of the first image.

    Args:
        images: RGB images, uint8, each of shape (H, W, 3), same aspect ratio.
        pca_maps: One map of shape (h, w, 3) in [0, 1] per image (see
            :func:`pca_rgb`), or model name -> such a sequence for one row per
            model.
        path: Destination PNG.
        titles: One title per image column. Defaults to "image 0", "image 1",
            ...
        panel_height: Height of each panel in pixels. Defaults to 224.

    Returns:
        The path written.
    """
    if not images:
        raise ValueError("pca_figure needs at least one image.")
    for image in images:
        _check_rgb(image)
    by_model = (
        dict(pca_maps) if isinstance(pca_maps, Mapping) else {"PCA": list(pca_maps)}
    )
    for name, maps in by_model.items():
        if len(maps) != len(images):
            raise ValueError(
                f"{name}: got {len(maps)} PCA maps for {len(images)} images."
            )
    titles = [f"image {i}" for i in range(len(images))] if titles is None else titles
    if len(titles) != len(images):
        raise ValueError(f"Got {len(titles)} titles for {len(images)} images.")
    panel = _panel_size(images[0], panel_height)
    figure, axes = _new_figure(1 + len(by_model), len(images), panel)
    for column, (image, title) in enumerate(zip(images, titles, strict=True)):
        axes[0][column].imshow(image, aspect="auto")
        _title(axes[0][column], title)
    for row, (name, maps) in enumerate(by_model.items(), start=1):
        for column, (image, grid_map) in enumerate(zip(images, maps, strict=True)):
            if grid_map.ndim != 3 or grid_map.shape[2] != 3:
                raise ValueError(
                    f"{name}, image {column}: expected a PCA map of shape "
                    f"(h, w, 3), got {grid_map.shape}."
                )
            height, width = image.shape[:2]
            upsampled = _upsample(np.clip(grid_map, 0.0, 1.0), height, width)
            axes[row][column].imshow(upsampled, aspect="auto")
            _title(axes[row][column], name)
    return _save(figure, path)


# --------------------------------------------------------------------------------
# Loading backbones for the command-line tools
# --------------------------------------------------------------------------------

CheckpointType = Literal["ssl", "glare"]


def build_backbone(
    arch: str,
    checkpoint: str | Path | None,
    checkpoint_type: CheckpointType = "ssl",
    img_size: int = 224,
) -> UniAdapterViT:
    """Builds a :class:`UniAdapterViT` for visualisation from a local checkpoint.

    Args:
        arch: timm model name, e.g. ``vit_small_patch14_dinov2`` or
            ``vit_base_patch16_224``.
        checkpoint: A plain SSL checkpoint (DINO / DINOv2 / iBOT / timm layout,
            loaded strictly by :mod:`lightly_glare.weights`), a GLARE export
            (:func:`lightly_glare.models.export_adapted_backbone`), or None for
            random weights (smoke tests only).
        checkpoint_type: "ssl" (zero-initialised adapters are added, so the
            model equals the checkpoint) or "glare" (adapters from the export;
            their size is read from the export's meta).
        img_size: Input size the position embeddings are built (or resampled)
            for.

    Returns:
        The backbone in eval mode on the CPU.
    """
    from lightly_glare.models.export import (
        load_adapted_backbone,
        load_exported_checkpoint,
    )

    if checkpoint_type not in ("ssl", "glare"):
        raise ValueError(
            f"checkpoint_type must be 'ssl' or 'glare', got {checkpoint_type!r}."
        )
    if checkpoint is not None and checkpoint_type == "glare":
        _, meta = load_exported_checkpoint(checkpoint)
        architecture = meta.get("architecture", {})
        backbone = UniAdapterViT(
            _create_vit(arch, None, img_size),
            bottleneck=int(architecture.get("adapter_bottleneck", 64)),
            scale=float(architecture.get("adapter_scale", 0.1)),
        )
        load_adapted_backbone(backbone, checkpoint)
    else:
        backbone = UniAdapterViT(_create_vit(arch, checkpoint, img_size))
    return backbone.eval()


def _create_vit(
    arch: str, checkpoint: str | Path | None, img_size: int
) -> VisionTransformer:
    from lightly_glare.weights import create_vit

    return create_vit(arch, checkpoint=checkpoint, img_size=img_size)
