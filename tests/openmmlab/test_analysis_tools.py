"""tools/analysis_tools (mmseg's get_flops, benchmark, browse_dataset, print_config)
on this project's configs, with tiny models and real photos."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image
from torch import Tensor, nn

from lightly_glare.openmmlab.analysis import (
    build_segmentor,
    count_flops,
    load_config,
    load_weights,
    measure_throughput,
)
from tests.conftest import load_tool, real_photo

ROOT = Path(__file__).resolve().parents[2]
#: The CPU-sized aerial roads config (DINOv2 ViT-S/14 + UperNet, 126 px).
ROADS_CONFIG = str(
    sorted(ROOT.glob("mmseg_configs/**/*aerial-roads*126x126.py"))[0].relative_to(ROOT)
)
ROAD_PALETTE = {"background": (0, 0, 0), "road": (255, 255, 0)}

#: A tiny GlareViT (4 blocks, 2 heads of 32 channels, patch 14) and heads.
DEPTH, HEADS, HEAD_DIM, PATCH = 4, 2, 32, 14
EMBED = HEADS * HEAD_DIM
TINY_MODEL = [
    "model.backbone.arch._delete_=True",
    f"model.backbone.arch.patch_size={PATCH}",
    f"model.backbone.arch.embed_dim={EMBED}",
    f"model.backbone.arch.depth={DEPTH}",
    f"model.backbone.arch.num_heads={HEADS}",
    "model.backbone.out_indices=[0,1,2,3]",
    f"model.neck.in_channels=[{EMBED},{EMBED},{EMBED},{EMBED}]",
    f"model.neck.out_channels={EMBED}",
    f"model.decode_head.in_channels=[{EMBED},{EMBED},{EMBED},{EMBED}]",
    "model.decode_head.channels=32",
    f"model.auxiliary_head.in_channels={EMBED}",
    "model.auxiliary_head.channels=32",
]


def tool(name: str) -> ModuleType:
    return load_tool(f"analysis_tools/{name}")


def cfg_options(pairs: list[str]) -> dict[str, object]:
    """``--cfg-options PAIRS`` as the tools parse them."""
    parser = argparse.ArgumentParser()
    tool("config_args").add_config_arguments(parser, "config")
    return parser.parse_args(["config.py", "--cfg-options", *pairs]).cfg_options


def attention_macs(depth: int, heads: int, tokens: int, head_dim: int) -> int:
    """Q K^T and softmax(.) V: heads * tokens^2 * head_dim multiply-adds each."""
    return depth * 2 * heads * tokens * tokens * head_dim


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
    cfg = load_config(ROADS_CONFIG, cfg_options(TINY_MODEL))
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


def test_get_flops_script_runs_on_a_plain_install() -> None:
    """As a script (mmseg's own fails: No module named 'mmcv._ext'), with
    --cfg-options; the data preprocessor pads 100 px to a multiple of 28."""
    result = subprocess.run(
        [
            sys.executable,
            "tools/analysis_tools/get_flops.py",
            ROADS_CONFIG,
            "--shape",
            "100",
            "--cfg-options",
            *TINY_MODEL,
            "model.data_preprocessor.test_cfg.size_divisor=28",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "padded the input from (100, 100) to (112, 112)" in out
    assert "Input shape: (1, 3, 112, 112)" in out
    (attention,) = re.findall(r"scaled-dot-product attention: ([\d.]+) M", out)
    expected = attention_macs(DEPTH, HEADS, (112 // PATCH) ** 2 + 1, HEAD_DIM)
    assert float(attention) == pytest.approx(expected / 1e6, abs=0.005)
    (macs,) = re.findall(r"MACs: ([\d.]+) M multiply-adds", out)
    (flops,) = re.findall(r"FLOPs: ([\d.]+) M", out)
    assert float(flops) == pytest.approx(2 * float(macs), abs=0.011)
    assert re.search(r"Not counted \(no handle\): .*aten::add x\d+", out)


def test_get_flops_refuses_models_other_than_segmentors() -> None:
    """E.g. a bare backbone (or GLARE's pre-training model)."""
    backbone = {
        "type": "GlareViT",
        "arch": {"embed_dim": 8, "depth": 1, "num_heads": 2},
    }
    cfg = Config({"model": {**backbone, "img_size": 32, "out_indices": [0]}})
    with pytest.raises(TypeError, match="backbone.py builds a GlareViT, not an mmseg"):
        build_segmentor(cfg, "backbone.py")


# ---------------------------------------------------------------- print_config


def test_print_config_resolves_inherited_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "resolved.py"
    tool("print_config").main(
        [
            ROADS_CONFIG,
            "--graph",
            "--dump",
            str(dump),
            "--cfg-options",
            "train_cfg.max_iters=7",
        ]
    )
    out = capsys.readouterr().out
    config_text, graph = out.split("Model graph:")
    assert "_base_" not in config_text
    assert "type='GlareViT'" in config_text  # ./_base_/models
    assert "arch='vit_small_patch14_dinov2'" in config_text  # the CPU model base
    assert "type='MultiLevelNeck'" in config_text  # mmseg::_base_/models
    assert "type='AerialRoadsDataset'" in config_text  # ./_base_/datasets
    assert "max_iters=7" in config_text
    assert "(adapted): UniAdapterViT" in graph
    resolved = Config.fromfile(dump)
    assert resolved.model.backbone.arch == "vit_small_patch14_dinov2"
    assert resolved.train_cfg.max_iters == 7
    assert resolved.test_dataloader.dataset.type == "AerialRoadsDataset"


# ---------------------------------------------- browse_dataset and benchmark


@pytest.fixture(scope="module")
def roads_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 px crops of a real photo in the prepared aerial layout. Train tiles
    are labelled all road, all background, and by brightness; val by brightness."""
    root = tmp_path_factory.mktemp("roads")
    photo = real_photo()
    labels = {
        "train": ("road", "background", "bright"),
        "val": ("bright", "bright"),
    }
    for split, kinds in labels.items():
        (root / "img_dir" / split).mkdir(parents=True)
        (root / "ann_dir" / split).mkdir(parents=True)
        for i, kind in enumerate(kinds):
            crop = photo.crop((60 * i, 90 * i, 60 * i + 128, 90 * i + 128))
            grey = np.asarray(crop.convert("L"))
            label = {
                "road": np.ones_like(grey),
                "background": np.zeros_like(grey),
                "bright": (grey > 128).astype(np.uint8),
            }[kind]
            name = f"{kind}_{i}.png"
            crop.save(root / "img_dir" / split / name)
            Image.fromarray(label).save(root / "ann_dir" / split / name)
    return root


def test_browse_dataset_draws_training_samples_with_labels(
    roads_folder: Path, tmp_path: Path
) -> None:
    """One drawing per training image: the 126 px augmented crop with its
    label map blended in (alpha 0.8: every pixel within 0.2 * 255 of its
    class's palette colour, but where the class name is written)."""
    out = tmp_path / "vis"
    tool("browse_dataset").main(
        [
            ROADS_CONFIG,
            "--not-show",
            "--output-dir",
            str(out),
            "--cfg-options",
            f"train_dataloader.dataset.data_root={roads_folder}",
        ]
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["background_1.png", "bright_2.png", "road_0.png"]
    for kind in ("road", "background"):
        (drawing,) = out.glob(f"{kind}_*.png")
        pixels = np.asarray(Image.open(drawing).convert("RGB")).astype(int)
        assert pixels.shape == (126, 126, 3)
        distance = np.abs(pixels - ROAD_PALETTE[kind]).max(axis=-1)
        assert (distance <= 52).mean() > 0.8


def test_browse_dataset_needs_a_display_or_an_output_dir() -> None:
    browse = tool("browse_dataset")
    with pytest.raises(SystemExit):
        browse.parse_args([ROADS_CONFIG, "--not-show"])


def loader_options(data: Path) -> list[str]:
    return [
        f"test_dataloader.dataset.data_root={data}",
        "test_dataloader.num_workers=0",
        "test_dataloader.persistent_workers=False",
    ]


def test_benchmark_prints_images_per_second(
    roads_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 batches of the 2 val images (cycled), the first untimed, twice."""
    work_dir = tmp_path / "work"
    tool("benchmark").main(
        [
            ROADS_CONFIG,
            "--work-dir",
            str(work_dir),
            "--total-iters",
            "3",
            "--num-warmup",
            "1",
            "--log-interval",
            "1",
            "--repeat-times",
            "2",
            "--cfg-options",
            *TINY_MODEL,
            *loader_options(roads_folder),
        ]
    )
    out = capsys.readouterr().out
    assert re.findall(r"Done batch \[(\d+)", out) == ["2", "3", "2", "3"]
    speeds = [float(s) for s in re.findall(r"Overall fps: ([\d.]+) img / s", out)]
    assert len(speeds) == 2 and all(speed > 0 for speed in speeds)
    (result_file,) = work_dir.glob("fps_*.json")
    results = json.loads(result_file.read_text())
    assert results["config"] == ROADS_CONFIG and results["unit"] == "img / s"
    assert [results["overall_fps_1"], results["overall_fps_2"]] == speeds
    assert results["average_fps"] == pytest.approx(np.mean(speeds), abs=0.011)


def test_benchmark_loads_checkpoints_strictly(
    roads_folder: Path, tmp_path: Path
) -> None:
    options = cfg_options(TINY_MODEL + loader_options(roads_folder))
    cfg = load_config(ROADS_CONFIG, options)
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


# ------------------------------------------------------------------- arguments


def test_arguments_match_mmseg() -> None:
    flops = tool("get_flops").parse_args(
        ["c.py", "--shape", "512", "--cfg-options", "a=1"]
    )
    assert (flops.config, flops.shape, flops.cfg_options) == ("c.py", [512], {"a": 1})
    assert tool("get_flops").parse_args(["c.py"]).shape == [2048, 1024]
    bench = tool("benchmark").parse_args(
        [
            "c.py",
            "ckpt.pth",
            "--log-interval",
            "10",
            "--work-dir",
            "w",
            "--repeat-times",
            "3",
        ]
    )
    assert (bench.checkpoint, bench.log_interval, bench.work_dir) == (
        "ckpt.pth",
        10,
        "w",
    )
    assert (bench.repeat_times, bench.num_warmup, bench.total_iters) == (3, 5, 200)
    browse = tool("browse_dataset").parse_args(
        ["c.py", "--output-dir", "o", "--not-show", "--show-interval", "0.5"]
    )
    assert (browse.output_dir, browse.not_show, browse.show_interval) == (
        "o",
        True,
        0.5,
    )
    printed = tool("print_config").parse_args(["c.py", "--graph"])
    assert printed.graph and printed.dump is None
    with pytest.raises(SystemExit, match="--shape takes"):
        tool("get_flops").image_shape([1, 2, 3])
