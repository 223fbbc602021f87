"""Cross-attention pooling of patch tokens into region representations."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn


class CrossAttentionRegionPooling(nn.Module):
    """Pools patch tokens into one representation per region by cross-attention.

    A region r of a view is represented by
    ``g_r = softmax(q K^T / (sqrt(D) * tau) + log M_r) V`` where the query q is the
    view's [CLS] token (or any query passed in), K = V = the view's patch tokens
    and M_r the region's binary mask (``log M_r`` is -inf outside the region).
    GLARE's figure names a cross-attention module; its exact form is not public,
    so this parameter-free form is our default. ``learnable=True`` adds query, key
    and value projections initialised to the identity.

    Attributes:
        dim: Token dimension D.
        temperature: Softmax temperature tau. Defaults to 1.0 (ours).
        learnable: Whether W_q, W_k, W_v exist. Defaults to False (ours).

    Examples:
        >>> pooling = CrossAttentionRegionPooling(dim=384)
        >>> cls, patches = torch.randn(2, 384), torch.randn(2, 196, 384)
        >>> masks = torch.rand(2, 6, 196) > 0.5  # (B, R, N)
        >>> pooling(cls, patches, masks).shape
        torch.Size([2, 6, 384])
    """

    def __init__(
        self, dim: int, temperature: float = 1.0, learnable: bool = False
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.dim = dim
        self.temperature = temperature
        self.learnable = learnable
        self.projections: nn.ModuleDict | None = None
        if learnable:
            self.projections = nn.ModuleDict(
                {name: nn.Linear(dim, dim, bias=False) for name in ("q", "k", "v")}
            )
            for linear in self.projections.values():
                nn.init.eye_(cast(nn.Linear, linear).weight)

    def _project(self, name: str, x: Tensor) -> Tensor:
        return x if self.projections is None else self.projections[name](x)

    def forward(self, query: Tensor, tokens: Tensor, masks: Tensor) -> Tensor:
        """Pools ``tokens`` inside each mask.

        Args:
            query: One query per image, shape (B, D), or one per region,
                shape (B, R, D).
            tokens: Patch tokens, shape (B, N, D).
            masks: Region masks, shape (B, R, N) (bool).

        Returns:
            Region representations with shape (B, R, D). A region with an empty
            mask gets a zero vector (callers drop such regions).
        """
        if tokens.ndim != 3 or masks.ndim != 3 or masks.dtype != torch.bool:
            raise ValueError(
                "Expected tokens (B, N, D) and boolean masks (B, R, N), got "
                f"{tuple(tokens.shape)} and {tuple(masks.shape)} {masks.dtype}."
            )
        if query.ndim == 2:
            query = query[:, None]  # (B, 1, D): shared by all regions
        q = self._project("q", query)  # (B, 1 or R, D)
        k = self._project("k", tokens)  # (B, N, D)
        v = self._project("v", tokens)  # (B, N, D)
        scale = 1.0 / (math.sqrt(self.dim) * self.temperature)
        logits = (q @ k.transpose(1, 2)) * scale  # (B, 1 or R, N)
        logits = logits.float().expand(-1, masks.shape[1], -1)  # (B, R, N)
        # Empty masks keep finite logits (no NaN in the backward) and zero weights.
        non_empty = masks.any(dim=-1, keepdim=True)  # (B, R, 1)
        logits = logits.masked_fill(~masks & non_empty, float("-inf"))
        weights = logits.softmax(dim=-1) * non_empty  # (B, R, N)
        return weights.to(v.dtype) @ v  # (B, R, D)
