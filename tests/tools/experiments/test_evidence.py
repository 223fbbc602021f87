"""tools/experiments/evidence.py and the options it adds to the ablation tool."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightly_glare.evaluation import dense_features, linear_segmentation_probe
from lightly_glare.models import UniAdapterViT
from tests.conftest import ROOT, load_tool, make_vit
from tests.evaluation.test_segmentation import _write_split


def _tools() -> tuple[Any, Any]:
    return (
        load_tool("experiments/segmentation_ablation"),
        load_tool("experiments/evidence"),
    )


def _write_runs(work_dir: Path, miou: dict[tuple[str, str, int], float]) -> None:
    for (domain, variant, seed), value in miou.items():
        run = work_dir / "runs" / domain / variant / f"seed{seed}.json"
        run.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "domain": domain,
            "variant": variant,
            "seed": seed,
            "miou": value,
            "iou": {"background": value, "road": value},
            "unlabeled_images": 38 if "fraction" in str(work_dir) else 378,
            "evaluations": [{"step": 6, "miou": value}],
        }
        run.write_text(json.dumps(record))


def test_every_table_runs_with_the_paired_settings(tmp_path: Path) -> None:
    ablation, evidence = _tools()
    commands = {}
    for table in ("pilot", "paired", "data_amount"):
        args, forwarded = evidence.parse_args(
            [table, "--work-dir", str(tmp_path), "--workers", "1"]
        )
        commands[table] = evidence.ablation_argv(args, forwarded, table)
    pilot = ablation.parse_args(commands["pilot"][0])
    assert pilot.eval_split == "holdout" and pilot.steps == 150
    assert pilot.eval_at == [25, 50, 75, 100, 125, 150]
    assert pilot.head_warmup_steps == 50 and pilot.workers == 1  # forwarded wins
    paired = ablation.parse_args(commands["paired"][0])
    assert (
        paired.eval_split == "val"
        and paired.steps == 75
        and paired.seeds == [*range(8)]
    )
    assert paired.variants == ["none", "dino", "glare", "glare_random_heads"]
    assert paired.data_dir == tmp_path / "data" == pilot.data_dir
    fractions = [ablation.parse_args(argv) for argv in commands["data_amount"]]
    assert [f.unlabeled_fraction for f in fractions] == [0.1, 0.3, 1.0]
    assert [f.seeds for f in fractions] == [[0, 1, 2, 3]] * 3
    # 100 %: the paired table's runs, reused (same settings, same work dir).
    assert fractions[2].work_dir == paired.work_dir
    made = tmp_path / "paired_run.json"
    made.write_text(json.dumps({"args": ablation.recorded_args(paired)}))
    ablation.check_same_settings(made, fractions[2])
    with pytest.raises(ValueError, match="unlabeled_fraction"):
        ablation.check_same_settings(made, fractions[0])
    assert len({f.work_dir for f in fractions}) == 3
    args, _ = evidence.parse_args(["paired", "--steps", "90"])
    assert evidence.schedule(args, 90)[:4] == [
        "--steps",
        "90",
        "--head-warmup-steps",
        "30",
    ]


def test_unlabeled_subset_is_seeded_nested_and_recorded() -> None:
    ablation, _ = _tools()
    assert ablation.unlabeled_subset(378, 1.0, seed=0) is None
    tenth = ablation.unlabeled_subset(378, 0.1, seed=0)
    third = ablation.unlabeled_subset(378, 0.3, seed=0)
    assert len(tenth) == 38 and len(third) == 113 and set(tenth) < set(third)
    assert tenth == ablation.unlabeled_subset(378, 0.1, seed=0) == sorted(tenth)
    assert tenth != ablation.unlabeled_subset(378, 0.1, seed=1)
    assert ablation.unlabeled_subset(5, 0.01, seed=0) is not None
    for bad in (["--unlabeled-fraction", "0"], ["--unlabeled-fraction", "1.5"]):
        with pytest.raises(SystemExit):
            ablation.parse_args(bad)
    with pytest.raises(SystemExit):
        ablation.parse_args(["--steps", "10", "--eval-at", "11"])
    assert ablation.parse_args(["--steps", "10", "--eval-at", "5", "2"]).eval_at == [
        2,
        5,
        10,
    ]


def test_probe_split_and_init_depend_only_on_the_seed(tmp_path: Path) -> None:
    """The probe of a seed is the same for every variant, whatever ran before."""
    ablation, _ = _tools()
    _write_split(tmp_path, "train", 8, size=28)
    first_fit, first_held = ablation.evaluation_splits(tmp_path, "holdout", 28, 2)
    second_fit, second_held = ablation.evaluation_splits(tmp_path, "holdout", 28, 2)
    assert first_fit.names == second_fit.names and first_held.names == second_held.names
    backbone = UniAdapterViT(make_vit("dinov2_like")).eval()
    train = dense_features(backbone, first_fit.images, blocks=(-1,))
    held = dense_features(backbone, first_held.images, blocks=(-1,))
    scores = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)  # another variant drew other numbers
        torch.rand(17)
        scores.append(
            linear_segmentation_probe(
                train, first_fit.labels, held, first_held.labels, 2, seed=5
            )
        )
    np.testing.assert_array_equal(scores[0].confusion, scores[1].confusion)


def test_ablation_summary_reports_paired_differences(tmp_path: Path) -> None:
    ablation, _ = _tools()
    gains = {"none": 0.0, "dino": -0.002, "glare": 0.003}
    _write_runs(
        tmp_path,
        {
            ("aerial", variant, seed): 0.6 + gain + 0.001 * seed * (variant == "glare")
            for variant, gain in gains.items()
            for seed in range(3)
        },
    )
    args = ablation.parse_args(["--work-dir", str(tmp_path)])
    table = ablation.summarize(args)
    assert "| aerial | glare − none | 3 | +0.40 [" in table  # 0.3 + 0.1 mean
    assert "| aerial | glare − dino | 3 | +0.60 [" in table
    rows = json.loads((tmp_path / "differences.json").read_text())
    glare_none = rows[0]
    assert glare_none["differences"] == pytest.approx([0.3, 0.4, 0.5])
    assert glare_none["low"] < 0.4 < glare_none["high"]
    assert (tmp_path / "differences.png").stat().st_size > 1000


def test_pilot_never_picks_a_warm_up_step_and_says_when_no_step_gains() -> None:
    _, evidence = _tools()

    def rows(gains: dict[int, float]) -> list[dict[str, float]]:
        return [{"step": step, "mean": gain} for step, gain in gains.items()]

    # Inside the warm-up the backbone is the start model: 0 is not a gain.
    falling = rows({25: 0.0, 50: 0.0, 75: -0.8, 100: -1.2})
    assert evidence.best_step(falling, warmup=50) == (75, -0.8)
    verdict = evidence.pilot_verdict(evidence.best_step(falling, 50), 50)
    assert "No step after the head warm-up (50 steps) has a positive" in verdict
    assert "least negative is step 75 (-0.80)" in verdict
    rising = rows({25: 0.0, 50: 0.3, 75: 0.3})
    assert evidence.best_step(rising, warmup=25) == (50, 0.3)  # ties: fewer
    assert evidence.best_step(rising, warmup=75) is None
    assert "evaluate later steps" in evidence.pilot_verdict(None, 75)


def test_pilot_and_data_amount_summaries(tmp_path: Path) -> None:
    _, evidence = _tools()
    pilot = tmp_path / "pilot"
    runs = {}
    for seed in range(2):
        runs[(seed, "none")] = [{"step": 0, "miou": 0.60}]
        runs[(seed, "glare")] = [
            {"step": 25, "miou": 0.601 + 0.001 * seed},
            {"step": 50, "miou": 0.605 + 0.001 * seed},
            {"step": 75, "miou": 0.605 + 0.001 * seed},
        ]
    for (seed, variant), evaluations in runs.items():
        path = pilot / "runs" / "aerial" / variant / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"domain": "aerial", "variant": variant, "seed": seed}
        record |= {"miou": evaluations[-1]["miou"], "evaluations": evaluations}
        record |= {"args": {"head_warmup_steps": 25}}
        path.write_text(json.dumps(record))
    text = evidence.summarize_pilot(pilot)
    assert "| aerial | 50 | 2 | +0.55 [" in text
    assert "after the head warm-up (25 steps; ties: fewer): 50 (+0.55)." in text
    assert (pilot / "gain_vs_steps.png").stat().st_size > 1000
    for fraction, gain in ((0.1, 0.001), (0.3, 0.002), (1.0, 0.004)):
        _write_runs(
            evidence.fraction_dir(tmp_path, fraction),
            {
                ("aerial", variant, seed): 0.6
                + 0.0005 * seed
                + gain * (variant == "glare")
                + 0.0002 * seed * (variant == "glare")
                for variant in ("none", "glare")
                for seed in range(4)
            },
        )
    text = evidence.summarize_data_amount(tmp_path)
    assert "| 0.1 | glare − none | 4 | +0.13 [" in text
    assert "| 1.0 | glare − none | 4 | +0.43 [" in text
    summary = json.loads((tmp_path / "data_amount" / "summary.json").read_text())
    assert [row["unlabeled_images"] for row in summary] == [[38], [38], [378]]
    assert (tmp_path / "data_amount" / "gain_vs_fraction.png").stat().st_size > 1000


def test_upernet_summary_pairs_the_three_variants(tmp_path: Path) -> None:
    _, evidence = _tools()
    _write_runs(
        tmp_path,
        {
            ("aerial", variant, seed): 0.62 + 0.01 * index + 0.002 * seed
            for index, variant in enumerate(("none", "dino", "glare"))
            for seed in range(4)
        },
    )
    text = evidence.summarize_upernet(tmp_path)
    assert "| glare | 4 | 0: 64.00, 1: 64.20, 2: 64.40, 3: 64.60 |" in text
    assert "| aerial | glare − none | 4 | +2.00 [+2.00, +2.00] | yes |" in text
    assert "dino − none" in text and (tmp_path / "differences.png").is_file()


@pytest.mark.slow
def test_pilot_end_to_end_evaluates_each_step_and_resumes(tmp_path: Path) -> None:
    """The pilot on the real MRI slices, a 3-step schedule, two seeds."""
    args = [
        str(ROOT / "tools/experiments/evidence.py"),
        "pilot",
        "--work-dir",
        str(tmp_path),
        "--steps",
        "3",
        "--domains",
        "mri",
        "--img-size",
        "56",
        "--batch-size",
        "4",
    ]
    first = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=1800
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    run = json.loads((tmp_path / "pilot/runs/mri/glare/seed1.json").read_text())
    assert [e["step"] for e in run["evaluations"]] == [1, 2, 3]
    assert run["evaluations"][-1]["miou"] == run["miou"]
    assert run["args"]["eval_split"] == "holdout"
    assert not list((tmp_path / "pilot/runs").rglob("*.pth"))  # exports removed
    curve = json.loads((tmp_path / "pilot/gain_vs_steps.json").read_text())
    assert [row["step"] for row in curve] == [1, 2, 3]
    assert curve[0]["differences"] == [0.0, 0.0]  # warm-up: the start model
    again = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert again.returncode == 0 and again.stdout.count("already done") == 4
