"""Export the adapted backbone of a GLARE pre-training checkpoint (mmengine).

Reads a checkpoint written by ``tools/train.py`` with a GLARE pre-training
config (``GlarePretrainer``), rebuilds the model from the config without its
SSL checkpoint (the weights all come from the mmengine checkpoint, loaded
strictly) and writes the frozen ViT + the teacher's (default) or student's
UniAdapters, loadable with ``lightly_glare.models.load_adapted_backbone`` and
by the mmseg backbone ``GlareViT(checkpoint=..., checkpoint_type='glare')``.

Examples:
    python tools/export_backbone.py \
        work_dirs/pretrain/iter_300.pth pretrain/glare_vit-s14-dinov2.pth \
        --config mmseg_configs/glare_pretrain_vit-s14-dinov2_aerial-112.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import lightly_glare.openmmlab  # noqa: F401  (registers modules, safe globals)
from lightly_glare.openmmlab.pretrain import GlarePretrainer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="mmengine checkpoint of GlarePretrainer")
    parser.add_argument("out", help="destination of the exported backbone")
    parser.add_argument("--config", required=True, help="the pre-training config")
    parser.add_argument(
        "--which",
        choices=["teacher", "student"],
        default="teacher",
        help="export the teacher's EMA adapters (default) or the student's",
    )
    return parser.parse_args(argv)


def build_pretrainer(config: str | Path) -> GlarePretrainer:
    """The config's ``GlarePretrainer`` with random weights (no SSL file read)."""
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model_cfg = dict(cfg.model)
    if model_cfg.get("type") != "GlarePretrainer":
        raise SystemExit(
            f"{config} is not a GLARE pre-training config "
            f"(model type {model_cfg.get('type')!r})."
        )
    model_cfg.pop("type")
    model_cfg["checkpoint"] = None
    return GlarePretrainer(**model_cfg)


def export(
    checkpoint: str | Path,
    out: str | Path,
    config: str | Path,
    which: str = "teacher",
) -> Path:
    """Loads ``checkpoint`` into the config's model and exports its backbone."""
    model = build_pretrainer(config)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state), strict=True)
    meta = {
        **model.export_meta(),
        "source": str(checkpoint),
        "which": which,
        "iteration": state.get("meta", {}).get("iter"),
    }
    return model.glare.export_backbone(
        out,
        which="teacher" if which == "teacher" else "student",
        extra_meta=meta,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    path = export(args.checkpoint, args.out, args.config, args.which)
    print(f"Exported the {args.which} backbone to {path}")


if __name__ == "__main__":
    main()
