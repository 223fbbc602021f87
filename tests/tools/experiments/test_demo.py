"""A miniature of `make demo`: every stage end to end on real data, tiny schedule."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lightly_glare.pretraining.loop import PretrainHistory
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


def demo_note() -> str:
    return str(load_tool("experiments/demo").SPREAD_NOTE)


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
    table, note = (tmp_path / "results.txt").read_text().split("\n\n")
    assert note.strip() == demo_note()  # the seed spread, next to the numbers
    table = table.splitlines()
    assert table[0].split() == ["model", "background", "road", "mIoU"]
    assert len(table) == 3
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


def test_demo_prints_the_objective_against_log_k(
    capsys: pytest.CaptureFixture[str],
) -> None:
    demo = load_tool("experiments/demo")
    log_k = math.log(2048)
    teacher = {
        f"teacher/global/{key}": value
        for key, value in (("entropy", 0.4), ("batch_entropy", 0.8), ("kl", 0.5))
    }
    history = PretrainHistory(
        losses=[0.9 * log_k, 0.8 * log_k],
        terms=[{"global": 0.9 * log_k}, {"global": 0.8 * log_k}],
        teacher=[teacher, {**teacher, "teacher/global/entropy": 0.3}],
    )
    demo.print_objective(history, 2048)
    out = capsys.readouterr().out
    assert "log K = 7.62 (K = 2048), step 1 -> 2: global 0.90 -> 0.80" in out
    assert "global: entropy 0.40 -> 0.30, batch entropy 0.80 -> 0.80" in out
    assert "up to 7.5 points" in demo.SPREAD_NOTE
