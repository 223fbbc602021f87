"""The key layouts of SSL ViT checkpoints (DINO, DINOv2, iBOT, UDI, timm).

The official layouts are recognised and re-keyed to timm's
``VisionTransformer`` names (:func:`normalize_state_dict`):

- DINO: ``dino_deitsmall16_pretrain.pth`` and friends are plain backbone state
  dicts (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.*``,
  ``norm.*``); training checkpoints (``checkpoint.pth``) hold ``teacher``
  (``backbone.*`` + ``head.*``) and ``student`` (``module.backbone.*`` +
  ``module.head.*``) beside the optimiser and the argparse ``args``.
- iBOT: ``state_dict`` / ``teacher`` / ``student`` entries with a ``backbone.``
  (or ``module.backbone.``) prefix, an iBOT head and the ``masked_embed`` token.
- DINOv2: hub files (``dinov2_vits14_pretrain.pth``) with ``mask_token``,
  LayerScale ``blocks.<i>.ls1.gamma`` (the same name in timm), a position
  embedding for 518 px (37 x 37 patches), optionally ``register_tokens`` and
  the "BlockChunk" layout ``blocks.<chunk>.<i>.*``; training checkpoints
  (``{"model": {"teacher.backbone.*", "student.backbone.*", ...}}``) and
  ``teacher_checkpoint.pth`` (``{"teacher": {"backbone.*", "dino_head.*",
  "ibot_head.*"}}``).
- UDI (ViT-S/16 with an extra class token): ``cls_token`` of shape
  ``(1, T, D)`` with ``T`` > 1 class tokens and a position embedding for the
  ``T`` prefix tokens and the patches. The first class token (the global one)
  becomes timm's ``cls_token``, the others its ``reg_token`` (prefix tokens that
  get positions, ``no_embed_class=False``): build the ViT with
  ``reg_tokens=T - 1`` (:func:`create_vit` does so by itself).
- timm state dicts, with or without ``module.`` (DDP) prefixes.

The position embedding is resampled (bicubic, no antialiasing) to the model's
patch grid. A different patch size is an error, never a resize. The strict
loading of the re-keyed weights is :mod:`lightly_glare.weights.ssl_checkpoints`'s.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.layers.pos_embed import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
)

logger = logging.getLogger(__name__)

#: Entries of a checkpoint file that hold the backbone, in order of preference:
#: DINO/iBOT/DINOv2 keep the EMA ``teacher`` (the one they evaluate) beside the
#: ``student``; other trainers use ``state_dict`` or ``model``.
WRAPPER_KEYS = ("teacher", "state_dict", "model", "student")
#: Key prefixes of a flat state dict that select one of two networks
#: (DINOv2's ``model_final.pth``); the first is the default.
BRANCH_PREFIXES = ("teacher", "student")
#: Key prefixes added by DDP (``module.``), DINO's MultiCropWrapper and
#: DINOv2's model dict (``backbone.``), and MAE-style encoders (``encoder.``).
PREFIXES = ("module.", "backbone.", "encoder.")
#: Entries that SSL checkpoints have and a backbone does not: projection heads
#: of DINO/iBOT (``head.*``) and DINOv2 (``dino_head.*``, ``ibot_head.*``), and
#: the mask tokens of iBOT (``masked_embed``) and DINOv2 (``mask_token``). They
#: are dropped unless the model has a parameter of that name (the heads are
#: read by :func:`lightly_glare.weights.load_projection_heads`).
DROPPED = re.compile(r"^(head\.|dino_head\.|ibot_head\.|masked_embed$|mask_token$)")
#: DINOv2's "BlockChunk" layout ``blocks.<chunk>.<i>.``: ``<i>`` is the global
#: block index (chunks are padded with ``nn.Identity`` to keep it).
CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")
#: Other official names that differ from timm's.
RENAMES = (
    (re.compile(r"^register_tokens$"), "reg_token"),  # DINOv2 with registers
    (re.compile(r"^(blocks\.\d+)\.gamma_([12])$"), r"\1.ls\2.gamma"),  # DeiT-3
    (re.compile(r"^(blocks\.\d+\.mlp)\.w12\."), r"\1.fc1."),  # DINOv2 SwiGLU
    (re.compile(r"^(blocks\.\d+\.mlp)\.w3\."), r"\1.fc2."),
)
#: Width -> (timm size name, paper name) of the standard ViTs.
_SIZES = {
    192: ("tiny", "Ti"),
    384: ("small", "S"),
    768: ("base", "B"),
    1024: ("large", "L"),
    1280: ("huge", "H"),
    1536: ("giant", "g"),
}


def _unwrap(
    checkpoint: Any, checkpoint_key: str | None, source: str
) -> tuple[dict[str, Any], str | None]:
    """Returns the state dict inside ``checkpoint`` and a pending branch prefix.

    The branch is ``checkpoint_key`` when it names no entry of the file but a
    key prefix of its state dict (``"student"`` in DINOv2's ``model_final``).
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f"{source} holds a {type(checkpoint).__name__}, not a state dict."
        )
    if checkpoint_key is not None:
        if isinstance(checkpoint.get(checkpoint_key), dict):
            logger.info("%s: using its %r entry", source, checkpoint_key)
            return _unwrap(checkpoint[checkpoint_key], None, source)
        state, _ = _unwrap(checkpoint, None, source)
        prefix = f"{checkpoint_key}."
        if any(strip_prefixes(key).startswith(prefix) for key in state):
            return state, checkpoint_key
        raise CheckpointMismatchError(
            f"{source} has no entry or key prefix {checkpoint_key!r}; top-level "
            f"keys: {sorted(checkpoint)[:20]}"
        )
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict):
            logger.info("%s: using its %r entry", source, key)
            return _unwrap(checkpoint[key], None, source)
    return checkpoint, None


def strip_prefixes(key: str) -> str:
    """Removes the wrapper prefixes :data:`PREFIXES` from the start of ``key``.

    Args:
        key: A checkpoint key, e.g. ``"module.backbone.blocks.0.norm1.weight"``.

    Returns:
        The key without them, e.g. ``"blocks.0.norm1.weight"``.
    """
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _select_branch(
    state: dict[str, Any], branch: str | None, source: str
) -> dict[str, Any]:
    """Keeps the ``teacher.`` (default) or ``student.`` keys of a flat dict."""
    if branch is None:
        present = [
            name
            for name in BRANCH_PREFIXES
            if any(strip_prefixes(key).startswith(f"{name}.") for key in state)
        ]
        if not present:
            return state
        branch = present[0]
    logger.info("%s: using its %r network", source, branch)
    prefix = f"{branch}."
    return {
        strip_prefixes(key)[len(prefix) :]: value
        for key, value in state.items()
        if strip_prefixes(key).startswith(prefix)
    }


def network_state_dict(
    checkpoint: Any, checkpoint_key: str | None, source: str
) -> dict[str, Any]:
    """The state dict of one network (e.g. the teacher) of a checkpoint.

    Args:
        checkpoint: The object loaded from the file.
        checkpoint_key: Entry or key prefix of the network; see
            :func:`normalize_state_dict`.
        source: Name of the checkpoint, for messages.

    Returns:
        Its entries, keys as in the file (wrapper prefixes kept).

    Raises:
        CheckpointMismatchError: The file holds no state dict or has no entry
            or key prefix ``checkpoint_key``.
    """
    state, branch = _unwrap(checkpoint, checkpoint_key, source)
    return _select_branch(state, branch, source)


def _timm_key(key: str) -> str:
    key = CHUNKED_BLOCK.sub(r"blocks.\1.", strip_prefixes(key))
    for pattern, replacement in RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _grid_of(num_positions: int) -> tuple[int, int] | None:
    if num_positions <= 0:
        return None
    side = math.isqrt(num_positions)
    return (side, side) if side * side == num_positions else None


def describe_state_dict(state: Mapping[str, Tensor]) -> str:
    """Names the ViT architecture a state dict with timm key names seems to hold.

    Args:
        state: A state dict in timm key names (e.g. the output of
            :func:`normalize_state_dict` before resampling, or a model's own).

    Returns:
        A one-line description, e.g. ``"ViT-S/14 (embed_dim 384, depth 12,
        mlp 1536, 37x37 position grid = 518 px, LayerScale, 0 register tokens;
        timm: vit_small_patch14_dinov2)"``.
    """
    patch = state.get("patch_embed.proj.weight")
    if patch is None or patch.dim() != 4:
        return f"not a timm ViT state dict (first keys: {sorted(state)[:8]})"
    dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else 0
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    layer_scale = "blocks.0.ls1.gamma" in state
    reg = state.get("reg_token")
    registers = int(reg.shape[1]) if reg is not None and reg.dim() == 3 else 0
    classes = class_token_count(state)
    size_name, paper_name = _SIZES.get(dim, ("", f"{dim}d"))
    parts = [f"embed_dim {dim}", f"depth {depth}"]
    if fc1 is not None:
        parts.append(f"mlp {fc1.shape[0]}")
    pos = state.get("pos_embed")
    if pos is not None and pos.dim() == 3:
        length = int(pos.shape[1])
        grid = next(
            (
                g
                for p in (0, classes, classes + registers)
                if (g := _grid_of(length - p))
            ),
            None,
        )
        if grid is not None:
            parts.append(
                f"{grid[0]}x{grid[1]} position grid = {grid[0] * patch_size} px"
            )
        else:
            parts.append(f"{length} positions")
    parts.append("LayerScale" if layer_scale else "no LayerScale")
    if classes > 1:
        parts.append(f"{classes} class tokens")
    parts.append(f"{registers} register tokens")
    if layer_scale and patch_size == 14:
        candidate = f"vit_{size_name}_patch14_{f'reg{registers}_' * bool(registers)}"
        candidate += "dinov2"
    else:
        candidate = f"vit_{size_name}_patch{patch_size}_224"
    if size_name and timm.is_model(candidate):
        parts[-1] += f"; timm: {candidate}"
    return f"ViT-{paper_name}/{patch_size} ({', '.join(parts)})"


def class_token_count(state: Mapping[str, Tensor]) -> int:
    """How many class tokens a state dict in timm key names holds.

    Args:
        state: E.g. a normalised checkpoint; ``cls_token`` has shape
            ``(1, T, D)`` (``T`` = 2 in UDI's checkpoints).

    Returns:
        ``T``; 1 when there is no ``cls_token`` of that form.
    """
    cls = state.get("cls_token")
    return int(cls.shape[1]) if cls is not None and cls.dim() == 3 else 1


def _split_class_tokens(
    state: dict[str, Tensor], model: VisionTransformer, source: str
) -> None:
    """Moves the class tokens after the first one to ``reg_token`` (UDI).

    timm adds the position embedding to ``[cls_token, reg_token, patches]``
    (``no_embed_class=False``), as UDI's ViT does to its ``T`` class tokens and
    patches, so the model computes what UDI computes; the first class token
    stays first (the global one).
    """
    classes = class_token_count(state)
    if classes == 1:
        return
    registers = 0 if model.reg_token is None else int(model.reg_token.shape[1])
    model_form = f"{registers} register tokens, no_embed_class={model.no_embed_class}"
    if "reg_token" in state:
        model_form += "; the file has register tokens too: no exact conversion"
    if classes - 1 != registers or model.no_embed_class or "reg_token" in state:
        raise CheckpointMismatchError(
            f"{source} holds {classes} class tokens (cls_token "
            f"{tuple(state['cls_token'].shape)}, as UDI's ViT). They load into a "
            f"timm ViT with one class token and {classes - 1} register tokens, "
            "which carry the others as prefix tokens (token 0, the first class "
            f"token, stays the global one); the model has {model_form}. Build it "
            f"with reg_tokens={classes - 1} and no_embed_class=False (create_vit "
            f"does so by itself; GlareViT: arch=dict(..., reg_tokens={classes - 1}))."
        )
    cls = state["cls_token"]  # (1, T, D)
    state["cls_token"], state["reg_token"] = cls[:, :1], cls[:, 1:]


def _adapt_position_embedding(
    state: dict[str, Tensor], model: VisionTransformer, source: str
) -> None:
    """Converts ``state["pos_embed"]`` to the model's convention and grid.

    The file's number of prefix positions (the model's, 1 for [CLS], or 0) is
    inferred from its length. A [CLS] position in the file and none in the model (timm's
    ``no_embed_class``, used by DINOv2 models with registers) is added to
    ``cls_token``, exactly as DINOv2 adds it before inserting the registers;
    the reverse case gets a zero [CLS] position. The patch positions are then
    resampled bicubically (no antialiasing, like DINO's and DINOv2's own
    interpolation) to the model's grid.
    """
    pos = state.get("pos_embed")
    if pos is None or model.pos_embed is None or pos.dim() != 3:
        return  # the strict key/shape check reports it
    model_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    new_grid = tuple(int(n) for n in model.patch_embed.grid_size)
    length = int(pos.shape[1])
    old_grid: tuple[int, ...] | None = None
    file_prefix = model_prefix
    for prefix in dict.fromkeys((model_prefix, 1, 0)):
        if length - prefix == new_grid[0] * new_grid[1]:
            old_grid, file_prefix = new_grid, prefix
            break
        if (grid := _grid_of(length - prefix)) is not None:
            old_grid, file_prefix = grid, prefix
            break
    if old_grid is None:
        raise CheckpointMismatchError(
            f"{source}: cannot infer the patch grid of its position embedding "
            f"{tuple(pos.shape)} (the model's grid is {new_grid} with "
            f"{model_prefix} prefix positions)."
        )
    if file_prefix != model_prefix:
        if file_prefix == 1 and model_prefix == 0 and "cls_token" in state:
            # (1, 1, D): DINOv2 adds pos[0] to [CLS] before the registers go in.
            state["cls_token"] = state["cls_token"] + pos[:, :1]
            pos = pos[:, 1:]
        elif file_prefix == 0 and model_prefix == 1:
            pos = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
        else:
            raise CheckpointMismatchError(
                f"{source}: its position embedding has {file_prefix} prefix "
                f"positions but the model {model_prefix}; no exact conversion."
            )
    if old_grid != new_grid:
        logger.info("%s: resampling pos_embed %s -> %s", source, old_grid, new_grid)
        pos = resample_abs_pos_embed(
            pos,  # (1, model_prefix + h * w, D)
            new_size=list(new_grid),
            old_size=list(old_grid),
            num_prefix_tokens=model_prefix,
            interpolation="bicubic",
            antialias=False,
        )  # (1, model_prefix + h' * w', D)
    state["pos_embed"] = pos


def normalize_with_description(
    checkpoint: Any,
    model: VisionTransformer,
    checkpoint_key: str | None,
    source: str,
) -> tuple[dict[str, Tensor], str]:
    """:func:`normalize_state_dict`, plus a description of the file's ViT.

    Args:
        checkpoint: The object loaded from the file.
        model: The timm ViT the weights are meant for.
        checkpoint_key: See :func:`normalize_state_dict`.
        source: Name of the checkpoint, for messages.

    Returns:
        The state dict in timm key names and :func:`describe_state_dict` of it.

    Raises:
        CheckpointMismatchError: See :func:`normalize_state_dict`.
    """
    model_keys = set(model.state_dict())
    renamed = {
        key: value
        for key, value in timm_tensors(checkpoint, checkpoint_key, source).items()
        if key in model_keys or not DROPPED.match(key)
    }
    description = describe_state_dict(renamed)
    patch = renamed.get("patch_embed.proj.weight")
    expected = model.patch_embed.proj.weight.shape  # (D, C, p, p)
    if patch is not None and patch.shape[-2:] != expected[-2:]:
        raise CheckpointMismatchError(
            f"{source} has {tuple(patch.shape[-2:])} patches but the model "
            f"{tuple(expected[-2:])}: build the architecture the checkpoint was "
            f"trained with (the file looks like {description}). Patch kernels "
            "are never resized."
        )
    _split_class_tokens(renamed, model, source)
    _adapt_position_embedding(renamed, model, source)
    return renamed, description


def timm_tensors(
    checkpoint: Any, checkpoint_key: str | None, source: str
) -> dict[str, Tensor]:
    """The tensors of the chosen network, with timm key names (heads kept).

    Args:
        checkpoint: The object loaded from the file.
        checkpoint_key: See :func:`normalize_state_dict`.
        source: Name of the checkpoint, for messages.

    Returns:
        The tensors by timm key.
    """
    state = network_state_dict(checkpoint, checkpoint_key, source)
    return {
        _timm_key(key): value
        for key, value in state.items()
        if isinstance(value, Tensor)
    }


def normalize_state_dict(
    checkpoint: Any,
    model: VisionTransformer,
    *,
    checkpoint_key: str | None = None,
    source: str = "<checkpoint>",
) -> dict[str, Tensor]:
    """Turns an SSL checkpoint into a state dict with ``model``'s timm key names.

    Picks the network (``teacher`` unless ``checkpoint_key`` says otherwise),
    strips ``module.``/``backbone.``/``encoder.`` prefixes, un-chunks DINOv2's
    blocks, renames ``register_tokens``, drops heads and mask tokens, moves
    extra class tokens (UDI) to ``reg_token``, and converts the position
    embedding to the model's grid (see the module docstring for the layouts).
    Keys are not checked here: :func:`load_ssl_checkpoint` does that strictly.

    Args:
        checkpoint: The object loaded from the file.
        model: The timm ViT the weights are meant for.
        checkpoint_key: Entry of the file holding the weights (e.g.
            ``"student"``), or a key prefix of its state dict (``"student"`` in
            DINOv2's ``model_final.pth``); None picks ``teacher``,
            ``state_dict``, ``model`` or ``student`` when present, else the
            top level, and then the ``teacher.`` keys if there are any.
        source: Name of the checkpoint, for messages.

    Returns:
        The state dict in timm key names; ``pos_embed`` has the model's shape
        ``(1, P + h * w, D)`` (``P`` = 0 for ``no_embed_class`` models, else
        the number of prefix tokens).

    Raises:
        CheckpointMismatchError: The file holds no state dict, has no entry
            ``checkpoint_key``, its patch size differs from the model's, its
            extra class tokens do not fit the model's register tokens, or its
            position embedding cannot be converted.
    """
    return normalize_with_description(checkpoint, model, checkpoint_key, source)[0]
