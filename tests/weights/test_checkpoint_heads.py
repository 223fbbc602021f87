"""Projection heads of the official DINO, iBOT and DINOv2 checkpoint layouts.

The layouts and the reference forward are written out from the DINO / iBOT /
DINOv2 source code (``DINOHead``, ``iBOTHead``), not from GlareProjectionHead.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_glare.models import GlareProjectionHead
from lightly_glare.weights import (
    CheckpointHeads,
    HeadSizes,
    head_sizes,
    load_projection_heads,
    read_ssl_checkpoint,
)
from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    NonFiniteWeightsError,
)

#: A tiny head: D -> hidden -> hidden -> bottleneck -> K (patch head: K_PATCH).
DIM, HIDDEN, BOTTLENECK, K, K_PATCH = 12, 10, 6, 9, 7


def official_head(
    *,
    layers: int = 3,
    out_dim: int = K,
    patch_out_dim: int | None = None,
    norm_last_layer: bool = False,
    dim: int = DIM,
    hidden: int = HIDDEN,
    bottleneck: int = BOTTLENECK,
) -> dict[str, Tensor]:
    """``DINOHead(...).state_dict()``; ``iBOTHead``'s when ``patch_out_dim``.

    ``norm_last_layer=False`` gives trained norms g (not all ones), so that a
    loader that ignored ``weight_g`` would fail.
    """
    sizes = [dim] + [hidden] * (layers - 1) + [bottleneck]
    state: dict[str, Tensor] = {}
    for i in range(layers):  # nn.Sequential(Linear, GELU, Linear, GELU, Linear)
        state[f"mlp.{2 * i}.weight"] = torch.randn(sizes[i + 1], sizes[i])
        state[f"mlp.{2 * i}.bias"] = torch.randn(sizes[i + 1])

    def weight_norm_layer(name: str, rows: int) -> dict[str, Tensor]:
        g = torch.ones(rows, 1) if norm_last_layer else torch.rand(rows, 1) + 0.5
        return {
            f"{name}.weight_g": g,
            f"{name}.weight_v": torch.randn(rows, bottleneck),
        }

    state |= weight_norm_layer("last_layer", out_dim)
    if patch_out_dim is not None:  # iBOTHead(shared_head=False)
        state |= weight_norm_layer("last_layer2", patch_out_dim)
    return state


def reference(state: dict[str, Tensor], x: Tensor, layer: str = "last_layer") -> Tensor:
    """DINOHead.forward on raw weights: MLP, L2 normalisation, g * v / |v|."""
    layers = sum(key.endswith(".weight") and key.startswith("mlp.") for key in state)
    for i in range(layers):
        x = F.linear(x, state[f"mlp.{2 * i}.weight"], state[f"mlp.{2 * i}.bias"])
        x = F.gelu(x) if i < layers - 1 else x
    x = F.normalize(x, dim=-1, p=2)
    v, g = state[f"{layer}.weight_v"], state[f"{layer}.weight_g"]
    return F.linear(x, g * v / v.norm(dim=1, keepdim=True))


def prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + key: value for key, value in state.items()}


def backbone() -> dict[str, Tensor]:
    return {"cls_token": torch.randn(1, 1, DIM), "norm.weight": torch.randn(DIM)}


def training_checkpoint(
    student: dict[str, Tensor], teacher: dict[str, Tensor], loss: str
) -> dict[str, object]:
    """main_dino.py / main_ibot.py's checkpoint.pth (student DDP-wrapped)."""
    return {
        "student": prefixed(
            {**prefixed(backbone(), "backbone."), **prefixed(student, "head.")},
            "module.",
        ),
        "teacher": {**prefixed(backbone(), "backbone."), **prefixed(teacher, "head.")},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", out_dim=K),
        loss: {"center": torch.zeros(1, K)},
    }


def load(tmp_path: Path, checkpoint: object, **kwargs: int) -> CheckpointHeads:
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    return load_projection_heads(path, **kwargs)


def assert_reproduces(
    heads: CheckpointHeads,
    which: str,
    official: dict[str, Tensor],
    layer: str = "last_layer",
) -> None:
    head = heads.build(which)  # type: ignore[arg-type]
    assert isinstance(head, GlareProjectionHead)
    tokens = torch.randn(2, 5, DIM)  # (B, N, D)
    with torch.no_grad():
        torch.testing.assert_close(head(tokens), reference(official, tokens, layer))


def test_dino_full_checkpoint_gives_both_heads(tmp_path: Path) -> None:
    student, teacher = official_head(), official_head()
    heads = load(tmp_path, training_checkpoint(student, teacher, "dino_loss"))
    assert heads.sizes == HeadSizes(DIM, HIDDEN, BOTTLENECK, K, 3)
    assert heads.student_patch is None and heads.teacher_patch is None
    assert heads.patch_sizes is None
    assert not heads.shared_patch_head
    assert_reproduces(heads, "student", student)
    assert_reproduces(heads, "teacher", teacher)
    assert heads.build("teacher_patch") is None
    strict = GlareProjectionHead(**dataclasses.asdict(heads.sizes))
    strict.load_state_dict(heads.teacher or {}, strict=True)


def test_ibot_separate_patch_head(tmp_path: Path) -> None:
    student = official_head(patch_out_dim=K_PATCH)
    teacher = official_head(patch_out_dim=K_PATCH)
    heads = load(
        tmp_path,
        training_checkpoint(student, teacher, "ibot_loss"),
        input_dim=DIM,
        output_dim=K,
        patch_output_dim=K_PATCH,
    )
    assert heads.patch_sizes == HeadSizes(DIM, HIDDEN, BOTTLENECK, K_PATCH, 3)
    assert not heads.shared_patch_head
    assert_reproduces(heads, "teacher", teacher)
    assert_reproduces(heads, "teacher_patch", teacher, layer="last_layer2")
    assert_reproduces(heads, "student_patch", student, layer="last_layer2")


def test_ibot_shared_head_in_released_teacher_file(tmp_path: Path) -> None:
    """iBOT's ``{"state_dict": ...}``: one network; shared_head stores it twice."""
    teacher = official_head()
    teacher |= {
        "last_layer2.weight_g": teacher["last_layer.weight_g"],
        "last_layer2.weight_v": teacher["last_layer.weight_v"],
    }
    state = {**backbone(), "masked_embed": torch.randn(1, DIM)}
    checkpoint = {"state_dict": {**state, **prefixed(teacher, "head.")}}
    heads = load(tmp_path, checkpoint, patch_output_dim=K)
    assert heads.student is None and heads.teacher is not None
    assert heads.teacher_patch is None and heads.shared_patch_head
    assert_reproduces(heads, "teacher", teacher)
    with pytest.raises(CheckpointMismatchError, match="patch_output_dim=7"):
        load(tmp_path, checkpoint, patch_output_dim=K_PATCH)


@pytest.mark.parametrize("layout", ["teacher_checkpoint", "model_final"])
def test_dinov2_dino_and_ibot_heads(layout: str, tmp_path: Path) -> None:
    dino, ibot = official_head(), official_head(out_dim=K_PATCH)
    network = {
        **prefixed(backbone(), "backbone."),
        **prefixed(dino, "dino_head."),
        **prefixed(ibot, "ibot_head."),
    }
    checkpoint: dict[str, object] = (
        {"teacher": network}
        if layout == "teacher_checkpoint"
        else {"model": prefixed(network, "teacher.") | prefixed(network, "student.")}
    )
    heads = load(tmp_path, checkpoint)
    assert (heads.student is None) == (layout == "teacher_checkpoint")
    assert heads.patch_sizes is not None and heads.patch_sizes.output_dim == K_PATCH
    assert_reproduces(heads, "teacher", dino)
    assert_reproduces(heads, "teacher_patch", ibot)


def test_requested_sizes_that_differ_are_refused_naming_both(tmp_path: Path) -> None:
    checkpoint = training_checkpoint(official_head(), official_head(), "dino_loss")
    with pytest.raises(CheckpointMismatchError) as error:
        load(tmp_path, checkpoint, output_dim=8192)
    message = str(error.value)
    assert "checkpoint.pth: its [CLS] heads have output_dim 9" in message
    assert "output_dim=8192 was requested" in message and "use output_dim=9" in message
    with pytest.raises(CheckpointMismatchError, match="input_dim 12 but input_dim=384"):
        load(tmp_path, checkpoint, input_dim=384)
    uneven = training_checkpoint(official_head(), official_head(out_dim=8), "x")
    with pytest.raises(CheckpointMismatchError, match="differ in size"):
        load(tmp_path, uneven)


def test_a_read_checkpoint_is_named_by_its_source(tmp_path: Path) -> None:
    checkpoint = training_checkpoint(official_head(), official_head(), "dino_loss")
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    read = read_ssl_checkpoint(path)
    heads = load_projection_heads(read, source=path)
    assert heads.source == str(path)
    assert heads.sizes == load_projection_heads(path).sizes
    messages = []
    for given, source in ((path, None), (read, path), (read, None)):
        with pytest.raises(CheckpointMismatchError) as error:
            load_projection_heads(given, source=source, output_dim=8192)
        messages.append(str(error.value))
    assert messages[1] == messages[0] and str(path) in messages[0]
    assert messages[2].startswith("<checkpoint>: its [CLS] heads")


def test_backbone_only_file_has_no_heads(tmp_path: Path) -> None:
    heads = load(tmp_path, backbone())  # dino_deitsmall16_pretrain.pth
    assert heads == CheckpointHeads(source=str(tmp_path / "checkpoint.pth"))
    assert heads.build("teacher") is None


def test_unsupported_head_layout_is_named(tmp_path: Path) -> None:
    head = official_head()  # DINOHead(use_bn=True): BatchNorm1d after Linear 0
    head |= {"mlp.1.weight": torch.ones(HIDDEN), "mlp.1.running_mean": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError, match="use_bn_in_head") as error:
        load(tmp_path, training_checkpoint(head, head, "dino_loss"))
    assert "unexpected mlp.1.weight" in str(error.value)


def test_non_finite_head_is_refused(tmp_path: Path) -> None:
    teacher = official_head()
    teacher["mlp.2.weight"][1, 1] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"teacher head\) holds NaN"):
        load(tmp_path, training_checkpoint(official_head(), teacher, "dino_loss"))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_head_sizes_read_every_depth(layers: int) -> None:
    sizes = head_sizes(official_head(layers=layers))
    hidden = BOTTLENECK if layers == 1 else HIDDEN  # unused with one layer
    assert sizes == HeadSizes(DIM, hidden, BOTTLENECK, K, layers)
    bad = official_head(layers=layers) | {"last_layer.weight_g": torch.ones(K, 2)}
    with pytest.raises(CheckpointMismatchError, match=r"weight_g: \(9, 2\)"):
        head_sizes(bad, "bad head")
