"""Evaluation of frozen features (pure PyTorch + lightly; no OpenMMLab import).

- :func:`load_image_tensor` (resized uint8 images) and :func:`extract_features`
  ([CLS] and mean patch features of an adapted ViT).
- :func:`knn_classify` (DINO's weighted kNN) and :func:`linear_probe`
  (full-batch logistic regression, L2 strength chosen on a validation split).
- :func:`classification_scores`: accuracy and balanced accuracy.
- Segmentation: :func:`load_segmentation_split`, :func:`dense_features`
  (normed patch tokens of several blocks), :func:`linear_segmentation_probe`,
  :func:`confusion_matrix` and :func:`scores_from_confusion` (per-class IoU,
  mIoU).
- Statistics over seeds: :func:`paired_difference` (mean of per-seed
  differences with a paired t or percentile-bootstrap confidence interval).
"""

from lightly_glare.evaluation.classification import (
    DEFAULT_WEIGHT_DECAYS,
    FEATURE_NAMES,
    ClassificationScores,
    LinearProbeResult,
    classification_scores,
    extract_features,
    fit_logistic_regression,
    knn_classify,
    linear_probe,
    load_image_tensor,
    mean_std,
    stratified_split,
)
from lightly_glare.evaluation.segmentation import (
    SegmentationScores,
    SegmentationSplit,
    cell_labels,
    confusion_matrix,
    dense_features,
    linear_segmentation_probe,
    load_segmentation_split,
    scores_from_confusion,
)
from lightly_glare.evaluation.statistics import (
    PairedDifference,
    paired_difference,
)

__all__ = [
    "DEFAULT_WEIGHT_DECAYS",
    "FEATURE_NAMES",
    "ClassificationScores",
    "LinearProbeResult",
    "PairedDifference",
    "SegmentationScores",
    "SegmentationSplit",
    "cell_labels",
    "classification_scores",
    "confusion_matrix",
    "dense_features",
    "extract_features",
    "fit_logistic_regression",
    "knn_classify",
    "linear_probe",
    "linear_segmentation_probe",
    "load_image_tensor",
    "load_segmentation_split",
    "mean_std",
    "paired_difference",
    "scores_from_confusion",
    "stratified_split",
]
