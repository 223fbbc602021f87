"""GLARE's pure-PyTorch parts in mmseg's registries, under their class names.

So that configs compose them by name, as mmpretrain's DINO configs compose
``backbone``, ``neck`` and ``head``:

.. code-block:: python

    model = dict(
        type='GlarePretrainer',
        backbone=dict(type='UniAdapterViT', arch='vit_small_patch16_224'),
        head=dict(type='GlareProjectionHead', output_dim=8192),
        region_sampler=dict(type='AttentionRegionSampler', num_regions=6),
        region_pooling=dict(type='CrossAttentionRegionPooling'),
        patch_augmentation=dict(type='PatchNoise', patch_ratio=0.3),
        loss=dict(type='GlareLoss', regional_weight=0.))

Every registered part checks its config arguments when built
(:func:`~lightly_glare.openmmlab.config_validation.validate_arguments`): an
unknown key is named with the closest valid one. The classes themselves stay in
the OpenMMLab-free core; registering them only adds that check.

- ``MODELS``: :func:`UniAdapterViT` (a builder: timm ViT from a local SSL
  checkpoint + UniAdapters), ``GlareProjectionHead``,
  ``AttentionRegionSampler``, ``CrossAttentionRegionPooling``, ``PatchBlur``,
  ``PatchNoise``, ``PatchColorJitter``, ``PatchMasking``, ``GlareLoss``,
  ``GlareRegionalLoss``, ``GlareLocalLoss``;
- ``TRANSFORMS``: ``GlareTransform``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmseg.registry import MODELS, TRANSFORMS

from lightly_glare.loss import GlareLocalLoss, GlareLoss, GlareRegionalLoss
from lightly_glare.models import (
    AttentionRegionSampler,
    CrossAttentionRegionPooling,
    GlareProjectionHead,
)
from lightly_glare.models import UniAdapterViT as _UniAdapterViT
from lightly_glare.models.defaults import ADAPTER_SCALE, IMG_SIZE
from lightly_glare.openmmlab.config_validation import (
    validate_arguments,
    validate_function_arguments,
)
from lightly_glare.transforms import (
    GlareTransform,
    PatchBlur,
    PatchColorJitter,
    PatchMasking,
    PatchNoise,
)
from lightly_glare.weights import create_vit

#: The core classes registered in ``MODELS`` under their own names.
MODEL_COMPONENTS: tuple[type, ...] = (
    GlareProjectionHead,
    AttentionRegionSampler,
    CrossAttentionRegionPooling,
    PatchBlur,
    PatchNoise,
    PatchColorJitter,
    PatchMasking,
    GlareLoss,
    GlareRegionalLoss,
    GlareLocalLoss,
)

for _component in MODEL_COMPONENTS:
    MODELS.register_module(module=validate_arguments(_component))
TRANSFORMS.register_module(module=validate_arguments(GlareTransform))


@validate_function_arguments
def UniAdapterViT(  # noqa: N802  (registered under the class's name)
    arch: str,
    img_size: int = IMG_SIZE,
    checkpoint: str | Mapping[str, Any] | None = None,
    checkpoint_key: str | None = None,
    adapter_bottleneck: int | None = None,
    adapter_scale: float = ADAPTER_SCALE,
    vit_cfg: dict[str, Any] | None = None,
    checkpoint_source: str | None = None,
) -> _UniAdapterViT:
    """Builds a frozen timm ViT with UniAdapters, from a local SSL checkpoint.

    The config form of ``UniAdapterViT(create_vit(arch, checkpoint), ...)``.
    The argument names are those of the segmentation backbone ``GlareViT``.

    Args:
        arch (str): timm model name, e.g. ``'vit_small_patch14_dinov2'``.
        img_size (int): Input size the position embedding is built for (a
            checkpoint's embedding is resampled). Defaults to 224.
        checkpoint (str | Mapping, optional): Local SSL checkpoint (DINO,
            DINOv2, iBOT or timm layout), loaded strictly, or the object
            already read from it (``GlarePretrainer`` reads a file once for
            the backbone and the heads). None keeps random weights (tests, or
            when an mmengine checkpoint is loaded afterwards). Defaults to None.
        checkpoint_key (str, optional): Sub-dict of the checkpoint holding the
            weights. Defaults to None.
        adapter_bottleneck (int, optional): UniAdapter bottleneck. Defaults to
            None: ``embed_dim // 12`` (32 for ViT-S, 64 for ViT-B).
        adapter_scale (float): UniAdapter output scale. Defaults to 0.1.
        vit_cfg (dict, optional): Further keyword arguments of
            ``timm.create_model`` (e.g. ``drop_path_rate``; ``depth`` for tiny
            test models). Defaults to None.
        checkpoint_source (str, optional): The file an already-read
            ``checkpoint`` came from, named in messages. Defaults to None.

    Returns:
        The adapted backbone (ViT frozen, adapters trainable).
    """
    vit = create_vit(
        arch,
        checkpoint=checkpoint,
        img_size=img_size,
        checkpoint_key=checkpoint_key,
        source=checkpoint_source,
        **(vit_cfg or {}),
    )
    return _UniAdapterViT(vit, bottleneck=adapter_bottleneck, scale=adapter_scale)


MODELS.register_module(name="UniAdapterViT", module=UniAdapterViT)
