"""An unlabeled, recursive image-folder dataset for continual pre-training."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lightly_glare.data.image_io import (
    ImageReadError,
    existing_file,
    load_rgb_image,
    pillow_errors,
)

logger = logging.getLogger(__name__)

#: File extensions read by default (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".gif",
)


class ImageTooSmallError(ImageReadError):
    """An image is smaller than the dataset's ``min_size``."""


class BadImagesError(ValueError):
    """Files of an image folder that cannot be trained on, all listed at once.

    Attributes:
        root: The folder.
        report: The check's :class:`ScanReport` (every bad file and its reason).

    Args:
        root: The folder.
        report: The check's report.
        fix: What to do, for the message.
        listed: Bad files named in the message (all are counted).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        report: ScanReport,
        fix: str,
        listed: int = 20,
    ) -> None:
        self.root = str(root)
        self.report = report
        total = len(report.bad) + len(report.good)
        small = ""
        if report.too_small:
            small = f" ({report.too_small} smaller than min_size)"
        super().__init__(
            f"{len(report.bad)} of {total} files in '{self.root}' are not usable "
            f"images{small}: {fix}\n{report.summary(listed)}"
        )


@dataclass
class ScanReport:
    """Result of decoding every file of an :class:`ImageFolderDataset`.

    Attributes:
        good: Relative names of the files that decoded (and are large enough).
        bad: ``(relative name, reason)`` of the files that did not.
        too_small: How many of the bad files are smaller than ``min_size``.
    """

    good: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    too_small: int = 0

    def summary(self, limit: int = 20) -> str:
        """One line per bad file (at most ``limit``), for logs and errors."""
        lines = [f"  {name}: {reason}" for name, reason in self.bad[:limit]]
        if len(self.bad) > limit:
            lines.append(f"  ... and {len(self.bad) - limit} more")
        return "\n".join(lines)


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    normalised = tuple(
        ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions
    )
    if not normalised:
        raise ValueError("extensions must not be empty.")
    return normalised


def find_image_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """All files under ``root`` (recursively) with one of the extensions.

    Hidden files and folders (name starting with ``.``, e.g. macOS ``._x.png``
    resource forks) are skipped. Symbolic links to folders are followed. The
    result is sorted by relative POSIX path, so it is the same on every
    machine.
    """
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(Path(directory, name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


class ImageFolderDataset(Dataset[tuple[Any, int, str]]):
    """Unlabeled images of a folder tree, read robustly as 8-bit RGB.

    Every file under ``root`` (recursively, hidden files excluded) whose
    extension is in ``extensions`` is one sample, in sorted order of its
    relative path. Images are read with :func:`~lightly_glare.data.load_rgb_image`
    (documented conversions of greyscale, alpha, palette, 16-bit and float
    images). Items are ``(transform(image), 0, filename)`` like lightly's
    ``LightlyDataset``, so lightly's collate functions and training loops work
    unchanged; ``filename`` is the path relative to ``root`` (POSIX separators).

    Bad files (unreadable, corrupt, truncated, not images, or smaller than
    ``min_size``):

    - by default a bad file raises :class:`ImageReadError` naming it when its
      item is loaded (lazy validation: construction only lists the files);
    - ``verify=True`` decodes every file at construction and raises one error
      listing all bad files; :meth:`scan` does the same check on demand and
      returns a :class:`ScanReport`;
    - ``skip_bad=True`` decodes every file at construction, drops the bad ones
      and reports them: a logged warning with their names and reasons, and the
      :attr:`skipped` attribute. Nothing is ever skipped silently.

    Images smaller than ``min_size`` are **not upscaled**: they are bad files
    (:class:`ImageTooSmallError`), raised or skipped as above. Crops that need
    a larger input should be made by the transform.

    Attributes:
        root: The folder.
        files: Absolute paths of the samples, in order.
        skipped: ``(relative name, reason)`` of the files dropped by
            ``skip_bad=True`` (empty otherwise).

    Args:
        root: Folder to read recursively.
        transform: Applied to each RGB :class:`PIL.Image.Image`. Defaults to
            None (the image is returned).
        extensions: Accepted file extensions (case-insensitive). Defaults to
            :data:`IMAGE_EXTENSIONS`.
        skip_bad: Drop and report bad files instead of raising. Defaults to
            False.
        min_size: Minimum length of the shorter image side in pixels, or None.
            Defaults to None.
        verify: Decode all files at construction and raise if any is bad.
            Defaults to False.

    Raises:
        FileNotFoundError: If ``root`` is not a folder.
        ValueError: If no file with an accepted extension is found (the error
            names the folder and the extensions), or all files are bad with
            ``skip_bad=True``.
        ImageReadError: With ``verify=True``, if any file is bad.

    Examples:
        >>> from lightly.transforms import DINOTransform
        >>> dataset = ImageFolderDataset("data/aerial/unlabeled",
        ...                              transform=DINOTransform(), skip_bad=True)
        >>> views, _, filename = dataset[0]
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        skip_bad: bool = False,
        min_size: int | None = None,
        verify: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image folder '{self.root}' does not exist.")
        if min_size is not None and min_size < 1:
            raise ValueError(f"min_size must be a positive int, got {min_size}.")
        self.transform = transform
        self.extensions = _normalise_extensions(extensions)
        self.min_size = min_size
        self.files = find_image_files(self.root, self.extensions)
        if not self.files:
            raise ValueError(
                f"No images found in '{self.root}' (searched recursively for the "
                f"extensions {', '.join(self.extensions)}; hidden files ignored)."
            )
        self.skipped: list[tuple[str, str]] = []
        if skip_bad or verify:
            report = self.scan()
            if report.bad and not skip_bad:
                raise ImageReadError(
                    self.root,
                    f"{len(report.bad)} of {len(self.files)} files are not "
                    f"readable images:\n{report.summary()}",
                )
            if report.bad:
                self.skipped = report.bad
                bad_names = {name for name, _ in report.bad}
                self.files = [f for f in self.files if self._name(f) not in bad_names]
                logger.warning(
                    "ImageFolderDataset('%s'): skipped %d bad file(s) of %d:\n%s",
                    self.root,
                    len(report.bad),
                    len(report.bad) + len(self.files),
                    report.summary(),
                )
            if not self.files:
                raise ValueError(
                    f"All {len(self.skipped)} files in '{self.root}' are bad:\n"
                    f"{report.summary()}"
                )

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @property
    def filenames(self) -> list[str]:
        """Relative POSIX paths of the samples, in order."""
        return [self._name(f) for f in self.files]

    def load(self, index: int) -> Image.Image:
        """The RGB image of sample ``index``, checked against ``min_size``.

        Raises:
            ImageReadError: If the file is bad (names the file).
        """
        path = self.files[index]
        image = load_rgb_image(path)
        if self.min_size is not None and min(image.size) < self.min_size:
            raise ImageTooSmallError(
                path,
                f"image is {image.width}x{image.height} px, smaller than "
                f"min_size={self.min_size} on its shorter side (not upscaled).",
            )
        return image

    def scan(self) -> ScanReport:
        """Decodes every file and reports which are bad and why.

        Costs one full decode per file. Does not change the dataset.
        """
        report = ScanReport()
        for index, path in enumerate(self.files):
            try:
                self.load(index)
            except ImageReadError as error:
                report.bad.append((self._name(path), error.reason))
                report.too_small += isinstance(error, ImageTooSmallError)
            else:
                report.good.append(self._name(path))
        return report

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        image = self.load(index)
        sample = self.transform(image) if self.transform is not None else image
        return sample, 0, self._name(self.files[index])


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Width and height of an image file, from its header only (fast).

    Reads what :func:`~lightly_glare.data.load_rgb_image` needs to know the
    format and the size (a TIFF's first page through ``tifffile`` when it is
    installed, other formats through Pillow), without decoding the pixels: a
    file whose header is fine but whose data is truncated passes.

    Args:
        path: The image file.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        ImageReadError: The file is missing, empty, not an image (Pillow cannot
            identify it) or too large for Pillow's decompression-bomb limit.
    """
    path = existing_file(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        size = _tiff_size(path)
        if size is not None:
            return size
    with pillow_errors(path, "unreadable image header"), Image.open(path) as image:
        return image.size


def _tiff_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a TIFF's first page by tifffile; None: try Pillow."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is in the [data] extra
        return None
    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.pages:
                return None
            page = tiff.pages[0]
            return int(page.imagewidth), int(page.imagelength)  # type: ignore[union-attr]
    except Exception:  # tifffile raises many types; Pillow gets a try next
        return None


def check_images(
    files: Sequence[Path],
    root: str | os.PathLike[str],
    min_size: int | None = None,
    decode: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScanReport:
    """Checks image files before training: every bad file is reported at once.

    Args:
        files: The files (e.g. :attr:`ImageFolderDataset.files`).
        root: Their folder (the report names files relative to it).
        min_size: Shorter side in pixels below which an image is bad (it would
            be upscaled into the training views); None: no minimum.
        decode: Decode every file's pixels (:func:`load_rgb_image`, as
            training does: finds truncated data too, costs a full decode per
            file) instead of reading headers only (:func:`read_image_size`,
            0.05 ms per file for 5,000 small JPEGs in the page cache,
            a quarter of a full decode).
        progress: Called with the number of files checked after each one.

    Returns:
        The :class:`ScanReport`: names relative to ``root``, reasons, and how
        many images are too small.
    """
    root = Path(root)
    report = ScanReport()
    for done, path in enumerate(files, 1):
        name = path.relative_to(root).as_posix()
        try:
            if decode:
                width, height = load_rgb_image(path).size
            else:
                width, height = read_image_size(path)
        except ImageReadError as error:
            report.bad.append((name, error.reason))
        else:
            if min_size is not None and min(width, height) < min_size:
                report.bad.append(
                    (
                        name,
                        f"image is {width}x{height} px, smaller than min_size="
                        f"{min_size} on its shorter side (it would be upscaled).",
                    )
                )
                report.too_small += 1
            else:
                report.good.append(name)
        if progress is not None:
            progress(done)
    return report
