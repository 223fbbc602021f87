"""Saving and loading adapted backbones (frozen ViT weights + UniAdapters)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightly_glare.models.adapted_vit import UniAdapterViT

#: Value of ``meta["format"]`` in an exported adapted backbone.
EXPORT_FORMAT = "lightly-glare-adapted-vit"
EXPORT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


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


def replace_durably(partial: Path, target: Path) -> None:
    """Flushes ``partial`` to disk and renames it over ``target``, durably.

    The file's data is ``fsync``-ed before the rename and the folder after it,
    so that after a crash ``target`` is either the old or the new complete file.

    Args:
        partial: A fully written file in ``target``'s folder.
        target: The destination.
    """
    with partial.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename.

    A kill during saving never leaves a truncated file at ``path``.

    Args:
        obj: What to save.
        path: Destination file.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
        umask = os.umask(0)  # mkstemp creates 0600 files: apply the usual mode
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        replace_durably(Path(tmp_name), path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


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
    return checkpoint["state_dict"], meta


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


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raises if ``state`` does not have exactly ``model``'s keys and shapes.

    Args:
        model: The model to load into.
        state: The state dict to load.
        source: Where ``state`` comes from, for the message.

    Raises:
        CheckpointMismatchError: Lists missing keys, unexpected keys and shape
            mismatches.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)}, model "
        f"{tuple(expected[key].shape)}"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            f"Checkpoint {source} does not match {type(model).__name__}:\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
            f"  shape mismatches ({len(shapes)}): {shapes}"
        )
