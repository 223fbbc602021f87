"""GlareLoss: global, regional and local self-distillation in one module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from lightly.loss import DINOLoss
from torch import Tensor, nn

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
    CENTER_MOMENTUM,
    STUDENT_TEMP,
    TEACHER_TEMP,
    GlareLocalLoss,
    GlareRegionalLoss,
)
from lightly_glare.loss.teacher_statistics import TeacherStatistics, teacher_statistics

#: A term's matched projections: a pair, or ``(teacher, student[, valid])``.
PairLike = MatchedPair | tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor | None]


class GlareLoss(nn.Module):
    """GLARE's total loss ``lg L_glob + lr L_reg + l1 L_loc1 + l2 L_loc2``.

    - [0]: GLARE, Ebouky et al., "Enhancing Semantic Segmentation with Continual
      Self-Supervised Pre-training", https://arxiv.org/abs/2509.17816

    Every term is DINO-style self-distillation (teacher probabilities from a
    centred, sharpened softmax; student log-probabilities; cross-entropy) with its
    own center:

    - global: lightly's :class:`~lightly.loss.DINOLoss` on the [CLS] projections
      of the two views, across views (view 0's teacher against view 1's student
      and vice versa);
    - regional: region representations of one view against the same regions
      in the other view;
    - local distortion (L_loc1): distorted student patches against the teacher's
      clean patches at the same position;
    - local matching (L_loc2): student patches against the teacher's tokens of
      the other view at the geometrically matching position.

    A term with weight 0 is neither required from the model nor computed (see
    :attr:`active_terms`, which :class:`~lightly_glare.models.GLARE` accepts as
    ``terms``). The forward returns the total; the detached parts are kept in
    :attr:`last_terms` for logging, and the teacher's entropies per term in
    :attr:`last_statistics` (whether the objective can teach: a teacher near
    log K sends no signal, whatever the loss says).

    Attributes:
        weights: Weight per term name. Defaults to 1 for every term (ours).
        last_terms: Detached value per computed term from the last forward.
        last_statistics: The teacher's :class:`TeacherStatistics` per computed
            term from the last forward.

    Like lightly's losses it takes tensors, teacher first: the [CLS]
    projections of both views (as :class:`~lightly.loss.DINOLoss`) and, per
    dense term, matched ``(teacher, student[, valid])`` projections. A whole
    :class:`GlareOutput` of :class:`~lightly_glare.models.GLARE` is accepted too.

    Examples:
        >>> criterion = GlareLoss(output_dim=8192)
        >>> loss = criterion(teacher_cls, student_cls,  # lists of (B, K) per view
        ...                  regional=(teacher_regions, student_regions),
        ...                  local_distortion=(teacher_patches, student_patches),
        ...                  local_matching=(teacher_match, student_match, valid))
        >>> model = GLARE(vit, terms=criterion.active_terms)  # or the whole model
        >>> loss = criterion(model(views, geometry), epoch=epoch)
        >>> criterion.last_terms  # {"global": ..., "regional": ..., ...}
    """

    def __init__(
        self,
        output_dim: int = DEFAULT_OUTPUT_DIM,
        patch_output_dim: int | None = None,
        global_weight: float = 1.0,
        regional_weight: float = 1.0,
        local_distortion_weight: float = 1.0,
        local_matching_weight: float = 1.0,
        student_temp: float = STUDENT_TEMP,
        teacher_temp: float = TEACHER_TEMP,
        warmup_teacher_temp: float = TEACHER_TEMP,
        warmup_teacher_temp_epochs: int = 0,
        center_momentum: float = CENTER_MOMENTUM,
    ) -> None:
        """Creates the loss.

        Args:
            output_dim: Output dimension of the [CLS]/region head. Defaults to
                the heads' default, :data:`~lightly_glare.loss.DEFAULT_OUTPUT_DIM`.
            patch_output_dim: Output dimension of the patch head; None means
                ``output_dim``.
            global_weight: Weight of the global term.
            regional_weight: Weight of the regional term.
            local_distortion_weight: Weight of L_loc1.
            local_matching_weight: Weight of L_loc2.
            student_temp: Student temperature (DINO: 0.1).
            teacher_temp: Teacher temperature after warm-up (DINO: 0.04; 0.07 is
                the usual upper value).
            warmup_teacher_temp: Teacher temperature at epoch 0.
            warmup_teacher_temp_epochs: Epochs of linear teacher-temperature
                warm-up; 0 disables it.
            center_momentum: Momentum of every term's center (DINO: 0.9).
        """
        super().__init__()
        self.weights = {
            GLOBAL: global_weight,
            REGIONAL: regional_weight,
            LOCAL_DISTORTION: local_distortion_weight,
            LOCAL_MATCHING: local_matching_weight,
        }
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError(f"Loss weights must be >= 0, got {self.weights}.")
        if not self.active_terms:
            raise ValueError("At least one loss weight must be positive.")
        patch_output_dim = output_dim if patch_output_dim is None else patch_output_dim
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.global_loss = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=0,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.pair_losses = nn.ModuleDict(
            {
                REGIONAL: GlareRegionalLoss(
                    output_dim, student_temp, teacher_temp, center_momentum
                ),
                LOCAL_DISTORTION: GlareLocalLoss(
                    patch_output_dim, student_temp, teacher_temp, center_momentum
                ),
                LOCAL_MATCHING: GlareLocalLoss(
                    patch_output_dim, student_temp, teacher_temp, center_momentum
                ),
            }
        )
        self.last_terms: dict[str, Tensor] = {}
        self.last_statistics: dict[str, TeacherStatistics] = {}

    @property
    def active_terms(self) -> tuple[str, ...]:
        """Names of the terms with a positive weight, in :data:`ALL_TERMS` order."""
        return tuple(term for term in ALL_TERMS if self.weights[term] > 0)

    @torch.no_grad()
    def set_centers(self, centers: Mapping[str, Tensor]) -> None:
        """Starts the terms' centres at given mean teacher outputs.

        DINO starts its center at 0 and lets the moving average find the
        teacher's mean; with heads initialised from the data
        (:func:`~lightly_glare.models.initialize_heads_from_data`, which
        returns these means) the first steps are then centred too (ours).

        Args:
            centers: Mean teacher output per term name, shape (K,) each.

        Raises:
            ValueError: An unknown term or a centre of the wrong size.
        """
        for term, center in centers.items():
            if term not in self.weights:
                raise ValueError(f"Unknown term {term!r}; terms are {ALL_TERMS}.")
            owner = self.global_loss if term == GLOBAL else self.pair_losses[term]
            buffer = cast(Tensor, owner.center)  # (1, K) or lightly's (1, 1, K)
            if center.shape != buffer.shape[-1:]:
                raise ValueError(
                    f"The {term} centre must have shape ({buffer.shape[-1]},), got "
                    f"{tuple(center.shape)}."
                )
            buffer.copy_(center.reshape(buffer.shape))

    def teacher_temperature(self, epoch: float | None) -> float:
        """Teacher temperature at ``epoch`` (linear warm-up, then constant)."""
        if epoch is None or epoch >= self.warmup_teacher_temp_epochs:
            return self.teacher_temp
        progress = epoch / self.warmup_teacher_temp_epochs
        return self.warmup_teacher_temp + progress * (
            self.teacher_temp - self.warmup_teacher_temp
        )

    def forward(
        self,
        teacher_out: GlareOutput | Sequence[Tensor],
        student_out: Sequence[Tensor] | None = None,
        *,
        regional: PairLike | None = None,
        local_distortion: PairLike | None = None,
        local_matching: PairLike | None = None,
        epoch: float | None = None,
    ) -> Tensor:
        """Computes the weighted total of the active terms.

        Either tensors, teacher first as in lightly's losses, or a whole
        :class:`GlareOutput` from :class:`~lightly_glare.models.GLARE`:

        .. code-block:: python

            loss = criterion(teacher_cls, student_cls, regional=(t_reg, s_reg),
                             local_distortion=(t_p, s_p),
                             local_matching=(t_m, s_m, valid), epoch=epoch)
            loss = criterion(model(views, geometry), epoch=epoch)

        Args:
            teacher_out: Teacher [CLS] projections, one (B, K) tensor per view
                (as lightly's ``DINOLoss``; may be empty when the global weight
                is 0), or a :class:`GlareOutput` holding every term.
            student_out: Student [CLS] projections, one (B, K) tensor per view;
                None with a :class:`GlareOutput`.
            regional: Matched region projections: a :class:`MatchedPair` or
                ``(teacher (M, K), student (M, K)[, valid (M,)])``.
            local_distortion: Matched patch projections of L_loc1, same forms.
            local_matching: Matched patch projections of L_loc2, same forms.
            epoch: Current (possibly fractional) epoch, for the teacher
                temperature warm-up.

        Returns:
            The scalar total loss.

        Raises:
            ValueError: If an active term's inputs are missing.
        """
        if isinstance(teacher_out, GlareOutput):
            tensors = (student_out, regional, local_distortion, local_matching)
            if any(item is not None for item in tensors):
                raise ValueError(
                    "Pass either a GlareOutput alone or tensors, not both."
                )
            output = teacher_out
        else:
            output = GlareOutput(
                teacher_global=list(teacher_out),
                student_global=list(student_out or []),
                pairs={
                    term: as_pair(pair)
                    for term, pair in (
                        (REGIONAL, regional),
                        (LOCAL_DISTORTION, local_distortion),
                        (LOCAL_MATCHING, local_matching),
                    )
                    if pair is not None
                },
            )
        return self._total(output, self.teacher_temperature(epoch))

    def _global_statistics(
        self, teacher_global: Sequence[Tensor], temp: float
    ) -> TeacherStatistics:
        """The global teacher's entropies, with the centre ``DINOLoss`` uses."""
        logits = torch.cat(list(teacher_global)).detach().float()  # (2B, K)
        center = self.global_loss.center.reshape(1, -1)  # (1, K), before its update
        return teacher_statistics(torch.softmax((logits - center) / temp, dim=-1))

    def _total(self, output: GlareOutput, temp: float) -> Tensor:
        terms: dict[str, Tensor] = {}
        statistics: dict[str, TeacherStatistics] = {}
        for term in self.active_terms:
            if term == GLOBAL:
                if not output.teacher_global or not output.student_global:
                    raise ValueError(
                        f"The global term has weight {self.weights[term]} but no "
                        "[CLS] projections were given (teacher_out, student_out)."
                    )
                statistics[term] = self._global_statistics(output.teacher_global, temp)
                terms[term] = self.global_loss(
                    output.teacher_global, output.student_global, teacher_temp=temp
                )
                continue
            if term not in output.pairs:
                raise ValueError(
                    f"The loss term '{term}' has weight {self.weights[term]} but its "
                    f"inputs are missing: pass {term}=(teacher, student), or build "
                    "the model with `terms=criterion.active_terms`."
                )
            pair = output.pairs[term]
            loss = self.pair_losses[term]
            terms[term] = loss(
                pair.teacher, pair.student, valid=pair.valid, teacher_temp=temp
            )
            statistics[term] = cast(TeacherStatistics, loss.last_statistics)
        # Stacked, not summed term by term: under torch.compile (torch 2.14), a
        # graph returning a pointwise function of a single term together with
        # that term's detached value returns the total without its gradient.
        detached = torch.stack(list(terms.values())).detach().unbind()
        self.last_terms = dict(zip(terms, detached, strict=True))
        self.last_statistics = statistics
        return torch.stack(
            [self.weights[name] * value for name, value in terms.items()]
        ).sum()


def as_pair(pair: PairLike) -> MatchedPair:
    """A :class:`MatchedPair` from a pair or a ``(teacher, student[, valid])`` tuple.

    Args:
        pair: The matched projections.

    Returns:
        The pair.
    """
    if isinstance(pair, MatchedPair):
        return pair
    if len(pair) not in (2, 3):
        raise ValueError(
            "A matched pair is (teacher, student) or (teacher, student, valid), got "
            f"{len(pair)} items."
        )
    return MatchedPair(*pair)
