"""Offline solar-cell images from the ``elpv-dataset`` package (PyPI).

``elpv-dataset==1.0.0.post1`` (an 87 MB wheel) holds 2,624 real 300 x 300
8-bit greyscale electroluminescence images of solar cells
(``elpv_dataset/data/images/cell*.png``) and ``elpv_dataset/data/labels.csv``
(whitespace-separated: image path, defect probability in {0, 1/3, 2/3, 1},
cell type ``mono``/``poly``). The package is never installed or imported.

**Licence: the data are CC-BY-NC-SA-4.0.** Download them for your own
non-commercial tests and benchmarks; never redistribute them with this
project or its artefacts. :func:`prepare_elpv` writes a ``LICENSE_NOTE.txt``
beside the images saying so.

Preparation (:func:`prepare_elpv`) copies the PNG files unchanged (greyscale;
:func:`~lightly_glare.data.load_rgb_image` replicates them to RGB) and writes
``labels.csv`` with the columns ``file, defect_probability, cell_type, split``
in the package's order. **Split**: a permutation of the 2,624 rows by
``numpy.random.default_rng(seed)`` (seed 0); its first
``round(train_fraction * n)`` rows (75 %) are ``train``, the others ``test``.

Layout written under ``out``::

    images/cell0001.png ... images/cell2624.png
    labels.csv
    LICENSE_NOTE.txt
    manifest.json
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightly_glare.data_preparation.cache import DistributionArchive, fetch_distribution
from lightly_glare.data_preparation.manifest import (
    PREPARATION_VERSION,
    Printer,
    StagedOutput,
    quiet,
    reuse_prepared,
)

ELPV_DISTRIBUTION = "elpv-dataset"
ELPV_VERSION = "1.0.0.post1"
_DATA = "elpv_dataset/data/"
LICENSE_NOTE = (
    "These images and labels come from the elpv-dataset package "
    f"({ELPV_DISTRIBUTION}=={ELPV_VERSION}, https://github.com/zae-bayern/elpv-dataset)"
    ".\nThey are licensed CC-BY-NC-SA-4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use,\n"
    "attribution, share-alike. Do not redistribute them with lightly-glare or "
    "its artefacts.\nCite: Deitsch et al., Automatic classification of defective "
    "photovoltaic module cells in electroluminescence images, Solar Energy 2019.\n"
)


@dataclass(frozen=True)
class ElpvRecord:
    """One row of the prepared ``labels.csv``.

    Attributes:
        file: Image path relative to the prepared folder.
        defect_probability: 0, 1/3, 2/3 or 1.
        cell_type: ``mono`` or ``poly``.
        split: ``train`` or ``test``.
    """

    file: str
    defect_probability: float
    cell_type: str
    split: str


def parse_package_labels(text: str) -> list[tuple[str, float, str]]:
    """Parses the package's whitespace-separated ``labels.csv``."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"labels.csv line {number}: expected 3 fields: {line!r}")
        rows.append((fields[0], float(fields[1]), fields[2]))
    return rows


def load_elpv_labels(root: str | os.PathLike[str]) -> list[ElpvRecord]:
    """Reads the ``labels.csv`` of a folder prepared by :func:`prepare_elpv`."""
    with (Path(root) / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return [
            ElpvRecord(
                row["file"],
                float(row["defect_probability"]),
                row["cell_type"],
                row["split"],
            )
            for row in csv.DictReader(handle)
        ]


def _split_summary(chosen: list[tuple[str, float, str]]) -> dict[str, Any]:
    """Images, defect-probability and cell-type counts of one split's rows."""
    probabilities = sorted({round(p, 4) for _, p, _ in chosen})
    return {
        "images": len(chosen),
        "defect_probability": {
            str(p): sum(round(q, 4) == p for _, q, _ in chosen) for p in probabilities
        },
        "cell_type": {t: sum(c == t for _, _, c in chosen) for t in ("mono", "poly")},
    }


def prepare_elpv(
    out: str | os.PathLike[str],
    train_fraction: float = 0.75,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Printer = quiet,
) -> dict[str, Any]:
    """Copies the elpv images and writes ``labels.csv`` with a fixed split.

    See the module docstring (licence CC-BY-NC-SA-4.0: never redistribute).
    Idempotent: a folder already prepared with the same parameters is returned
    as is.

    Args:
        out: Output folder (its ``images``, ``labels.csv``,
            ``LICENSE_NOTE.txt`` and ``manifest.json`` entries are replaced).
        train_fraction: Fraction of the permuted rows that are train. Defaults
            to 0.75.
        seed: Seed of the permutation. Defaults to 0.
        cache_dir: Download cache. Defaults to
            :func:`~lightly_glare.data_preparation.cache.default_cache_dir`.
        force: Rebuild even if ``out`` is already prepared. Defaults to False.
        log: Progress printer (e.g. ``print``). Defaults to silent.

    Returns:
        The manifest: ``params``, ``sources``, ``summary`` (images per split,
        defect-probability and cell-type counts per split) and ``files``.

    Raises:
        DataDownloadError: If the wheel cannot be obtained.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}.")
    root = Path(out)
    params = {"train_fraction": train_fraction, "seed": seed}
    prepared = reuse_prepared(root, "elpv", params, force, log)
    if prepared is not None:
        return prepared
    log(f"elpv: fetching {ELPV_DISTRIBUTION}=={ELPV_VERSION} (87 MB)")
    wheel = fetch_distribution(ELPV_DISTRIBUTION, ELPV_VERSION, cache_dir)
    with DistributionArchive(wheel) as archive:
        rows = parse_package_labels(archive.read(_DATA + "labels.csv").decode())
    order = np.random.default_rng(seed).permutation(len(rows))
    train = set(order[: round(train_fraction * len(rows))].tolist())
    splits = ["train" if i in train else "test" for i in range(len(rows))]
    summary: dict[str, Any] = {}
    with StagedOutput(root) as stage, DistributionArchive(wheel) as archive:
        (stage.path / "images").mkdir()
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["file", "defect_probability", "cell_type", "split"])
        for index, ((member, probability, cell_type), split) in enumerate(
            zip(rows, splits, strict=True)
        ):
            name = Path(member).name
            image_bytes = archive.read(_DATA + member)
            (stage.path / "images" / name).write_bytes(image_bytes)
            writer.writerow([f"images/{name}", f"{probability:.6f}", cell_type, split])
            if index % 500 == 0:
                log(f"elpv: {index}/{len(rows)} images")
        (stage.path / "labels.csv").write_text(table.getvalue(), encoding="utf-8")
        (stage.path / "LICENSE_NOTE.txt").write_text(LICENSE_NOTE, encoding="utf-8")
        for split in ("train", "test"):
            chosen = [r for r, s in zip(rows, splits, strict=True) if s == split]
            summary[split] = _split_summary(chosen)
        manifest: dict[str, Any] = {
            "dataset": "elpv",
            "version": PREPARATION_VERSION,
            "params": params,
            "sources": {f"{ELPV_DISTRIBUTION}=={ELPV_VERSION}": wheel.name},
            "license": "CC-BY-NC-SA-4.0 (never redistribute)",
            "summary": summary,
        }
        stage.commit(manifest)
    return manifest
