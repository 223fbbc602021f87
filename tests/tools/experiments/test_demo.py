"""A miniature of `make demo`: every stage end to end on real data, tiny schedule."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import load_tool

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("vit", ["frozen", "trained"])
def test_demo_finetuning_trains_what_it_says_and_validates_once(
    tmp_path: Path, vit: str
) -> None:
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import lightly_glare.openmmlab  # noqa: F401  (registers GlareViT, mmseg models)

    demo = load_tool("experiments/demo")
    args = demo.parse_args(["--finetune-iters", "7", "--finetune-vit", vit])
    cfg = demo.finetune_config(args, tmp_path, tmp_path / "w.pth", "ssl", tmp_path)
    assert cfg.train_cfg.max_iters == 7 and cfg.train_cfg.val_begin > 7
    assert cfg.param_scheduler[1].end == 7
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    vit_weights = {n for n in trained if n.startswith("backbone.adapted.vit.")}
    assert any(n.startswith("backbone.adapted.adapters.") for n in trained)
    assert any(n.startswith("decode_head.") for n in trained)
    assert any(n.startswith("neck.") for n in trained)
    assert bool(vit_weights) == (vit == "trained")


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    args = [
        "--work-dir",
        str(tmp_path),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--finetune-iters",
        "2",
        "--finetune-batch",
        "2",
        "--workers",
        "0",
        "--img-size",
        "56",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/experiments/demo.py"), *args],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The pre-training's progress bar, on standard error; its log lines on stdout.
    assert "GLARE: 100%" in result.stderr and "img/s" in result.stderr
    assert "step 2/2 loss=" in result.stdout
    table = (tmp_path / "results.txt").read_text().splitlines()
    assert table[0].split() == ["model", "background", "road", "mIoU"]
    for row in table[1:]:
        values = [float(v) for v in re.findall(r"\d+\.\d+", row)]
        assert len(values) == 3 and all(0 <= v <= 100 for v in values)
        assert values[2] == pytest.approx((values[0] + values[1]) / 2, abs=0.011)
    assert [row.split("  ")[0] for row in table[1:]] == [
        "DINOv2 (baseline)",
        "DINOv2 + GLARE",
    ]
    for name in ("predictions.png", "attention_per_head.png", "pca_patch_features.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 100 and image.height > 100
    assert (tmp_path / "glare_backbone.pth").is_file()
