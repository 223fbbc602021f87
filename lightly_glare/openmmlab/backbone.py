"""mmseg backbone: a timm ViT with UniAdapters, loaded with strict key checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_glare.models import UniAdapterViT
from lightly_glare.models.defaults import ADAPTER_SCALE
from lightly_glare.openmmlab.config_validation import validate_arguments
from lightly_glare.weights.backbone import CHECKPOINT_TYPES, load_backbone_checkpoint


def create_timm_vit(
    arch: str | dict[str, Any], img_size: tuple[int, int], drop_path_rate: float
) -> VisionTransformer:
    """Creates a randomly initialised timm ViT for dense prediction.

    The ViT resamples its positional embedding on the fly for inputs of another
    size than ``img_size`` and pads inputs to a multiple of the patch size (mmseg
    tests on whole images of any size).

    Args:
        arch: A timm model name (created with ``pretrained=False``) or keyword
            arguments of timm's ``VisionTransformer``.
        img_size: Image size (height, width) the positional embedding is built for.
        drop_path_rate: Stochastic depth rate.

    Returns:
        The ViT, without classification head.
    """
    kwargs: dict[str, Any] = {
        "img_size": img_size,
        "num_classes": 0,
        "drop_path_rate": drop_path_rate,
        "dynamic_img_size": True,
        "dynamic_img_pad": True,
    }
    if isinstance(arch, str):
        vit = timm.create_model(arch, pretrained=False, **kwargs)
    else:
        vit = VisionTransformer(**{**arch, **kwargs})
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"{arch!r} is a {type(vit).__name__}, not a timm ViT.")
    return vit


@MODELS.register_module()
@validate_arguments
class GlareViT(BaseModule):
    """A timm ViT with one UniAdapter per block, as an mmseg backbone.

    Wraps :class:`~lightly_glare.models.UniAdapterViT` and returns the outputs
    (before the final norm) of the blocks ``out_indices`` as feature maps
    ``(B, D, H / p, W / p)``, ready for mmseg's ``MultiLevelNeck`` (scales 4, 2,
    1, 0.5) and ``UPerHead`` (the paper's protocol, docs/ARCHITECTURE.md).

    Weights are loaded in :meth:`init_weights` (called by mmengine's Runner at
    the start of training) from either a GLARE export (``checkpoint_type=
    'glare'``: frozen ViT + trained adapters) or a plain SSL checkpoint
    (``'ssl'``: DINO / DINOv2 / iBOT / timm layouts; adapters stay
    zero-initialised, so the model starts as the SSL model). Loading is always
    strict: a missing or unexpected key raises
    :class:`~lightly_glare.weights.CheckpointMismatchError` naming the keys
    (mmseg's own ``VisionTransformer`` loads with ``strict=False`` and silently
    trains from scratch on a mismatch), and weights holding NaN or inf raise
    :class:`~lightly_glare.weights.NonFiniteWeightsError` naming the
    file and the keys. A positional embedding of another image size is
    resampled to ``img_size``. A UDI checkpoint (two class tokens) needs
    ``arch=dict(..., reg_tokens=1)``: the second class token is carried as a
    prefix token.

    Fine-tuning (as in the paper): by default the whole network trains, adapters
    included; ``freeze_backbone=True`` trains only the adapters. The final norm,
    and blocks (with their adapters) after the last of ``out_indices``, never
    receive gradients and are frozen, so that DDP needs no
    ``find_unused_parameters``.

    Args:
        arch (str | dict): A timm model name, e.g. ``'vit_base_patch16_224'``,
            ``'vit_small_patch16_224'`` or ``'vit_small_patch14_dinov2'``
            (created with ``pretrained=False``; nothing is downloaded), or keyword
            arguments of timm's ``VisionTransformer``. Defaults to
            ``'vit_base_patch16_224'``.
        img_size (int | tuple[int, int]): Training crop size (height, width)
            the positional embedding is built for. Other input sizes work (the
            embedding is resampled on the fly, inputs padded to a multiple of the
            patch size). Defaults to 512.
        out_indices (Sequence[int]): Blocks whose outputs are returned.
            Defaults to (2, 5, 8, 11) (mmseg's ViT UperNet and UDI's protocol).
        adapter_bottleneck (int, optional): UniAdapter bottleneck size; must
            match the GLARE export. Defaults to None: ``embed_dim // 12`` (32
            for ViT-S, 64 for ViT-B), the size GLARE exports have by default.
        adapter_scale (float): UniAdapter output scale; must match the GLARE
            export. Defaults to 0.1.
        drop_path_rate (float): Stochastic depth rate of the ViT.
            Defaults to 0.0.
        checkpoint (str, optional): Path of the weights loaded by
            :meth:`init_weights`. None keeps timm's random initialisation (with
            a warning). Defaults to None.
        checkpoint_type (str): ``'glare'`` for a file written by
            :func:`~lightly_glare.weights.export_adapted_backbone`, ``'ssl'`` for
            a plain SSL checkpoint read by
            :func:`~lightly_glare.weights.load_ssl_checkpoint`.
            Defaults to ``'glare'``.
        freeze_backbone (bool): Train only the adapters. Defaults to False.
        init_cfg (dict, optional): Only ``dict(type='Pretrained',
            checkpoint=PATH)`` is accepted, as an alias of ``checkpoint``
            (loaded strictly, unlike mmengine's ``PretrainedInit``).
            Defaults to None.

    Examples:
        >>> from mmseg.registry import MODELS
        >>> backbone = MODELS.build(dict(type='GlareViT',
        ...     arch='vit_small_patch16_224', img_size=128))
        >>> features = backbone(torch.rand(2, 3, 128, 128))
        >>> [tuple(f.shape) for f in features]
        [(2, 384, 8, 8), (2, 384, 8, 8), (2, 384, 8, 8), (2, 384, 8, 8)]
    """

    def __init__(
        self,
        arch: str | dict[str, Any] = "vit_base_patch16_224",
        img_size: int | Sequence[int] = 512,
        out_indices: Sequence[int] = (2, 5, 8, 11),
        adapter_bottleneck: int | None = None,
        adapter_scale: float = ADAPTER_SCALE,
        drop_path_rate: float = 0.0,
        checkpoint: str | None = None,
        checkpoint_type: str = "glare",
        freeze_backbone: bool = False,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(init_cfg=None)
        if checkpoint_type not in CHECKPOINT_TYPES:
            raise ValueError(
                f"checkpoint_type must be one of {CHECKPOINT_TYPES}, got "
                f"{checkpoint_type!r}."
            )
        self.checkpoint = _checkpoint_from(checkpoint, init_cfg)
        self.checkpoint_type = checkpoint_type
        size = (img_size, img_size) if isinstance(img_size, int) else img_size
        vit = create_timm_vit(arch, (int(size[0]), int(size[1])), drop_path_rate)
        self.adapted = UniAdapterViT(
            vit, bottleneck=adapter_bottleneck, scale=adapter_scale
        )
        depth = self.adapted.num_blocks
        if not out_indices or any(not -depth <= i < depth for i in out_indices):
            raise ValueError(
                f"out_indices must be non-empty block indices of a {depth}-block "
                f"ViT, got {tuple(out_indices)}."
            )
        self.out_indices = tuple(index % depth for index in out_indices)
        self.freeze_backbone = freeze_backbone
        vit.requires_grad_(not freeze_backbone)
        vit.norm.requires_grad_(False)
        unused = slice(max(self.out_indices) + 1, None)
        for module in [*self.adapted.blocks[unused], *self.adapted.adapters[unused]]:
            module.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        """Channels D of every feature map."""
        return self.adapted.embed_dim

    def init_weights(self) -> None:
        """Loads ``checkpoint`` strictly (see the class docstring).

        Raises:
            FileNotFoundError: ``checkpoint`` does not exist.
            CheckpointMismatchError: Its keys, shapes or architecture do not match
                this model; the message lists the differences.
            NonFiniteWeightsError: A weight holds NaN or inf.
        """
        if self.checkpoint is None:
            print_log(
                "GlareViT: no checkpoint given; the ViT keeps timm's random "
                "initialisation.",
                logger="current",
                level=logging.WARNING,
            )
        else:
            path = Path(self.checkpoint)
            if not path.is_file():
                raise FileNotFoundError(
                    f"GlareViT checkpoint {path} not found. Set it with "
                    "--cfg-options model.backbone.checkpoint=PATH "
                    "(model.backbone.checkpoint_type=glare or ssl), or "
                    "checkpoint=None for timm's random initialisation (no "
                    "pre-training, for tests)."
                )
            load_backbone_checkpoint(
                self.adapted,
                path,
                self.checkpoint_type,
                log=lambda line: print_log(f"GlareViT: {line}", logger="current"),
            )
            print_log(
                f"GlareViT: loaded {self.checkpoint_type} checkpoint {path}",
                logger="current",
            )
        self._is_init = True

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """Returns one feature map per ``out_indices`` entry.

        Args:
            inputs: Images, shape (B, 3, H, W), any H and W.

        Returns:
            Feature maps of shape (B, D, ceil(H / p), ceil(W / p)) for patch
            size p, in the order of ``out_indices``.
        """
        batch = inputs.shape[0]
        height, width = self.adapted.vit.patch_embed.dynamic_feat_size(
            (inputs.shape[2], inputs.shape[3])
        )
        output = self.adapted.forward_features(
            inputs, intermediate_indices=self.out_indices
        )
        assert output.intermediates is not None
        prefix = self.adapted.num_prefix_tokens
        return tuple(
            # (B, P + N, D) -> (B, N, D) -> (B, D, h, w)
            tokens[:, prefix:].transpose(1, 2).reshape(batch, -1, height, width)
            for tokens in output.intermediates
        )


def _checkpoint_from(
    checkpoint: str | None, init_cfg: dict[str, Any] | None
) -> str | None:
    """Reads the checkpoint path from ``checkpoint`` or a Pretrained init_cfg."""
    if init_cfg is None:
        return checkpoint
    if init_cfg.get("type") != "Pretrained" or "checkpoint" not in init_cfg:
        raise ValueError(
            "GlareViT accepts only init_cfg=dict(type='Pretrained', "
            f"checkpoint=PATH), got {init_cfg}."
        )
    if checkpoint is not None:
        raise ValueError("Give either checkpoint or init_cfg, not both.")
    return str(init_cfg["checkpoint"])
