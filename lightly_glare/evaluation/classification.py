"""Frozen-feature classification transfer: kNN and linear-probe evaluation.

The two standard protocols for judging SSL features without fine-tuning:

- **kNN** (DINO, Caron et al. 2021, ``eval_knn.py``): L2-normalised features,
  cosine similarity, the ``k = 20`` nearest training samples vote with weights
  ``exp(similarity / T)``, ``T = 0.07``. The voting itself is lightly's
  :func:`lightly.utils.benchmarking.knn_predict`.
- **Linear probe**: multinomial logistic regression on frozen, standardised
  features, trained full batch with L-BFGS (a convex problem: no learning-rate
  schedule to tune). The L2 strength is chosen from a small grid on a
  stratified validation split of the training set, then the probe is refit on
  the whole training set. No scikit-learn dependency.

Both report accuracy and **balanced accuracy** (the mean per-class recall over
the classes present in the targets), which matters for imbalanced labels such
as elpv's defect classes.

Features come from :func:`extract_features`: the first class token and the
mean of the patch tokens of a :class:`~lightly_glare.models.UniAdapterViT`
(the frozen source model with zero-initialised adapters, or a GLARE export
loaded with :func:`~lightly_glare.weights.load_adapted_backbone`).

Examples:
    >>> feats = extract_features(backbone, images)        # images: (N, 3, H, W)
    >>> train, test = feats["cls"][train_idx], feats["cls"][test_idx]
    >>> predictions = knn_classify(train, labels[train_idx], test, num_classes=4)
    >>> scores = classification_scores(predictions, labels[test_idx], num_classes=4)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from lightly.transforms.utils import IMAGENET_NORMALIZE
from lightly.utils.benchmarking import knn_predict
from PIL import Image
from torch import Tensor

from lightly_glare.data.image_io import load_rgb_image
from lightly_glare.models.adapted_vit import UniAdapterViT

#: Weight-decay grid searched by :func:`linear_probe` (on standardised inputs).
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)

#: Names of the features returned by :func:`extract_features`.
FEATURE_NAMES: tuple[str, ...] = ("cls", "patch_mean")


@dataclass(frozen=True)
class ClassificationScores:
    """Accuracy figures of one set of predictions.

    Attributes:
        accuracy: Fraction of correct predictions.
        balanced_accuracy: Mean recall over the classes present in the targets.
        per_class_recall: Recall of each class index, NaN for classes absent
            from the targets.
        num_samples: Number of predictions scored.
    """

    accuracy: float
    balanced_accuracy: float
    per_class_recall: list[float]
    num_samples: int


@dataclass
class LinearProbeResult:
    """What :func:`linear_probe` returns.

    Attributes:
        predictions: Predicted class of each test sample, shape (M,).
        weight_decay: The L2 strength chosen on the validation split.
        validation_accuracy: Validation accuracy of every weight decay tried.
    """

    predictions: Tensor
    weight_decay: float
    validation_accuracy: dict[float, float] = field(default_factory=dict)


def _check_labels(labels: Tensor, num_classes: int, name: str) -> None:
    if labels.ndim != 1 or labels.dtype != torch.long:
        raise ValueError(
            f"{name} must be a 1-D int64 tensor, got shape {tuple(labels.shape)} "
            f"and dtype {labels.dtype}."
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )


def _check_features(features: Tensor, labels: Tensor | None, name: str) -> None:
    if features.ndim != 2 or not features.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor of shape (N, D), got shape "
            f"{tuple(features.shape)} and dtype {features.dtype}."
        )
    if labels is not None and labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{name} has {features.shape[0]} rows but its labels have "
            f"{labels.shape[0]}."
        )


def classification_scores(
    predictions: Tensor, targets: Tensor, num_classes: int
) -> ClassificationScores:
    """Accuracy, balanced accuracy and per-class recall.

    Args:
        predictions: Predicted classes, int64 of shape (M,).
        targets: True classes, int64 of shape (M,).
        num_classes: Number of classes C.

    Returns:
        The scores; classes absent from ``targets`` do not enter the balanced
        accuracy (their recall is NaN).

    Raises:
        ValueError: If the shapes differ, are empty, or labels are out of range.
    """
    _check_labels(predictions, num_classes, "predictions")
    _check_labels(targets, num_classes, "targets")
    if predictions.shape != targets.shape or targets.numel() == 0:
        raise ValueError(
            "predictions and targets must have the same non-empty shape, got "
            f"{tuple(predictions.shape)} and {tuple(targets.shape)}."
        )
    correct = predictions == targets  # (M,)
    # Per class: samples of that class (C,) and how many of them are correct (C,).
    support = torch.bincount(targets, minlength=num_classes)
    hits = torch.bincount(targets[correct], minlength=num_classes)
    recall = [
        float(h) / float(s) if s > 0 else math.nan
        for h, s in zip(hits.tolist(), support.tolist(), strict=True)
    ]
    present = [r for r in recall if not math.isnan(r)]
    return ClassificationScores(
        accuracy=float(correct.double().mean()),
        balanced_accuracy=sum(present) / len(present),
        per_class_recall=recall,
        num_samples=int(targets.numel()),
    )


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted kNN classification as in DINO's ``eval_knn.py``.

    Features are L2-normalised; each test sample's ``k`` most cosine-similar
    training samples vote for their class with weight ``exp(sim / temperature)``
    (lightly's :func:`~lightly.utils.benchmarking.knn_predict`).

    Args:
        train_features: Feature bank, shape (N, D).
        train_labels: Its classes, int64 of shape (N,).
        test_features: Queries, shape (M, D).
        num_classes: Number of classes C.
        k: Neighbours (clipped to N). Defaults to 20 (DINO).
        temperature: Vote temperature. Defaults to 0.07 (DINO).
        chunk_size: Queries per similarity matrix (bounds memory at
            ``chunk_size x N`` floats).

    Returns:
        Predicted class of each query, int64 of shape (M,).

    Raises:
        ValueError: On mismatched shapes, out-of-range labels or ``k < 1``.
    """
    _check_features(train_features, train_labels, "train_features")
    _check_features(test_features, None, "test_features")
    _check_labels(train_labels, num_classes, "train_labels")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"Feature sizes differ: train {tuple(train_features.shape)}, test "
            f"{tuple(test_features.shape)}."
        )
    if k < 1 or temperature <= 0:
        raise ValueError(f"Need k >= 1 and temperature > 0, got {k}, {temperature}.")
    bank = F.normalize(train_features.float(), dim=1).t()  # (D, N)
    queries = F.normalize(test_features.float(), dim=1)  # (M, D)
    k = min(k, bank.shape[1])
    predictions = [
        knn_predict(chunk, bank, train_labels, num_classes, knn_k=k, knn_t=temperature)[
            :, 0
        ]  # (chunk, C) classes sorted by score -> top-1 (chunk,)
        for chunk in queries.split(chunk_size)
    ]
    if not predictions:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(predictions)


def stratified_split(
    labels: Tensor, fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Splits indices per class into a kept part and a held-out ``fraction``.

    Each class with at least two samples gives ``max(1, round(fraction * n))``
    of its samples (a random choice by ``seed``) to the held-out part; classes
    with a single sample stay in the kept part.

    Args:
        labels: Classes, int64 of shape (N,).
        fraction: Held-out fraction in (0, 1).
        seed: Seed of the permutation.

    Returns:
        Sorted kept and held-out indices, int64 tensors that partition
        ``range(N)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    generator = torch.Generator().manual_seed(seed)
    held: list[Tensor] = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        if members.numel() < 2:
            continue
        count = max(1, round(fraction * members.numel()))
        order = torch.randperm(members.numel(), generator=generator)
        held.append(members[order[:count]])
    held_out = torch.sort(torch.cat(held)).values if held else labels.new_zeros(0)
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[held_out] = False
    return torch.nonzero(keep).flatten(), held_out


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    seed: int = 0,
    max_iter: int = 100,
) -> Callable[[Tensor], Tensor]:
    """Multinomial logistic regression, full batch with L-BFGS.

    Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is
    not penalised) on features standardised with their own mean and standard
    deviation. The problem is convex, so the result hardly depends on the
    initialisation (``N(0, 0.01^2)`` drawn from ``seed``).

    Args:
        features: Training features, shape (N, D).
        labels: Their classes, int64 of shape (N,).
        num_classes: Number of classes C.
        weight_decay: L2 strength (on standardised features).
        seed: Seed of the initial weights. Defaults to 0.
        max_iter: L-BFGS iterations. Defaults to 100 (enough for the
            accuracy to settle on a few thousand samples; a cap on CPU time).

    Returns:
        A function mapping features (M, D) to logits (M, C) with the same
        standardisation.
    """
    _check_features(features, labels, "features")
    _check_labels(labels, num_classes, "labels")
    features = features.float()
    mean = features.mean(0, keepdim=True)  # (1, D)
    std = features.std(0, keepdim=True).clamp_min(1e-6)  # (1, D)
    inputs = (features - mean) / std  # (N, D)
    generator = torch.Generator().manual_seed(seed)
    weight = (
        torch.randn(num_classes, features.shape[1], generator=generator) * 0.01
    ).requires_grad_()  # (C, D)
    bias = torch.zeros(num_classes, requires_grad=True)  # (C,)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = inputs @ weight.t() + bias  # (N, C)
        loss = (
            F.cross_entropy(logits, labels) + 0.5 * weight_decay * weight.square().sum()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()

    def logits_of(queries: Tensor) -> Tensor:
        return ((queries.float() - mean) / std) @ weight.t() + bias  # (M, C)

    return logits_of


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    seed: int = 0,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    validation_fraction: float = 0.2,
    max_iter: int = 100,
) -> LinearProbeResult:
    """Linear probe with the L2 strength chosen on a validation split.

    A stratified ``validation_fraction`` of the training samples (drawn by
    ``seed``) scores every weight decay of ``weight_decays`` by accuracy (ties:
    the stronger decay); the probe is then refit on all training samples with
    the chosen decay and predicts the test samples. The test samples play no
    part in the choice.

    Args:
        train_features: Shape (N, D).
        train_labels: Int64 of shape (N,).
        test_features: Shape (M, D).
        num_classes: Number of classes C.
        seed: Seed of the validation split and of the initial weights.
        weight_decays: Grid of L2 strengths. Defaults to
            :data:`DEFAULT_WEIGHT_DECAYS`.
        validation_fraction: Held-out fraction of the training set. Defaults
            to 0.2.
        max_iter: L-BFGS iterations per fit. Defaults to 100.

    Returns:
        The test predictions (M,), the chosen weight decay and the validation
        accuracy of each one.
    """
    _check_features(train_features, train_labels, "train_features")
    _check_features(test_features, None, "test_features")
    if not weight_decays:
        raise ValueError("weight_decays must not be empty.")
    validation: dict[float, float] = {}
    if len(weight_decays) == 1:
        chosen = float(weight_decays[0])
    else:
        fit_idx, val_idx = stratified_split(train_labels, validation_fraction, seed)
        if val_idx.numel() == 0:
            raise ValueError("The validation split is empty: too few samples.")
        for decay in weight_decays:
            model = fit_logistic_regression(
                train_features[fit_idx],
                train_labels[fit_idx],
                num_classes,
                decay,
                seed,
                max_iter,
            )
            guess = model(train_features[val_idx]).argmax(1)  # (V,)
            validation[float(decay)] = float(
                (guess == train_labels[val_idx]).double().mean()
            )
        chosen = max(validation, key=lambda d: (validation[d], d))
    model = fit_logistic_regression(
        train_features, train_labels, num_classes, chosen, seed, max_iter
    )
    return LinearProbeResult(
        predictions=model(test_features).argmax(1),
        weight_decay=chosen,
        validation_accuracy=validation,
    )


def load_image_tensor(paths: Sequence[str | os.PathLike[str]], size: int) -> Tensor:
    """Reads images as RGB and resizes them (whole image, no crop) for evaluation.

    Each file is read with :func:`~lightly_glare.data.load_rgb_image`
    (greyscale replicated to RGB) and resized to ``size x size`` with bicubic
    interpolation (Pillow, antialiased).

    Args:
        paths: Image files.
        size: Output side length in pixels (a multiple of the patch size).

    Returns:
        uint8 images of shape (N, 3, size, size).
    """
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for index, path in enumerate(paths):
        image = load_rgb_image(path).resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.uint8)  # (size, size, 3)
        out[index] = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return out


@torch.no_grad()
def extract_features(
    backbone: UniAdapterViT,
    images: Tensor,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    mean: Sequence[float] = IMAGENET_NORMALIZE["mean"],
    std: Sequence[float] = IMAGENET_NORMALIZE["std"],
    log: Callable[[str], None] | None = None,
) -> dict[str, Tensor]:
    """Frozen [CLS] and mean patch features of an adapted backbone.

    The backbone is put in eval mode and run with its own adapters (zero
    adapters give the source model exactly).

    Args:
        backbone: The adapted backbone.
        images: uint8 images in [0, 255] (normalised here with ``mean`` and
            ``std``) or float images already normalised, shape (N, 3, H, W)
            with H and W multiples of the patch size.
        batch_size: Images per forward pass.
        device: Where to run.
        mean: Per-channel mean of the normalisation (ImageNet's).
        std: Per-channel standard deviation (ImageNet's).
        log: Optional progress printer.

    Returns:
        ``{"cls": (N, D), "patch_mean": (N, D)}`` float32 tensors on the CPU:
        the first class token and the mean of the N patch tokens, both after
        the final norm.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"Expected images of shape (N, 3, H, W), got {tuple(images.shape)}."
        )
    backbone.eval().to(device)
    shift = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    scale = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    prefix = backbone.num_prefix_tokens
    outputs: dict[str, list[Tensor]] = {name: [] for name in FEATURE_NAMES}
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)  # (b, 3, H, W)
        if batch.dtype == torch.uint8:
            batch = (batch.float() - shift) / scale
        tokens = backbone.forward_features(batch.float()).tokens  # (b, P + N, D)
        outputs["cls"].append(tokens[:, 0].float().cpu())  # (b, D)
        outputs["patch_mean"].append(tokens[:, prefix:].mean(1).float().cpu())
        if log is not None and (start // batch_size) % 10 == 9:
            log(f"    features {start + batch.shape[0]}/{images.shape[0]}")
    return {
        name: torch.cat(parts) if parts else images.new_zeros(0, backbone.embed_dim)
        for name, parts in outputs.items()
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value).

    Args:
        values: At least one number.

    Returns:
        ``(mean, std)``.
    """
    if not values:
        raise ValueError("mean_std needs at least one value.")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance)
