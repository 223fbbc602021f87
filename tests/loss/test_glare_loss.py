import pytest
import torch
from lightly.loss import DINOLoss

from lightly_glare.loss import (
    ALL_TERMS,
    GlareLocalLoss,
    GlareLoss,
    GlareOutput,
    GlareRegionalLoss,
    MatchedPair,
    SelfDistillationLoss,
)

#: Weights that leave only the global term.
ONLY_GLOBAL = {"regional_weight": 0, "local_distortion_weight": 0,
               "local_matching_weight": 0}  # fmt: skip


def make_output(batch: int = 4, dim: int = 32) -> GlareOutput:
    pairs = {
        term: MatchedPair(torch.randn(5 + i, dim), torch.randn(5 + i, dim))
        for i, term in enumerate(ALL_TERMS[1:])
    }
    return GlareOutput(
        teacher_global=[torch.randn(batch, dim) for _ in range(2)],
        student_global=[torch.randn(batch, dim) for _ in range(2)],
        pairs=pairs,
    )


@pytest.mark.parametrize("teacher_temp", [0.04, 0.07])
def test_global_term_equals_lightly_dino_loss(teacher_temp: float) -> None:
    output = make_output()
    criterion = GlareLoss(
        output_dim=32,
        teacher_temp=teacher_temp,
        regional_weight=0,
        local_distortion_weight=0,
        local_matching_weight=0,
    )
    reference = DINOLoss(
        output_dim=32, teacher_temp=teacher_temp, warmup_teacher_temp=teacher_temp
    )
    expected = reference(output.teacher_global, output.student_global)
    torch.testing.assert_close(criterion(output), expected)
    # Same center update as the reference.
    torch.testing.assert_close(criterion.global_loss.center, reference.center)
    assert criterion.active_terms == ("global",)


def test_global_term_is_symmetric_cross_view_formula() -> None:
    output = make_output(dim=16)
    criterion = GlareLoss(
        output_dim=16,
        regional_weight=0,
        local_distortion_weight=0,
        local_matching_weight=0,
    )

    def h(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        p_t = torch.softmax(t / 0.04, -1)
        return -(p_t * torch.log_softmax(s / 0.1, -1)).sum(-1).mean()

    (s0, s1), (t0, t1) = output.student_global, output.teacher_global
    torch.testing.assert_close(criterion(output), 0.5 * (h(t1, s0) + h(t0, s1)))


def test_total_is_weighted_sum_of_terms() -> None:
    output = make_output()
    weights = {
        "global_weight": 0.5,
        "regional_weight": 2.0,
        "local_distortion_weight": 1.5,
        "local_matching_weight": 0.25,
    }
    criterion = GlareLoss(output_dim=32, **weights)
    total = criterion(output)
    parts = criterion.last_terms
    assert set(parts) == set(ALL_TERMS)
    expected = sum(
        w * parts[t] for w, t in zip(weights.values(), ALL_TERMS, strict=True)
    )
    torch.testing.assert_close(total, expected)
    # Each pair term matches a standalone SelfDistillationLoss.
    pair = output.pairs["regional"]
    torch.testing.assert_close(
        parts["regional"], SelfDistillationLoss(32)(pair.teacher, pair.student)
    )


@pytest.mark.parametrize("term", [*ALL_TERMS, "all"])
def test_compiled_loss_gives_the_eager_total_and_gradients(term: str) -> None:
    """One active term or all: torch.compile keeps the total's gradient."""
    weights = {f"{name}_weight": float(term in (name, "all")) for name in ALL_TERMS}
    output = make_output(dim=16)
    students = [*output.student_global, *(p.student for p in output.pairs.values())]
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        criterion = GlareLoss(output_dim=16, **weights)
        leaves = [s.detach().clone().requires_grad_() for s in students]
        output.student_global = leaves[:2]
        for pair, leaf in zip(output.pairs.values(), leaves[2:], strict=True):
            pair.student = leaf
        loss_fn = torch.compile(criterion) if compiled else criterion
        total = loss_fn(output)
        assert total.requires_grad
        total.backward()
        grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]
        statistics = {
            name: (float(item.entropy), float(item.batch_entropy))
            for name, item in criterion.last_statistics.items()
        }
        results.append((total.detach(), criterion.last_terms, grads, statistics))
    torch._dynamo.reset()
    (
        (eager, eager_terms, eager_grads, eager_stats),
        (
            compiled,
            compiled_terms,
            grads,
            compiled_stats,
        ),
    ) = results
    assert compiled_stats.keys() == eager_terms.keys()
    for name, values in eager_stats.items():
        assert compiled_stats[name] == pytest.approx(values, rel=1e-5)
    torch.testing.assert_close(compiled, eager)
    assert compiled_terms.keys() == eager_terms.keys()
    for name, value in eager_terms.items():
        torch.testing.assert_close(compiled_terms[name], value)
    assert any(g.abs().sum() > 0 for g in eager_grads)
    for got, expected in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_pair_validity_restricts_each_term_to_its_valid_pairs() -> None:
    output = make_output()
    subsets: dict[str, MatchedPair] = {}
    for term, pair in output.pairs.items():
        pair.valid = torch.rand(pair.student.shape[0]) < 0.5
        pair.valid[0] = True
        subsets[term] = MatchedPair(pair.teacher[pair.valid], pair.student[pair.valid])
    masked, subset = GlareLoss(output_dim=32), GlareLoss(output_dim=32)
    masked(output)
    subset(GlareOutput(output.teacher_global, output.student_global, subsets))
    for term in ALL_TERMS:
        torch.testing.assert_close(masked.last_terms[term], subset.last_terms[term])
    for term, loss_fn in masked.pair_losses.items():
        torch.testing.assert_close(loss_fn.center, subset.pair_losses[term].center)


def test_missing_term_is_a_clear_error() -> None:
    output = make_output()
    del output.pairs["regional"]
    with pytest.raises(ValueError, match="'regional'.*active_terms"):
        GlareLoss(output_dim=32)(output)


def test_switched_off_term_is_not_required() -> None:
    output = make_output()
    del output.pairs["regional"]
    criterion = GlareLoss(output_dim=32, regional_weight=0)
    assert torch.isfinite(criterion(output))
    assert "regional" not in criterion.last_terms


def test_teacher_temperature_warmup() -> None:
    criterion = GlareLoss(
        warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=10
    )
    assert criterion.teacher_temperature(0) == pytest.approx(0.04)
    assert criterion.teacher_temperature(5) == pytest.approx(0.055)
    assert criterion.teacher_temperature(10) == pytest.approx(0.07)
    assert criterion.teacher_temperature(None) == pytest.approx(0.07)


def test_invalid_weights() -> None:
    with pytest.raises(ValueError, match="positive"):
        GlareLoss(global_weight=0, **ONLY_GLOBAL)
    with pytest.raises(ValueError, match=">= 0"):
        GlareLoss(global_weight=-1)


def test_tensor_inputs_equal_the_glare_output_path() -> None:
    """Teacher-first tensors, as in lightly's losses, give the same total."""
    output = make_output()
    from_output, from_tensors = GlareLoss(output_dim=32), GlareLoss(output_dim=32)
    pairs = output.pairs
    regional = pairs["regional"]
    matching = pairs["local_matching"]
    expected = from_output(output)
    total = from_tensors(
        output.teacher_global,
        output.student_global,
        regional=(regional.teacher, regional.student),
        local_distortion=pairs["local_distortion"],
        local_matching=(matching.teacher, matching.student, None),
    )
    torch.testing.assert_close(total, expected)
    for term, value in from_output.last_terms.items():
        torch.testing.assert_close(from_tensors.last_terms[term], value)


def test_tensor_inputs_name_a_missing_term() -> None:
    output = make_output()
    criterion = GlareLoss(output_dim=32)
    with pytest.raises(ValueError, match="'local_matching'.*inputs are missing"):
        criterion(
            output.teacher_global,
            output.student_global,
            regional=output.pairs["regional"],
            local_distortion=output.pairs["local_distortion"],
        )
    with pytest.raises(ValueError, match="no \\[CLS\\] projections"):
        GlareLoss(output_dim=32, **ONLY_GLOBAL)([], [])
    with pytest.raises(ValueError, match="either a GlareOutput alone or tensors"):
        criterion(output, output.student_global)


def test_term_losses_are_teacher_first() -> None:
    """GlareRegionalLoss / GlareLocalLoss: gradient reaches only the 2nd input."""
    for loss_cls in (GlareRegionalLoss, GlareLocalLoss):
        teacher = torch.randn(5, 16, requires_grad=True)
        student = torch.randn(5, 16, requires_grad=True)
        loss_cls(output_dim=16)(teacher, student).backward()
        assert teacher.grad is None
        assert student.grad is not None and student.grad.abs().sum() > 0
