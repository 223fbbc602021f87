import math

import pytest
import torch

from lightly_glare.models import CrossAttentionRegionPooling


def test_matches_masked_softmax_reference() -> None:
    pooling = CrossAttentionRegionPooling(dim=8, temperature=0.5)
    query, tokens = torch.randn(2, 8), torch.randn(2, 10, 8)
    masks = torch.rand(2, 3, 10) > 0.4
    masks[:, :, 0] = True
    out = pooling(query, tokens, masks)
    for b in range(2):
        for r in range(3):
            idx = masks[b, r].nonzero().squeeze(1)
            logits = tokens[b, idx] @ query[b] / (math.sqrt(8) * 0.5)
            expected = torch.softmax(logits, 0) @ tokens[b, idx]
            torch.testing.assert_close(out[b, r], expected)


def test_single_patch_region_returns_that_token() -> None:
    pooling = CrossAttentionRegionPooling(dim=4)
    tokens = torch.randn(1, 5, 4)
    masks = torch.zeros(1, 1, 5, dtype=torch.bool)
    masks[0, 0, 3] = True
    torch.testing.assert_close(
        pooling(torch.randn(1, 4), tokens, masks)[0, 0], tokens[0, 3]
    )


def test_empty_mask_gives_zeros_and_finite_gradients() -> None:
    pooling = CrossAttentionRegionPooling(dim=4, learnable=True)
    tokens = torch.randn(1, 5, 4, requires_grad=True)
    masks = torch.zeros(1, 2, 5, dtype=torch.bool)
    masks[0, 1, :2] = True
    out = pooling(torch.randn(1, 4), tokens, masks)
    assert torch.equal(out[0, 0], torch.zeros(4))
    out.sum().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in pooling.parameters())


def test_learnable_starts_as_parameter_free() -> None:
    query, tokens = torch.randn(2, 6), torch.randn(2, 7, 6)
    masks = torch.rand(2, 3, 7) > 0.3
    masks[..., 0] = True
    torch.testing.assert_close(
        CrossAttentionRegionPooling(6, learnable=True)(query, tokens, masks),
        CrossAttentionRegionPooling(6)(query, tokens, masks),
    )


def test_per_region_queries() -> None:
    pooling = CrossAttentionRegionPooling(dim=4)
    tokens = torch.randn(1, 6, 4)
    masks = torch.ones(1, 2, 6, dtype=torch.bool)
    queries = torch.randn(1, 2, 4)
    out = pooling(queries, tokens, masks)
    torch.testing.assert_close(
        out[:, 1], pooling(queries[:, 1], tokens, masks[:, 1:])[:, 0]
    )


def test_rejects_non_boolean_masks() -> None:
    with pytest.raises(ValueError, match="boolean masks"):
        CrossAttentionRegionPooling(4)(
            torch.randn(1, 4), torch.randn(1, 3, 4), torch.ones(1, 1, 3)
        )
