"""Model-loading options shared by the visualisation tools beside this file.

``visualize_attention.py`` and ``visualize_pca.py`` import this module from
their own folder; the library (:func:`lightly_glare.weights.build_backbone`)
has no command-line code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightly_glare.models import UniAdapterViT
from lightly_glare.weights import build_backbone


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the model-loading options shared by the visualisation tools."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--arch",
        default="vit_small_patch14_dinov2",
        help="timm model name of the backbone, e.g. vit_small_patch14_dinov2, "
        "vit_base_patch16_224, vit_small_patch16_224 (DINO ViT-S/16) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--checkpoint",
        required=True,
        help="local checkpoint: a plain SSL checkpoint (DINO / DINOv2 / iBOT / "
        "timm layout) or a GLARE export (lightly-glare export); 'none' for "
        "random weights, only together with --random-init",
    )
    group.add_argument(
        "--checkpoint-type",
        choices=("ssl", "glare"),
        default="ssl",
        help="what --checkpoint holds (default: %(default)s)",
    )
    group.add_argument(
        "--label", help="row label of this model (default: the checkpoint's name)"
    )
    group.add_argument(
        "--compare-checkpoint",
        help="a second checkpoint (e.g. the GLARE export of the --checkpoint "
        "model) shown in extra rows below the first for comparison; 'none' with "
        "--random-init",
    )
    group.add_argument(
        "--compare-type",
        choices=("ssl", "glare"),
        default="glare",
        help="what --compare-checkpoint holds (default: %(default)s)",
    )
    group.add_argument(
        "--compare-arch",
        help="timm model name of the second model (default: --arch)",
    )
    group.add_argument(
        "--compare-label",
        help="row label of the second model (default: the checkpoint's name)",
    )
    group.add_argument(
        "--img-size",
        type=int,
        default=224,
        help="side of the square center crop fed to the model; must be a "
        "multiple of the patch size (14 for DINOv2, 16 for DINO ViT-S/16) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--random-init",
        action="store_true",
        help="allow --checkpoint none: random weights, for smoke tests only",
    )
    group.add_argument(
        "--device",
        default="cpu",
        help="torch device to run the model on (default: %(default)s)",
    )


def backbones_from_args(
    args: argparse.Namespace,
) -> list[tuple[str, UniAdapterViT]]:
    """Builds the model(s) named by :func:`add_backbone_arguments`' options.

    Returns:
        (label, backbone) for --checkpoint and, when given,
        --compare-checkpoint, each in eval mode on ``args.device``.

    Raises:
        SystemExit: Invalid option combination (message names the fix).
    """
    specs = [(args.checkpoint, args.checkpoint_type, args.arch, args.label)]
    if args.compare_checkpoint is not None:
        specs.append(
            (
                args.compare_checkpoint,
                args.compare_type,
                args.compare_arch or args.arch,
                args.compare_label,
            )
        )
    models = []
    for checkpoint, kind, arch, label in specs:
        path = None if checkpoint.lower() == "none" else Path(checkpoint)
        if path is None and not args.random_init:
            raise SystemExit(
                "error: --checkpoint none gives a model with random weights; pass "
                "--random-init as well if that is what you want."
            )
        if path is not None and not path.is_file():
            raise SystemExit(f"error: checkpoint {path} does not exist.")
        backbone = build_backbone(arch, path, kind, args.img_size)
        if args.img_size % backbone.patch_size:
            raise SystemExit(
                f"error: --img-size {args.img_size} is not a multiple of the patch "
                f"size {backbone.patch_size} of {arch}."
            )
        name = label or ("random init" if path is None else path.stem)
        models.append((name, backbone.to(args.device)))
    return models
