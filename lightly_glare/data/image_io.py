"""Robust reading of images as 8-bit RGB, with documented conversions.

:func:`load_rgb_image` turns whatever a folder of "images" holds into an 8-bit
RGB :class:`PIL.Image.Image`, or raises :class:`ImageReadError` naming the file
and the problem. The conversions are:

- greyscale (``1``, ``L``) is replicated to three channels;
- palette images (``P``, ``PA``) are expanded through their palette;
- images with an alpha channel (``LA``, ``RGBA``, ``PA``, palette images with a
  transparent colour) are **composited on black**: ``rgb * alpha / 255``, so
  fully transparent pixels become black and fully opaque ones are unchanged;
- 16-bit and 32-bit integer greyscale (PNG ``I;16``, ``I``) and float (``F``)
  images, and TIFF files of any integer or float dtype (read with ``tifffile``
  when it is installed), are mapped to 8 bits by a **per-image percentile
  stretch**: the 0.5 % and 99.5 % percentiles of the finite pixels map to 0 and
  255, values outside are clipped (see :func:`stretch_to_uint8`). 8-bit TIFFs
  are kept as they are. Pillow reads 16-bit *colour* PNGs as 8-bit RGB
  (keeping the high byte, no stretch);
- other colour spaces (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``) go
  through Pillow's ``convert("RGB")``;
- multi-frame files (GIF, multi-page TIFF) give their first frame. TIFFs
  that tifffile cannot decode (e.g. a missing compression codec) are tried
  with Pillow before failing.

EXIF orientation tags are ignored (pixels are returned as stored), as in
torchvision's and lightly's folder datasets. A truncated file is always an
error unless the caller has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``
globally, which makes Pillow pad such files silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

#: Percentiles mapped to 0 and 255 by :func:`stretch_to_uint8`.
STRETCH_PERCENTILES: tuple[float, float] = (0.5, 99.5)

_TIFF_SUFFIXES = (".tif", ".tiff")
_ALPHA_MODES = ("LA", "RGBA", "PA", "La", "RGBa")
_HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


class ImageReadError(ValueError):
    """A file cannot be read as an image (corrupt, truncated, not an image...).

    The message names the file and the problem.

    Attributes:
        path: The offending file.
        reason: What went wrong, without the file name.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot read image '{self.path}': {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as ``(path, reason)``: the error crosses process boundaries.

        A DataLoader worker can then hand it to the main process intact (see
        :class:`~lightly_glare.data.CarryErrors`).
        """
        return (type(self), (self.path, self.reason))


def stretch_to_uint8(
    array: NDArray[Any],
    percentiles: tuple[float, float] = STRETCH_PERCENTILES,
    valid: NDArray[np.bool_] | None = None,
) -> NDArray[np.uint8]:
    """Maps an array of any numeric dtype to uint8 by a percentile stretch.

    ``lo, hi`` are the given percentiles of the finite values (restricted to
    ``valid`` when given); ``out = round(255 * clip((x - lo) / (hi - lo), 0, 1))``.
    The mapping is monotonic (non-decreasing). Non-finite values and values
    outside ``valid`` map to 0. If ``hi == lo`` (a constant image), values
    ``> lo`` map to 255 and the others to 0.

    Args:
        array: Array of any shape and numeric dtype.
        percentiles: Lower and upper percentiles in [0, 100]. Defaults to
            (0.5, 99.5).
        valid: Optional boolean mask of the same shape: the pixels that define
            the percentiles (e.g. excluding a nodata value).

    Returns:
        A uint8 array of the same shape.

    Raises:
        ValueError: If the percentiles are not ordered within [0, 100] or
            ``valid`` has another shape.
    """
    low_pct, high_pct = percentiles
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(
            f"Expected percentiles 0 <= low < high <= 100, got {percentiles}."
        )
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    if valid is not None:
        if valid.shape != values.shape:
            raise ValueError(
                f"valid mask of shape {valid.shape} does not match the array "
                f"shape {values.shape}."
            )
        finite &= valid
    out = np.zeros(values.shape, dtype=np.uint8)
    if not finite.any():
        return out
    low, high = np.percentile(values[finite], [low_pct, high_pct])
    if high <= low:
        out[finite & (values > low)] = 255
        return out
    scaled = (values[finite] - low) / (high - low)
    out[finite] = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _alpha_to_uint8(alpha: NDArray[Any]) -> NDArray[np.uint8]:
    """Scales alpha to 0..255: integers by dtype maximum, floats from [0, 1]."""
    if np.issubdtype(alpha.dtype, np.integer):
        scale = 255.0 / float(np.iinfo(alpha.dtype).max)
        fraction = np.clip(alpha.astype(np.float64) * scale, 0.0, 255.0)
    else:
        fraction = np.clip(np.nan_to_num(alpha.astype(np.float64)), 0.0, 1.0) * 255
    return np.round(fraction).astype(np.uint8)


def _composite_on_black(image: Image.Image) -> Image.Image:
    """RGB of ``image`` multiplied by its alpha (composited on black)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
    alpha = rgba[..., 3:4]
    rgb = (rgba[..., :3] * alpha + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def array_to_rgb(array: NDArray[Any], name: str = "<array>") -> Image.Image:
    """Converts an image array (H, W), (H, W, C) or (C, H, W) to 8-bit RGB.

    uint8 arrays are kept as they are; any other numeric dtype (uint16, int,
    float) is percentile-stretched per image over all colour channels jointly
    (:func:`stretch_to_uint8`); bool is mapped to {0, 255}. An alpha channel of
    another dtype is scaled by the dtype's maximum (integers) or read as a
    fraction in [0, 1] (floats), never stretched. One channel is replicated to
    three; two channels are read as grey + alpha and four as RGB + alpha
    (composited on black); a leading axis of size <= 4 with a trailing one > 4
    is taken as channels-first (planar TIFF).

    Args:
        array: The pixel array.
        name: Name used in error messages (the file the array came from).

    Returns:
        An 8-bit RGB image.

    Raises:
        ImageReadError: For other shapes (e.g. multispectral with > 4 bands),
            non-numeric dtypes or empty arrays.
    """
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.number)):
        raise ImageReadError(name, f"unsupported pixel dtype {array.dtype}.")
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[2]:
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] > 4):
        raise ImageReadError(
            name,
            f"unsupported pixel array shape {array.shape}: expected (H, W) or "
            "(H, W, C) with C <= 4. Convert multispectral data to RGB first.",
        )
    if array.size == 0:
        raise ImageReadError(name, f"empty image of shape {array.shape}.")
    if array.dtype != np.uint8:
        if array.ndim == 3 and array.shape[2] in (2, 4):
            colour, alpha = array[..., :-1], array[..., -1:]
            array = np.concatenate(
                [stretch_to_uint8(colour), _alpha_to_uint8(alpha)], axis=-1
            )
        else:
            array = stretch_to_uint8(array)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    channels = array.shape[2]
    if channels == 3:
        return Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    mode = "LA" if channels == 2 else "RGBA"
    return _composite_on_black(Image.fromarray(np.ascontiguousarray(array), mode))


def _pil_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Applies the documented mode conversions to a loaded Pillow image."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("1", "L"):
        return image.convert("RGB")
    if mode == "P":
        if "transparency" in image.info:
            return _composite_on_black(image.convert("RGBA"))
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _composite_on_black(image)
    if mode in _HIGH_DEPTH_MODES:
        return array_to_rgb(np.asarray(image), name)
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageReadError(
            name, f"cannot convert mode {mode} to RGB: {error}"
        ) from error


def _read_tiff(path: Path) -> tuple[Image.Image | None, str | None]:
    """Reads a TIFF with tifffile (any dtype).

    Returns ``(image, None)`` on success, ``(None, problem)`` when tifffile
    cannot decode the file (e.g. a compression it lacks a codec for: Pillow
    gets a try next), and ``(None, None)`` when tifffile is not installed.
    """
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is in the [data] extra
        return None, None
    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.pages:
                return None, "TIFF file without image pages."
            array = tiff.pages[0].asarray()
    except Exception as error:  # tifffile raises many types on broken files
        return None, f"tifffile: {type(error).__name__}: {error}"
    return array_to_rgb(np.asarray(array), str(path)), None


def existing_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path`, refused when missing or empty.

    Raises:
        ImageReadError: The file is missing or empty (0 bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file.")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes).")
    return path


@contextmanager
def pillow_errors(path: Path, damaged: str, note: str | None = None) -> Iterator[None]:
    """Turns Pillow's errors while reading ``path`` into :class:`ImageReadError`.

    Args:
        path: The file being read.
        damaged: What a decoding error means here (e.g. ``"corrupt or
            truncated image data"``, ``"unreadable image header"``).
        note: A problem found before Pillow (e.g. by the TIFF reader), added
            to the message.

    Raises:
        ImageReadError: Naming the file and the problem.
    """
    try:
        yield
    except ImageReadError:
        raise
    except UnidentifiedImageError as error:
        also = f" ({note})" if note else ""
        raise ImageReadError(
            path, f"not an image file (Pillow cannot identify its format){also}."
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            path,
            f"{error} Raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted.",
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        also = f"; {note}" if note else ""
        raise ImageReadError(
            path, f"{damaged} ({type(error).__name__}: {error}{also})."
        ) from error


def load_rgb_image(path: str | os.PathLike[str]) -> Image.Image:
    """Reads an image file as an 8-bit RGB image, with the module's conversions.

    See the module docstring for the conversion of each pixel format. The
    pixels are fully decoded here, so truncated or corrupt files fail now and
    not later inside a data loader.

    Args:
        path: Image file (any format Pillow reads; TIFF through ``tifffile``).

    Returns:
        A loaded 8-bit RGB :class:`PIL.Image.Image`.

    Raises:
        ImageReadError: If the file is missing, empty, not an image, truncated
            or otherwise undecodable; the message names the file and the
            problem.
    """
    path = existing_file(path)
    tiff_problem = None
    if path.suffix.lower() in _TIFF_SUFFIXES:
        tiff_image, tiff_problem = _read_tiff(path)
        if tiff_image is not None:
            return tiff_image
    with pillow_errors(path, "corrupt or truncated image data", tiff_problem):
        with Image.open(path) as image:
            image.load()
            return _pil_to_rgb(image, str(path))
