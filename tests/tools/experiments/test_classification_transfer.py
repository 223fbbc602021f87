"""tools/experiments/classification_transfer.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import load_tool
from tests.evaluation.test_classification import _make_labelled_folder


@pytest.mark.slow
def test_tool_end_to_end_on_a_small_real_image_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import timm

    data = tmp_path / "data"
    rows = _make_labelled_folder(data)
    start = tmp_path / "start.pth"  # random ViT-S/14: no download needed
    torch.save(
        timm.create_model("vit_small_patch14_dinov2", img_size=56).state_dict(), start
    )
    tool = load_tool("experiments/classification_transfer")
    work = tmp_path / "work"
    result = tool.main(
        [
            "--work-dir",
            str(work),
            "--data-root",
            str(data),
            "--checkpoint",
            str(start),
            "--seeds",
            "0",
            "1",
            "--img-size",
            "56",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--output-dim",
            "64",
            "--hidden-dim",
            "32",
            "--knn-k",
            "5",
        ]
    )
    captured = capsys.readouterr()  # a progress bar per seed's pre-training
    assert captured.err.count("GLARE: 100%") >= 2 and "img/s" in captured.err
    assert "step 2/2 loss=" in captured.out
    saved = json.loads((work / "results.json").read_text())
    assert saved["complete"] is True
    assert set(saved["pretrain_losses"]) == {"0", "1"}
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    # GLARE saw exactly the train split, never a test image.
    assert saved["glare_train_files"] == [name for name, _, _ in rows[:14]]
    assert saved["split"]["train"] == 14 and saved["split"]["test"] == 6
    runs = saved["runs"]
    for model in ("DINOv2 (start)", "DINOv2 + GLARE"):
        assert set(runs[model]) == {"0", "1"}
        for task in ("defect4", "defective"):
            for variant in ("cls", "cls+patch_mean"):
                for method in ("knn", "linear"):
                    values = [
                        runs[model][s][task][variant][method]["accuracy"]
                        for s in ("0", "1")
                    ]
                    assert all(
                        0 <= v <= 1 and abs(6 * v - round(6 * v)) < 1e-9 for v in values
                    )
                    cell = saved["summary"][model][task][variant][method]
                    assert cell["accuracy"]["values"] == values
                    assert cell["accuracy"]["mean"] == pytest.approx(np.mean(values))
    # The start model's features do not depend on the seed: its kNN is identical.
    start_runs = runs["DINOv2 (start)"]
    assert (
        start_runs["0"]["defect4"]["cls"]["knn"]
        == start_runs["1"]["defect4"]["cls"]["knn"]
    )
    for seed in (0, 1):
        assert (work / f"glare_seed{seed}.pth").is_file()
    table = (work / "results.md").read_text()
    assert table.count("| DINOv2 + GLARE |") == 4
    assert table.count("| DINOv2 (start) |") == 4


def test_an_export_is_reused_only_with_every_pretraining_setting_equal() -> None:
    tool = load_tool("experiments/classification_transfer")
    from pretraining_args import PRETRAINING_OPTIONS

    args = tool.parse_args([])
    settings = tool.pretrain_settings(args, seed=0)
    assert tool.pretrain_settings(tool.parse_args([]), seed=0) == settings
    assert tool.pretrain_settings(args, seed=1) != settings
    for name in (*PRETRAINING_OPTIONS, "img_size", "checkpoint", "data_root"):
        changed = tool.parse_args([])
        setattr(changed, name, "changed")
        assert tool.pretrain_settings(changed, seed=0) != settings, name
