"""Attention-map and PCA figures (matplotlib) for (adapted) ViT backbones.

Two kinds of figures, as in the GLARE paper:

* **Per-head [CLS] attention of the last block** (GLARE Fig. 2/4, following DINO's
  ``visualize_attention.py``): each head's map over the patch grid, upsampled to
  the image, with the outline of the smallest set of patches that holds a
  fraction ``mass`` (0.6) of the head's attention;
* **PCA of the patch features** (GLARE Fig. 5, following DINOv2's Fig. 1) as
  RGB.

The numbers come from :mod:`lightly_glare.visualization.features`. The figure
functions import matplotlib lazily (``pip install lightly-glare[viz]``) and
write PNGs of an exactly known pixel size (see :func:`attention_grid_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from lightly_glare.models.defaults import REGION_MASS
from lightly_glare.visualization.features import attention_mass_mask

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Figures are drawn at this resolution; a power of two makes every
#: ``pixels / dpi`` exact in floating point, so PNG sizes are exact.
_DPI = 128
#: Height in pixels of the title strip above every panel.
_TITLE_PIXELS = 22
_TITLE_FONT_SIZE = 8.0

Interpolation = Literal["nearest", "bilinear"]

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
    mass: float = REGION_MASS,
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
            _outline(ax, masks[head], height, width)
            _title(ax, f"head {head}")
    return _save(figure, path)


def _outline(ax: Any, mask: NDArray[np.bool_], height: int, width: int) -> None:
    """Draws the white outline of a patch mask (h, w) over an image panel."""
    outline = _upsample(mask.astype(np.float32), height, width)
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
    mass: float = REGION_MASS,
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
    mass: float = REGION_MASS,
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
