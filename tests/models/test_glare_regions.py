"""GLARE's regional term: the teacher pools each region where it lies in view b."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lightly_glare.loss import REGIONAL, GlareRegionalLoss
from lightly_glare.models import GLARE, GlareProjectionHead
from lightly_glare.models.adapted_vit import BackboneOutput
from lightly_glare.models.geometry import transfer_masks
from tests.conftest import VIT_VARIANTS, make_vit
from tests.models.test_glare import real_batch, record_backbone_outputs

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
    assert len(expected) > 0 and pair.valid is not None
    torch.testing.assert_close(pair.teacher[pair.valid], expected)


def boolean_indexing_regional(
    model: GLARE,
    student: BackboneOutput,
    teacher: BackboneOutput,
    geometry: Tensor,
    region_masks: Tensor,
) -> tuple[Tensor, Tensor]:
    """The regional pairs as GLARE computed them before fixed shapes.

    Only the kept regions, selected by boolean indexing (``pooled[keep]``).

    Args:
        model: The model (its pooling modules and heads).
        student: The student's backbone output on the distorted views.
        teacher: The teacher's backbone output on the clean views.
        geometry: Crop geometry, shape (B, 2, 5).
        region_masks: The regions drawn on each view, shape (2, B, R, N).

    Returns:
        Teacher and student projections of the kept regions, (M, K) each.
    """
    prefix = model.backbone.num_prefix_tokens
    student_cls = student.tokens[:, 0].chunk(2)  # 2 x (B, D)
    teacher_cls = teacher.tokens[:, 0].chunk(2)
    student_patches = student.tokens[:, prefix:].chunk(2)  # 2 x (B, N, D)
    teacher_patches = teacher.tokens[:, prefix:].chunk(2)
    students, teachers = [], []
    for a, b in ((0, 1), (1, 0)):
        masks_a = region_masks[a]  # (B, R, N)
        masks_b = transfer_masks(masks_a, geometry[:, a], geometry[:, b], GRID, GRID)
        keep = (masks_a.sum(-1) >= model.min_region_patches) & (
            masks_b.sum(-1) >= model.min_region_patches
        )  # (B, R)
        with torch.no_grad():
            target = model.teacher["region_pooling"](
                teacher_cls[b], teacher_patches[b], masks_b
            )  # (B, R, D)
        pooled = model.region_pooling(student_cls[a], student_patches[a], masks_a)
        students.append(pooled[keep])  # (M_a, D)
        teachers.append(target[keep])
    with torch.no_grad():
        teacher_out = model.teacher["head"](torch.cat(teachers))  # (M, K)
    return teacher_out, model.student_head(torch.cat(students))


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_fixed_shape_regional_term_equals_boolean_indexing(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = GlareProjectionHead(48, hidden_dim=32, bottleneck_dim=16, output_dim=64)
    model = GLARE(
        make_vit(variant), head=head, adapter_bottleneck=8, min_region_patches=6
    ).double()  # some regions skipped; fp64: equal up to rounding at its tolerance
    for adapter in model.backbone.adapters:  # a student unlike its teacher
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    outputs = record_backbone_outputs(model, monkeypatch)  # teacher, student
    views, geometry = real_batch(int(make_vit(variant).patch_embed.img_size[0]), 6)
    views = [view.double() for view in views]
    output = model(views, geometry, generator=torch.Generator().manual_seed(0))
    assert output.region_masks is not None
    teacher, student = outputs
    expected = boolean_indexing_regional(
        model, student, teacher, geometry, output.region_masks
    )
    pair = output.pairs[REGIONAL]
    assert pair.valid is not None and pair.student.shape[0] == 2 * 6 * 3  # 2B * R
    # Precondition: some regions are skipped, so the mask matters.
    assert 0 < len(expected[0]) < len(pair.valid)
    torch.testing.assert_close(pair.teacher[pair.valid], expected[0])
    torch.testing.assert_close(pair.student[pair.valid], expected[1])
    new, reference = GlareRegionalLoss(64).double(), GlareRegionalLoss(64).double()
    loss = new(pair.teacher, pair.student, valid=pair.valid)
    reference_loss = reference(*expected)
    torch.testing.assert_close(loss, reference_loss)
    torch.testing.assert_close(new.center, reference.center)
    trained = model.trainable_parameters()
    gradients = torch.autograd.grad(loss, trained, retain_graph=True, allow_unused=True)
    reference_gradients = torch.autograd.grad(
        reference_loss, trained, allow_unused=True
    )
    assert any(gradient is not None for gradient in gradients)
    for gradient, reference_gradient in zip(
        gradients, reference_gradients, strict=True
    ):
        torch.testing.assert_close(gradient, reference_gradient)
