"""GLARE's regional term: the teacher pools each region where it lies in view b."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lightly_glare.models import GLARE, GlareProjectionHead
from tests.conftest import make_vit

GRID = (4, 4)  # make_vit(): 32 px views, patch 8
#: Maps region masks (B, R, 4 * 4) of one view into the other view's grid.
Transfer = Callable[[Tensor], Tensor]


def flipped_views(images: Tensor) -> tuple[list[Tensor], Tensor, Transfer, Transfer]:
    """View a is the whole image, view b its horizontal flip.

    Args:
        images: Images of shape (B, 3, 32, 32).

    Returns:
        The views, their geometry (B, 2, 5) and the mask transfers a -> b and
        b -> a (both a column flip of the patch grid).
    """
    geometry = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]])

    def flip(masks: Tensor) -> Tensor:
        grid = masks.unflatten(-1, GRID)  # (B, R, h, w)
        return grid.flip(-1).flatten(-2)  # (B, R, N)

    views = [images, images.flip(-1)]
    return views, geometry.expand(len(images), 2, 5), flip, flip


def shifted_views(images: Tensor) -> tuple[list[Tensor], Tensor, Transfer, Transfer]:
    """View a is the left 32 x 32 crop of a 32 x 40 image, view b the right one.

    View b is shifted by one patch (8 px): its patch column j shows view a's
    column j + 1; its last column lies outside view a, as does view a's first
    column outside view b.

    Args:
        images: Images of shape (B, 3, 32, 40).

    Returns:
        The views, their geometry (B, 2, 5) and the mask transfers a -> b and
        b -> a.
    """
    geometry = torch.tensor([[0.0, 0.0, 1.0, 0.8, 0.0], [0.0, 0.2, 1.0, 0.8, 0.0]])

    def shift(masks: Tensor, columns: int) -> Tensor:
        grid = masks.unflatten(-1, GRID)  # (B, R, h, w)
        moved = grid.roll(-columns, dims=-1)  # column j <- column j + columns
        dropped = -1 if columns > 0 else 0  # the column that wrapped around
        moved[..., dropped] = False
        return moved.flatten(-2)  # (B, R, N)

    views = [images[..., :32], images[..., 8:]]
    return (
        views,
        geometry.expand(len(images), 2, 5),
        lambda masks: shift(masks, 1),
        lambda masks: shift(masks, -1),
    )


@pytest.mark.parametrize(
    ("make_views", "width"), [(flipped_views, 32), (shifted_views, 40)]
)
def test_teacher_pools_the_regions_transferred_into_the_other_view(
    make_views: Callable[[Tensor], tuple[list[Tensor], Tensor, Transfer, Transfer]],
    width: int,
) -> None:
    head = GlareProjectionHead(48, hidden_dim=32, bottleneck_dim=16, output_dim=64)
    model = GLARE(make_vit(), head=head, terms=("regional",))
    views, geometry, a_to_b, b_to_a = make_views(torch.randn(4, 3, 32, width))
    output = model(views, geometry, generator=torch.Generator().manual_seed(0))
    assert output.region_masks is not None
    masks = output.region_masks  # (2, B, R, N): regions drawn on each view
    with torch.no_grad():
        teacher = model.backbone.forward_features(
            torch.cat(views), adapters=model.teacher_adapters
        )
        cls = teacher.tokens[:, 0].chunk(2)  # 2 x (B, D)
        patches = teacher.tokens[:, model.backbone.num_prefix_tokens :].chunk(2)
        targets = []
        for a, b, transfer in ((0, 1, a_to_b), (1, 0, b_to_a)):
            masks_b = transfer(masks[a])  # (B, R, N): the regions in view b
            # Precondition: the views' geometries differ, and so do the masks.
            assert not torch.equal(masks_b, masks[a])
            keep = (masks[a].sum(-1) >= 2) & (masks_b.sum(-1) >= 2)  # (B, R)
            pooled = model.teacher["region_pooling"](cls[b], patches[b], masks_b)
            targets.append(pooled[keep])  # (M_a, D)
        expected = model.teacher["head"](torch.cat(targets))  # (M, K)
    pair = output.pairs["regional"]
    assert len(expected) > 0
    torch.testing.assert_close(pair.teacher, expected)
