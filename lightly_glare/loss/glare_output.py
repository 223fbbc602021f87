"""The projections a GLARE model hands to :class:`~lightly_glare.loss.GlareLoss`."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

GLOBAL = "global"
REGIONAL = "regional"
LOCAL_DISTORTION = "local_distortion"
LOCAL_MATCHING = "local_matching"
#: The four GLARE consistency terms, in the order they are reported.
ALL_TERMS: tuple[str, ...] = (GLOBAL, REGIONAL, LOCAL_DISTORTION, LOCAL_MATCHING)
#: Default size K of the projections: the output size of GLARE's heads and of
#: the loss's centres (ours; DINO uses 65,536, too large for dense terms on a
#: small target domain). Defined here, with the projections both sides share,
#: so that the loss needs nothing from the models.
DEFAULT_OUTPUT_DIM = 8192


@dataclass
class MatchedPair:
    """Student and teacher projections of M matched items (patches or regions).

    Teacher first, as in lightly's losses.

    Attributes:
        teacher: Teacher head outputs, shape (M, K).
        student: Student head outputs for the same items, shape (M, K); carries
            gradients.
        valid: Which of the M pairs count, shape (M,) (bool); None: all of them.
            Fixed-size pair sampling (``GLARE(local_patches_per_view=...)``)
            pads images with fewer candidates than samples with invalid pairs.
    """

    teacher: Tensor
    student: Tensor
    valid: Tensor | None = None


@dataclass
class GlareOutput:
    """Everything :class:`~lightly_glare.loss.GlareLoss` needs from one step.

    Attributes:
        teacher_global: Teacher [CLS] projections, one (B, K) tensor per view.
        student_global: Student [CLS] projections, one (B, K) tensor per view.
        pairs: Matched student/teacher projections per non-global term
            (``"regional"``, ``"local_distortion"``, ``"local_matching"``); a term
            that was not computed is absent.
        patch_masks: Which patches the patch augmentation distorted, shape
            (V, B, N) (bool), or None when no patch augmentation ran.
        region_masks: Regions sampled on each view, shape (V, B, R, N) (bool),
            or None when the regional term was not computed.
    """

    teacher_global: list[Tensor]
    student_global: list[Tensor]
    pairs: dict[str, MatchedPair] = field(default_factory=dict)
    patch_masks: Tensor | None = None
    region_masks: Tensor | None = None
