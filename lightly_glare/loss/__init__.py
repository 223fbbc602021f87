"""GLARE's losses (pure PyTorch + lightly)."""

from lightly_glare.loss.glare_loss import GlareLoss, PairLike, as_pair
from lightly_glare.loss.glare_output import (
    ALL_TERMS,
    DEFAULT_OUTPUT_DIM,
    GLOBAL,
    LOCAL_DISTORTION,
    LOCAL_MATCHING,
    REGIONAL,
    GlareOutput,
    MatchedPair,
)
from lightly_glare.loss.self_distillation_loss import (
    GlareLocalLoss,
    GlareRegionalLoss,
    SelfDistillationLoss,
)
from lightly_glare.loss.teacher_statistics import (
    TEACHER_PREFIX,
    TeacherStatistics,
    statistics_scalars,
    teacher_statistics,
)

__all__ = [
    "ALL_TERMS",
    "DEFAULT_OUTPUT_DIM",
    "GLOBAL",
    "LOCAL_DISTORTION",
    "LOCAL_MATCHING",
    "REGIONAL",
    "GlareLocalLoss",
    "GlareLoss",
    "GlareRegionalLoss",
    "GlareOutput",
    "MatchedPair",
    "PairLike",
    "SelfDistillationLoss",
    "TEACHER_PREFIX",
    "TeacherStatistics",
    "as_pair",
    "statistics_scalars",
    "teacher_statistics",
]
