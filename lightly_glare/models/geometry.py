"""Exact patch correspondences between two augmented views of the same image.

Every view carries its crop geometry ``(top, left, height, width, hflip)``: the
crop box in **normalised original-image coordinates** (``top`` and ``height``
divided by the image height, ``left`` and ``width`` by the image width) and a
flag that is 1.0 when the view was flipped horizontally *after* cropping. A
batch of views carries geometry of shape (B, 5).

Coordinate conventions:

- A view's pixels cover the normalised view square ``[0, 1] x [0, 1]``; an
  image point ``(Y, X)`` lies at view position
  ``((Y - top) / height, (X - left) / width)``, with the column mirrored
  (``x -> 1 - x``) when the view is flipped.
- Positions in a view's ``(h, w)`` patch grid are given in **patch units with
  patch (i, j) centred at (i, j)**: view position ``(y, x)`` is grid position
  ``(y * h - 0.5, x * w - 0.5)``. The patch grid covers
  ``[-0.5, h - 0.5] x [-0.5, w - 0.5]``.

All functions are batched tensor operations (no loop over the batch, no host
synchronisation) and are not meant to be differentiated through the geometry.
GLARE uses them for L_loc2 (student patches of one view against the teacher's
tokens of the other view, bilinearly interpolated) and for region transfer
(region masks from one view into the other, nearest patch).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "GEOMETRY_SIZE",
    "bilinear_gather",
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

#: Number of values describing a view: (top, left, height, width, hflip).
GEOMETRY_SIZE = 5


def view_geometry(
    box: tuple[int, int, int, int], hflip: bool, image_size: tuple[int, int]
) -> list[float]:
    """The geometry of one view: the single definition of the ``(5,)`` format.

    Every other function here reads that format; :class:`GlareTransform` writes
    it only through this function.

    Args:
        box: The crop box in pixels of the original image,
            ``(top, left, height, width)``.
        hflip: Whether the view was flipped horizontally after cropping.
        image_size: Size ``(height, width)`` of the original image in pixels.

    Returns:
        ``[top, left, height, width, hflip]`` with ``top`` and ``height``
        divided by the image height, ``left`` and ``width`` by its width, and
        ``hflip`` 1.0 or 0.0.
    """
    top, left, height, width = box
    image_height, image_width = image_size
    return [
        top / image_height,
        left / image_width,
        height / image_height,
        width / image_width,
        float(hflip),
    ]


def _check_grid(grid: tuple[int, int], name: str) -> tuple[int, int]:
    if len(grid) != 2 or any(int(size) != size or size < 1 for size in grid):
        raise ValueError(f"{name} must be two positive integers (h, w), got {grid}.")
    return int(grid[0]), int(grid[1])


def _check_geometry(
    geometry_from: Tensor, geometry_to: Tensor, batch: int | None = None
) -> None:
    for name, geometry in (
        ("geometry_from", geometry_from),
        ("geometry_to", geometry_to),
    ):
        if geometry.ndim != 2 or geometry.shape[1] != GEOMETRY_SIZE:
            raise ValueError(
                f"{name} must have shape (B, {GEOMETRY_SIZE}) = (top, left, height, "
                f"width, hflip), got {tuple(geometry.shape)}."
            )
    if geometry_from.shape[0] != geometry_to.shape[0]:
        raise ValueError(
            "geometry_from and geometry_to must have the same batch size, got "
            f"{tuple(geometry_from.shape)} and {tuple(geometry_to.shape)}."
        )
    if batch is not None and geometry_from.shape[0] != batch:
        raise ValueError(
            f"Expected geometries for a batch of {batch}, got "
            f"{tuple(geometry_from.shape)}."
        )


def _affine(
    geometry_from: Tensor,
    geometry_to: Tensor,
    grid_from: tuple[int, int],
    grid_to: tuple[int, int],
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Per-axis affine map ``u_to = scale * u_from + shift`` between two grids.

    Per axis, with crop start ``o``, crop size ``s``, patches ``n`` and, for
    columns, flip sign ``f = -1`` and offset ``m = 1`` when flipped (``f = 1``,
    ``m = 0`` otherwise), a grid position ``u`` sits at image coordinate
    ``o + s * (m + f * (u + 0.5) / n)``. Inverting this for the target view
    gives ``scale = f_to * f_from * (s_from / s_to) * (n_to / n_from)`` and
    ``shift = n_to * (m_to + f_to * (o_from - o_to + s_from * m_from) / s_to)
    + 0.5 * scale - 0.5``. Written this way, identical (or both flipped) crops
    give ``scale = 1`` and ``shift = 0`` exactly.

    Returns:
        ``(scale, shift)``, each with shape (B, 2) for (row, col).
    """
    source = geometry_from.to(dtype)  # (B, 5)
    target = geometry_to.to(dtype)  # (B, 5)
    tiny = torch.finfo(dtype).tiny
    scales, shifts = [], []
    # Python scalars for the grid sizes: no host-to-device copy.
    for axis, flip_axis in ((0, False), (1, True)):
        n_from, n_to = float(grid_from[axis]), float(grid_to[axis])
        start_from, size_from = source[:, axis], source[:, axis + 2]  # (B,)
        start_to, size_to = target[:, axis], target[:, axis + 2].clamp_min(tiny)
        if flip_axis:
            offset_from = (source[:, 4] > 0.5).to(dtype)  # (B,)
            offset_to = (target[:, 4] > 0.5).to(dtype)
        else:
            offset_from = offset_to = torch.zeros_like(start_from)
        sign_from, sign_to = 1.0 - 2.0 * offset_from, 1.0 - 2.0 * offset_to
        scale = sign_to * sign_from * (size_from / size_to) * (n_to / n_from)
        relative = (start_from - start_to + size_from * offset_from) / size_to
        scales.append(scale)
        shifts.append(n_to * (offset_to + sign_to * relative) + 0.5 * scale - 0.5)
    scale = torch.stack(scales, dim=1)  # (B, 2)
    shift = torch.stack(shifts, dim=1)  # (B, 2)
    return scale, shift


def _output_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        if tensor.is_floating_point():
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def patch_centers(
    grid: tuple[int, int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Grid positions of all patch centres of an ``(h, w)`` grid, row-major.

    Args:
        grid: Patch grid (h, w).
        device: Device of the result.
        dtype: Floating dtype of the result.

    Returns:
        Tensor with shape (h * w, 2) holding (row, col) = (i, j) of patch
        ``i * w + j``.
    """
    h, w = _check_grid(grid, "grid")
    rows = torch.arange(h, device=device, dtype=dtype)
    cols = torch.arange(w, device=device, dtype=dtype)
    return torch.cartesian_prod(rows, cols)  # (h * w, 2)


def map_coords(
    coords: Tensor,
    geometry_from: Tensor,
    geometry_to: Tensor,
    grid_from: tuple[int, int],
    grid_to: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Maps arbitrary grid positions from one view into another view's grid.

    Args:
        coords: (row, col) positions in the source view's patch-grid units,
            shape (B, M, 2).
        geometry_from: Crop geometry of the source view, shape (B, 5).
        geometry_to: Crop geometry of the target view, shape (B, 5).
        grid_from: Patch grid (h, w) of the source view.
        grid_to: Patch grid (h', w') of the target view.

    Returns:
        ``(coords_to, inside)``: the positions in the target view's patch-grid
        units, shape (B, M, 2), in the promoted floating dtype of the inputs
        (at least float32); and a boolean tensor with shape (B, M) that is True
        where the position lies inside the target crop box (borders included).

    Raises:
        ValueError: If the shapes do not match.
    """
    _check_grid(grid_from, "grid_from")
    h_to, w_to = _check_grid(grid_to, "grid_to")
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(
            f"coords must have shape (B, M, 2), got {tuple(coords.shape)}."
        )
    _check_geometry(geometry_from, geometry_to, batch=coords.shape[0])
    dtype = _output_dtype(coords, geometry_from, geometry_to)
    scale, shift = _affine(geometry_from, geometry_to, grid_from, grid_to, dtype)
    mapped = coords.to(dtype) * scale[:, None, :] + shift[:, None, :]  # (B, M, 2)
    inside = (
        (mapped >= -0.5).all(dim=-1)
        & (mapped[..., 0] <= h_to - 0.5)
        & (mapped[..., 1] <= w_to - 0.5)
    )  # (B, M)
    return mapped, inside


def map_patch_centers(
    geometry_from: Tensor,
    geometry_to: Tensor,
    grid_from: tuple[int, int],
    grid_to: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Maps every source patch centre into the target view's patch grid.

    Flips of either view are handled through the ``hflip`` entries.

    Args:
        geometry_from: Crop geometry of the source view, shape (B, 5).
        geometry_to: Crop geometry of the target view, shape (B, 5).
        grid_from: Patch grid (h, w) of the source view.
        grid_to: Patch grid (h', w') of the target view.

    Returns:
        ``(coords, inside)``: ``coords`` with shape (B, h * w, 2) holds the
        (row, col) of every source patch centre (row-major) in the target view's
        patch-grid units, where target patch (i, j) is centred at (i, j);
        ``inside`` with shape (B, h * w) is True where that centre falls inside
        the target crop box (borders included).

    Raises:
        ValueError: If the geometries are not (B, 5) or the grids not positive.

    Examples:
        >>> full = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])
        >>> right_half = torch.tensor([[0.0, 0.5, 1.0, 0.5, 0.0]])
        >>> coords, inside = map_patch_centers(full, right_half, (2, 2), (2, 2))
        >>> inside  # only the right column of the full view is in the right half
        tensor([[False,  True, False,  True]])
    """
    _check_geometry(geometry_from, geometry_to)
    dtype = _output_dtype(geometry_from, geometry_to)
    centers = patch_centers(grid_from, device=geometry_from.device, dtype=dtype)
    coords = centers.expand(geometry_from.shape[0], -1, -1)  # (B, h * w, 2)
    return map_coords(coords, geometry_from, geometry_to, grid_from, grid_to)


def match_patches(
    tokens_to: Tensor,
    geometry_from: Tensor,
    geometry_to: Tensor,
    grid_from: tuple[int, int],
    grid_to: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """The tokens of view ``to`` at the centre of every patch of view ``from``.

    GLARE's patch matching (L_loc2): each patch of one view is paired with the
    other view's tokens bilinearly interpolated at the same image point.

    Args:
        tokens_to: Patch tokens of the target view, shape (B, h' * w', D),
            row-major.
        geometry_from: Crop geometry of the source view, shape (B, 5).
        geometry_to: Crop geometry of the target view, shape (B, 5).
        grid_from: Patch grid (h, w) of the source view.
        grid_to: Patch grid (h', w') of the target view; None: ``grid_from``.

    Returns:
        ``(matched, inside)``: ``matched`` with shape (B, h * w, D) holds, for
        every source patch, the target tokens at its centre; ``inside`` with
        shape (B, h * w) tells which centres lie inside the target view (only
        those pairs are meaningful).

    Examples:
        >>> matched, inside = match_patches(teacher_b, geometry[:, 0],
        ...                                 geometry[:, 1], (14, 14))
        >>> pairs = (matched[inside], student_a[inside])  # (M, D) each
    """
    grid_to = grid_from if grid_to is None else grid_to
    coords, inside = map_patch_centers(
        geometry_from, geometry_to, grid_from, grid_to
    )  # (B, h * w, 2), (B, h * w)
    return bilinear_gather(tokens_to, coords, grid_to), inside


def nearest_patch_index(coords: Tensor, grid_to: tuple[int, int]) -> Tensor:
    """Row-major index of the patch nearest to each position (clamped to the grid).

    Ties (a position exactly halfway between two centres) go to the higher index.

    Args:
        coords: (row, col) positions in patch-grid units, shape (B, M, 2).
        grid_to: Patch grid (h', w').

    Returns:
        Long tensor with shape (B, M) and values in ``[0, h' * w')``.

    Raises:
        ValueError: If ``coords`` is not (B, M, 2).
    """
    h, w = _check_grid(grid_to, "grid_to")
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(
            f"coords must have shape (B, M, 2), got {tuple(coords.shape)}."
        )
    nearest = torch.floor(coords + 0.5).long()  # (B, M, 2)
    rows = nearest[..., 0].clamp(0, h - 1)
    cols = nearest[..., 1].clamp(0, w - 1)
    return rows * w + cols


def bilinear_gather(tokens: Tensor, coords: Tensor, grid_to: tuple[int, int]) -> Tensor:
    """Bilinearly interpolates patch tokens at arbitrary grid positions.

    Each output mixes the 4 patches around its position; positions outside the
    grid are clamped to the border first (as in ``F.grid_sample`` with
    ``padding_mode="border"`` and ``align_corners=True`` on patch centres). A
    position exactly on a patch centre returns that patch's token exactly.

    Args:
        tokens: Patch tokens of the target view in row-major grid order, shape
            (B, h' * w', D).
        coords: (row, col) positions in the target's patch-grid units, shape
            (B, M, 2).
        grid_to: Patch grid (h', w') of the target view.

    Returns:
        Interpolated tokens with shape (B, M, D), in the dtype of ``tokens``.

    Raises:
        ValueError: If the shapes do not match.
    """
    h, w = _check_grid(grid_to, "grid_to")
    if tokens.ndim != 3 or tokens.shape[1] != h * w:
        raise ValueError(
            f"tokens must have shape (B, {h * w}, D) for grid {(h, w)}, got "
            f"{tuple(tokens.shape)}."
        )
    if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"coords must have shape ({tokens.shape[0]}, M, 2), got "
            f"{tuple(coords.shape)}."
        )
    batch, num_tokens, dim = tokens.shape
    coords = coords.float() if not coords.is_floating_point() else coords
    row = coords[..., 0].clamp(0, h - 1)  # (B, M)
    col = coords[..., 1].clamp(0, w - 1)  # (B, M)
    row0 = row.floor()
    col0 = col.floor()
    frac_row = (row - row0).to(tokens.dtype)[..., None]  # (B, M, 1)
    frac_col = (col - col0).to(tokens.dtype)[..., None]  # (B, M, 1)
    row0_idx = row0.long()
    col0_idx = col0.long()
    row1_idx = (row0_idx + 1).clamp(max=h - 1)
    col1_idx = (col0_idx + 1).clamp(max=w - 1)
    offsets = torch.arange(batch, device=tokens.device)[:, None] * num_tokens  # (B, 1)
    flat = tokens.reshape(batch * num_tokens, dim)  # (B * N, D)

    def gather(rows: Tensor, cols: Tensor) -> Tensor:
        index = (rows * w + cols + offsets).reshape(-1)  # (B * M,)
        return flat.index_select(0, index).reshape(*rows.shape, dim)  # (B, M, D)

    top = (
        gather(row0_idx, col0_idx) * (1 - frac_col)
        + gather(row0_idx, col1_idx) * frac_col
    )
    bottom = (
        gather(row1_idx, col0_idx) * (1 - frac_col)
        + gather(row1_idx, col1_idx) * frac_col
    )
    return top * (1 - frac_row) + bottom * frac_row  # (B, M, D)


def transfer_masks(
    masks_from: Tensor,
    geometry_from: Tensor,
    geometry_to: Tensor,
    grid_from: tuple[int, int],
    grid_to: tuple[int, int],
) -> Tensor:
    """Transfers patch masks (e.g. regions) from one view into another view's grid.

    A target patch belongs to a region when its centre maps inside the source
    crop box and the source patch nearest to it is in the source mask. Target
    patches whose centre falls outside the source box are dropped; source
    patches outside the target box simply have no counterpart.

    Args:
        masks_from: Boolean masks on the source view, shape (B, R, h * w).
        geometry_from: Crop geometry of the source view, shape (B, 5).
        geometry_to: Crop geometry of the target view, shape (B, 5).
        grid_from: Patch grid (h, w) of the source view.
        grid_to: Patch grid (h', w') of the target view.

    Returns:
        Boolean masks on the target view, shape (B, R, h' * w').

    Raises:
        ValueError: If the shapes do not match.
    """
    h, w = _check_grid(grid_from, "grid_from")
    h_to, w_to = _check_grid(grid_to, "grid_to")
    if masks_from.ndim != 3 or masks_from.shape[-1] != h * w:
        raise ValueError(
            f"masks_from must have shape (B, R, {h * w}) for grid {(h, w)}, got "
            f"{tuple(masks_from.shape)}."
        )
    _check_geometry(geometry_from, geometry_to, batch=masks_from.shape[0])
    batch, regions, _ = masks_from.shape
    # Target patch centres in the source grid.
    coords, inside = map_patch_centers(geometry_to, geometry_from, grid_to, grid_from)
    index = nearest_patch_index(coords, grid_from)  # (B, N_to)
    index = index[:, None, :].expand(batch, regions, h_to * w_to)  # (B, R, N_to)
    transferred = masks_from.bool().gather(2, index)  # (B, R, N_to)
    return transferred & inside[:, None, :]


def crop_overlap(geometry_a: Tensor, geometry_b: Tensor) -> Tensor:
    """Area of the intersection of two crop boxes over the smaller box's area.

    Args:
        geometry_a: Crop geometry with shape (..., 5).
        geometry_b: Crop geometry with shape (..., 5).

    Returns:
        Overlap fraction in [0, 1] with shape (...).
    """
    top = torch.maximum(geometry_a[..., 0], geometry_b[..., 0])
    left = torch.maximum(geometry_a[..., 1], geometry_b[..., 1])
    bottom = torch.minimum(
        geometry_a[..., 0] + geometry_a[..., 2], geometry_b[..., 0] + geometry_b[..., 2]
    )
    right = torch.minimum(
        geometry_a[..., 1] + geometry_a[..., 3], geometry_b[..., 1] + geometry_b[..., 3]
    )
    intersection = (bottom - top).clamp_min(0) * (right - left).clamp_min(0)
    smaller = torch.minimum(
        geometry_a[..., 2] * geometry_a[..., 3], geometry_b[..., 2] * geometry_b[..., 3]
    )
    return intersection / smaller.clamp_min(torch.finfo(smaller.dtype).tiny)


def patch_grid_mask_to_pixels(
    mask: Tensor, grid: tuple[int, int], patch_size: int
) -> Tensor:
    """Expands a patch mask to a pixel mask.

    Args:
        mask: Boolean patch mask with shape (B, h * w), row-major.
        grid: Patch grid (h, w).
        patch_size: Patch side p in pixels.

    Returns:
        Boolean pixel mask with shape (B, 1, h * p, w * p).
    """
    batch = mask.shape[0]
    h, w = grid
    pixels = mask.reshape(batch, 1, h, 1, w, 1)  # (B, 1, h, 1, w, 1)
    pixels = pixels.expand(batch, 1, h, patch_size, w, patch_size)  # (B,1,h,p,w,p)
    return pixels.reshape(batch, 1, h * patch_size, w * patch_size)  # (B, 1, H, W)
