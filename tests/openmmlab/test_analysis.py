"""lightly_glare.openmmlab.analysis (what tools/analysis_tools run): FLOP counts,
segmentor building, strict weight loading, throughput; tiny models, real photos.

The tools themselves are tested in tests/tools/analysis_tools/test_mmseg_tools.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor, nn

from lightly_glare.openmmlab.analysis import (
    build_segmentor,
    count_flops,
    load_config,
    load_weights,
    measure_throughput,
)
from tests.conftest import ROOT

#: The CPU-sized aerial roads config (DINOv2 ViT-S/14 + UperNet, 126 px).
ROADS_CONFIG = str(
    sorted(ROOT.glob("mmseg_configs/**/*aerial-roads*126x126.py"))[0].relative_to(ROOT)
)

#: A tiny GlareViT (4 blocks, 2 heads of 32 channels, patch 14) and heads, as
#: ``cfg_options`` (the tools' ``--cfg-options KEY=VALUE``).
DEPTH, HEADS, HEAD_DIM, PATCH = 4, 2, 32, 14
EMBED = HEADS * HEAD_DIM
TINY_MODEL: dict[str, Any] = {
    "model.backbone.arch._delete_": True,
    "model.backbone.arch.patch_size": PATCH,
    "model.backbone.arch.embed_dim": EMBED,
    "model.backbone.arch.depth": DEPTH,
    "model.backbone.arch.num_heads": HEADS,
    "model.backbone.out_indices": [0, 1, 2, 3],
    "model.neck.in_channels": [EMBED] * 4,
    "model.neck.out_channels": EMBED,
    "model.decode_head.in_channels": [EMBED] * 4,
    "model.decode_head.channels": 32,
    "model.auxiliary_head.in_channels": EMBED,
    "model.auxiliary_head.channels": 32,
}


def attention_macs(depth: int, heads: int, tokens: int, head_dim: int) -> int:
    """Q K^T and softmax(.) V: heads * tokens^2 * head_dim multiply-adds each."""
    return depth * 2 * heads * tokens * tokens * head_dim


def loader_options(data: Path) -> dict[str, Any]:
    """``cfg_options`` of a test loader over the prepared folder ``data``."""
    return {
        "test_dataloader.dataset.data_root": str(data),
        "test_dataloader.num_workers": 0,
        "test_dataloader.persistent_workers": False,
    }


# -------------------------------------------------------- the attention handle


class FusedAttention(nn.Module):
    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)


class ExplicitAttention(nn.Module):
    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        return weights @ v


class OnInput(nn.Module):
    """Attention of fixed projections of one input (count_flops feeds one)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:  # x: (B, H, L, E)
        key = torch.cat([x, x[:, :, :3]], dim=2)  # Lk = Lq + 3
        value = torch.cat([key, key[..., :5]], dim=3)  # Ev = E + 5
        return self.attention(x, key, value)


def test_attention_counts_as_its_matmuls() -> None:
    """Fused SDPA counts what mmengine counts for the two explicit matmuls."""
    x = torch.rand(2, 3, 7, 8)
    fused = count_flops(OnInput(FusedAttention()), x)
    explicit = count_flops(OnInput(ExplicitAttention()), x)
    # (B * H) * Lq * Lk * (E + Ev)
    assert fused.macs == fused.attention_macs == 2 * 3 * 7 * 10 * (8 + 13)
    assert explicit.macs == fused.macs and explicit.attention_macs == 0
    assert fused.flops == 2 * fused.macs
    assert count_flops(OnInput(FusedAttention()), x, count_attention=False).macs == 0


def test_segmentor_attention_flops_match_the_formula() -> None:
    """The tiny GlareViT segmentor: the count with SDPA exceeds mmengine's by
    exactly the attention of every block ((126 / 14)^2 patches + class token)."""
    cfg = load_config(ROADS_CONFIG, dict(TINY_MODEL))
    model = build_segmentor(cfg, ROADS_CONFIG)
    model.auxiliary_head = None
    inputs = torch.rand(1, 3, 126, 126)
    with_attention = count_flops(model, inputs)
    without = count_flops(model, inputs, count_attention=False)
    expected = attention_macs(DEPTH, HEADS, (126 // PATCH) ** 2 + 1, HEAD_DIM)
    assert with_attention.attention_macs == expected
    assert with_attention.macs - without.macs == expected
    assert without.attention_macs == 0
    assert without.uncounted_ops["aten::scaled_dot_product_attention"] == DEPTH
    assert "aten::scaled_dot_product_attention" not in with_attention.uncounted_ops


def test_build_segmentor_refuses_models_other_than_segmentors() -> None:
    """E.g. a bare backbone (or GLARE's pre-training model)."""
    backbone = {
        "type": "GlareViT",
        "arch": {"embed_dim": 8, "depth": 1, "num_heads": 2},
    }
    cfg = Config({"model": {**backbone, "img_size": 32, "out_indices": [0]}})
    with pytest.raises(TypeError, match="backbone.py builds a GlareViT, not an mmseg"):
        build_segmentor(cfg, "backbone.py")


# ------------------------------------------------- weights and throughput


def test_load_weights_is_strict_and_throughput_needs_timed_iterations(
    roads_folder: Path, tmp_path: Path
) -> None:
    cfg = load_config(ROADS_CONFIG, TINY_MODEL | loader_options(roads_folder))
    trained = build_segmentor(cfg, ROADS_CONFIG)
    path = tmp_path / "iter_1.pth"
    torch.save({"state_dict": trained.state_dict()}, path)
    model = build_segmentor(cfg, ROADS_CONFIG)
    load_weights(model, str(path))
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name

    state = trained.state_dict()
    del state["decode_head.conv_seg.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(RuntimeError, match="decode_head.conv_seg.weight"):
        load_weights(model, str(path))
    with pytest.raises(FileNotFoundError, match="tools/train.py"):
        load_weights(model, str(tmp_path / "missing.pth"))

    from mmengine.runner import Runner

    loader = Runner.build_dataloader(cfg.test_dataloader)
    with pytest.raises(ValueError, match="--total-iters"):
        measure_throughput(model, loader, num_warmup=2, total_iters=2, log_interval=1)
