"""Teacher diagnostics: entropies against log K, the KL, starting centres."""

import math

import pytest
import torch

from lightly_glare.loss import (
    ALL_TERMS,
    GLOBAL,
    GlareLoss,
    GlareOutput,
    MatchedPair,
    statistics_scalars,
    teacher_statistics,
)


def test_uniform_and_one_hot_teachers() -> None:
    uniform = teacher_statistics(torch.full((6, 32), 1 / 32))
    assert uniform.log_k == pytest.approx(math.log(32))
    assert float(uniform.entropy) == pytest.approx(math.log(32))
    assert float(uniform.batch_entropy) == pytest.approx(math.log(32))
    one_hot = teacher_statistics(torch.eye(32)[:8])  # 8 sharp, distinct rows
    assert float(one_hot.entropy) == pytest.approx(0.0, abs=1e-7)
    assert float(one_hot.batch_entropy) == pytest.approx(math.log(8))
    collapsed = teacher_statistics(torch.eye(32)[[3] * 8])  # all on one prototype
    assert float(collapsed.batch_entropy) == pytest.approx(0.0, abs=1e-7)


def test_invalid_rows_do_not_count() -> None:
    probs = torch.softmax(torch.randn(10, 16), dim=-1)
    valid = torch.tensor([True, False] * 5)
    masked = teacher_statistics(probs, valid)
    kept = teacher_statistics(probs[valid])
    torch.testing.assert_close(masked.entropy, kept.entropy)
    torch.testing.assert_close(masked.batch_entropy, kept.batch_entropy)
    none = teacher_statistics(probs, torch.zeros(10, dtype=torch.bool))
    assert float(none.entropy) == 0.0


def _output(batch: int = 4, dim: int = 32) -> GlareOutput:
    return GlareOutput(
        teacher_global=[torch.randn(batch, dim) for _ in range(2)],
        student_global=[torch.randn(batch, dim) for _ in range(2)],
        pairs={
            term: MatchedPair(
                torch.randn(6, dim), torch.randn(6, dim), torch.rand(6) > 0.3
            )
            for term in ALL_TERMS[1:]
        },
    )


def test_loss_statistics_are_those_of_its_teacher_distributions() -> None:
    """Each term's statistics: the centred, sharpened teacher before the update."""
    criterion = GlareLoss(output_dim=32, teacher_temp=0.05)
    criterion.set_centers({term: torch.randn(32) for term in ALL_TERMS})
    centers = {
        GLOBAL: criterion.global_loss.center.reshape(1, -1).clone(),
        **{t: criterion.pair_losses[t].center.clone() for t in ALL_TERMS[1:]},
    }
    output = _output()
    criterion(output)
    assert criterion.last_statistics.keys() == set(ALL_TERMS)
    teacher = {GLOBAL: torch.cat(output.teacher_global)}
    valid = {GLOBAL: None}
    for term, pair in output.pairs.items():
        teacher[term], valid[term] = pair.teacher, pair.valid
    for term, stats in criterion.last_statistics.items():
        probs = torch.softmax((teacher[term] - centers[term]) / 0.05, dim=-1)
        expected = teacher_statistics(probs, valid[term])
        torch.testing.assert_close(stats.entropy, expected.entropy)
        torch.testing.assert_close(stats.batch_entropy, expected.batch_entropy)
    scalars = statistics_scalars(criterion.last_statistics, criterion.last_terms)
    for term, stats in criterion.last_statistics.items():
        log_k = math.log(32)
        loss = float(criterion.last_terms[term])
        assert scalars[f"teacher/{term}/entropy"] == pytest.approx(
            float(stats.entropy) / log_k
        )
        # cross-entropy = entropy + KL, and the KL is not negative (Gibbs)
        assert scalars[f"teacher/{term}/kl"] == pytest.approx(
            (loss - float(stats.entropy)) / log_k
        )
        assert scalars[f"teacher/{term}/kl"] >= -1e-6


def test_set_centers_starts_every_term_centred() -> None:
    """A teacher equal to its starting centre is uniform at the first step."""
    criterion = GlareLoss(output_dim=16)
    mean = torch.randn(16)
    criterion.set_centers({term: mean for term in ALL_TERMS})
    output = _output(dim=16)
    output.teacher_global = [mean.expand(4, 16).clone() for _ in range(2)]
    for pair in output.pairs.values():
        pair.teacher = mean.expand(6, 16).clone()
    criterion(output)
    for stats in criterion.last_statistics.values():
        assert float(stats.entropy) == pytest.approx(math.log(16), rel=1e-5)
    with pytest.raises(ValueError, match=r"must have shape \(16,\)"):
        criterion.set_centers({GLOBAL: torch.zeros(8)})
    with pytest.raises(ValueError, match="Unknown term 'globl'"):
        criterion.set_centers({"globl": torch.zeros(16)})
