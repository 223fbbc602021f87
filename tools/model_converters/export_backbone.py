"""Export the adapted backbone of a GLARE pre-training checkpoint (mmengine).

Reads a checkpoint written by ``tools/train.py`` with a GLARE pre-training
config (``GlarePretrainer``) with ``torch.load(weights_only=True)``, rebuilds
the model from the config stored in the checkpoint (or from ``--config``)
without reading its SSL checkpoint (every weight comes from the mmengine
checkpoint, loaded strictly) and writes the frozen ViT + the teacher's
(default) or the student's UniAdapters. The result loads with strict key
checks into ``lightly_glare.models.UniAdapterViT`` via
``lightly_glare.weights.load_adapted_backbone`` and into the mmseg backbone
``GlareViT(checkpoint=..., checkpoint_type='glare')``.

Examples:
    python tools/model_converters/export_backbone.py work_dirs/pretrain/iter_300.pth \
        work_dirs/pretrain/glare_backbone.pth
    python tools/model_converters/export_backbone.py \
        work_dirs/pretrain/iter_300.pth out.pth --which student \
        --config mmseg_configs/pretrain/glare_vit-b16_1xb64-20k_unlabeled-224.py
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import lightly_glare.openmmlab  # noqa: F401  (registers modules, safe globals)
from lightly_glare.openmmlab.pretrainer import GlarePretrainer
from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    check_state_dict,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="mmengine checkpoint of GlarePretrainer")
    parser.add_argument("out", help="destination of the exported backbone")
    parser.add_argument(
        "--which",
        choices=["teacher", "student"],
        default="teacher",
        help="export the teacher's EMA adapters (default; DINO evaluates its "
        "teacher) or the student's",
    )
    parser.add_argument(
        "--config",
        help="the pre-training config (default: the one stored in the checkpoint)",
    )
    return parser.parse_args(argv)


def pretrainer_from_config(cfg: Config, source: str) -> GlarePretrainer:
    """The config's ``GlarePretrainer`` with random weights (no SSL file read)."""
    model_cfg = dict(cfg.model)
    if model_cfg.pop("type", None) != "GlarePretrainer":
        raise SystemExit(
            f"{source} is not a GLARE pre-training config (model type "
            f"{cfg.model.get('type')!r}, expected 'GlarePretrainer')."
        )
    model_cfg["backbone"] = {**model_cfg["backbone"], "checkpoint": None}
    init_default_scope(cfg.get("default_scope", "mmseg"))
    return GlarePretrainer(**model_cfg)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads an mmengine checkpoint without unpickling code.

    Raises:
        SystemExit: The file is missing or unreadable (truncated, corrupt, not
            a torch file), with a one-line message naming it.
    """
    if not Path(path).is_file():
        raise SystemExit(f"export_backbone: checkpoint {path} not found.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        cause = (str(error).strip().splitlines() or [""])[0]
        raise SystemExit(
            f"export_backbone: cannot read checkpoint {path} "
            f"({type(error).__name__}: {cause}); it is truncated, corrupt or not "
            "a checkpoint written by tools/train.py."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise SystemExit(f"{path} is not an mmengine checkpoint (no state_dict).")
    return checkpoint


def export(
    checkpoint: str | Path,
    out: str | Path,
    which: str = "teacher",
    config: str | Path | None = None,
) -> Path:
    """Loads ``checkpoint`` into its config's model and exports the backbone.

    Args:
        checkpoint: mmengine checkpoint of a ``GlarePretrainer``.
        out: Destination file (written atomically).
        which: ``'teacher'`` or ``'student'`` adapters.
        config: Pre-training config; None uses the one in the checkpoint.

    Returns:
        The destination path.

    Raises:
        SystemExit: ``checkpoint`` cannot be read or stores no config.
        CheckpointMismatchError: The checkpoint does not fit its config's
            model (the first differing keys named), or its weights hold NaN or
            inf (``NonFiniteWeightsError``; nothing is written).
    """
    state = load_checkpoint(checkpoint)
    meta = state.get("meta", {})
    if config is not None:
        cfg = Config.fromfile(str(config))
    elif "cfg" in meta:
        cfg = Config.fromstring(meta["cfg"], file_format=".py")
    else:
        raise SystemExit(f"{checkpoint} stores no config: pass --config.")
    model = pretrainer_from_config(cfg, str(config or checkpoint))
    check_state_dict(model, state["state_dict"], source=str(checkpoint))
    model.load_state_dict(state["state_dict"], strict=True)
    return model.glare.export_backbone(
        out,
        which="teacher" if which == "teacher" else "student",
        extra_meta={
            **model.export_meta(),
            "source": str(checkpoint),
            "which": which,
            "iteration": meta.get("iter"),
        },
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        path = export(args.checkpoint, args.out, args.which, args.config)
    except CheckpointMismatchError as error:
        raise SystemExit(f"export_backbone: {error}") from None
    print(f"Exported the {args.which} backbone to {path}")


if __name__ == "__main__":
    main()
