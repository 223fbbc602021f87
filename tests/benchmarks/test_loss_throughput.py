"""benchmarks/loss_throughput.py compares the loss with an equal expression."""

import torch

from lightly_glare.loss import SelfDistillationLoss
from tests.benchmarks.test_step_throughput import load_benchmark


def test_composite_expression_equals_the_loss_in_value_and_gradient() -> None:
    benchmark = load_benchmark("loss_throughput")
    torch.manual_seed(0)
    loss_fn = SelfDistillationLoss(output_dim=32)
    loss_fn.center.normal_()
    teacher = torch.randn(9, 32).bfloat16()
    student = torch.randn(9, 32).bfloat16().requires_grad_()
    valid = torch.rand(9) > 0.3
    composite = benchmark.composite_loss(loss_fn, teacher, student, valid)
    (composite_grad,) = torch.autograd.grad(composite, student)
    loss = loss_fn(teacher, student, valid=valid)  # moves the center: after
    (grad,) = torch.autograd.grad(loss, student)
    torch.testing.assert_close(loss, composite)
    torch.testing.assert_close(grad, composite_grad)
