"""tools/experiments/segmentation_ablation.py."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightly_glare.evaluation import load_segmentation_split
from tests.conftest import ROOT, load_tool
from tests.evaluation.test_segmentation import _write_split


@pytest.mark.slow
def test_ablation_tool_runs_resumes_and_summarizes(tmp_path: Path) -> None:
    """Two variants x one seed on the real MRI slices, a tiny schedule, adapters
    of a non-default size (the probe's backbone takes the export's size)."""
    args = [
        str(ROOT / "tools/experiments/segmentation_ablation.py"),
        "--work-dir",
        str(tmp_path),
        "--domains",
        "mri",
        "--variants",
        "none",
        "glare",
        "--seeds",
        "0",
        "--img-size",
        "56",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--adapter-bottleneck",
        "16",
    ]
    first = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    # One progress bar (standard error) per pre-training: the "glare" variant.
    assert first.stderr.count("GLARE: 100%") >= 1 and "img/s" in first.stderr
    assert "step 2/2 loss=" in first.stdout
    runs = {
        path.parent.name: json.loads(path.read_text())
        for path in (tmp_path / "runs" / "mri").glob("*/seed0.json")
    }
    assert set(runs) == {"none", "glare"}
    assert runs["glare"]["args"]["adapter_bottleneck"] == 16
    assert set(runs["glare"]["iou"]) == {"background", "grey_matter", "white_matter"}
    assert 0.0 <= runs["none"]["miou"] <= 1.0
    assert (
        "pretrain_seconds" in runs["glare"] and "pretrain_seconds" not in runs["none"]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mri/none"]["miou"] == [pytest.approx(100 * runs["none"]["miou"])]
    assert (tmp_path / "miou.png").stat().st_size > 1000
    again = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert again.returncode == 0
    assert again.stdout.count("already done") == 2  # nothing is recomputed


def test_ablation_holdout_split_is_the_last_train_tiles(tmp_path: Path) -> None:
    tool = load_tool("experiments/segmentation_ablation")
    _write_split(tmp_path, "train", 8, size=28)
    _write_split(tmp_path, "val", 2, size=28)
    fit, held_out = tool.evaluation_splits(tmp_path, "holdout", 28, 2)
    names = sorted(f"{index}.png" for index in range(8))
    assert fit.names == names[:6] and held_out.names == names[6:]
    whole = load_segmentation_split(tmp_path, "train", 28, 2)
    assert torch.equal(held_out.images, whole.images[6:])
    for label, expected in zip(held_out.labels, whole.labels[6:], strict=True):
        np.testing.assert_array_equal(label, expected)
    fit, evaluation = tool.evaluation_splits(tmp_path, "val", 28, 2)
    assert fit.names == names and evaluation.names == ["0.png", "1.png"]


def test_ablation_weight_options_apply_to_the_terms_a_variant_keeps() -> None:
    tool = load_tool("experiments/segmentation_ablation")
    args = tool.parse_args(["--weight", "local_matching=0.5", "--weight", "global=2"])
    assert args.term_weights == {"local_matching": 0.5, "global": 2.0}
    assert tool.variant_weights("glare", args.term_weights) == args.term_weights
    assert tool.variant_weights("dino", args.term_weights) == {
        "global": 2.0,
        "regional": 0.0,
        "local_distortion": 0.0,
        "local_matching": 0.0,
    }
    for bad in ("local=1", "global=x"):
        with pytest.raises(SystemExit):
            tool.parse_args(["--weight", bad])


def test_ablation_refuses_to_reuse_a_run_made_with_other_settings(
    tmp_path: Path,
) -> None:
    tool = load_tool("experiments/segmentation_ablation")
    made = tool.parse_args(["--work-dir", str(tmp_path), "--steps", "30"])
    run = tmp_path / "seed0.json"
    run.write_text(json.dumps({"args": tool.recorded_args(made)}))
    placed_elsewhere = ["--seeds", "4", "--device", "cpu", "--variants", "none"]
    placed_elsewhere += ["--steps", "30"]
    tool.check_same_settings(run, tool.parse_args([*placed_elsewhere, "--force"]))
    with pytest.raises(ValueError, match="steps: 30 -> 150"):
        tool.check_same_settings(run, tool.parse_args(["--steps", "150"]))
    with pytest.raises(ValueError, match="eval_split"):
        tool.check_same_settings(
            run,
            tool.parse_args(["--steps", "30", "--eval-split", "holdout"]),
        )
    with pytest.raises(ValueError, match="adapter_bottleneck: None -> 32"):
        tool.check_same_settings(
            run, tool.parse_args(["--steps", "30", "--adapter-bottleneck", "32"])
        )


def test_ablation_takes_a_run_file_without_adapter_bottleneck_as_64(
    tmp_path: Path,
) -> None:
    """Files written before --adapter-bottleneck existed were made with 64."""
    tool = load_tool("experiments/segmentation_ablation")
    older = tool.recorded_args(tool.parse_args(["--steps", "30"]))
    for option in ("adapter_bottleneck", "head_init", "freeze_heads"):
        del older[option]  # options added since
    run = tmp_path / "seed0.json"
    run.write_text(json.dumps({"args": older}))
    # ... and with random heads (before --head-init and --freeze-heads).
    same = ["--adapter-bottleneck", "64", "--head-init", "random", "--no-freeze-heads"]
    tool.check_same_settings(run, tool.parse_args(["--steps", "30", *same]))
    with pytest.raises(ValueError, match="head_init: 'random' -> 'auto'"):
        tool.check_same_settings(
            run, tool.parse_args(["--steps", "30", "--adapter-bottleneck", "64"])
        )
    # Today's default (embed_dim // 12, None on the command line) is another size.
    with pytest.raises(ValueError, match="adapter_bottleneck: 64 -> None"):
        tool.check_same_settings(run, tool.parse_args(["--steps", "30"]))


def test_glare_random_heads_is_glare_as_it_ran_before_the_head_initialisation() -> None:
    tool = load_tool("experiments/segmentation_ablation")
    args = tool.parse_args(["--steps", "30", "--freeze-heads"])
    job = tool.pretraining_job(args, "vit_small_patch14_dinov2", "x", "f", 28, 0, {})
    old = tool.variant_job("glare_random_heads", job)
    assert (old.head_init, old.freeze_heads, old.head_warmup_steps) == (
        "random",
        False,
        10,  # a third of the steps
    )
    assert tool.variant_job("glare", job) == job  # the run's own options
    assert tool.variant_weights("glare_random_heads", {}) == {}  # all four terms


def test_glare_frozen_heads_fits_the_heads_then_trains_only_the_adapters() -> None:
    tool = load_tool("experiments/segmentation_ablation")
    args = tool.parse_args(["--steps", "30", "--head-warmup-steps", "10"])
    job = tool.pretraining_job(args, "vit_small_patch14_dinov2", "x", "f", 28, 0, {})
    frozen = tool.variant_job("glare_frozen_heads", job)
    assert (frozen.head_init, frozen.freeze_heads, frozen.head_warmup_steps) == (
        "data",
        True,
        0,  # a warm-up would train nothing
    )
    assert tool.variant_weights("glare_frozen_heads", {}) == {}  # all four terms


def test_step_curve_summarises_every_evaluated_step_over_seeds(tmp_path: Path) -> None:
    tool = load_tool("experiments/segmentation_ablation")

    def record(variant: str, seed: int, points: dict[int, float]) -> dict:
        evaluations = [{"step": s, "miou": m} for s, m in points.items()]
        return {"domain": "aerial", "variant": variant, "seed": seed,
                "eval_split": "holdout", "evaluations": evaluations}  # fmt: skip

    records = [
        record("none", 0, {0: 0.60}),
        record("none", 1, {0: 0.62}),
        record("glare", 1, {75: 0.64, 300: 0.58}),
        record("glare", 0, {75: 0.62, 300: 0.60}),
        record("dino", 0, {75: 0.61, 300: 0.61}),
    ]
    curve = tool.step_curve(records)
    points = {(p["variant"], p["step"]): p for p in curve}
    assert [(p["variant"], p["step"]) for p in curve] == [
        ("none", 0),
        ("dino", 75),
        ("dino", 300),
        ("glare", 75),
        ("glare", 300),
    ]  # the variants' order, then steps
    glare = points[("glare", 75)]
    assert glare["split"] == "holdout"
    assert glare["seeds"] == [0, 1] and glare["miou"] == pytest.approx([62.0, 64.0])
    assert glare["mean"] == pytest.approx(63.0)
    assert glare["delta"] == pytest.approx(63.0 - 61.0)  # against none's mean
    assert points[("glare", 300)]["delta"] == pytest.approx(-2.0)
    lines = tool.step_curve_lines(curve)
    assert lines[2].startswith("| aerial | none | 0 | 2 | 61.00 ± ")
    assert "| glare | 300 | 2 | 59.00 ± " in lines[-1]
    assert lines[-1].endswith("| -2.00 | 0: 60.00, 1: 58.00 |")
    tool.plot_step_curve(curve, tmp_path / "steps.png")
    assert (tmp_path / "steps.png").stat().st_size > 1000
    # Without `none` runs there is no difference to report.
    assert tool.step_curve(records[2:])[0]["delta"] is None
