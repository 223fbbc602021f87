"""How informative a self-distillation teacher is: its entropies against log K."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

#: Prefix of the teacher diagnostics' scalar tags (``teacher/<term>/entropy``).
TEACHER_PREFIX = "teacher/"


@dataclass(frozen=True)
class TeacherStatistics:
    """Entropies of a step's teacher distributions, in nats (detached scalars).

    A teacher that teaches is sharp per item and spread over the batch: a low
    :attr:`entropy` and a high :attr:`batch_entropy`. Both near log K: the
    teacher is uniform and sends no signal; both low: it has collapsed onto a
    few prototypes. The loss is ``entropy + KL(teacher || student)``, so it
    can sit at log K while the teacher is sharp; watch these instead.

    Attributes:
        entropy: Mean entropy of the teacher's distributions over the items.
        batch_entropy: Entropy of the items' mean distribution.
        log_k: log K of the K prototypes (the entropy of a uniform teacher).
    """

    entropy: Tensor
    batch_entropy: Tensor
    log_k: float


def teacher_statistics(probs: Tensor, valid: Tensor | None = None) -> TeacherStatistics:
    """Entropies of teacher distributions.

    Args:
        probs: Teacher probabilities, shape (M, K), rows summing to 1.
        valid: Boolean mask of the rows that count, shape (M,); None: all.

    Returns:
        The mean per-row entropy and the entropy of the mean row over the
        (valid) rows; both 0 when no row is valid.
    """
    with torch.no_grad():
        probs = probs.float()
        weights = (
            torch.ones_like(probs[:, 0]) if valid is None else valid.to(probs.dtype)
        )  # (M,)
        count = weights.sum().clamp_min(1.0)
        per_row = -torch.special.xlogy(probs, probs).sum(dim=-1)  # (M,)
        mean = (weights[:, None] * probs).sum(dim=0) / count  # (K,)
        return TeacherStatistics(
            entropy=(weights * per_row).sum() / count,
            batch_entropy=-torch.special.xlogy(mean, mean).sum(),
            log_k=math.log(probs.shape[1]),
        )


def statistics_scalars(
    statistics: Mapping[str, TeacherStatistics], terms: Mapping[str, float]
) -> dict[str, float]:
    """A step's teacher diagnostics per term, as fractions of log K.

    One host transfer for all terms.

    Args:
        statistics: :attr:`GlareLoss.last_statistics` of the step.
        terms: The step's loss per term (the teacher-student cross-entropy),
            for the KL: ``cross-entropy - teacher entropy``.

    Returns:
        ``teacher/<term>/entropy``, ``teacher/<term>/batch_entropy`` and
        ``teacher/<term>/kl``, each divided by log K (1.0: the entropy of a
        uniform distribution over the K prototypes).
    """
    if not statistics:
        return {}
    values = torch.stack(
        [
            value
            for item in statistics.values()
            for value in (item.entropy, item.batch_entropy)
        ]
    ).tolist()
    scalars: dict[str, float] = {}
    for index, (term, item) in enumerate(statistics.items()):
        entropy, batch_entropy = values[2 * index : 2 * index + 2]
        scalars[f"{TEACHER_PREFIX}{term}/entropy"] = entropy / item.log_k
        scalars[f"{TEACHER_PREFIX}{term}/batch_entropy"] = batch_entropy / item.log_k
        scalars[f"{TEACHER_PREFIX}{term}/kl"] = (terms[term] - entropy) / item.log_k
    return scalars
