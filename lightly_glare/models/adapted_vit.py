"""A frozen timm ViT with one trainable UniAdapter per block."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
from timm.layers.attention import Attention
from timm.layers.format import Format
from timm.layers.patch_embed import PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from lightly_glare.models.block_kernels import (
    ATTENTION_KERNELS,
    AttentionKernel,
    LinearWeights,
    add_sampled_residual,
    attention_branch,
    attention_with_cls_map,
    check_drop_path,
    kept_samples,
    mlp_branch,
)
from lightly_glare.models.defaults import ADAPTER_SCALE
from lightly_glare.models.uniadapter import UniAdapter

logger = logging.getLogger(__name__)


@dataclass
class BackboneOutput:
    """What :meth:`UniAdapterViT.forward_features` returns.

    Attributes:
        tokens: All tokens after the final norm, shape (B, P + N, D) with P prefix
            (class + register) tokens and N patch tokens in row-major grid order.
        cls_attention: Last-block attention of the first class token to the patch
            tokens, per head, renormalised over patches: shape (B, heads, N), or
            None when not requested.
        intermediates: Token outputs (before the final norm) of the requested
            blocks, each (B, P + N, D), in the order requested.
    """

    tokens: Tensor
    cls_attention: Tensor | None = None
    intermediates: list[Tensor] | None = None


@dataclass(frozen=True)
class TrainableReport:
    """Parameter counts of an adapted backbone.

    Attributes:
        backbone: Parameters of the frozen backbone.
        adapters: Parameters of the adapters (all trainable).
    """

    backbone: int
    adapters: int

    @property
    def percent(self) -> float:
        """Adapter parameters as a percentage of the backbone's."""
        return 100.0 * self.adapters / self.backbone

    def __str__(self) -> str:
        return (
            f"trainable adapter parameters: {self.adapters:,} "
            f"({self.percent:.2f} % of the {self.backbone:,} frozen backbone "
            "parameters)"
        )


def _check_supported(vit: VisionTransformer) -> None:
    if not isinstance(vit, VisionTransformer):
        raise TypeError(
            f"UniAdapterViT expects a timm VisionTransformer, got {type(vit).__name__}."
        )
    for index, block in enumerate(vit.blocks):
        attn = getattr(block, "attn", None)
        if type(block) is not Block or not isinstance(attn, Attention):
            raise TypeError(
                f"Block {index} is a {type(block).__name__} with "
                f"{type(attn).__name__} attention; UniAdapterViT supports "
                "timm's standard `Block` with `Attention` (ViT, DeiT, DINO, "
                "DINOv2 with LayerScale and registers)."
            )
    if not isinstance(vit.patch_embed, PatchEmbed):
        raise TypeError(
            f"The patch embedding is a {type(vit.patch_embed).__name__}; "
            "UniAdapterViT supports timm's `PatchEmbed` (no hybrid backbones)."
        )


def _enable_dynamic_img_size(vit: VisionTransformer) -> None:
    """Lets ``vit`` take inputs of any size through timm's dynamic image size.

    The patch embedding no longer insists on the size the ViT was built for and
    keeps its (B, h, w, D) grid, from which ``VisionTransformer._pos_embed``
    resamples the position embedding to (h, w) (bicubic, as timm's
    ``resample_abs_pos_embed``) before flattening. At the built size the
    embedding is used as is, so outputs there are unchanged.
    """
    # Final only as a TorchScript constant; timm reads it at every forward.
    vit.dynamic_img_size = True  # type: ignore[misc]
    patch_embed = cast(PatchEmbed, vit.patch_embed)
    patch_embed.strict_img_size = False
    patch_embed.flatten = False
    patch_embed.output_fmt = Format.NHWC


def _nearest_multiple(size: int, multiple: int) -> int:
    """The positive multiple of ``multiple`` nearest to ``size``."""
    return max(1, round(size / multiple)) * multiple


class UniAdapterViT(nn.Module):
    """A frozen timm ``VisionTransformer`` with a trainable UniAdapter per block.

    Each block computes (UniAdapter's vision-branch placement, parallel to the MLP)::

        h = x + ls1(attn(norm1(x)))
        x = h + ls2(mlp(norm2(h))) + adapter(h)

    With LayerScale backbones (DINOv2) the adapter output is not multiplied by the
    MLP's LayerScale (ours). All backbone parameters get ``requires_grad=False``;
    only the adapters train.

    The adapters are held in a separate ``nn.ModuleList`` and every forward method
    accepts an ``adapters`` argument: a GLARE teacher passes its EMA adapters and
    thereby shares this single copy of the frozen backbone weights with the
    student.

    Inputs may have any size whose sides are multiples of the patch size: the
    wrapped ViT is switched to timm's dynamic image size (``dynamic_img_size``),
    which resamples the position embedding to the input's patch grid. At the
    size the ViT was built for, outputs are those of the unwrapped ViT.

    Fused attention (SDPA) is kept in every block; when the last block's class
    attention map is requested it is computed explicitly from that block's own
    q and k (see :func:`attention_with_cls_map`). The exception (ours): on the
    CPU under bf16 autocast, PyTorch's fused CPU kernel is slower than timm's
    unfused attention, most of all in the backward (28 ms against 4.5 ms for
    forward and backward of 32 x 6 heads x 65 tokens, DINOv2-S/14 at 112 px;
    ``benchmarks/attention_kernels.py``). ``attention="auto"`` (the default)
    therefore computes attention there as two matrix products around an fp32
    softmax (timm's ``fused_attn=False`` path) and uses SDPA everywhere else;
    ``"sdpa"`` and ``"matmul"`` force one of them.

    Under autocast (ours): autocast casts a frozen fp32 weight to the autocast
    dtype at every use (its cast cache holds only trainable leaves), i.e. the
    whole backbone twice per GLARE step (teacher and student). The attention
    and MLP (timm ``Mlp``) linear layers whose parameters do not require
    gradients keep one low-precision copy per autocast dtype instead, made at
    the first autocast forward and remade when a weight changes (in-place
    update or new storage); the outputs are bit-identical to autocast's own
    casts. ``cache_autocast_weights=False`` turns this off (it costs half the
    frozen linear weights' fp32 memory for bf16).

    Attributes:
        vit: The frozen timm backbone.
        adapters: One :class:`UniAdapter` per block (the student's).
        report: Parameter counts (also logged at construction).
        cache_autocast_weights: Reuse low-precision copies of the frozen linear
            weights under autocast.
        attention: How the blocks compute attention: ``"auto"``, ``"sdpa"``
            or ``"matmul"`` (see :meth:`uses_matmul_attention`).

    Examples:
        >>> import timm
        >>> vit = timm.create_model("vit_small_patch16_224", num_classes=0)
        >>> backbone = UniAdapterViT(vit)  # bottleneck 384 // 12 = 32
        >>> tokens = backbone(torch.randn(2, 3, 224, 224))  # (2, 197, 384)
    """

    def __init__(
        self,
        vit: VisionTransformer,
        bottleneck: int | None = None,
        scale: float = ADAPTER_SCALE,
        dropout: float = 0.0,
        zero_init: bool = True,
        cache_autocast_weights: bool = True,
        attention: AttentionKernel = "auto",
    ) -> None:
        """Wraps ``vit``, freezes it and inserts one adapter per block.

        Args:
            vit: A timm ``VisionTransformer`` (any size, patch 14 or 16,
                LayerScale, register tokens). It is frozen and switched to
                dynamic image size in place.
            bottleneck: Adapter bottleneck size. Defaults to
                :func:`~lightly_glare.models.default_bottleneck` of the
                ViT's width (``embed_dim // 12``; ours).
            scale: Adapter output scale. Defaults to 0.1 (UniAdapter).
            dropout: Adapter dropout. Defaults to 0.
            zero_init: Zero-initialise the up-projections so the adapted model
                starts as an exact copy of ``vit``. Defaults to True.
            cache_autocast_weights: Keep low-precision copies of the frozen
                linear weights for autocast forwards instead of casting them
                at every use. Defaults to True (ours).
            attention: ``"auto"`` (default; ours): matrix products on the CPU
                under bf16 autocast, fused SDPA elsewhere; ``"sdpa"`` or
                ``"matmul"``: always that one.

        Raises:
            TypeError: ``vit`` is not a supported timm ViT.
            ValueError: ``attention`` is none of the three.
        """
        super().__init__()
        if attention not in ATTENTION_KERNELS:
            raise ValueError(
                f"attention must be one of {', '.join(ATTENTION_KERNELS)}; "
                f"got {attention!r}."
            )
        _check_supported(vit)
        _enable_dynamic_img_size(vit)
        self.vit = vit
        self.vit.requires_grad_(False)
        dim = int(vit.embed_dim)
        self.adapters = nn.ModuleList(
            UniAdapter(dim, bottleneck, scale, dropout, zero_init) for _ in vit.blocks
        )
        self.report = TrainableReport(
            backbone=sum(p.numel() for p in vit.parameters()),
            adapters=sum(p.numel() for p in self.adapters.parameters()),
        )
        logger.info("UniAdapterViT: %s", self.report)
        self.cache_autocast_weights = cache_autocast_weights
        self.attention = attention
        self._autocast_key: tuple[object, ...] | None = None
        self._autocast_weights: dict[nn.Module, tuple[Tensor, Tensor | None]] = {}

    def _frozen_linears(self) -> list[nn.Linear]:
        """The blocks' attention and MLP linear layers with frozen fp32 weights."""
        return [
            layer
            for block in self.blocks
            for part in (block.attn, block.mlp)
            for layer in part.modules()
            if isinstance(layer, nn.Linear)
            and layer.weight.dtype == torch.float32
            and not any(p.requires_grad for p in layer.parameters())
        ]

    def autocast_weights(self, device: torch.device) -> LinearWeights | None:
        """Low-precision copies of the frozen linear weights for this forward.

        Args:
            device: The device of the inputs.

        Returns:
            ``{layer: (weight, bias)}`` in the autocast dtype when autocast is
            enabled on ``device`` (and :attr:`cache_autocast_weights`), else
            None. The copies are remade when a weight's storage, version
            (in-place update), device or ``requires_grad`` changes. None
            while ``torch.compile`` traces: the check reads data pointers,
            which Dynamo cannot trace (a graph break per forward), and the
            compiled graph does the casts itself.
        """
        if (
            not self.cache_autocast_weights
            or torch.compiler.is_compiling()
            or not torch.is_autocast_enabled(device.type)
        ):
            return None
        dtype = torch.get_autocast_dtype(device.type)
        layers = self._frozen_linears()
        key = (
            dtype,
            device.type,
            tuple(
                (id(layer), p.data_ptr(), p._version, p.device)
                for layer in layers
                for p in layer.parameters()
            ),
        )
        if key != self._autocast_key:
            self._autocast_weights = {}  # free the old copies first
            self._autocast_weights = {
                layer: (
                    layer.weight.detach().to(dtype),
                    None if layer.bias is None else layer.bias.detach().to(dtype),
                )
                for layer in layers
                if layer.weight.device.type == device.type
            }
            self._autocast_key = key
        return self._autocast_weights

    def uses_matmul_attention(self, device: torch.device) -> bool:
        """Whether a forward on ``device`` computes attention by matrix products.

        Args:
            device: The device of the inputs.

        Returns:
            For :attr:`attention` ``"auto"``: True on the CPU under bf16
            autocast, where PyTorch's fused kernel is the slower one; False
            elsewhere (SDPA). ``"matmul"``: True; ``"sdpa"``: False.
        """
        if self.attention != "auto":
            return self.attention == "matmul"
        return (
            device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        )

    @property
    def embed_dim(self) -> int:
        """Token dimension D."""
        return int(self.vit.embed_dim)

    @property
    def blocks(self) -> list[Block]:
        """The backbone's transformer blocks."""
        return cast(list[Block], list(self.vit.blocks))

    @property
    def num_heads(self) -> int:
        """Attention heads of the last block."""
        return int(cast(Attention, self.blocks[-1].attn).num_heads)

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks."""
        return len(self.vit.blocks)

    @property
    def num_prefix_tokens(self) -> int:
        """Number P of class and register tokens before the patch tokens."""
        return int(self.vit.num_prefix_tokens)

    @property
    def patch_size(self) -> int:
        """Patch size in pixels (square patches)."""
        size = self.vit.patch_embed.patch_size
        return int(size[0])

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (h, w) of an input image of the given size.

        Args:
            height: Image height H in pixels.
            width: Image width W in pixels.

        Returns:
            ``(H / p, W / p)`` for patch size p (rounded up when the ViT pads
            its inputs, timm's ``dynamic_img_pad``).

        Raises:
            ValueError: H or W is not a multiple of p (and the ViT does not
                pad); the message names both numbers and the nearest valid size.
        """
        patch_embed = cast(PatchEmbed, self.vit.patch_embed)
        patch = self.patch_size
        if not patch_embed.dynamic_img_pad and (height % patch or width % patch):
            raise ValueError(
                f"Input size {height} x {width} is not a multiple of the patch "
                f"size {patch}. Resize or crop the images so that both sides are "
                f"multiples of {patch}, e.g. {_nearest_multiple(height, patch)} x "
                f"{_nearest_multiple(width, patch)} (for GLARE views: "
                "GlareTransform(input_size=...))."
            )
        grid = patch_embed.dynamic_feat_size((height, width))
        return int(grid[0]), int(grid[1])

    def _check_forward(
        self,
        images: Tensor,
        adapters: nn.ModuleList,
        return_cls_attention: bool,
        drop_path: float,
    ) -> None:
        """Refuses the inputs :meth:`forward_features` documents as invalid."""
        check_drop_path(drop_path)
        if drop_path and return_cls_attention:
            raise ValueError(
                "return_cls_attention needs every row of the last block; "
                "use drop_path=0 for it."
            )
        if len(adapters) != self.num_blocks:
            raise ValueError(
                f"Expected {self.num_blocks} adapters (one per block), got "
                f"{len(adapters)}."
            )
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Expected images of shape (B, 3, H, W), got {tuple(images.shape)}."
            )
        self.grid_size(images.shape[2], images.shape[3])  # refuses invalid sizes

    def forward_features(
        self,
        images: Tensor,
        adapters: nn.ModuleList | None = None,
        return_cls_attention: bool = False,
        intermediate_indices: Sequence[int] = (),
        drop_path: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> BackboneOutput:
        """Runs the adapted backbone.

        Args:
            images: Input images with shape (B, 3, H, W), H and W multiples of
                the patch size (any such size; see :meth:`grid_size`).
            adapters: Adapters to use instead of ``self.adapters`` (e.g. a
                teacher's EMA copy). Must have one adapter per block.
            return_cls_attention: Also return the last block's class-token
                attention to the patches, per head.
            intermediate_indices: Blocks whose outputs (before the final norm)
                to return, e.g. ``(2, 5, 8, 11)`` for UperNet.
            drop_path: Sample-skipping stochastic depth (DINOv2's, ours for a
                frozen backbone): every block computes its frozen attention
                and MLP branches only for :func:`kept_samples` rows drawn
                anew per branch, adding them scaled by ``B / kept``; the
                adapters run on every row. 0 (default): every branch on
                every row. Only for training a student (it changes the
                output).
            generator: Optional random generator of ``drop_path``'s draws.

        Returns:
            A :class:`BackboneOutput` with N = h * w patch tokens for the grid
            (h, w) of :meth:`grid_size`.

        Raises:
            ValueError: Wrong number of adapters, image shape or image size;
                ``drop_path`` outside [0, 1) or combined with
                ``return_cls_attention`` (the map needs every row).
        """
        adapters = self.adapters if adapters is None else adapters
        self._check_forward(images, adapters, return_cls_attention, drop_path)
        wanted = [index % self.num_blocks for index in intermediate_indices]
        collected: dict[int, Tensor] = {}
        vit = self.vit
        weights = self.autocast_weights(images.device)
        matmul = self.uses_matmul_attention(images.device)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        cls_attention = None
        last = self.num_blocks - 1
        kept = kept_samples(x.shape[0], drop_path) if drop_path else None
        for index, (block, adapter) in enumerate(
            zip(self.blocks, adapters, strict=True)
        ):
            if return_cls_attention and index == last:
                attn_out, cls_attention = attention_with_cls_map(
                    cast(Attention, block.attn),
                    block.norm1(x),
                    self.num_prefix_tokens,
                    weights,
                    matmul=matmul,
                )
                h = x + block.drop_path1(block.ls1(attn_out))
            else:
                h = add_sampled_residual(
                    x,
                    partial(attention_branch, block, weights, matmul),
                    kept,
                    generator,
                )
            x = add_sampled_residual(
                h, partial(mlp_branch, block, weights), kept, generator
            ) + adapter(h)
            if index in wanted:
                collected[index] = x
        return BackboneOutput(
            tokens=vit.norm(x),
            cls_attention=cls_attention,
            intermediates=[collected[index] for index in wanted] if wanted else None,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Returns all tokens after the final norm, shape (B, P + N, D)."""
        return self.forward_features(images).tokens
