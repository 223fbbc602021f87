"""Linear segmentation probe, IoU bookkeeping, and a miniature ablation run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightly_glare.evaluation.segmentation import (
    cell_labels,
    confusion_matrix,
    dense_features,
    linear_segmentation_probe,
    load_segmentation_split,
    scores_from_confusion,
)
from lightly_glare.models import UniAdapterViT
from tests.conftest import image_size, load_tool, make_vit, real_photo

ROOT = Path(__file__).resolve().parents[2]


def test_confusion_and_iou_match_a_pixel_loop() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(13, 17))
    label[0, :5] = 255  # ignored
    prediction = rng.integers(0, 3, size=(13, 17))
    matrix = confusion_matrix(prediction, label, num_classes=3)
    expected = np.zeros((3, 3), dtype=np.int64)
    for truth, guess in zip(label.ravel(), prediction.ravel(), strict=True):
        if truth < 3:
            expected[truth, guess] += 1
    np.testing.assert_array_equal(matrix, expected)
    scores = scores_from_confusion(matrix)
    for c in range(3):
        intersection = np.sum((label == c) & (prediction == c))
        union = np.sum(((label == c) | (prediction == c)) & (label < 3))
        assert scores.iou[c] == pytest.approx(intersection / union)
    assert scores.miou == pytest.approx(scores.iou.mean())
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(prediction[:3], label, 3)


def test_iou_of_an_absent_class_is_nan_and_left_out_of_the_mean() -> None:
    scores = scores_from_confusion(np.array([[5, 0, 0], [1, 4, 0], [0, 0, 0]]))
    assert np.isnan(scores.iou[2])
    assert scores.miou == pytest.approx((5 / 6 + 4 / 5) / 2)


def test_cell_labels_take_the_majority_and_ignore_255() -> None:
    label = np.zeros((4, 6), dtype=np.int64)
    label[:2, :3] = 1  # cell (0, 0) all class 1
    label[2:, 3:] = 255  # cell (1, 1) fully ignored
    label[0, 3:] = 2  # cell (0, 1): three pixels of 2, three of 0
    label[1, 3] = 2  # ... now four of 2
    cells = cell_labels([label], grid=(2, 2), num_classes=3)
    assert cells.tolist() == [[[1, 2], [0, 255]]]


def test_dense_features_are_the_normed_block_tokens() -> None:
    vit = make_vit("dinov2_like")
    backbone = UniAdapterViT(vit)
    size = image_size(vit)
    images = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    features = dense_features(backbone, images, blocks=(-1,), batch_size=2)
    grid = backbone.grid_size(size, size)
    assert features.shape == (3, backbone.embed_dim, *grid)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = backbone((images.float() / 255 - mean) / std)  # final norm
    expected = tokens[:, backbone.num_prefix_tokens :].transpose(1, 2)
    torch.testing.assert_close(features.flatten(2), expected, rtol=1e-4, atol=1e-5)
    two = dense_features(backbone, images, blocks=(0, -1))
    assert two.shape[1] == 2 * backbone.embed_dim
    torch.testing.assert_close(two[:, backbone.embed_dim :], features)
    with pytest.raises(ValueError, match="uint8"):
        dense_features(backbone, images.float())


def test_probe_recovers_a_layout_written_in_the_features() -> None:
    """Features that encode the label of each half exactly give IoU 1."""
    rng = np.random.default_rng(0)
    labels, features = [], []
    for _ in range(6):
        label = np.zeros((16, 16), dtype=np.int64)
        column = int(rng.integers(4, 13)) // 4 * 4  # boundary on a cell edge
        label[:, column:] = 1
        onehot = torch.nn.functional.one_hot(torch.from_numpy(label), 2).float()
        cells = onehot.reshape(4, 4, 4, 4, 2).mean((1, 3))  # (4, 4, 2) on a 4x4 grid
        noise = torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(1))
        features.append(torch.cat([cells, 0.01 * noise], -1).permute(2, 0, 1))
        labels.append(label)
    stacked = torch.stack(features)  # (6, 5, 4, 4)
    scores = linear_segmentation_probe(
        stacked[:4], labels[:4], stacked[4:], labels[4:], 2, upsample=1
    )
    np.testing.assert_allclose(scores.iou, [1.0, 1.0])
    shuffled = linear_segmentation_probe(
        stacked[:4], labels[:4], stacked[4:].flip(-1), labels[4:], 2, upsample=1
    )
    assert shuffled.miou < 0.9  # features that do not match the labels score lower
    with pytest.raises(ValueError, match="labels"):
        linear_segmentation_probe(stacked, labels[:2], stacked, labels, 2)


def _write_split(root: Path, split: str, count: int, size: int) -> None:
    photo = real_photo().resize((size, size))
    for index in range(count):
        image = photo.rotate(90 * index)
        label = (np.asarray(image.convert("L")) > 128).astype(np.uint8)
        (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        image.save(root / "img_dir" / split / f"{index}.png")
        Image.fromarray(label).save(root / "ann_dir" / split / f"{index}.png")


def test_load_segmentation_split_resizes_images_and_keeps_labels(
    tmp_path: Path,
) -> None:
    _write_split(tmp_path, "train", 3, size=40)
    split = load_segmentation_split(tmp_path, "train", size=28, num_classes=2)
    assert split.images.shape == (3, 3, 28, 28) and split.images.dtype == torch.uint8
    assert [label.shape for label in split.labels] == [(40, 40)] * 3
    assert split.names == ["0.png", "1.png", "2.png"]
    with pytest.raises(FileNotFoundError, match="val"):
        load_segmentation_split(tmp_path, "val", 28, 2)


@pytest.mark.slow
def test_ablation_tool_runs_resumes_and_summarizes(tmp_path: Path) -> None:
    """Two variants x one seed on the real MRI slices, a tiny schedule."""
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
    ]
    first = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    runs = {
        path.parent.name: json.loads(path.read_text())
        for path in (tmp_path / "runs" / "mri").glob("*/seed0.json")
    }
    assert set(runs) == {"none", "glare"}
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
