"""Count a segmentor's FLOPs and parameters (mmseg 1.x ``get_flops.py`` flags).

Unlike mmseg's own script, this one works with mmcv-lite and counts the fused
attention of timm ViTs (``aten::scaled_dot_product_attention``), which mmengine's
counter skips (about 19.4 G multiply-adds for ViT-B/16 at 512 x 512). The
model traces one random image on the CPU through its data preprocessor,
backbone, neck and decode head (not the auxiliary head, as mmseg's script).

mmengine, fvcore and mmseg print multiply-adds (MACs) as "Flops"; this report
gives both MACs and FLOPs (2 per multiply-add) and names the operators left
uncounted (elementwise ones).

Examples:
    python tools/analysis_tools/get_flops.py mmseg_configs/glare_ade20k.py \
        --shape 512
    python tools/analysis_tools/get_flops.py CONFIG --shape 512 1024 \
        --cfg-options model.backbone.img_size=(512,1024)
"""

from __future__ import annotations

import argparse

from config_args import add_config_arguments

import lightly_glare.openmmlab  # noqa: F401  (registers modules, mmcv fallback)
from lightly_glare.openmmlab.analysis import (
    build_segmentor,
    load_config,
    segmentor_flops,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Get the FLOPs of a segmentor")
    add_config_arguments(parser, "config file path")
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=[2048, 1024],
        help="input image size: H W, or one value for a square image "
        "(default: 2048 1024, as mmseg's get_flops.py)",
    )
    return parser.parse_args(argv)


def image_shape(shape: list[int]) -> tuple[int, int, int]:
    """``(3, H, W)`` from ``--shape H [W]``."""
    if len(shape) == 1:
        return (3, shape[0], shape[0])
    if len(shape) == 2:
        return (3, shape[0], shape[1])
    raise SystemExit(f"--shape takes H W or one size, got {len(shape)} values.")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shape = image_shape(args.shape)
    cfg = load_config(args.config, args.cfg_options)
    complexity = segmentor_flops(build_segmentor(cfg, args.config), shape)
    split_line = "=" * 30
    print(split_line)
    if complexity.input_shape[2:] != shape[1:]:
        print(
            f"The data preprocessor padded the input from {shape[1:]} to "
            f"{complexity.input_shape[2:]}."
        )
    print(complexity.summary())
    print(split_line)


if __name__ == "__main__":
    main()
