import pytest
import torch

from lightly_glare.loss import SelfDistillationLoss
from lightly_glare.loss import self_distillation_loss as module


def reference_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    ts: float,
    tt: float,
) -> torch.Tensor:
    total = torch.zeros(())
    for s_row, t_row in zip(student, teacher, strict=True):
        p_t = torch.exp((t_row - center[0]) / tt)
        p_t = p_t / p_t.sum()
        log_p_s = s_row / ts - torch.logsumexp(s_row / ts, dim=0)
        total = total - (p_t * log_p_s).sum()
    return total / len(student)


@pytest.mark.parametrize("teacher_temp", [0.04, 0.07])
@pytest.mark.parametrize("m", [1, 7])
def test_matches_reference_and_updates_center(teacher_temp: float, m: int) -> None:
    loss_fn = SelfDistillationLoss(output_dim=16, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.normal_()
    center_before = loss_fn.center.clone()
    student, teacher = torch.randn(m, 16), torch.randn(m, 16)
    loss = loss_fn(teacher, student, teacher_temp=teacher_temp)
    expected = reference_loss(student, teacher, center_before, 0.1, teacher_temp)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        loss_fn.center, 0.9 * center_before + 0.1 * teacher.mean(0, keepdim=True)
    )


def composite_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    valid: torch.Tensor,
    ts: float,
    tt: float,
) -> torch.Tensor:
    """The loss as plain autograd ops: the expression the fused one replaces."""
    p_t = torch.softmax((teacher.float() - center) / tt, dim=-1)
    log_p_s = torch.log_softmax(student.float() / ts, dim=-1)
    per_item = -(p_t * log_p_s).sum(dim=-1)
    return torch.where(valid, per_item, 0.0).sum() / valid.sum().clamp_min(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_rows", [1, 3, 64])
def test_row_chunks_give_the_composite_value_gradient_and_center(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, chunk_rows: int
) -> None:
    """Chunks that do not divide M (1, 3 rows of 10), or one chunk (64)."""
    monkeypatch.setattr(module, "_CPU_CHUNK_ELEMENTS", chunk_rows * 32)
    torch.manual_seed(0)
    loss_fn = SelfDistillationLoss(output_dim=32, center_momentum=0.9)
    loss_fn.center.normal_()
    center_before = loss_fn.center.clone()
    teacher = (3 * torch.randn(10, 32)).to(dtype)
    student = (3 * torch.randn(10, 32)).to(dtype).requires_grad_()
    reference_student = student.detach().clone().requires_grad_()
    valid = torch.tensor([True, False] * 5)
    loss = loss_fn(teacher, student, valid=valid, teacher_temp=0.05)
    expected = composite_loss(
        reference_student, teacher, center_before, valid, 0.1, 0.05
    )
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    assert student.grad is not None and student.grad.dtype == dtype
    torch.testing.assert_close(student.grad, reference_student.grad)
    batch_mean = teacher.float()[valid].mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, 0.9 * center_before + 0.1 * batch_mean)


def test_fused_backward_passes_gradcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_CPU_CHUNK_ELEMENTS", 2 * 6)  # 2-row chunks
    teacher = torch.randn(5, 6, dtype=torch.float64)
    student = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([True, True, False, True, True])

    def loss_of_student(s: torch.Tensor) -> torch.Tensor:  # a fresh center per call
        return SelfDistillationLoss(output_dim=6).double()(teacher, s, valid=valid)

    assert torch.autograd.gradcheck(loss_of_student, (student,))


def test_gradient_only_through_student() -> None:
    loss_fn = SelfDistillationLoss(output_dim=8)
    student = torch.randn(4, 8, requires_grad=True)
    teacher = torch.randn(4, 8, requires_grad=True)
    loss_fn(teacher, student).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_empty_pairs_give_zero_and_keep_center() -> None:
    loss_fn = SelfDistillationLoss(output_dim=8)
    loss_fn.center.fill_(0.5)
    student = torch.zeros(0, 8, requires_grad=True)
    loss = loss_fn(torch.zeros(0, 8), student)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.equal(loss_fn.center, torch.full((1, 8), 0.5))


@pytest.mark.parametrize("m", [1, 6])
def test_valid_mask_counts_only_valid_pairs(m: int) -> None:
    masked, subset = SelfDistillationLoss(output_dim=16), SelfDistillationLoss(16)
    masked.center.normal_()
    subset.center.copy_(masked.center)
    student = torch.randn(m + 3, 16, requires_grad=True)
    teacher = torch.randn(m + 3, 16)
    valid = torch.zeros(m + 3, dtype=torch.bool)
    valid[torch.randperm(m + 3)[:m]] = True
    teacher[~valid] = 1e4  # padding that would dominate loss and center
    loss = masked(teacher, student, valid=valid)
    torch.testing.assert_close(loss, subset(teacher[valid], student[valid]))
    torch.testing.assert_close(masked.center, subset.center)
    loss.backward()
    assert student.grad is not None
    assert (student.grad[~valid] == 0).all() and (student.grad[valid] != 0).any()


def test_no_valid_pair_gives_zero_and_keeps_center() -> None:
    loss_fn = SelfDistillationLoss(output_dim=8)
    loss_fn.center.fill_(0.5)
    student = torch.randn(4, 8, requires_grad=True)
    valid = torch.zeros(4, dtype=torch.bool)
    loss = loss_fn(torch.randn(4, 8), student, valid=valid)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(loss_fn.center, torch.full((1, 8), 0.5))


def test_rejects_mismatched_shapes() -> None:
    loss_fn = SelfDistillationLoss(output_dim=8)
    with pytest.raises(ValueError, match=r"\(3, 8\) and \(4, 8\)"):
        loss_fn(torch.randn(3, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="output dimension 8"):
        loss_fn(torch.randn(3, 9), torch.randn(3, 9))
    with pytest.raises(ValueError, match=r"valid mask of shape \(3,\)"):
        loss_fn(torch.randn(3, 8), torch.randn(3, 8), valid=torch.ones(3))
    with pytest.raises(ValueError, match=r"valid mask of shape \(3,\)"):
        loss_fn(torch.randn(3, 8), torch.randn(3, 8), valid=torch.ones(4).bool())


def test_compiled_loss_gives_the_eager_gradient_despite_the_center_update() -> None:
    """The center update must not change what the backward pass reads.

    With an in-place update of the center buffer, a compiled graph calling the
    loss twice (as the two directions of a symmetric term do) gave a wrong
    gradient: the first call's backward read the center the second call had
    updated.
    """
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 16)
    inputs, teacher = torch.randn(6, 8), torch.randn(6, 16)
    grads, centers = [], []
    for compile in (False, True):
        loss_fn = SelfDistillationLoss(output_dim=16)
        loss_fn.center.normal_(generator=torch.Generator().manual_seed(1))

        def loss_of_head(x: torch.Tensor, loss_fn: SelfDistillationLoss = loss_fn):
            student = head(x)
            return loss_fn(teacher, student, teacher_temp=0.05) + loss_fn(
                teacher.flip(0), 2 * student
            )

        head.zero_grad()
        (torch.compile(loss_of_head) if compile else loss_of_head)(inputs).backward()
        grads.append(head.weight.grad.clone())
        centers.append(loss_fn.center)
    torch._dynamo.reset()
    torch.testing.assert_close(grads[1], grads[0])
    torch.testing.assert_close(centers[1], centers[0])
