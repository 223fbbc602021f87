"""tools/analysis_tools (mmseg's get_flops, benchmark, browse_dataset, print_config)
on this project's configs, as a user runs them, with tiny models and real photos.

What they compute (lightly_glare.openmmlab.analysis) is tested in
tests/openmmlab/test_analysis.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from tests.conftest import ROOT, load_tool
from tests.openmmlab.test_analysis import (
    DEPTH,
    HEAD_DIM,
    HEADS,
    PATCH,
    ROADS_CONFIG,
    TINY_MODEL,
    attention_macs,
    loader_options,
)

ROAD_PALETTE = {"background": (0, 0, 0), "road": (255, 255, 0)}


def cfg_arguments(options: Mapping[str, Any]) -> list[str]:
    """``options`` as the ``KEY=VALUE`` arguments of ``--cfg-options``."""
    return [f"{key}={value}" for key, value in options.items()]


TINY_MODEL_ARGS = cfg_arguments(TINY_MODEL)


def tool(name: str) -> ModuleType:
    return load_tool(f"analysis_tools/{name}")


# ------------------------------------------------------------------ get_flops


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
            *TINY_MODEL_ARGS,
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
            *TINY_MODEL_ARGS,
            *cfg_arguments(loader_options(roads_folder)),
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


# ------------------------------------------------------------------- arguments


def test_cfg_options_parse_to_the_library_options() -> None:
    """The tiny model given as --cfg-options is the library tests' TINY_MODEL."""
    parser = tool("config_args").argparse.ArgumentParser()
    tool("config_args").add_config_arguments(parser, "config")
    args = parser.parse_args(["config.py", "--cfg-options", *TINY_MODEL_ARGS])
    assert args.cfg_options == TINY_MODEL


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
