import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from lightly_glare.models import UniAdapterViT
from tests.conftest import VIT_VARIANTS, image_size, make_vit


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_zero_init_adapters_leave_output_unchanged_exactly(variant: str) -> None:
    vit = make_vit(variant)
    images = torch.randn(2, 3, image_size(vit), image_size(vit))
    expected = vit.forward_features(images)
    adapted = UniAdapterViT(vit)
    assert torch.equal(adapted(images), expected)


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_cls_attention_matches_explicit_attention(variant: str) -> None:
    vit = make_vit(variant)
    adapted = UniAdapterViT(vit)
    images = torch.randn(2, 3, image_size(vit), image_size(vit))
    captured = {}
    last = vit.blocks[-1]
    handle = last.norm1.register_forward_hook(
        lambda module, args, out: captured.setdefault("x", out)
    )
    out = adapted.forward_features(images, return_cls_attention=True)
    handle.remove()
    x = captured["x"]
    attn = last.attn
    qkv = attn.qkv(x).reshape(2, x.shape[1], 3, attn.num_heads, attn.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)  # (B, H, T, T)
    expected = weights[:, :, 0, vit.num_prefix_tokens :]
    expected = expected / expected.sum(-1, keepdim=True)
    assert out.cls_attention is not None
    torch.testing.assert_close(out.cls_attention, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.cls_attention.sum(-1), torch.ones(2, 3))
    # The block output is unchanged by requesting the map.
    torch.testing.assert_close(out.tokens, adapted(images), atol=1e-6, rtol=1e-5)


def test_other_blocks_keep_fused_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    vit = make_vit()
    assert all(block.attn.fused_attn for block in vit.blocks)
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    UniAdapterViT(vit).forward_features(
        torch.randn(1, 3, 32, 32), return_cls_attention=True
    )
    assert len(calls) == len(vit.blocks)


def test_backbone_frozen_and_adapters_trainable() -> None:
    adapted = UniAdapterViT(make_vit(), bottleneck=4)
    assert not any(p.requires_grad for p in adapted.vit.parameters())
    assert all(p.requires_grad for p in adapted.adapters.parameters())
    assert adapted.report.adapters == sum(
        p.numel() for p in adapted.adapters.parameters()
    )


def test_report_for_vit_small_matches_spec() -> None:
    vit = timm.create_model("vit_small_patch16_224", num_classes=0)
    backbone_params = sum(p.numel() for p in vit.parameters())
    report = UniAdapterViT(vit).report
    assert report.adapters == 12 * (3 * 384 + 2 * 384 * 64 + 64)  # 604,416
    assert report.backbone == backbone_params
    assert report.percent == pytest.approx(100 * 604_416 / backbone_params)
    assert 2.7 < report.percent < 2.9  # spec: 2.8 % for ViT-S/16 at b = 64
    assert "604,416" in str(report)


def test_intermediates_and_teacher_adapters() -> None:
    vit = make_vit()
    adapted = UniAdapterViT(vit, zero_init=False)
    images = torch.randn(2, 3, 32, 32)
    out = adapted.forward_features(images, intermediate_indices=(0, -1))
    assert out.intermediates is not None and len(out.intermediates) == 2
    torch.testing.assert_close(vit.norm(out.intermediates[1]), out.tokens)
    other = torch.nn.ModuleList(
        type(a)(a.dim, a.bottleneck) for a in adapted.adapters
    )  # zero-initialised: plain backbone
    torch.testing.assert_close(
        adapted.forward_features(images, adapters=other).tokens,
        vit.forward_features(images),
    )
    with pytest.raises(ValueError, match="adapters"):
        adapted.forward_features(images, adapters=other[:1])


def test_rejects_unsupported_models() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        UniAdapterViT(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    vit = make_vit()
    vit.blocks[0] = torch.nn.Identity()
    with pytest.raises(TypeError, match="Block 0"):
        UniAdapterViT(vit)
    assert isinstance(make_vit(), VisionTransformer)
