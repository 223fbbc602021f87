"""Linear segmentation probe on frozen patch features, and IoU bookkeeping.

The cheap downstream protocol of the ablation experiments
(``tools/experiments/segmentation_ablation.py``): the adapted backbone stays frozen, the
patch tokens of the last blocks (each after the ViT's final norm, as DINOv2's
linear segmentation evaluation does) are bilinearly upsampled to a finer grid
of cells, each cell gets the majority label of its pixels, and a multinomial
logistic regression (:func:`~lightly_glare.evaluation.fit_logistic_regression`,
convex, full batch) maps cell features to classes. Predictions are the cell
logits bilinearly upsampled to each label map's own resolution. UperNet
fine-tuning through mmseg (``tools/train.py``,
``tools/experiments/demo.py``) is the full protocol; this one isolates what
the continual pre-training changed in the features and runs in seconds on a CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightly.transforms.utils import IMAGENET_NORMALIZE
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor

from lightly_glare.data import load_image_and_mask
from lightly_glare.evaluation.classification import fit_logistic_regression
from lightly_glare.models import UniAdapterViT


@dataclass
class SegmentationSplit:
    """Images and label maps of one split of an mmseg-layout folder.

    Attributes:
        images: uint8 images resized to the probe's input size, (N, 3, S, S).
        labels: Label maps at their original resolution, one (H_i, W_i) int64
            array per image (255 = ignore).
        names: File names, in the order of ``images``.
    """

    images: Tensor
    labels: list[NDArray[np.int64]]
    names: list[str]


@dataclass
class SegmentationScores:
    """IoU results of a probe.

    Attributes:
        confusion: (C, C) pixel counts, rows ground truth, columns prediction.
        iou: Per-class IoU in [0, 1] (NaN for a class absent from both).
        miou: Mean of the defined IoUs.
    """

    confusion: NDArray[np.int64]
    iou: NDArray[np.float64]
    miou: float


def load_segmentation_split(
    root: str | os.PathLike[str], split: str, size: int, num_classes: int
) -> SegmentationSplit:
    """Reads ``img_dir/<split>`` and ``ann_dir/<split>`` of an mmseg folder.

    Args:
        root: Dataset root holding ``img_dir`` and ``ann_dir``.
        split: Sub-folder name (``train``, ``val``).
        size: Side of the resized square images (bicubic, whole image).
        num_classes: Number of classes (label values are checked).

    Returns:
        The split.

    Raises:
        FileNotFoundError: If the split holds no PNG images.
    """
    image_dir = Path(root) / "img_dir" / split
    paths = sorted(image_dir.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"No PNG images in {image_dir}.")
    images = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    labels: list[NDArray[np.int64]] = []
    for index, path in enumerate(paths):
        mask_path = Path(root) / "ann_dir" / split / path.name
        image, mask = load_image_and_mask(path, mask_path, num_classes)
        resized = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))
        images[index] = torch.from_numpy(resized.copy()).permute(2, 0, 1)
        labels.append(mask.astype(np.int64))
    return SegmentationSplit(images, labels, [path.name for path in paths])


@torch.no_grad()
def dense_features(
    backbone: UniAdapterViT,
    images: Tensor,
    blocks: Sequence[int] = (-4, -3, -2, -1),
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Patch tokens of several blocks, each after the final norm, concatenated.

    Args:
        backbone: The adapted backbone (run in eval mode with its own adapters).
        images: uint8 images, shape (N, 3, H, W), H and W multiples of the
            patch size (ImageNet normalisation is applied here).
        blocks: Block indices (negative from the end). Defaults to the last 4.
        batch_size: Images per forward pass.
        device: Where to run.

    Returns:
        float32 features on the CPU, shape (N, len(blocks) * D, h, w).
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            "Expected uint8 images of shape (N, 3, H, W), got "
            f"{images.dtype} {tuple(images.shape)}."
        )
    backbone.eval().to(device)
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"], device=device).view(1, 3, 1, 1)
    grid = backbone.grid_size(images.shape[2], images.shape[3])
    prefix = backbone.num_prefix_tokens
    parts = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device).float() / 255.0
        out = backbone.forward_features(
            (batch - mean) / std, intermediate_indices=blocks
        )
        assert out.intermediates is not None  # requested
        tokens = torch.cat(
            [backbone.vit.norm(x)[:, prefix:] for x in out.intermediates], dim=-1
        )  # (b, N, len(blocks) * D)
        parts.append(tokens.transpose(1, 2).unflatten(2, grid).float().cpu())
    return torch.cat(parts)  # (N, len(blocks) * D, h, w)


def cell_labels(
    labels: Sequence[NDArray[np.int64]], grid: tuple[int, int], num_classes: int
) -> Tensor:
    """The majority label of each cell of a ``grid`` laid over every label map.

    Args:
        labels: Label maps (H_i, W_i); 255 is ignored.
        grid: Cells (rows, columns) per map.
        num_classes: Number of classes C.

    Returns:
        int64 tensor (N, rows, columns); a cell with no labelled pixel is 255.
    """
    out = torch.full((len(labels), *grid), 255, dtype=torch.int64)
    for index, label in enumerate(labels):
        height, width = label.shape
        row = np.minimum(np.arange(height) * grid[0] // height, grid[0] - 1)
        column = np.minimum(np.arange(width) * grid[1] // width, grid[1] - 1)
        cell = (row[:, None] * grid[1] + column[None, :]).ravel()
        valid = label.ravel() < num_classes
        counts = np.bincount(
            cell[valid] * num_classes + label.ravel()[valid],
            minlength=grid[0] * grid[1] * num_classes,
        ).reshape(grid[0] * grid[1], num_classes)
        majority = np.where(counts.sum(1) > 0, counts.argmax(1), 255)
        out[index] = torch.from_numpy(majority.reshape(grid))
    return out


def confusion_matrix(
    prediction: NDArray[np.int64], label: NDArray[np.int64], num_classes: int
) -> NDArray[np.int64]:
    """(C, C) pixel counts of ``label`` (rows) against ``prediction`` (columns).

    Pixels with a label outside ``[0, C)`` (e.g. 255) are ignored.
    """
    if prediction.shape != label.shape:
        raise ValueError(
            f"Prediction {prediction.shape} and label {label.shape} differ in shape."
        )
    valid = (label >= 0) & (label < num_classes)
    counts = np.bincount(
        label[valid] * num_classes + prediction[valid], minlength=num_classes**2
    )
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def scores_from_confusion(confusion: NDArray[np.int64]) -> SegmentationScores:
    """Per-class IoU and mIoU (mmseg's definition) of a confusion matrix."""
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    return SegmentationScores(confusion, iou, float(np.nanmean(iou)))


def linear_segmentation_probe(
    train_features: Tensor,
    train_labels: Sequence[NDArray[np.int64]],
    eval_features: Tensor,
    eval_labels: Sequence[NDArray[np.int64]],
    num_classes: int,
    weight_decay: float = 1e-2,
    upsample: int = 2,
    seed: int = 0,
) -> SegmentationScores:
    """Fits a linear classifier on cell features and scores it on ``eval``.

    Args:
        train_features: (N, F, h, w) from :func:`dense_features`.
        train_labels: N label maps at their original resolution.
        eval_features: (M, F, h, w).
        eval_labels: M label maps.
        num_classes: Number of classes C.
        weight_decay: L2 strength on standardised features. Defaults to 1e-2
            (fixed, never tuned on the evaluation split).
        upsample: Features are bilinearly upsampled by this factor before
            fitting, so cells are smaller than patches. Defaults to 2.
        seed: Seed of the classifier's initial weights.

    Returns:
        The scores on ``eval``.
    """
    if len(train_labels) != train_features.shape[0]:
        raise ValueError(
            f"{train_features.shape[0]} feature maps but {len(train_labels)} labels."
        )
    if len(eval_labels) != eval_features.shape[0]:
        raise ValueError(
            f"{eval_features.shape[0]} feature maps but {len(eval_labels)} labels."
        )

    def cells(features: Tensor) -> Tensor:
        fine = F.interpolate(
            features, scale_factor=upsample, mode="bilinear", align_corners=False
        )  # (N, F, h', w')
        return fine.permute(0, 2, 3, 1)  # (N, h', w', F)

    train = cells(train_features)
    grid = (train.shape[1], train.shape[2])
    targets = cell_labels(train_labels, grid, num_classes).flatten()  # (N h' w',)
    keep = targets < num_classes
    classify = fit_logistic_regression(
        train.flatten(0, 2)[keep], targets[keep], num_classes, weight_decay, seed
    )
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    evaluated = cells(eval_features)
    for features, label in zip(evaluated, eval_labels, strict=True):
        logits = classify(features.flatten(0, 1)).float()  # (h' w', C)
        logits = logits.t().reshape(1, num_classes, *features.shape[:2])
        logits = F.interpolate(
            logits, size=label.shape, mode="bilinear", align_corners=False
        )  # (1, C, H, W)
        prediction = logits[0].argmax(0).numpy().astype(np.int64)
        confusion += confusion_matrix(prediction, label, num_classes)
    return scores_from_confusion(confusion)
