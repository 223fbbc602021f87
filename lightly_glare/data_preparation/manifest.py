"""Shared machinery of the offline dataset preparations.

A preparation writes into a staging folder inside ``out`` and moves its
entries into place only when everything is written; ``manifest.json`` (written
last) records the parameters, the sources and every output file. A second run
with the same parameters finds the manifest, checks the files and returns it
without redoing anything (idempotent); ``force=True`` rebuilds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

#: Bumped when the preparation output changes, so older folders are rebuilt.
PREPARATION_VERSION = 2
MANIFEST = "manifest.json"

Printer = Callable[[str], None]


def quiet(_: str) -> None:
    """The default progress printer: prints nothing."""


def load_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of a prepared folder, or None if absent or unreadable."""
    try:
        with (out / MANIFEST).open(encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def find_prepared(
    out: Path, dataset: str, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The manifest if ``out`` holds a complete preparation with these params."""
    manifest = load_manifest(out)
    if manifest is None:
        return None
    same = (
        manifest.get("dataset") == dataset
        and manifest.get("version") == PREPARATION_VERSION
        and manifest.get("params") == json.loads(json.dumps(dict(params)))
    )
    if not same:
        return None
    files = manifest.get("files", [])
    if not all((out / name).is_file() for name in files):
        return None
    return manifest


def reuse_prepared(
    out: Path,
    dataset: str,
    params: Mapping[str, Any],
    force: bool,
    log: Printer,
) -> dict[str, Any] | None:
    """The existing manifest to return instead of rebuilding, unless ``force``.

    Logs that the preparation is reused; None means "build it".
    """
    prepared = None if force else find_prepared(out, dataset, params)
    if prepared is not None:
        log(f"{dataset}: already prepared in {out} (use force to rebuild)")
    return prepared


class StagedOutput:
    """A staging folder whose top-level entries replace those of ``out`` at commit.

    Usage::

        with StagedOutput(out) as stage:
            save_rgb(array, stage.path / "img_dir/train/a.png")
            stage.commit(manifest)
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = Path()

    def __enter__(self) -> StagedOutput:
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.out))
        return self

    def commit(self, manifest: dict[str, Any]) -> None:
        """Moves the staged entries into ``out``, then writes the manifest.

        The manifest's ``files`` entry is filled with every staged file.
        """
        files = sorted(
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file()
        )
        manifest["files"] = files
        (self.out / MANIFEST).unlink(missing_ok=True)
        for entry in sorted(self.path.iterdir()):
            target = self.out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            entry.rename(target)
        partial = self.out / (MANIFEST + ".part")
        partial.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        partial.replace(self.out / MANIFEST)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def save_png(array: NDArray[np.uint8], path: Path) -> None:
    """Saves (H, W) as 8-bit greyscale or (H, W, 3) as RGB PNG (folders made)."""
    if array.dtype != np.uint8:
        raise ValueError(f"Expected uint8 pixels for '{path}', got {array.dtype}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if array.ndim == 2 else "RGB"
    Image.fromarray(np.ascontiguousarray(array), mode=mode).save(path)


def grey_to_rgb(array: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Replicates an (H, W) uint8 image to (H, W, 3)."""
    return np.repeat(array[..., None], 3, axis=-1)


def class_frequencies(
    masks: Iterable[NDArray[Any]], class_names: tuple[str, ...]
) -> dict[str, float]:
    """Fraction of labelled pixels of each class over a set of masks."""
    counts = np.zeros(len(class_names), dtype=np.int64)
    for mask in masks:
        counts += np.bincount(mask.ravel(), minlength=256)[: len(class_names)]
    total = max(int(counts.sum()), 1)
    return {
        name: round(int(c) / total, 6)
        for name, c in zip(class_names, counts, strict=True)
    }


def format_summary(manifest: Mapping[str, Any], root: Path) -> str:
    """Human-readable lines of a manifest's ``summary`` entry."""
    lines = [f"{manifest.get('dataset')} in {root}"]
    for key, value in manifest.get("summary", {}).items():
        lines.append(f"  {key}: {json.dumps(value)}")
    return "\n".join(lines)
