"""GLARE's losses (pure PyTorch + lightly)."""

from lightly_glare.loss.glare_loss import GlareLoss
from lightly_glare.loss.glare_output import (
    ALL_TERMS,
    GLOBAL,
    LOCAL_DISTORTION,
    LOCAL_MATCHING,
    REGIONAL,
    GlareOutput,
    MatchedPair,
)
from lightly_glare.loss.self_distillation_loss import SelfDistillationLoss

__all__ = [
    "ALL_TERMS",
    "GLOBAL",
    "LOCAL_DISTORTION",
    "LOCAL_MATCHING",
    "REGIONAL",
    "GlareLoss",
    "GlareOutput",
    "MatchedPair",
    "SelfDistillationLoss",
]
