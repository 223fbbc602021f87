from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from lightly_glare.models import CheckpointMismatchError, UniAdapterViT
from lightly_glare.models.export import export_adapted_backbone
from lightly_glare.weights import create_vit, load_ssl_checkpoint
from tests.conftest import make_vit


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def dino_training_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, object]:
    head = {
        "head.mlp.0.weight": torch.randn(8, 48),
        "head.last_layer.weight_g": torch.ones(1),
    }
    return {
        "teacher": {**prefixed(state, "backbone."), **head},
        "student": {**prefixed(state, "module.backbone."), **prefixed(head, "module.")},
        "epoch": 100,
    }


def ibot_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, object]:
    return {
        "state_dict": {
            **prefixed(state, "backbone."),
            "backbone.masked_embed": torch.zeros(48),
        }
    }


LAYOUTS = {
    "timm": lambda state: state,
    "dino_plain": lambda state: state,
    "dino_training": dino_training_checkpoint,
    "ibot": ibot_checkpoint,
    "ddp_model": lambda state: {"model": prefixed(state, "module.")},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_official_layouts_load_exactly(layout: str, tmp_path: Path) -> None:
    source = make_vit()
    path = tmp_path / "ckpt.pth"
    torch.save(LAYOUTS[layout](source.state_dict()), path)
    target = make_vit()
    load_ssl_checkpoint(target, path)
    assert_same_weights(source, target)


def test_dino_student_can_be_selected(tmp_path: Path) -> None:
    teacher, student = make_vit(), make_vit()
    path = tmp_path / "ckpt.pth"
    checkpoint = dino_training_checkpoint(teacher.state_dict())
    checkpoint["student"] = prefixed(student.state_dict(), "module.backbone.")
    torch.save(checkpoint, path)
    target = make_vit()
    load_ssl_checkpoint(target, path)
    assert_same_weights(teacher, target)
    load_ssl_checkpoint(target, path, checkpoint_key="student")
    assert_same_weights(student, target)


def dinov2_like(**kwargs: object) -> VisionTransformer:
    return make_vit("dinov2_like", no_embed_class=True, **kwargs)


def to_dinov2_layout(vit: VisionTransformer, chunks: int) -> dict[str, torch.Tensor]:
    """The official DINOv2 file layout of a timm model (inverse of timm's map)."""
    state = vit.state_dict()
    out = {
        "mask_token": torch.zeros(1, 48),
        "cls_token": state.pop("cls_token"),
        "register_tokens": state.pop("reg_token"),
        "pos_embed": torch.cat([torch.zeros(1, 1, 48), state.pop("pos_embed")], 1),
    }
    per_chunk = len(vit.blocks) // chunks
    for key, value in state.items():
        if key.startswith("blocks.") and chunks > 1:
            index = int(key.split(".")[1])
            rest = key.split(".", 2)[2]
            key = f"blocks.{index // per_chunk}.{index}.{rest}"
        out[key] = value
    return out


@pytest.mark.parametrize("chunks", [1, 3])
def test_dinov2_layout_with_registers_and_chunks(chunks: int, tmp_path: Path) -> None:
    source = dinov2_like()
    path = tmp_path / "dinov2.pth"
    torch.save(to_dinov2_layout(source, chunks), path)
    target = dinov2_like()
    load_ssl_checkpoint(target, path)
    assert_same_weights(source, target)
    images = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(
        target.forward_features(images), source.forward_features(images)
    )


def test_position_embedding_resampled_to_model_grid(tmp_path: Path) -> None:
    source = make_vit(img_size=64)  # 8 x 8 grid
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    target = make_vit(img_size=32)  # 4 x 4 grid
    load_ssl_checkpoint(target, path)
    assert target.pos_embed.shape == (1, 17, 48)
    torch.testing.assert_close(target.cls_token, source.cls_token)
    grid = source.pos_embed[0, 1:].reshape(8, 8, 48).permute(2, 0, 1)[None]
    expected = (
        torch.nn.functional.interpolate(
            grid, size=(4, 4), mode="bicubic", align_corners=False
        )[0]
        .permute(1, 2, 0)
        .reshape(16, 48)
    )
    torch.testing.assert_close(target.pos_embed[0, 1:], expected)


def test_wrong_key_set_lists_the_keys(tmp_path: Path) -> None:
    state = make_vit().state_dict()
    state.pop("blocks.1.attn.qkv.weight")
    state["blocks.1.attn.qkv_renamed.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_ssl_checkpoint(make_vit(), path)
    message = str(error.value)
    assert "blocks.1.attn.qkv.weight" in message
    assert "blocks.1.attn.qkv_renamed.weight" in message


def test_wrong_architecture_names_shapes(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    torch.save(make_vit(embed_dim=96).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_ssl_checkpoint(make_vit(), path)


def test_wrong_patch_size_is_an_error_not_a_resize(tmp_path: Path) -> None:
    path = tmp_path / "p16.pth"
    torch.save(make_vit(patch_size=16).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="patches"):
        load_ssl_checkpoint(make_vit(), path)


def test_glare_export_is_refused_with_advice(tmp_path: Path) -> None:
    path = export_adapted_backbone(UniAdapterViT(make_vit()), tmp_path / "export.pth")
    with pytest.raises(CheckpointMismatchError, match="load_adapted_backbone"):
        load_ssl_checkpoint(make_vit(), path)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save(make_vit().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointMismatchError, match="Cannot read"):
        load_ssl_checkpoint(make_vit(), path)
    with pytest.raises(FileNotFoundError):
        load_ssl_checkpoint(make_vit(), tmp_path / "absent.pth")


def test_pickled_code_is_not_executed(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Exploit()}, path)
    with pytest.raises(CheckpointMismatchError, match="Cannot read"):
        load_ssl_checkpoint(make_vit(), path)


def test_create_vit_never_downloads(tmp_path: Path) -> None:
    vit = create_vit("vit_small_patch16_224", img_size=64)
    assert vit.patch_embed.grid_size == (4, 4) and vit.num_classes == 0
    path = tmp_path / "s16.pth"
    torch.save(vit.state_dict(), path)
    assert_same_weights(
        create_vit("vit_small_patch16_224", checkpoint=path, img_size=64), vit
    )
