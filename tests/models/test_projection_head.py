"""GlareProjectionHead: DINO's head, deep-copyable, official key layouts."""

import copy

import pytest
import torch
from lightly.models.modules import DINOProjectionHead

from lightly_glare.models import GLARE, GlareProjectionHead, head_state_dict
from tests.conftest import make_vit


def test_equals_lightly_dino_head_on_copied_weights() -> None:
    lightly_head = DINOProjectionHead(48, 64, 16, 100)
    head = GlareProjectionHead(48, 64, 16, 100)
    head.load_state_dict(lightly_head.state_dict())  # lightly's ``layers.*`` keys
    with torch.no_grad():
        lightly_head.last_layer.weight_g.mul_(2.0)  # non-trivial norms
    head.load_state_dict(lightly_head.state_dict())
    x = torch.randn(5, 48)
    torch.testing.assert_close(head(x), lightly_head(x), rtol=0, atol=1e-6)


def test_loads_the_official_dino_head_layout_and_computes_dinos_head() -> None:
    """DINO's ``DINOHead``: mlp.{0,2,4}, last_layer.weight_g / weight_v."""
    w0, w2, w4 = torch.randn(32, 48), torch.randn(32, 32), torch.randn(16, 32)
    b0, b2, b4 = torch.randn(32), torch.randn(32), torch.randn(16)
    g, v = torch.rand(100, 1) + 0.5, torch.randn(100, 16)
    checkpoint = {
        "head.mlp.0.weight": w0, "head.mlp.0.bias": b0,
        "head.mlp.2.weight": w2, "head.mlp.2.bias": b2,
        "head.mlp.4.weight": w4, "head.mlp.4.bias": b4,
        "head.last_layer.weight_g": g, "head.last_layer.weight_v": v,
    }  # fmt: skip
    head = GlareProjectionHead(48, 32, 16, 100)
    head.load_state_dict(head_state_dict(checkpoint, "head."))
    x = torch.randn(3, 48)
    gelu = torch.nn.functional.gelu
    hidden = gelu(gelu(x @ w0.T + b0) @ w2.T + b2) @ w4.T + b4
    hidden = torch.nn.functional.normalize(hidden, dim=-1)
    expected = hidden @ (g * v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)


def test_deep_copy_is_independent_and_equal() -> None:
    head = GlareProjectionHead(48, 32, 16, 64)
    twin = copy.deepcopy(head)
    x = torch.randn(4, 48)
    torch.testing.assert_close(twin(x), head(x), rtol=0, atol=0)
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert not torch.equal(twin(x), head(x))


def test_norm_last_layer_fixes_g_and_shapes_are_checked() -> None:
    head = GlareProjectionHead(48, 32, 16, 64)
    trainable = {name for name, p in head.named_parameters() if p.requires_grad}
    assert "last_layer.parametrizations.weight.original0" not in trainable
    free = GlareProjectionHead(48, 32, 16, 64, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad
    with pytest.raises(ValueError, match="tokens of size 48"):
        head(torch.randn(2, 40))
    with pytest.raises(ValueError, match="sizes must be positive"):
        GlareProjectionHead(48, output_dim=0)


def small_head() -> GlareProjectionHead:
    return GlareProjectionHead(48, 32, 16, 64)


def test_glare_teacher_copies_the_given_heads() -> None:
    head = small_head()
    model = GLARE(make_vit(), head=head)
    assert model.student_head is head
    x = torch.randn(2, 48)
    torch.testing.assert_close(model.teacher["head"](x), head(x), rtol=0, atol=0)
    # The untied patch head has the head's architecture, its own initial weights.
    patch = model.student_patch_head
    assert isinstance(patch, GlareProjectionHead) and patch.output_dim == 64
    assert not torch.equal(patch(x), head(x))
    torch.testing.assert_close(model.teacher["patch_head"](x), patch(x))


def test_a_shared_head_stays_shared_in_the_teacher() -> None:
    model = GLARE(make_vit(), head=small_head(), share_patch_head=True)
    assert model.student_patch_head is model.student_head
    assert model.teacher["patch_head"] is model.teacher["head"]
    with pytest.raises(ValueError, match="either patch_head or share_patch_head"):
        GLARE(make_vit(), head=small_head(), patch_head=small_head(),
              share_patch_head=True)  # fmt: skip


def test_a_head_that_cannot_be_deep_copied_is_named() -> None:
    with pytest.raises(ValueError, match="GlareProjectionHead"):
        GLARE(make_vit(), head=DINOProjectionHead(48, 32, 16, 64))


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_cancel_last_layer_gradients_as_lightlys_dino_head(
    norm_last_layer: bool,
) -> None:
    ours = GlareProjectionHead(
        16, 32, 8, 64, norm_last_layer=norm_last_layer, freeze_last_layer=1
    )
    theirs = DINOProjectionHead(
        16, 32, 8, 64, freeze_last_layer=1, norm_last_layer=norm_last_layer
    )
    ours.load_state_dict(theirs.state_dict())  # lightly's keys
    x = torch.randn(4, 16)
    for epoch, frozen in ((0, True), (1, False), (2, False)):
        for head in (ours, theirs):
            head.zero_grad(set_to_none=True)
            head(x).square().sum().backward()
            head.cancel_last_layer_gradients(current_epoch=epoch)
        grads = [
            [p.grad for p in head.last_layer.parameters() if p.requires_grad]
            for head in (ours, theirs)
        ]
        assert len(grads[0]) == len(grads[1]) == (1 if norm_last_layer else 2)
        for mine, lightlys in zip(*grads, strict=True):
            assert (mine is None) == (lightlys is None) == frozen
            if not frozen:
                torch.testing.assert_close(mine, lightlys)
        assert all(p.grad is not None for p in ours.mlp.parameters())
    never = GlareProjectionHead(16, 32, 8, 64)  # default: -1, as lightly's
    never(x).sum().backward()
    never.cancel_last_layer_gradients(current_epoch=0)
    assert all(
        p.grad is not None for p in never.last_layer.parameters() if p.requires_grad
    )
    assert copy.deepcopy(ours).freeze_last_layer == 1
