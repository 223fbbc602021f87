"""Reading and validating semantic-segmentation label masks.

A label mask is a single-channel image whose pixel values are class indices
``0 .. num_classes - 1`` or ``ignore_index`` (the mmseg convention: ``L`` or
palette PNGs, whose palette indices are the class indices). Masks are checked
for size (against their image) and for values, and every error names the file
and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from lightly_glare.data.image_io import load_rgb_image

_TIFF_SUFFIXES = (".tif", ".tiff")
_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
_MAX_LISTED_VALUES = 10


class LabelMaskError(ValueError):
    """A label mask is unreadable, has the wrong size or holds invalid values."""


def _read_mask_array(path: Path) -> NDArray[Any]:
    """Raw pixel values of a single-channel mask file."""
    if not path.is_file():
        raise LabelMaskError(f"Label mask '{path}' does not exist.")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        try:
            import tifffile

            array = np.asarray(tifffile.imread(path))
        except ImportError:  # pragma: no cover - tifffile is in the [data] extra
            pass
        except Exception as error:  # tifffile raises many types on broken files
            raise LabelMaskError(
                f"Cannot read label mask '{path}': {type(error).__name__}: {error}"
            ) from error
        else:
            return np.squeeze(array) if array.ndim == 3 else array
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in _MASK_MODES:
                raise LabelMaskError(
                    f"Label mask '{path}' has mode {image.mode}; expected a "
                    "single-channel image of class indices (L, P or 16-bit). "
                    "Convert colour-coded masks to class indices first."
                )
            return np.array(image)
    except LabelMaskError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise LabelMaskError(
            f"Cannot read label mask '{path}': {type(error).__name__}: {error}"
        ) from error


def check_label_values(
    mask: NDArray[Any], num_classes: int, ignore_index: int = 255, name: str = ""
) -> None:
    """Checks that all values are class indices or ``ignore_index``.

    Args:
        mask: Integer label array.
        num_classes: Number of classes C; valid values are ``0 .. C - 1``.
        ignore_index: The additional value marking unlabelled pixels.
            Defaults to 255.
        name: File name used in the error message.

    Raises:
        LabelMaskError: Naming the file, the offending values (up to 10, with
            their pixel counts) and the allowed ones.
    """
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
        raise LabelMaskError(f"Label mask '{name}' has non-integer dtype {mask.dtype}.")
    values, counts = np.unique(mask, return_counts=True)
    bad = [
        (int(v), int(c))
        for v, c in zip(values, counts, strict=True)
        if not (0 <= v < num_classes or v == ignore_index)
    ]
    if bad:
        listed = ", ".join(f"{v} ({c} px)" for v, c in bad[:_MAX_LISTED_VALUES])
        extra = len(bad) - _MAX_LISTED_VALUES
        more = f" and {extra} more values" if extra > 0 else ""
        raise LabelMaskError(
            f"Label mask '{name}' has values outside the {num_classes} classes "
            f"0..{num_classes - 1} and ignore_index {ignore_index}: {listed}{more}."
        )


def load_label_mask(
    path: str | os.PathLike[str],
    num_classes: int,
    ignore_index: int = 255,
    image_size: tuple[int, int] | None = None,
) -> NDArray[Any]:
    """Reads a label mask and validates its values (and optionally its size).

    Args:
        path: Single-channel mask file (PNG ``L``/``P``/16-bit, or TIFF).
            Palette images give their palette indices.
        num_classes: Number of classes C; valid values are ``0 .. C - 1``.
        ignore_index: Value of unlabelled pixels. Defaults to 255.
        image_size: Expected ``(width, height)`` (PIL's ``Image.size`` order),
            or None to skip the size check.

    Returns:
        The labels, shape (H, W): uint8 when ``C - 1`` and ``ignore_index``
        both fit in 0..255, else int64.

    Raises:
        LabelMaskError: If the file is unreadable, not single-channel, of
            another size than ``image_size`` or holds invalid values.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    path = Path(path)
    mask = _read_mask_array(path)
    if mask.ndim != 2:
        raise LabelMaskError(
            f"Label mask '{path}' has shape {mask.shape}; expected (H, W)."
        )
    if image_size is not None:
        width, height = image_size
        if mask.shape != (height, width):
            raise LabelMaskError(
                f"Label mask '{path}' is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                f"its image is {width}x{height}."
            )
    check_label_values(mask, num_classes, ignore_index, name=str(path))
    # Values are checked, so the cast below cannot wrap around.
    fits_uint8 = num_classes - 1 <= 255 and 0 <= ignore_index <= 255
    return mask.astype(np.uint8 if fits_uint8 else np.int64)


def load_image_and_mask(
    image_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    num_classes: int,
    ignore_index: int = 255,
) -> tuple[Image.Image, NDArray[Any]]:
    """Reads an image (8-bit RGB) and its label mask, checking they match.

    Args:
        image_path: The image file (see :func:`~lightly_glare.data.load_rgb_image`).
        mask_path: Its label mask.
        num_classes: Number of classes C.
        ignore_index: Value of unlabelled pixels. Defaults to 255.

    Returns:
        ``(image, mask)`` with ``mask.shape == (image.height, image.width)``.

    Raises:
        ImageReadError: If the image cannot be read.
        LabelMaskError: If the mask is unreadable, of another size than the
            image (both files are named) or holds invalid values.
    """
    image = load_rgb_image(image_path)
    mask = load_label_mask(mask_path, num_classes, ignore_index)
    if mask.shape != (image.height, image.width):
        raise LabelMaskError(
            f"Label mask '{mask_path}' is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
            f"its image '{image_path}' is {image.width}x{image.height}."
        )
    return image, mask
