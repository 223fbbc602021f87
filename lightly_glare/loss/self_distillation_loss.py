"""DINO-style self-distillation between aligned student/teacher outputs."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lightly_glare.loss.teacher_statistics import TeacherStatistics, teacher_statistics

#: Student softmax temperature (DINO).
STUDENT_TEMP = 0.1
#: Teacher softmax temperature after any warm-up (DINO).
TEACHER_TEMP = 0.04
#: EMA momentum of the teacher center (DINO).
CENTER_MOMENTUM = 0.9


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
        last_statistics: The teacher's entropies in the last forward
            (:class:`TeacherStatistics`; None before the first).

    Examples:
        >>> loss_fn = SelfDistillationLoss(output_dim=8192)
        >>> teacher, student = torch.randn(50, 8192), torch.randn(50, 8192)
        >>> loss = loss_fn(teacher, student)  # teacher first, as lightly's losses
    """

    def __init__(
        self,
        output_dim: int,
        student_temp: float = STUDENT_TEMP,
        teacher_temp: float = TEACHER_TEMP,
        center_momentum: float = CENTER_MOMENTUM,
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
        self.last_statistics: TeacherStatistics | None = None

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
        chunks = _row_chunks(student)
        teacher_probs, teacher_sum = _teacher_targets(
            teacher.detach(), self.center, temp, valid, chunks
        )  # (M, K), (K,)
        self.last_statistics = teacher_statistics(teacher_probs, valid)
        per_item = _SoftCrossEntropy.apply(
            student, teacher_probs, self.student_temp, chunks
        )  # (M,): -sum_k P_t log P_s
        if valid is None:
            count = per_item.new_full((), float(student.shape[0]))
            loss = per_item.sum() / count.clamp_min(1.0)
        else:  # no host sync: the count stays a tensor
            count = valid.sum(dtype=per_item.dtype)
            loss = torch.where(valid, per_item, 0.0).sum() / count.clamp_min(1.0)
        self._move_center(teacher_sum, count)
        return loss

    @torch.no_grad()
    def _move_center(self, teacher_sum: Tensor, count: Tensor) -> None:
        """Moves the center towards the mean teacher output across ranks.

        Args:
            teacher_sum: Sum of this rank's (valid) teacher outputs, shape (K,).
            count: Number of rows in that sum, a scalar tensor.
        """
        stats = torch.cat([teacher_sum, count[None]])  # (K + 1,): sum and count
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


#: Elements per row chunk of the loss on CPU (ours): 2**18 fp32 values = 1 MiB,
#: so each chunk's passes (cast, shift, softmax, dot) stay in a core's L2 cache
#: instead of streaming whole (M, K) tensors through memory once per pass.
_CPU_CHUNK_ELEMENTS = 2**18


def _row_chunks(outputs: Tensor) -> list[slice]:
    """Row slices in which the loss processes ``outputs`` of shape (M, K).

    One slice on accelerators and under ``torch.compile`` (which fuse the
    passes themselves); L2-sized blocks of rows on CPU in eager mode.
    """
    rows, width = outputs.shape
    if outputs.device.type != "cpu" or torch.compiler.is_compiling():
        return [slice(0, rows)]
    step = max(1, _CPU_CHUNK_ELEMENTS // max(width, 1))
    return [slice(start, start + step) for start in range(0, rows, step)]


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    """fp32 for low-precision outputs (bf16 autocast), fp64 kept as is."""
    return torch.promote_types(tensor.dtype, torch.float32)


@torch.no_grad()
def _teacher_targets(
    teacher: Tensor,
    center: Tensor,
    temp: float,
    valid: Tensor | None,
    chunks: list[slice],
) -> tuple[Tensor, Tensor]:
    """The teacher's centred, sharpened distributions and its row sum.

    Args:
        teacher: Teacher outputs, shape (M, K).
        center: The current center, shape (1, K).
        temp: Teacher temperature.
        valid: Boolean mask of the rows that enter the sum, shape (M,); None:
            every row.
        chunks: Row slices to process one at a time (:func:`_row_chunks`).

    Returns:
        ``softmax((teacher - center) / temp)`` with shape (M, K) and the
        sum of the (valid) teacher rows with shape (K,), for the center.
    """
    dtype = _compute_dtype(teacher)
    probs = torch.empty(teacher.shape, dtype=dtype, device=teacher.device)
    total = teacher.new_zeros(teacher.shape[1], dtype=dtype)
    for rows in chunks:
        logits = teacher[rows].to(dtype, copy=True)  # (m, K), shifted in place
        kept = logits if valid is None else logits.where(valid[rows, None], 0.0)
        total += kept.sum(dim=0)
        probs[rows] = torch.softmax(logits.sub_(center).div_(temp), dim=-1)
    return probs, total


def _student_logits(
    student: Tensor, rows: slice, dtype: torch.dtype, temp: float
) -> Tensor:
    """``student[rows] / temp`` in ``dtype``, a new tensor: (m, K).

    The forward and the backward of :class:`_SoftCrossEntropy` both take the
    student's logits from here, so the backward recomputes exactly them.
    """
    return student[rows].to(dtype, copy=True).div_(temp)


class _SoftCrossEntropy(torch.autograd.Function):
    """Per-row ``-sum_k p_k log softmax(s / tau)_k`` with a fused backward (ours).

    Computed row chunk by row chunk; the backward recomputes the student
    softmax and returns ``g * (softmax(s / tau) - p) / tau`` (the rows of ``p``
    sum to 1), instead of keeping the (M, K) log-probabilities and running one
    autograd node per elementwise op. Same value and gradient as the composite
    expression, in less time on CPU (memory-bound passes over (M, K);
    ``benchmarks/loss_throughput.py``).
    """

    @staticmethod
    def forward(
        ctx: Any, student: Tensor, probs: Tensor, temp: float, chunks: list[slice]
    ) -> Tensor:
        per_item = probs.new_empty(student.shape[0])  # (M,)
        for rows in chunks:
            logits = _student_logits(student, rows, probs.dtype, temp)  # (m, K)
            log_probs = torch.log_softmax(logits, dim=-1)  # (m, K)
            per_item[rows] = -torch.linalg.vecdot(probs[rows], log_probs)
        ctx.save_for_backward(student, probs)
        ctx.temp, ctx.chunks = temp, chunks
        return per_item

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        student, probs = ctx.saved_tensors
        grad_student = torch.empty_like(student)  # (M, K), the student's dtype
        for rows in ctx.chunks:
            logits = _student_logits(student, rows, probs.dtype, ctx.temp)
            scale = (grad[rows] / ctx.temp)[:, None]  # (m, 1)
            grad_student[rows] = (
                torch.softmax(logits, dim=-1).sub_(probs[rows]).mul_(scale)
            )
        return grad_student, None, None, None


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
