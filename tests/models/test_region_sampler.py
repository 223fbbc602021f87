import pytest
import torch

from lightly_glare.models import AttentionRegionSampler, attention_mass_masks
from lightly_glare.models.region_sampler import mask_iou


def test_mass_mask_is_smallest_set_reaching_mass() -> None:
    attention = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    assert attention_mass_masks(attention, 0.6).tolist() == [[True, False, True, False]]
    assert attention_mass_masks(attention, 0.5).tolist() == [
        [True, False, False, False]
    ]
    assert attention_mass_masks(attention, 1.0).all()


def test_mass_mask_brute_force_property() -> None:
    attention = torch.rand(3, 5, 12).softmax(-1)
    masks = attention_mass_masks(attention, 0.6)
    kept = (attention * masks).sum(-1)
    assert (kept >= 0.6 - 1e-6).all()
    # Removing the weakest kept patch drops below the mass: the set is minimal.
    weakest = torch.where(masks, attention, torch.inf).min(-1).values
    assert (kept - weakest < 0.6).all()


def test_shapes_non_empty_and_reproducible() -> None:
    attention = torch.rand(4, 6, 49).pow(4).softmax(-1)
    sampler = AttentionRegionSampler(num_regions=4)
    masks, valid = sampler(attention, generator=torch.Generator().manual_seed(1))
    assert masks.shape == (4, 4, 49) and masks.dtype == torch.bool
    assert valid.shape == (4, 4)
    assert (masks.any(-1) == valid).all()
    assert valid[:, 0].all()
    again, _ = sampler(attention, generator=torch.Generator().manual_seed(1))
    assert torch.equal(masks, again)
    # Every region is one head's mass mask.
    head_masks = attention_mass_masks(attention, 0.6)
    for b in range(4):
        for r in range(4):
            if valid[b, r]:
                assert any(torch.equal(masks[b, r], head_masks[b, h]) for h in range(6))


def test_default_region_count_and_duplicates_skipped() -> None:
    base = torch.rand(2, 49).softmax(-1)
    attention = torch.stack([base, base, base, torch.rand(2, 49).softmax(-1)], dim=1)
    masks, valid = AttentionRegionSampler()(attention)  # R = min(4, 6) = 4
    assert masks.shape == (2, 4, 49)
    assert valid.sum(-1).tolist() == [2, 2]  # three identical heads count once
    iou = mask_iou(masks)
    off_diagonal = iou[:, :2, :2][:, ~torch.eye(2, dtype=torch.bool)]
    assert (off_diagonal <= 0.9).all()


def test_uniform_attention_single_region() -> None:
    attention = torch.full((1, 3, 16), 1 / 16)
    masks, valid = AttentionRegionSampler()(attention)
    assert valid.sum() == 1  # all heads identical
    assert masks[0, 0].sum() >= 9  # >= 60 % of 16 patches


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="mass"):
        AttentionRegionSampler(mass=0.0)
    with pytest.raises(ValueError, match=r"\(B, heads, N\)"):
        AttentionRegionSampler()(torch.rand(3, 4))
