"""GlareViT: feature shapes, strict checkpoint loading, equivalence, freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmseg.registry import MODELS
from timm.layers.pos_embed import resample_abs_pos_embed
from torch import Tensor

import lightly_glare.openmmlab  # noqa: F401  (mmcv fallback before mmseg)
from lightly_glare.models import UniAdapterViT
from lightly_glare.openmmlab.backbone import GlareViT
from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    NonFiniteWeightsError,
)
from lightly_glare.weights.export import export_adapted_backbone
from tests.conftest import VIT_VARIANTS, make_vit

TINY = {"embed_dim": 48, "depth": 4, "num_heads": 3}


def tiny_arch(variant: str) -> dict[str, object]:
    arch = {**TINY, **VIT_VARIANTS[variant]}
    arch.pop("img_size")
    return arch


def adapted(variant: str) -> UniAdapterViT:
    """A tiny adapted ViT with non-zero adapters (not equal to the plain ViT)."""
    backbone = UniAdapterViT(make_vit(variant, depth=4), bottleneck=8)
    with torch.no_grad():
        for adapter in backbone.adapters:
            for param in adapter.parameters():
                param.normal_(0.0, 0.2)
    return backbone.eval()


def build(variant: str, **kwargs: object) -> GlareViT:
    size = int(VIT_VARIANTS[variant]["img_size"])  # type: ignore[call-overload]
    cfg = {
        "type": "GlareViT",
        "arch": tiny_arch(variant),
        "img_size": size,
        "adapter_bottleneck": 8,
        "out_indices": (0, 1, 2, 3),
        **kwargs,
    }
    return MODELS.build(cfg)


def reference_maps(backbone: UniAdapterViT, images: Tensor) -> list[Tensor]:
    """UniAdapterViT's intermediates as (B, D, h, w) maps, computed independently."""
    output = backbone.forward_features(images, intermediate_indices=(0, 1, 2, 3))
    assert output.intermediates is not None
    h, w = backbone.grid_size(images.shape[2], images.shape[3])
    patches = [x[:, backbone.num_prefix_tokens :] for x in output.intermediates]
    return [
        torch.stack([t[b].T.reshape(-1, h, w) for b in range(len(t))]) for t in patches
    ]


@pytest.fixture(scope="module")
def vit_s16() -> GlareViT:
    return MODELS.build(
        {"type": "GlareViT", "arch": "vit_small_patch16_224", "img_size": 64}
    ).eval()


@pytest.mark.parametrize(
    ("size", "grid"),
    [((64, 64), (4, 4)), ((64, 96), (4, 6)), ((70, 50), (5, 4))],  # 70x50: padded
)
def test_feature_shapes_vit_s16(
    vit_s16: GlareViT, size: tuple[int, int], grid: tuple[int, int]
) -> None:
    assert vit_s16.out_indices == (2, 5, 8, 11)
    features = vit_s16(torch.rand(2, 3, *size))
    assert [tuple(f.shape) for f in features] == [(2, 384, *grid)] * 4


def test_out_indices_select_blocks_in_order() -> None:
    backbone = build("plain", out_indices=(-1, 0)).eval()
    assert backbone.out_indices == (3, 0)
    images = torch.rand(2, 3, 32, 32)
    last, first = backbone(images)
    expected = reference_maps(backbone.adapted, images)
    torch.testing.assert_close(last, expected[3])
    torch.testing.assert_close(first, expected[0])


def test_feature_shapes_dinov2_registers() -> None:
    """Patch 14, LayerScale and 4 register tokens: prefix tokens are dropped."""
    backbone = MODELS.build(
        {"type": "GlareViT", "arch": "vit_small_patch14_reg4_dinov2", "img_size": 56}
    ).eval()
    assert backbone.adapted.num_prefix_tokens == 5
    features = backbone(torch.rand(1, 3, 56, 84))
    assert [tuple(f.shape) for f in features] == [(1, 384, 4, 6)] * 4


@pytest.mark.parametrize("variant", ["plain", "dinov2_like"])
def test_glare_export_features_equal_uniadapter_vit(
    variant: str, tmp_path: Path
) -> None:
    source = adapted(variant)
    path = export_adapted_backbone(source, tmp_path / "glare.pth")
    backbone = build(variant, checkpoint=str(path)).eval()
    images = (
        torch.rand(2, 3, 32, 32) if variant == "plain" else torch.rand(2, 3, 28, 28)
    )
    before = backbone(images)
    backbone.init_weights()
    after = backbone(images)
    expected = reference_maps(source, images)
    for got, want, random in zip(after, expected, before, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert not torch.allclose(random, want, atol=1e-3)


def test_glare_export_pos_embed_resampled_to_img_size(tmp_path: Path) -> None:
    source = adapted("plain")  # 32 px, 4 x 4 grid
    path = export_adapted_backbone(source, tmp_path / "glare.pth")
    backbone = build("plain", checkpoint=str(path), img_size=48)  # 6 x 6 grid
    backbone.init_weights()
    expected = resample_abs_pos_embed(
        source.vit.pos_embed, [6, 6], num_prefix_tokens=1, antialias=False
    )
    torch.testing.assert_close(backbone.adapted.vit.pos_embed, expected)
    torch.testing.assert_close(
        backbone.adapted.vit.blocks[2].attn.qkv.weight,
        source.vit.blocks[2].attn.qkv.weight,
    )
    assert backbone(torch.rand(1, 3, 48, 48))[0].shape == (1, 48, 6, 6)


def test_wrong_keys_fail_naming_them(tmp_path: Path) -> None:
    path = export_adapted_backbone(adapted("plain"), tmp_path / "glare.pth")
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["state_dict"]
    del state["adapters.1.up.weight"]
    state["vit.blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(checkpoint, path)
    backbone = build("plain", checkpoint=str(path))
    with pytest.raises(CheckpointMismatchError) as error:
        backbone.init_weights()
    message = str(error.value)
    assert "missing keys (1): ['adapters.1.up.weight']" in message
    assert "unexpected keys (1): ['vit.blocks.0.attn.extra']" in message


@pytest.mark.parametrize("variant", ["plain", "dinov2_like"])
def test_ssl_checkpoint_starts_as_the_ssl_model(variant: str, tmp_path: Path) -> None:
    """A plain SSL checkpoint + zero-initialised adapters = timm's own features."""
    vit = make_vit(variant, depth=4)
    path = tmp_path / "ssl.pth"
    torch.save({"teacher": vit.state_dict()}, path)  # DINO training layout
    backbone = build(variant, checkpoint=str(path), checkpoint_type="ssl").eval()
    backbone.init_weights()
    size = int(VIT_VARIANTS[variant]["img_size"])  # type: ignore[call-overload]
    images = torch.rand(2, 3, size, size)
    expected = vit.forward_intermediates(
        images, indices=[0, 1, 2, 3], norm=False, intermediates_only=True
    )
    for got, want in zip(backbone(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_ssl_checkpoint_wrong_keys_fail_naming_them(tmp_path: Path) -> None:
    state = make_vit("plain", depth=4).state_dict()
    del state["blocks.1.mlp.fc1.bias"]
    path = tmp_path / "ssl.pth"
    torch.save(state, path)
    backbone = build("plain", checkpoint=str(path), checkpoint_type="ssl")
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.1\.mlp\.fc1\.bias"):
        backbone.init_weights()


@pytest.mark.parametrize("checkpoint_type", ["glare", "ssl"])
def test_non_finite_checkpoint_is_refused(checkpoint_type: str, tmp_path: Path) -> None:
    path = tmp_path / f"{checkpoint_type}.pth"
    if checkpoint_type == "glare":
        export_adapted_backbone(adapted("plain"), path)
        checkpoint = torch.load(path, weights_only=True)
        state = checkpoint["state_dict"]
        key = "adapters.2.down.weight"
    else:
        state = checkpoint = make_vit("plain", depth=4).state_dict()
        key = "blocks.2.attn.proj.weight"
    state[key][0, :4] = float("nan")
    torch.save(checkpoint, path)  # written by another tool, not by an export
    backbone = build("plain", checkpoint=str(path), checkpoint_type=checkpoint_type)
    with pytest.raises(NonFiniteWeightsError) as error:
        backbone.init_weights()
    assert str(path) in str(error.value) and f"{key} (4 of" in str(error.value)


def test_udi_checkpoint_loads_with_one_register_token(tmp_path: Path) -> None:
    """UDI's two class tokens: the second is carried as timm's register token."""
    vit = make_vit("plain", depth=4, reg_tokens=1)
    state = vit.state_dict()
    state["cls_token"] = torch.cat([state["cls_token"], state.pop("reg_token")], 1)
    path = tmp_path / "udi.pth"
    torch.save(state, path)  # UDI's layout: cls_token (1, 2, D)
    backbone = build(
        "plain",
        arch={**tiny_arch("plain"), "reg_tokens": 1},
        checkpoint=str(path),
        checkpoint_type="ssl",
    ).eval()
    backbone.init_weights()
    images = torch.rand(2, 3, 32, 32)
    expected = vit.forward_intermediates(
        images, indices=[0, 1, 2, 3], norm=False, intermediates_only=True
    )
    for got, want in zip(backbone(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    plain = build("plain", checkpoint=str(path), checkpoint_type="ssl")
    with pytest.raises(CheckpointMismatchError, match="reg_tokens=1"):
        plain.init_weights()


def test_wrong_adapter_size_fails(tmp_path: Path) -> None:
    path = export_adapted_backbone(adapted("plain"), tmp_path / "glare.pth")
    backbone = build("plain", checkpoint=str(path), adapter_bottleneck=16)
    with pytest.raises(CheckpointMismatchError, match="adapter_bottleneck"):
        backbone.init_weights()


def test_missing_checkpoint_file_says_how_to_set_it(tmp_path: Path) -> None:
    backbone = build("plain", checkpoint=str(tmp_path / "absent.pth"))
    with pytest.raises(FileNotFoundError, match="model.backbone.checkpoint") as caught:
        backbone.init_weights()
    assert "checkpoint=None for timm's random initialisation" in str(caught.value)
    build("plain", checkpoint=None).init_weights()  # what the message offers works


def test_init_cfg_pretrained_is_strict_alias(tmp_path: Path) -> None:
    path = export_adapted_backbone(adapted("plain"), tmp_path / "glare.pth")
    backbone = build("plain", init_cfg={"type": "Pretrained", "checkpoint": str(path)})
    assert backbone.checkpoint == str(path)
    with pytest.raises(ValueError, match="only init_cfg"):
        build("plain", init_cfg={"type": "Normal", "std": 0.01})


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="checkpoint_type"):
        build("plain", checkpoint_type="mmseg")
    with pytest.raises(ValueError, match="out_indices"):
        build("plain", out_indices=(4,))


def trainable(backbone: GlareViT) -> set[str]:
    return {n for n, p in backbone.named_parameters() if p.requires_grad}


def test_default_fine_tunes_whole_network_adapters_included() -> None:
    backbone = build("plain", out_indices=(1, 2))
    names = trainable(backbone)
    assert "adapted.adapters.0.up.weight" in names
    assert "adapted.vit.blocks.0.attn.qkv.weight" in names
    assert "adapted.vit.pos_embed" in names
    # Never used by the outputs: final norm and blocks after the last index.
    assert not any(n.startswith("adapted.vit.norm.") for n in names)
    assert not any(n.startswith("adapted.vit.blocks.3.") for n in names)
    assert not any(n.startswith("adapted.adapters.3.") for n in names)
    sum(f.sum() for f in backbone(torch.rand(2, 3, 32, 32))).backward()
    for name, param in backbone.named_parameters():
        assert (param.grad is not None) == (name in names), name


def test_freeze_backbone_trains_adapters_only() -> None:
    backbone = build("plain", freeze_backbone=True)
    names = trainable(backbone)
    assert names and all(n.startswith("adapted.adapters.") for n in names)
    assert len(names) == len(list(backbone.adapted.adapters.parameters()))
