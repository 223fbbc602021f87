"""Loading SSL ViT checkpoints (DINO, DINOv2, iBOT, timm) from a local path.

Nothing is downloaded: pass the path of a file you have. The file is read
weights-only (:func:`read_ssl_checkpoint`), re-keyed to timm's names
(:mod:`lightly_glare.weights.ssl_layouts` describes the layouts) and loaded
strictly: missing or unexpected keys and shape mismatches raise
:class:`~lightly_glare.weights.CheckpointMismatchError` (a ``ValueError``) that
leads with the architecture the file seems to hold and lists the first of
them, and weights holding NaN or inf raise
:class:`~lightly_glare.weights.NonFiniteWeightsError`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    check_finite,
    check_state_dict,
)
from lightly_glare.weights.export import EXPORT_FORMAT
from lightly_glare.weights.ssl_layouts import (
    class_token_count,
    describe_state_dict,
    normalize_with_description,
    timm_tensors,
)

logger = logging.getLogger(__name__)


def read_ssl_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Reads an SSL checkpoint file with ``torch.load(weights_only=True)``.

    DINO's and iBOT's training checkpoints store their ``argparse.Namespace``;
    it only holds attributes, so it is allowed (no pickled code runs).

    Args:
        path: Local checkpoint file.

    Returns:
        The loaded object (usually a dict).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: The file cannot be read (truncated, not a
            torch file, or holding other Python objects).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SSL checkpoint {path} not found.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointMismatchError(
            f"Cannot read checkpoint {path} with torch.load(weights_only=True): "
            f"{error}\nIf the file is a training checkpoint holding other Python "
            "objects, extract the backbone state dict from it where you trust it."
        ) from error


def _refuse_export(checkpoint: Any, source: str) -> None:
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and meta.get("format") == EXPORT_FORMAT:
        raise CheckpointMismatchError(
            f"{source} is a lightly-glare adapted-backbone export (ViT + adapters); "
            "load it with lightly_glare.weights.load_adapted_backbone, or with "
            "GlareViT(checkpoint_type='glare')."
        )


def _load(
    model: VisionTransformer,
    checkpoint: Any,
    source: str,
    checkpoint_key: str | None,
) -> None:
    """:func:`load_ssl_checkpoint` on the object read from the file ``source``."""
    _refuse_export(checkpoint, source)
    state, description = normalize_with_description(
        checkpoint, model, checkpoint_key, source
    )
    diagnosis = (
        f"  the file looks like: {description}\n"
        f"  the model is: {describe_state_dict(model.state_dict())}\n"
        "  fix: build the architecture the file holds (its timm name is above "
        "when known), or pass a checkpoint of the model's architecture; if the two "
        "agree, the file's key names are in no supported layout (DINO, iBOT, "
        "DINOv2, UDI, timm)."
    )
    check_state_dict(model, state, source=source, diagnosis=diagnosis)
    check_finite(state, source)
    model.load_state_dict(state, strict=True)


def load_ssl_checkpoint(
    model: VisionTransformer,
    path: str | Path,
    *,
    checkpoint_key: str | None = None,
) -> None:
    """Loads an SSL checkpoint from a local file into a timm ViT, strictly.

    The file is read with ``torch.load(weights_only=True)``: no pickled code
    runs.

    Args:
        model: The timm ``VisionTransformer`` (e.g. ``vit_small_patch16_224``,
            ``vit_base_patch16_224``, ``vit_small_patch14_dinov2``,
            ``vit_small_patch14_reg4_dinov2``; with ``reg_tokens=1`` for UDI).
        path: Local checkpoint file.
        checkpoint_key: Entry (or key prefix) holding the weights; see
            :func:`normalize_state_dict`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: The file cannot be read, is a lightly-glare
            export (load those with ``load_adapted_backbone``), or its keys or
            shapes do not match the model; the message first describes the
            architecture the file seems to hold and the model's, then lists
            the first missing and unexpected keys and shape mismatches.
        NonFiniteWeightsError: A weight holds NaN or inf; the message names the
            first such keys.
    """
    _load(model, read_ssl_checkpoint(path), str(Path(path)), checkpoint_key)


def loaded_checkpoint(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    source: str | os.PathLike[str] | None,
) -> tuple[Any, str]:
    """The object of a checkpoint given as a file or as already read, and its name.

    Lets a caller read a file once (:func:`read_ssl_checkpoint`) and hand the
    object to several loaders (:func:`create_vit`,
    :func:`~lightly_glare.weights.load_projection_heads`) whose messages still
    name the file.

    Args:
        checkpoint: A local checkpoint file (read here), or the object read
            from one.
        source: The name of an already-read ``checkpoint`` in messages (its
            file); ignored for a file, which names itself.

    Returns:
        The checkpoint's object and its name (``"<checkpoint>"`` for an
        already-read object without ``source``).

    Raises:
        FileNotFoundError: See :func:`read_ssl_checkpoint`.
        CheckpointMismatchError: See :func:`read_ssl_checkpoint`.
    """
    if isinstance(checkpoint, str | os.PathLike):
        return read_ssl_checkpoint(checkpoint), str(Path(checkpoint))
    return checkpoint, "<checkpoint>" if source is None else str(Path(source))


def create_vit(
    name: str,
    checkpoint: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    img_size: int | tuple[int, int] | None = None,
    *,
    checkpoint_key: str | None = None,
    source: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> VisionTransformer:
    """Builds a timm ViT (never downloading weights) and loads a local checkpoint.

    Args:
        name: timm model name, e.g. ``"vit_small_patch14_dinov2"``.
        checkpoint: Local SSL checkpoint, the object already read from one
            (:func:`read_ssl_checkpoint`: read a file once for the backbone
            and :func:`~lightly_glare.weights.load_projection_heads`), or None
            for random weights.
        img_size: Input size the position embedding is built for; None keeps
            timm's default for ``name`` (518 for the DINOv2 models).
        checkpoint_key: See :func:`normalize_state_dict`.
        source: The file an already-read ``checkpoint`` came from, named in
            messages. Defaults to None (``"<checkpoint>"``).
        **kwargs: Further arguments of ``timm.create_model``; ``num_classes``
            defaults to 0 (no classification head).

    A checkpoint with ``T`` > 1 class tokens (UDI) gets a ViT with
    ``reg_tokens=T - 1`` unless ``reg_tokens`` is given: the extra class tokens
    become prefix tokens after the first (global) one.

    Returns:
        The ViT.

    Raises:
        ValueError: ``pretrained=True`` was passed (nothing is downloaded).
        TypeError: ``name`` is not a timm ``VisionTransformer``.
        FileNotFoundError: ``checkpoint`` does not exist.
        CheckpointMismatchError: See :func:`load_ssl_checkpoint`.
        NonFiniteWeightsError: See :func:`load_ssl_checkpoint`.
    """
    if kwargs.pop("pretrained", False):
        raise ValueError(
            "create_vit never downloads weights: pass a local file as checkpoint="
        )
    if img_size is not None:
        kwargs["img_size"] = img_size
    kwargs.setdefault("num_classes", 0)
    if checkpoint is None:
        return _timm_vit(name, kwargs)
    loaded, source = loaded_checkpoint(checkpoint, source)
    if "reg_tokens" not in kwargs:
        tensors = timm_tensors(loaded, checkpoint_key, source)
        if (classes := class_token_count(tensors)) > 1:
            logger.info(
                "%s holds %d class tokens: the ViT carries the %d after the "
                "first as prefix tokens (reg_tokens)",
                source,
                classes,
                classes - 1,
            )
            kwargs["reg_tokens"] = classes - 1
    model = _timm_vit(name, kwargs)
    _load(model, loaded, source, checkpoint_key)
    return model


def _timm_vit(name: str, kwargs: dict[str, Any]) -> VisionTransformer:
    """``timm.create_model(name, **kwargs)``, refusing models that are no ViT."""
    model = timm.create_model(name, pretrained=False, **kwargs)
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"{name!r} is a {type(model).__name__}, not a timm ViT.")
    return model
