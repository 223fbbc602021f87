"""The frozen ViT block's kernels run by :class:`~lightly_glare.models.UniAdapterViT`.

timm's ``Attention`` and ``Mlp`` forwards, rewritten to take low-precision copies
of the frozen linear weights (:data:`LinearWeights`) and to choose between fused
SDPA and two matrix products around an fp32 softmax (:data:`AttentionKernel`);
the class-token attention map of the last block
(:func:`attention_with_cls_map`); and DINOv2's sample-skipping stochastic depth
(:func:`add_sampled_residual`). Public so that benchmarks can time each kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, cast, get_args

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from timm.layers.mlp import Mlp
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightly_glare.models.randomness import random_tensor

#: How :class:`UniAdapterViT` computes attention (``UniAdapterViT.attention``).
AttentionKernel = Literal["auto", "sdpa", "matmul"]
ATTENTION_KERNELS: tuple[AttentionKernel, ...] = get_args(AttentionKernel)

#: Low-precision copies ``(weight, bias)`` of frozen ``nn.Linear`` layers, by layer.
LinearWeights = Mapping[nn.Module, tuple[Tensor, Tensor | None]]


def frozen_linear(layer: nn.Module, x: Tensor, weights: LinearWeights | None) -> Tensor:
    """``layer(x)``, with the layer's low-precision copy when ``weights`` has one.

    Under autocast ``F.linear`` casts its fp32 arguments to the autocast dtype
    and leaves tensors already in it as they are, so the result is bit-identical
    to ``layer(x)``; only the cast of the weights is saved.
    """
    copies = None if weights is None else weights.get(layer)
    return layer(x) if copies is None else F.linear(x, *copies)


def attention_qkv(
    attn: Attention, x: Tensor, weights: LinearWeights | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """q, k, v (each (B, heads, T, d_h)) and the output gate of a timm Attention."""
    batch, tokens, _ = x.shape
    gate = (
        frozen_linear(attn.gate, x, weights).sigmoid()
        if attn.gate is not None
        else None
    )
    qkv = frozen_linear(attn.qkv, x, weights).reshape(
        batch, tokens, 3, attn.num_heads, attn.head_dim
    )  # (B, T, 3, heads, d_h)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, d_h)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v, gate


def attention_output(
    attn: Attention, out: Tensor, gate: Tensor | None, weights: LinearWeights | None
) -> Tensor:
    """The output projection of a timm Attention, from SDPA's (B, heads, T, d_h)."""
    batch, _, tokens, _ = out.shape
    out = out.transpose(1, 2).reshape(batch, tokens, attn.attn_dim)  # (B, T, D)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(frozen_linear(attn.proj, out, weights))


def sdpa_attention(attn: Attention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Fused attention (timm's own path) from q, k, v: (B, heads, T, d_h)."""
    return F.scaled_dot_product_attention(
        q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0
    )  # (B, heads, T, d_h)


def attention_probabilities(attn: Attention, q: Tensor, k: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d_h))`` in fp32: shape (B, heads, T_q, T)."""
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, T_q, T)
    return logits.float().softmax(dim=-1)


def matmul_attention(attn: Attention, probabilities: Tensor, v: Tensor) -> Tensor:
    """Unfused attention (timm's) from its probabilities: (B, heads, T, d_h)."""
    return cast(Tensor, attn.attn_drop(probabilities.to(v.dtype))) @ v


def block_attention(
    attn: Attention, x: Tensor, weights: LinearWeights | None, matmul: bool
) -> Tensor:
    """The ``Attention.forward`` of timm with low-precision weights.

    Fused (SDPA), or as two matrix products around an fp32 softmax when
    ``matmul`` (see :attr:`UniAdapterViT.attention`).
    """
    q, k, v, gate = attention_qkv(attn, x, weights)
    if matmul:
        out = matmul_attention(attn, attention_probabilities(attn, q, k), v)
    else:
        out = sdpa_attention(attn, q, k, v)
    return attention_output(attn, out, gate, weights)


def block_mlp(mlp: nn.Module, x: Tensor, weights: LinearWeights | None) -> Tensor:
    """A block's MLP; timm's ``Mlp`` with low-precision weight copies."""
    if weights is None or type(mlp) is not Mlp:
        return cast(Tensor, mlp(x))
    x = mlp.drop1(mlp.act(frozen_linear(mlp.fc1, x, weights)))
    return cast(Tensor, mlp.drop2(frozen_linear(mlp.fc2, mlp.norm(x), weights)))


def attention_branch(
    block: Block, weights: LinearWeights | None, matmul: bool, x: Tensor
) -> Tensor:
    """A block's attention residual ``ls1(attn(norm1(x)))``: (B, T, D)."""
    normed = block.norm1(x)
    attn = cast(Attention, block.attn)
    if weights is None and not matmul:
        out = attn(normed)
    else:
        out = block_attention(attn, normed, weights, matmul)
    return cast(Tensor, block.drop_path1(block.ls1(out)))


def mlp_branch(block: Block, weights: LinearWeights | None, x: Tensor) -> Tensor:
    """A block's MLP residual ``ls2(mlp(norm2(x)))``: (B, T, D)."""
    out = block_mlp(block.mlp, block.norm2(x), weights)
    return cast(Tensor, block.drop_path2(block.ls2(out)))


def attention_with_cls_map(
    attn: Attention,
    x: Tensor,
    num_prefix_tokens: int,
    weights: LinearWeights | None = None,
    matmul: bool = False,
) -> tuple[Tensor, Tensor]:
    """Runs a timm ``Attention`` and also returns the class token's attention map.

    The block output uses fused SDPA exactly like timm's own forward. The first
    class token's attention row is computed explicitly from the same q and k
    (``softmax(q_cls k^T / sqrt(d_h))``, one (1 x T) row per head), which costs
    a small fraction of the attention itself. With ``matmul`` the block computes
    the whole probability matrix instead of SDPA and takes the row from it.

    Args:
        attn: The attention module of a timm block.
        x: Normalised input tokens, shape (B, T, D).
        num_prefix_tokens: Number P of class/register tokens at the start.
        weights: Low-precision copies of the frozen linear layers to use under
            autocast (see :class:`UniAdapterViT`); None: the layers' own.
        matmul: Compute the attention as two matrix products around an fp32
            softmax instead of SDPA (see :attr:`UniAdapterViT.attention`).

    Returns:
        The attention output with shape (B, T, D) and the class token's attention
        to the N = T - P patch tokens, renormalised over patches, shape
        (B, heads, N).
    """
    q, k, v, gate = attention_qkv(attn, x, weights)
    if matmul:
        probabilities = attention_probabilities(attn, q, k)  # (B, heads, T, T)
        out = matmul_attention(attn, probabilities, v)
    else:
        out = sdpa_attention(attn, q, k, v)  # (B, heads, T, d_h)
        probabilities = attention_probabilities(attn, q[:, :, :1], k)
    cls_row = probabilities[:, :, 0]  # (B, heads, T)
    patch_row = cls_row[:, :, num_prefix_tokens:]  # (B, heads, N)
    patch_row = patch_row / patch_row.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return attention_output(attn, out, gate, weights), patch_row


def check_drop_path(rate: float, name: str = "drop_path") -> None:
    """Refuses a stochastic-depth rate outside [0, 1).

    Args:
        rate: Share of the rows whose branch is skipped.
        name: The argument's name, for the message.

    Raises:
        ValueError: ``rate`` is outside [0, 1).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate}.")


def kept_samples(batch: int, drop_path: float) -> int:
    """Samples of a batch whose frozen branches run under ``drop_path``.

    Args:
        batch: Rows B of the batch.
        drop_path: Share of the rows whose branch is skipped, in [0, 1).

    Returns:
        ``max(1, round(B * (1 - drop_path)))``.
    """
    return max(1, round(batch * (1.0 - drop_path)))


def add_sampled_residual(
    x: Tensor,
    branch: Callable[[Tensor], Tensor],
    kept: int | None,
    generator: torch.Generator | None,
) -> Tensor:
    """``x + branch(x)``, the branch computed only for ``kept`` random samples.

    DINOv2's sample-skipping stochastic depth: the branch runs on a uniformly
    drawn subset of ``kept`` of the B rows and its output, scaled by
    ``B / kept`` so that its expectation over the draw is the full branch, is
    added to those rows; the other rows pass unchanged. Shapes are fixed by
    ``kept`` (no host sync).

    Args:
        x: Tokens, shape (B, T, D).
        branch: A residual branch mapping (B', T, D) to (B', T, D).
        kept: Rows to compute, 1 <= kept <= B; None: every row,
            ``x + branch(x)``.
        generator: Optional random generator of the draw.

    Returns:
        Tokens with shape (B, T, D), in ``x``'s dtype.
    """
    if kept is None:
        return x + branch(x)
    batch = x.shape[0]
    rows = random_tensor((batch,), generator, x.device).argsort()[:kept]  # (kept,)
    update = branch(x.index_select(0, rows))  # (kept, T, D)
    return x.index_add(0, rows, update.to(x.dtype), alpha=batch / kept)
