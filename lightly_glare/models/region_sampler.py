"""Attention-guided region sampling from the last block's attention heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightly_glare.models.defaults import REGION_MASS
from lightly_glare.models.randomness import random_tensor


def attention_mass_masks(attention: Tensor, mass: float) -> Tensor:
    """Keeps, per map, the smallest set of patches holding ``mass`` of the attention.

    This is DINO's visualisation rule (``visualize_attention.py``, threshold 0.6).

    Args:
        attention: Non-negative maps summing to 1 over the last dim, shape (..., N).
        mass: Fraction of the attention mass to keep, in (0, 1].

    Returns:
        Boolean masks with shape (..., N). The most attended patch is always kept.
    """
    sorted_attention, order = attention.sort(dim=-1, descending=True)
    mass_before = sorted_attention.cumsum(dim=-1) - sorted_attention  # (..., N)
    keep_sorted = mass_before < mass
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def mask_iou(masks: Tensor) -> Tensor:
    """Pairwise intersection over union of boolean masks.

    Args:
        masks: Boolean masks with shape (B, K, N).

    Returns:
        IoU with shape (B, K, K); 0 where both masks are empty.
    """
    as_float = masks.float()
    intersection = as_float @ as_float.transpose(1, 2)  # (B, K, K)
    sizes = as_float.sum(dim=-1)  # (B, K)
    union = sizes[:, :, None] + sizes[:, None, :] - intersection
    return intersection / union.clamp_min(1.0)


class AttentionRegionSampler(nn.Module):
    """Samples region masks from the per-head [CLS] attention of the last block.

    In the last block of a DINO ViT, different heads attend to different semantic
    regions (GLARE, Fig. 2). Each head's [CLS]-to-patch attention map becomes a
    binary mask holding a fraction ``mass`` of its attention; up to
    ``num_regions`` masks per image are then drawn in a random head order,
    skipping masks that are empty or nearly identical (IoU above
    ``iou_threshold``) to one already drawn. Nothing is differentiated through.
    Batched over images; the only Python loop runs over the heads.

    Attributes:
        num_regions: Regions R per image (at most one per head); None means
            ``min(heads, 6)`` (ours).
        mass: Attention mass kept per head. Defaults to 0.6 (DINO's rule).
        iou_threshold: Masks with IoU above this with an already drawn mask are
            skipped. Defaults to 0.9 (ours).

    Examples:
        >>> sampler = AttentionRegionSampler()
        >>> attention = torch.rand(4, 6, 196).softmax(dim=-1)  # (B, heads, N)
        >>> masks, valid = sampler(attention)  # (4, 6, 196), (4, 6)
    """

    def __init__(
        self,
        num_regions: int | None = None,
        mass: float = REGION_MASS,
        iou_threshold: float = 0.9,
    ) -> None:
        super().__init__()
        if num_regions is not None and num_regions < 1:
            raise ValueError(f"num_regions must be >= 1 or None, got {num_regions}.")
        if not 0.0 < mass <= 1.0:
            raise ValueError(f"mass must be in (0, 1], got {mass}.")
        self.num_regions = num_regions
        self.mass = mass
        self.iou_threshold = iou_threshold

    @torch.no_grad()
    def forward(
        self, attention: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples region masks.

        Args:
            attention: [CLS]-to-patch attention per head, shape (B, heads, N),
                each map summing to 1 over the patches.
            generator: Optional random generator (on ``attention``'s device) for
                a reproducible head order.

        Returns:
            ``masks`` with shape (B, R, N) (bool) and ``valid`` with shape (B, R)
            (bool) telling which of the R slots hold a region; drawn regions
            come first. R is ``min(num_regions, heads)``.
        """
        if attention.ndim != 3:
            raise ValueError(
                "Expected attention of shape (B, heads, N), got "
                f"{tuple(attention.shape)}."
            )
        batch, heads, _ = attention.shape
        regions = min(heads, 6 if self.num_regions is None else self.num_regions)
        head_masks = attention_mass_masks(attention.float(), self.mass)  # (B, H, N)
        iou = mask_iou(head_masks)  # (B, H, H)
        non_empty = head_masks.any(dim=-1)  # (B, H)
        order = random_tensor((batch, heads), generator, attention.device).argsort(
            dim=-1
        )  # (B, H): random head order per image
        chosen = torch.zeros(batch, heads, dtype=torch.bool, device=attention.device)
        count = torch.zeros(batch, dtype=torch.long, device=attention.device)
        rows = torch.arange(batch, device=attention.device)
        for step in range(heads):
            head = order[:, step]  # (B,)
            duplicate = ((iou[rows, head] > self.iou_threshold) & chosen).any(dim=-1)
            take = non_empty[rows, head] & ~duplicate & (count < regions)
            chosen[rows, head] = take
            count += take.long()
        # Chosen heads first, in drawing order; the rest are padding.
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(heads, device=attention.device).expand(batch, -1)
        )  # (B, H): position of each head in the drawing order
        key = torch.where(chosen, rank, rank + heads)
        slots = key.argsort(dim=-1)[:, :regions]  # (B, R)
        masks = head_masks.gather(
            1, slots[:, :, None].expand(-1, -1, head_masks.shape[-1])
        )  # (B, R, N)
        valid = chosen.gather(1, slots)  # (B, R)
        return masks & valid[:, :, None], valid
