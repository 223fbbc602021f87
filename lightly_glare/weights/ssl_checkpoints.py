"""Loading SSL ViT checkpoints (DINO, DINOv2, iBOT, timm) from a local path.

Nothing is downloaded: pass the path of a file you have. Every load is strict
(:func:`~lightly_glare.models.check_state_dict`): a missing or unexpected key or
a shape mismatch raises :class:`~lightly_glare.models.CheckpointMismatchError`
listing them, instead of silently training from a random start.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor

from lightly_glare.models.export import (
    EXPORT_FORMAT,
    CheckpointMismatchError,
    check_state_dict,
)

logger = logging.getLogger(__name__)

#: Sub-dictionaries that hold the backbone, in order of preference: DINO/iBOT
#: training checkpoints keep the EMA ``teacher`` (the one evaluated) beside the
#: ``student``; other trainers use ``state_dict``/``model``.
WRAPPER_KEYS = ("teacher", "state_dict", "model", "student")
#: Key prefixes added by DDP, DINO's MultiCropWrapper and iBOT.
PREFIXES = ("module.", "backbone.", "encoder.")
#: Entries of SSL checkpoints that a backbone does not have: DINO/iBOT heads and
#: iBOT's mask token (timm's own filter drops DINOv2's ``mask_token``).
DROPPED = re.compile(r"^(head\.|masked_embed$)")
#: DINOv2's "BlockChunk" layout: blocks.<chunk>.<block>.
CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def _unwrap(checkpoint: Any, checkpoint_key: str | None, source: str) -> dict[str, Any]:
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f"{source} holds a {type(checkpoint).__name__}, not a state dict."
        )
    if checkpoint_key is not None:
        if checkpoint_key not in checkpoint:
            raise CheckpointMismatchError(
                f"{source} has no entry {checkpoint_key!r}; top-level keys: "
                f"{sorted(checkpoint)[:20]}"
            )
        return _unwrap(checkpoint[checkpoint_key], None, source)
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict):
            logger.info("%s: using its %r entry", source, key)
            return _unwrap(checkpoint[key], None, source)
    return checkpoint


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def normalize_state_dict(
    checkpoint: Any,
    model: VisionTransformer,
    checkpoint_key: str | None = None,
    source: str = "<checkpoint>",
) -> dict[str, Tensor]:
    """Turns an SSL checkpoint into a state dict with ``model``'s timm key names.

    Handles the official layouts: DINO (plain backbone state dict, or training
    checkpoints with ``teacher``/``student`` holding ``module.backbone.*`` and
    ``head.*``), iBOT (``state_dict``/``teacher``, ``backbone.`` prefix,
    ``masked_embed``), DINOv2 (``mask_token``, chunked blocks, register tokens,
    pos-embed for 518 px) and timm state dicts. The position embedding is
    resampled (bicubic, no antialiasing) to the model's patch grid; a different
    patch size is an error, never a silent resize.

    Args:
        checkpoint: The object loaded from the file.
        model: The timm ViT the weights are meant for.
        checkpoint_key: Entry of the file holding the weights (e.g.
            ``"student"``); None picks ``teacher``, ``state_dict``, ``model`` or
            ``student`` when present, else the top level.
        source: Name of the checkpoint, for messages.

    Returns:
        The state dict in timm key names.

    Raises:
        CheckpointMismatchError: The file holds no state dict, or its patch size
            differs from the model's.
    """
    state = _unwrap(checkpoint, checkpoint_key, source)
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        key = CHUNKED_BLOCK.sub(r"blocks.\1.", _strip_prefixes(key))
        if not DROPPED.match(key) and isinstance(value, Tensor):
            renamed[key] = value
    patch = renamed.get("patch_embed.proj.weight")
    expected = model.patch_embed.proj.weight.shape
    if patch is not None and patch.shape[-2:] != expected[-2:]:
        raise CheckpointMismatchError(
            f"{source} has {tuple(patch.shape[-2:])} patches but the model "
            f"{tuple(expected[-2:])}: choose the architecture the checkpoint was "
            "trained with (e.g. a patch-14 DINOv2 model for DINOv2 weights)."
        )
    # timm's filter maps DINOv2 (recognised by its mask_token: register tokens,
    # SwiGLU names) and resamples the position embedding to the model's grid,
    # bicubic without antialiasing like DINO's and DINOv2's own interpolation
    # (measured: antialiasing changes DINOv2-S/14 features at 224 px by up to 1.4).
    return checkpoint_filter_fn(renamed, model, antialias=False)


def load_ssl_checkpoint(
    model: VisionTransformer,
    path: str | Path,
    checkpoint_key: str | None = None,
) -> None:
    """Loads an SSL checkpoint from a local file into a timm ViT, strictly.

    The file is read with ``torch.load(weights_only=True)``: no pickled code
    runs.

    Args:
        model: The timm ``VisionTransformer`` (e.g. ``vit_small_patch16_224``,
            ``vit_base_patch16_224``, ``vit_small_patch14_dinov2``).
        path: Local checkpoint file.
        checkpoint_key: Entry of the file holding the weights; see
            :func:`normalize_state_dict`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: The file cannot be read, is a lightly-glare
            export (load those with ``load_adapted_backbone``), or its keys or
            shapes do not match the model; the message lists them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SSL checkpoint {path} not found.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointMismatchError(
            f"Cannot read checkpoint {path}: {error}"
        ) from error
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and meta.get("format") == EXPORT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is a lightly-glare adapted-backbone export (ViT + adapters); "
            "load it with lightly_glare.models.load_adapted_backbone, or with "
            "GlareViT(checkpoint_type='glare')."
        )
    state = normalize_state_dict(checkpoint, model, checkpoint_key, str(path))
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)


def create_vit(
    name: str,
    checkpoint: str | Path | None = None,
    img_size: int | tuple[int, int] | None = None,
    checkpoint_key: str | None = None,
    **kwargs: Any,
) -> VisionTransformer:
    """Builds a timm ViT (never downloading weights) and loads a local checkpoint.

    Args:
        name: timm model name, e.g. ``"vit_small_patch14_dinov2"``.
        checkpoint: Local SSL checkpoint, or None for random weights.
        img_size: Input size the position embedding is built for; None keeps
            timm's default for ``name``.
        checkpoint_key: See :func:`normalize_state_dict`.
        **kwargs: Further arguments of ``timm.create_model``.

    Returns:
        The ViT without classification head.
    """
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"{name!r} is a {type(model).__name__}, not a timm ViT.")
    if checkpoint is not None:
        load_ssl_checkpoint(model, checkpoint, checkpoint_key)
    return model
