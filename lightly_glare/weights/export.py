"""Saving and loading adapted backbones (frozen ViT weights + UniAdapters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightly_glare.models.adapted_vit import UniAdapterViT
from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    check_finite,
    check_state_dict,
    save_atomic,
)

#: Value of ``meta["format"]`` in an exported adapted backbone.
EXPORT_FORMAT = "lightly-glare-adapted-vit"
EXPORT_VERSION = 1


def architecture_of(backbone: UniAdapterViT) -> dict[str, Any]:
    """Describes what a checkpoint must match: ViT shape and adapter size."""
    adapter = backbone.adapters[0]
    return {
        "embed_dim": backbone.embed_dim,
        "depth": backbone.num_blocks,
        "num_heads": backbone.num_heads,
        "patch_size": backbone.patch_size,
        "num_prefix_tokens": backbone.num_prefix_tokens,
        "adapter_bottleneck": adapter.bottleneck,
        "adapter_scale": adapter.scale,
    }


def export_adapted_backbone(
    backbone: UniAdapterViT,
    path: str | Path,
    adapters: nn.ModuleList | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Writes the adapted backbone as a weights-only loadable checkpoint.

    The file holds ``{"state_dict": ..., "meta": ...}``: the state dict has the
    keys of :class:`UniAdapterViT` (``vit.<timm key>`` and
    ``adapters.<block>.<name>``); ``meta`` records the format, the architecture
    and ``extra_meta``.

    Args:
        backbone: The adapted backbone.
        path: Destination file (written atomically).
        adapters: Adapters to export instead of ``backbone.adapters`` (e.g. a
            GLARE teacher's EMA adapters).
        extra_meta: JSON-like information to store (e.g. the timm model name).

    Returns:
        The destination path.

    Raises:
        NonFiniteWeightsError: A weight holds NaN or inf (a diverged run);
            nothing is written.
    """
    state = {f"vit.{k}": v for k, v in backbone.vit.state_dict().items()}
    chosen = backbone.adapters if adapters is None else adapters
    state.update({f"adapters.{k}": v for k, v in chosen.state_dict().items()})
    meta = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "architecture": architecture_of(backbone),
        **(extra_meta or {}),
    }
    return save_atomic({"state_dict": state, "meta": meta}, path)


def load_exported_checkpoint(
    path: str | Path,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads an exported adapted backbone (weights-only, no pickled code).

    Args:
        path: File written by :func:`export_adapted_backbone`.

    Returns:
        The state dict and the meta information.

    Raises:
        CheckpointMismatchError: The file is not an exported adapted backbone
            or cannot be read (e.g. truncated).
        NonFiniteWeightsError: A weight holds NaN or inf.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointMismatchError(
            f"Cannot read checkpoint {path}: {error}"
        ) from error
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint, dict) else {}
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not a lightly-glare adapted-backbone export (meta.format is "
            f"{meta.get('format')!r}, expected {EXPORT_FORMAT!r}). Load plain SSL "
            "checkpoints with lightly_glare.weights.load_ssl_checkpoint."
        )
    state: dict[str, Tensor] = checkpoint["state_dict"]
    check_finite(state, str(path))
    return state, meta


def load_adapted_backbone(backbone: UniAdapterViT, path: str | Path) -> dict[str, Any]:
    """Loads an export into ``backbone`` with strict architecture and key checks.

    Args:
        backbone: An adapted backbone of the same architecture.
        path: File written by :func:`export_adapted_backbone`.

    Returns:
        The checkpoint's meta information.

    Raises:
        CheckpointMismatchError: Architecture, key set or a tensor shape differs;
            the message names every difference.
    """
    state, meta = load_exported_checkpoint(path)
    check_architecture(backbone, meta, source=str(path))
    check_state_dict(backbone, state, source=str(path))
    backbone.load_state_dict(state, strict=True)
    return meta


def check_architecture(
    backbone: UniAdapterViT, meta: dict[str, Any], source: str
) -> None:
    """Raises if an export's recorded architecture differs from ``backbone``'s.

    Args:
        backbone: The adapted backbone to load into.
        meta: The export's meta information.
        source: Where the export comes from, for the message.

    Raises:
        CheckpointMismatchError: Names every differing field (ViT shape, patch
            size, prefix tokens, adapter size).
    """
    found = meta.get("architecture", {})
    differences = [
        f"{name}: checkpoint {found.get(name)!r}, model {value!r}"
        for name, value in architecture_of(backbone).items()
        if found.get(name) != value
    ]
    if differences:
        raise CheckpointMismatchError(
            f"Architecture of {source} does not match the model: "
            + "; ".join(differences)
        )
