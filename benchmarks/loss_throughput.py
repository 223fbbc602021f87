"""Forward + backward time of SelfDistillationLoss against the composite expression.

``SelfDistillationLoss`` (GLARE's regional and local terms) computes its
cross-entropy as one fused autograd node, in row chunks that stay in the CPU's
L2 cache. This script times it against the same loss written as plain autograd
ops (the implementation it replaced: softmax, log-softmax, product, sum, each a
pass over the whole (M, K) tensor), on the shapes of a GLARE step: M rows of K
head outputs in bf16 (as autocast gives them), a validity mask, fp32 maths.

Examples:
    # the rows of a DINOv2-S/14 step at batch 16: regional 192, local 2 x 64
    python benchmarks/loss_throughput.py --rows 64 128 192 448 --dim 8192
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lightly_glare.loss import SelfDistillationLoss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[64, 128, 192, 448])
    parser.add_argument("--dim", type=int, default=8192, help="head output size K")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    return parser.parse_args(argv)


def composite_loss(
    loss_fn: SelfDistillationLoss,
    teacher: torch.Tensor,
    student: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """The same loss value as plain autograd ops (no center update)."""
    teacher_probs = torch.softmax(
        (teacher.float() - loss_fn.center) / loss_fn.teacher_temp, dim=-1
    )
    log_probs = torch.log_softmax(student.float() / loss_fn.student_temp, dim=-1)
    per_item = -(teacher_probs * log_probs).sum(dim=-1)
    return torch.where(valid, per_item, 0.0).sum() / valid.sum().clamp_min(1)


def milliseconds(call: Callable[[], None], repeats: int) -> float:
    """Mean wall time of ``call`` in ms, after two untimed calls."""
    for _ in range(2):
        call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e3


def time_both(rows: int, args: argparse.Namespace) -> tuple[float, float]:
    """Median ms of the composite and the fused loss (forward + backward)."""
    generator = torch.Generator().manual_seed(rows)
    loss_fn = SelfDistillationLoss(args.dim)
    shape = (rows, args.dim)
    teacher = torch.randn(shape, generator=generator).bfloat16()
    student = torch.randn(shape, generator=generator).bfloat16().requires_grad_()
    valid = torch.rand(rows, generator=generator) > 0.2

    def fused() -> None:
        loss_fn(teacher, student, valid=valid).backward()

    def composite() -> None:
        composite_loss(loss_fn, teacher, student, valid).backward()

    times: dict[str, list[float]] = {"composite": [], "fused": []}
    for _ in range(args.rounds):
        times["composite"].append(milliseconds(composite, args.repeats))
        times["fused"].append(milliseconds(fused, args.repeats))
    return statistics.median(times["composite"]), statistics.median(times["fused"])


def main() -> None:
    args = parse_args()
    print(f"threads={torch.get_num_threads()} K={args.dim} bf16 inputs, fp32 maths")
    print(f"{'rows':>6s} {'composite ms':>13s} {'fused ms':>9s} {'fused / comp.':>14s}")
    for rows in args.rows:
        old, new = time_both(rows, args)
        print(f"{rows:6d} {old:13.2f} {new:9.2f} {new / old:14.2f}")


if __name__ == "__main__":
    main()
