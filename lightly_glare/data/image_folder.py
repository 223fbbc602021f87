"""An unlabeled, recursive image-folder dataset for continual pre-training."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lightly_glare.data.image_io import ImageReadError, load_rgb_image

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


@dataclass
class ScanReport:
    """Result of decoding every file of an :class:`ImageFolderDataset`.

    Attributes:
        good: Relative names of the files that decoded (and are large enough).
        bad: ``(relative name, reason)`` of the files that did not.
    """

    good: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)

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
            else:
                report.good.append(self._name(path))
        return report

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        image = self.load(index)
        sample = self.transform(image) if self.transform is not None else image
        return sample, 0, self._name(self.files[index])
