"""kNN / linear probe against references, feature extraction, and the tool."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightly_glare.evaluation import (
    classification_scores,
    extract_features,
    fit_logistic_regression,
    knn_classify,
    linear_probe,
    load_image_tensor,
    mean_std,
    stratified_split,
)
from lightly_glare.models import UniAdapterViT
from tests.conftest import image_size, make_vit, real_photo

ROOT = Path(__file__).resolve().parents[2]


def clusters(
    per_class: int, num_classes: int, dim: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random orthogonal-ish centres, labels 0..C-1."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 3
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(labels.numel(), dim, generator=generator) * spread
    return centres[labels] + noise, labels


def brute_force_knn(
    train: torch.Tensor,
    labels: torch.Tensor,
    test: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> list[int]:
    """DINO's weighted vote written out per query with Python loops."""
    predictions = []
    for query in test.tolist():
        sims = []
        for index, row in enumerate(train.tolist()):
            dot = sum(a * b for a, b in zip(query, row, strict=True))
            norm = math.sqrt(sum(a * a for a in query) * sum(b * b for b in row))
            sims.append((dot / norm, index))
        sims.sort(reverse=True)
        votes = [0.0] * num_classes
        for sim, index in sims[:k]:
            votes[int(labels[index])] += math.exp(sim / temperature)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return predictions


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_matches_brute_force_reference(k: int, temperature: float) -> None:
    train, labels = clusters(15, 3, 8, spread=2.5, seed=1)  # overlapping clusters
    test, _ = clusters(7, 3, 8, spread=2.5, seed=2)
    got = knn_classify(train, labels, test, 3, k=k, temperature=temperature)
    expected = brute_force_knn(train, labels, test, 3, k, temperature)
    assert got.tolist() == expected
    # chunking does not change the answer
    chunked = knn_classify(
        train, labels, test, 3, k=k, temperature=temperature, chunk_size=4
    )
    assert torch.equal(chunked, got)


def test_knn_weights_votes_by_similarity() -> None:
    # Two near neighbours of class 1 outweigh three far ones of class 0 only
    # when the temperature makes similarity count.
    train = torch.tensor(
        [[1.0, 0.05], [1.0, -0.05], [0.2, 1.0], [0.2, -1.0], [0.1, 1.0]]
    )
    labels = torch.tensor([1, 1, 0, 0, 0])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_classify(train, labels, query, 2, k=5, temperature=0.05).item() == 1
    assert knn_classify(train, labels, query, 2, k=5, temperature=100.0).item() == 0


def test_knn_is_scale_invariant_and_clips_k() -> None:
    train, labels = clusters(4, 2, 5, spread=1.0, seed=3)
    test, _ = clusters(3, 2, 5, spread=1.0, seed=4)
    base = knn_classify(train, labels, test, 2, k=50)  # k > N: all 8 vote
    scaled = knn_classify(train * torch.rand(8, 1) * 10, labels, test * 3.0, 2, k=50)
    assert torch.equal(base, scaled)


def test_separable_clusters_score_one() -> None:
    train, train_labels = clusters(30, 4, 16, spread=0.3, seed=5)
    test, test_labels = clusters(10, 4, 16, spread=0.3, seed=5)
    knn = knn_classify(train, train_labels, test, 4)
    probe = linear_probe(train, train_labels, test, 4, seed=0)
    for predictions in (knn, probe.predictions):
        scores = classification_scores(predictions, test_labels, 4)
        assert scores.accuracy == 1.0 and scores.balanced_accuracy == 1.0


def test_linear_probe_solves_what_knn_cannot() -> None:
    # Class = sign of feature 0; features 1..9 are large noise that dominates
    # cosine similarity. A linear probe finds the direction, kNN does not.
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(400, 10, generator=generator)
    feats[:, 1:] *= 20
    labels = (feats[:, 0] > 0).long()
    train, test = slice(0, 300), slice(300, 400)
    probe = linear_probe(feats[train], labels[train], feats[test], 2, seed=0)
    knn = knn_classify(feats[train], labels[train], feats[test], 2)
    linear_acc = classification_scores(probe.predictions, labels[test], 2).accuracy
    knn_acc = classification_scores(knn, labels[test], 2).accuracy
    assert linear_acc > 0.95 and knn_acc < 0.75


def test_logistic_regression_matches_gradient_descent_reference() -> None:
    feats, labels = clusters(20, 3, 4, spread=2.0, seed=7)
    decay = 0.05
    model = fit_logistic_regression(feats, labels, 3, decay, seed=0)
    # Reference: long plain gradient descent on the same standardised objective.
    x = (feats.double() - feats.double().mean(0)) / feats.double().std(0)
    weight = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=0.5)
    for _ in range(5000):
        optimizer.zero_grad()
        loss = (
            F.cross_entropy(x @ weight.t() + bias, labels)
            + 0.5 * decay * weight.square().sum()
        )
        loss.backward()
        optimizer.step()
    reference = (x @ weight.t() + bias).detach()
    torch.testing.assert_close(model(feats).double(), reference, atol=1e-3, rtol=1e-3)


def test_linear_probe_standardises_with_train_statistics() -> None:
    train, labels = clusters(20, 3, 6, spread=2.0, seed=8)
    test, _ = clusters(10, 3, 6, spread=2.0, seed=9)
    base = linear_probe(train, labels, test, 3, seed=1)
    scale = torch.logspace(-3, 3, 6)
    shift = torch.linspace(-50, 50, 6)
    moved = linear_probe(train * scale + shift, labels, test * scale + shift, 3, seed=1)
    assert torch.equal(base.predictions, moved.predictions)
    assert base.weight_decay == moved.weight_decay
    assert set(base.validation_accuracy) == {1e-4, 1e-3, 1e-2, 1e-1}


def test_stratified_split_partitions_per_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 10 + [2] * 1)
    keep, held = stratified_split(labels, 0.2, seed=3)
    assert sorted(keep.tolist() + held.tolist()) == list(range(61))
    assert torch.bincount(labels[held], minlength=3).tolist() == [10, 2, 0]
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    assert torch.equal(again, keep) and not torch.equal(other, keep)


def test_scores_balanced_accuracy_by_hand() -> None:
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 3])  # class 2 absent
    predictions = torch.tensor([0, 0, 0, 1, 1, 0, 3])
    scores = classification_scores(predictions, targets, 4)
    assert scores.accuracy == pytest.approx(5 / 7)
    assert scores.per_class_recall[:2] == [0.75, 0.5]
    assert math.isnan(scores.per_class_recall[2]) and scores.per_class_recall[3] == 1
    assert scores.balanced_accuracy == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    with pytest.raises(ValueError, match="same non-empty shape"):
        classification_scores(predictions[:3], targets, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        classification_scores(predictions, targets + 1, 4)


def test_mean_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([0.5]) == (0.5, 0.0)


@pytest.mark.parametrize("variant", ["plain", "dinov2_like"])
def test_extract_features_matches_backbone_tokens(variant: str) -> None:
    vit = make_vit(variant)
    backbone = UniAdapterViT(vit)
    with torch.no_grad():  # non-zero adapters: the export case
        for adapter in backbone.adapters:
            adapter.up.weight.normal_(0, 0.1)
    size = image_size(vit)
    images = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
    features = extract_features(backbone, images, batch_size=2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (images.float() / 255 - mean) / std
    with torch.no_grad():
        tokens = backbone.forward_features(normalised).tokens
    prefix = vit.num_prefix_tokens
    torch.testing.assert_close(features["cls"], tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        features["patch_mean"], tokens[:, prefix:].mean(1), atol=1e-5, rtol=1e-5
    )
    # float input is taken as already normalised
    again = extract_features(backbone, normalised, batch_size=5)
    torch.testing.assert_close(again["cls"], features["cls"], atol=1e-5, rtol=1e-5)


def test_load_image_tensor_resizes_greyscale_to_rgb(tmp_path: Path) -> None:
    grey = real_photo().convert("L").resize((60, 50))
    grey.save(tmp_path / "a.png")
    images = load_image_tensor([tmp_path / "a.png"], 28)
    assert images.shape == (1, 3, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[0, 0], images[0, 2])
    expected = np.asarray(grey.resize((28, 28), Image.Resampling.BICUBIC))
    assert torch.equal(images[0, 1], torch.from_numpy(expected.copy()))


def _make_labelled_folder(root: Path) -> list[tuple[str, float, str]]:
    """20 real-photo crops in prepare_elpv's layout: dark vs bright = 0 vs 1."""
    photo = real_photo().convert("L")  # 512 x 600
    (root / "images").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for index in range(20):
        left, top = rng.integers(0, 200, size=2)
        crop = photo.crop((left, top, left + 300, top + 300))
        defect = float(index % 2)
        if defect:  # a bright, washed-out cell
            crop = Image.eval(crop, lambda v: 155 + v // 3)
        name = f"images/cell{index:04d}.png"
        crop.save(root / name)
        rows.append((name, defect, "mono"))
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "defect_probability", "cell_type", "split"])
        for index, (name, p, kind) in enumerate(rows):
            writer.writerow([name, p, kind, "train" if index < 14 else "test"])
    return rows
