"""DINO-style self-distillation between aligned student/teacher outputs."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class SelfDistillationLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher and student distributions.

    For M aligned pairs (patches or regions) of projection-head outputs:
    ``P_t = softmax((t - c) / tau_t)`` (no gradient), ``P_s = softmax(s / tau_s)``,
    loss ``= mean_m -sum_k P_t log P_s``. The center c is an exponential moving
    average of the teacher outputs, ``c <- mu c + (1 - mu) mean(t)``, computed
    from sums and counts all-reduced across ranks so that a rank with no pair
    (e.g. no region survived) neither deadlocks nor divides by zero. An optional
    validity mask restricts both means to the valid pairs (fixed-shape batches
    padded with invalid pairs give the loss of their valid pairs alone). Follows
    DINO's ``DINOLoss`` and iBOT's patch loss (``lightly.loss.IBOTPatchLoss``), for
    pairs that are already matched.

    - [0]: DINO, Caron et al., ICCV 2021, https://arxiv.org/abs/2104.14294
    - [1]: iBOT, Zhou et al., ICLR 2022, https://arxiv.org/abs/2111.07832

    Attributes:
        output_dim: Dimension K of the projection-head outputs.
        student_temp: Student temperature. Defaults to 0.1.
        teacher_temp: Teacher temperature when none is passed to ``forward``.
            Defaults to 0.04.
        center_momentum: Momentum mu of the center. Defaults to 0.9.

    Examples:
        >>> loss_fn = SelfDistillationLoss(output_dim=8192)
        >>> teacher, student = torch.randn(50, 8192), torch.randn(50, 8192)
        >>> loss = loss_fn(teacher, student)  # teacher first, as lightly's losses
    """

    def __init__(
        self,
        output_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if student_temp <= 0 or teacher_temp <= 0:
            raise ValueError(
                "Temperatures must be positive, got "
                f"student_temp={student_temp}, teacher_temp={teacher_temp}."
            )
        self.output_dim = output_dim
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.center_momentum = center_momentum
        self.center: Tensor
        self.register_buffer("center", torch.zeros(1, output_dim))

    def forward(
        self,
        teacher_out: Tensor,
        student_out: Tensor,
        valid: Tensor | None = None,
        teacher_temp: float | None = None,
    ) -> Tensor:
        """Computes the loss and updates the center.

        Args:
            teacher_out: Teacher head outputs, shape (M, K) (no gradient).
            student_out: Student head outputs for the same M items, shape (M, K).
            valid: Optional boolean mask of the pairs that count, shape (M,);
                invalid pairs enter neither the loss nor the center. None: all.
            teacher_temp: Overrides the teacher temperature (for warm-up).

        Returns:
            The mean cross-entropy over the (valid) pairs (0 when there is none,
            still connected to the student graph).
        """
        student, teacher = student_out, teacher_out
        if student.shape != teacher.shape or student.ndim != 2:
            raise ValueError(
                "Expected teacher and student outputs of equal shape (M, K), got "
                f"{tuple(teacher.shape)} and {tuple(student.shape)}."
            )
        if valid is not None and (
            valid.dtype != torch.bool or valid.shape != student.shape[:1]
        ):
            raise ValueError(
                f"Expected a boolean valid mask of shape ({student.shape[0]},), got "
                f"shape {tuple(valid.shape)} and dtype {valid.dtype}."
            )
        if student.shape[1] != self.output_dim:
            raise ValueError(
                f"Expected output dimension {self.output_dim}, got {student.shape[1]}."
            )
        temp = self.teacher_temp if teacher_temp is None else teacher_temp
        teacher = teacher.detach().float()
        teacher_probs = F.softmax((teacher - self.center) / temp, dim=-1)  # (M, K)
        student_log_probs = F.log_softmax(student.float() / self.student_temp, dim=-1)
        per_item = -(teacher_probs * student_log_probs).sum(dim=-1)  # (M,)
        if valid is None:
            loss = per_item.sum() / max(student.shape[0], 1)
        else:  # no host sync: the count stays a tensor
            count = valid.sum(dtype=per_item.dtype).clamp_min(1.0)
            loss = torch.where(valid, per_item, 0.0).sum() / count
        self.update_center(teacher, valid)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: Tensor, valid: Tensor | None = None) -> None:
        """Moves the center towards the mean of ``teacher`` across ranks.

        Args:
            teacher: Teacher head outputs, shape (M, K).
            valid: Optional boolean mask of the rows to average, shape (M,).
        """
        if valid is None:
            count = teacher.new_full((1,), float(teacher.shape[0]))
        else:
            teacher = teacher.masked_fill(~valid[:, None], 0.0)  # (M, K)
            count = valid.sum(dtype=teacher.dtype)[None]  # (1,)
        stats = torch.cat([teacher.sum(dim=0), count])  # (K + 1,): sum and count
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        total, count = stats[:-1], stats[-1]
        batch_center = (total / count.clamp_min(1.0))[None]  # (1, K)
        updated = self.center * self.center_momentum + batch_center * (
            1 - self.center_momentum
        )
        # A new tensor rather than an in-place copy: the loss's backward may
        # still read the old center (torch.compile saves or recomputes from it).
        self.center = torch.where(count > 0, updated, self.center)


class GlareRegionalLoss(SelfDistillationLoss):
    """GLARE's regional term: self-distillation between matched region projections.

    The projections of the same regions in the two views (pooled by
    :class:`~lightly_glare.models.CrossAttentionRegionPooling` and projected by
    the [CLS] head): teacher on one view against student on the other. Same
    computation as :class:`SelfDistillationLoss`, with its own center.

    Examples:
        >>> loss_fn = GlareRegionalLoss(output_dim=8192)
        >>> loss = loss_fn(teacher_regions, student_regions)  # (M, K) each
    """


class GlareLocalLoss(SelfDistillationLoss):
    """GLARE's local terms: self-distillation between matched patch projections.

    L_loc1 pairs each distorted student patch with the teacher's clean patch at
    the same position; L_loc2 pairs each student patch with the teacher's
    tokens of the other view at the geometrically matching position
    (:func:`~lightly_glare.transforms.match_patches`). Fixed-size pair
    sampling pads with invalid pairs, excluded by ``valid``.

    Examples:
        >>> loss_fn = GlareLocalLoss(output_dim=8192)
        >>> loss = loss_fn(teacher_patches, student_patches, valid=valid)
    """
