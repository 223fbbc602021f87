"""Linear segmentation probe, IoU bookkeeping, and a miniature ablation run."""

from __future__ import annotations

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
from tests.conftest import image_size, make_vit, real_photo

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
