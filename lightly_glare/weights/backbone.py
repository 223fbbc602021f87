"""The one loader of adapted backbones: a GLARE export or a plain SSL checkpoint.

Used by the mmseg backbone (``GlareViT.init_weights``), by the visualisation
tools (:func:`build_backbone`) and by anything else that turns a local file
into a :class:`~lightly_glare.models.UniAdapterViT`; all of them load the same
way: strictly (a missing or unexpected key, a shape or an architecture that
differs raises :class:`~lightly_glare.weights.CheckpointMismatchError` naming
them; NaN or inf raises
:class:`~lightly_glare.weights.NonFiniteWeightsError`), with the positional
embedding resampled to the model's patch grid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from timm.layers.pos_embed import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_glare.models.adapted_vit import UniAdapterViT
from lightly_glare.models.defaults import ADAPTER_SCALE, IMG_SIZE
from lightly_glare.weights.checkpoint_io import check_state_dict
from lightly_glare.weights.export import check_architecture, load_exported_checkpoint
from lightly_glare.weights.ssl_checkpoints import create_vit, load_ssl_checkpoint

#: What a checkpoint file holds: ``'glare'`` a GLARE export
#: (:func:`~lightly_glare.weights.export_adapted_backbone`: frozen ViT + trained
#: adapters), ``'ssl'`` a plain SSL checkpoint (DINO / DINOv2 / iBOT / UDI / timm
#: layouts; the adapters stay zero-initialised, so the model equals it).
CheckpointType = Literal["glare", "ssl"]
#: Values of ``checkpoint_type``; the first is the default everywhere.
CHECKPOINT_TYPES: tuple[CheckpointType, ...] = ("glare", "ssl")


def _ignore(_: str) -> None:
    return None


def resample_pos_embed(
    state: dict[str, Tensor],
    key: str,
    vit: VisionTransformer,
    source: str,
    log: Callable[[str], None] = _ignore,
) -> dict[str, Tensor]:
    """Resamples a checkpoint's positional embedding to ``vit``'s patch grid.

    Args:
        state: State dict holding the embedding under ``key``.
        key: Key of the positional embedding, e.g. ``"vit.pos_embed"``.
        vit: The model the state dict is loaded into.
        source: Where ``state`` comes from, for the message.
        log: Receives one line when the embedding is resampled.

    Returns:
        ``state`` with the embedding resampled (bicubic, no antialiasing;
        prefix-token entries kept) when the grid sizes differ; unchanged
        otherwise.
    """
    found = state.get(key)
    if vit.pos_embed is None or found is None or found.shape == vit.pos_embed.shape:
        return state
    prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    grid = list(vit.patch_embed.grid_size)
    # Bicubic without antialiasing, like DINO's / DINOv2's own interpolation and
    # lightly_glare.weights.load_ssl_checkpoint.
    resampled = resample_abs_pos_embed(
        found, grid, num_prefix_tokens=prefix, antialias=False
    )
    log(
        f"resampled {key} of {source} from {tuple(found.shape)} to "
        f"{tuple(resampled.shape)} (patch grid {grid[0]}x{grid[1]})."
    )
    return {**state, key: resampled}


def check_checkpoint_type(checkpoint_type: str) -> CheckpointType:
    """Returns ``checkpoint_type`` if valid.

    Raises:
        ValueError: It is not one of :data:`CHECKPOINT_TYPES`.
    """
    for valid in CHECKPOINT_TYPES:
        if checkpoint_type == valid:
            return valid
    raise ValueError(
        f"checkpoint_type must be one of {CHECKPOINT_TYPES}, got {checkpoint_type!r}."
    )


def load_backbone_checkpoint(
    backbone: UniAdapterViT,
    path: str | Path,
    checkpoint_type: str = CHECKPOINT_TYPES[0],
    log: Callable[[str], None] = _ignore,
) -> None:
    """Loads a local checkpoint into an adapted backbone, strictly.

    Args:
        backbone: The adapted backbone (its ViT's patch grid decides the
            resampling of the positional embedding).
        path: The checkpoint file.
        checkpoint_type: ``'glare'`` (default) or ``'ssl'``, see
            :data:`CheckpointType`.
        log: Receives a line when the positional embedding is resampled.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unknown ``checkpoint_type``.
        CheckpointMismatchError: Keys, shapes or architecture differ; the message
            lists the differences.
        NonFiniteWeightsError: A weight holds NaN or inf.
    """
    kind = check_checkpoint_type(checkpoint_type)
    if kind == "ssl":
        load_ssl_checkpoint(backbone.vit, path)
        return
    source = str(path)
    state, meta = load_exported_checkpoint(path)
    check_architecture(backbone, meta, source=source)
    state = resample_pos_embed(state, "vit.pos_embed", backbone.vit, source, log)
    check_state_dict(backbone, state, source=source)
    backbone.load_state_dict(state, strict=True)


def build_backbone(
    arch: str,
    checkpoint: str | Path | None,
    checkpoint_type: str = CHECKPOINT_TYPES[0],
    img_size: int = IMG_SIZE,
) -> UniAdapterViT:
    """Builds a :class:`UniAdapterViT` from a timm name and a local checkpoint.

    Args:
        arch: timm model name, e.g. ``vit_small_patch14_dinov2`` or
            ``vit_base_patch16_224``.
        checkpoint: The checkpoint file, loaded by
            :func:`load_backbone_checkpoint`, or None for random weights
            (smoke tests only).
        checkpoint_type: ``'glare'`` (default; the adapters' size is read from
            the export's meta) or ``'ssl'`` (zero-initialised adapters of the
            default size are added, so the model equals the checkpoint).
        img_size: Input size the positional embedding is built (or resampled)
            for.

    Returns:
        The backbone in eval mode on the CPU.
    """
    kind = check_checkpoint_type(checkpoint_type)
    if checkpoint is None:
        return UniAdapterViT(_random_vit(arch, img_size)).eval()
    if kind == "ssl":
        return UniAdapterViT(create_vit(arch, checkpoint, img_size=img_size)).eval()
    _, meta = load_exported_checkpoint(checkpoint)
    architecture = meta.get("architecture", {})
    backbone = UniAdapterViT(
        _random_vit(arch, img_size),
        bottleneck=int(architecture.get("adapter_bottleneck", 64)),
        scale=float(architecture.get("adapter_scale", ADAPTER_SCALE)),
    )
    load_backbone_checkpoint(backbone, checkpoint, kind)
    return backbone.eval()


def _random_vit(arch: str, img_size: int) -> VisionTransformer:
    return create_vit(arch, checkpoint=None, img_size=img_size)


__all__ = [
    "CHECKPOINT_TYPES",
    "CheckpointType",
    "build_backbone",
    "check_checkpoint_type",
    "load_backbone_checkpoint",
    "resample_pos_embed",
]
