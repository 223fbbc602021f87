"""The teacher diagnostics of a run: the uniform-teacher warning, the summary."""

from dataclasses import replace
from typing import Any

import pytest
from torch.utils.data import DataLoader

from lightly_glare.pretraining.loop import PretrainConfig, StepEvent, train_steps
from lightly_glare.pretraining.monitoring import (
    UniformTeacherWarning,
    step_scalars,
    teacher_summary,
)
from tests.test_training import loader, small_model  # noqa: F401  (fixture)


def _teacher(entropy: float, terms: tuple[str, ...] = ("global", "regional")) -> Any:
    return {
        f"teacher/{term}/{key}": value
        for term in terms
        for key, value in (("entropy", entropy), ("batch_entropy", 0.9), ("kl", 0.1))
    }


@pytest.fixture
def event(loader: DataLoader) -> StepEvent:  # noqa: F811
    """A real step event of the plain loop (its teacher scalars are replaced)."""
    model, criterion = small_model()
    events: list[StepEvent] = []
    train_steps(
        model,
        criterion,
        loader,
        PretrainConfig(steps=1),
        batch_size=2,
        log=lambda _: None,
        callbacks=[events.append],
    )
    return events[0]


def test_steps_log_the_teacher_of_every_term(event: StepEvent) -> None:
    scalars = step_scalars(event)
    terms = event.terms.keys()
    assert {k for k in scalars if k.startswith("teacher/")} == {
        f"teacher/{term}/{key}"
        for term in terms
        for key in ("entropy", "batch_entropy", "kl")
    }
    for term in terms:  # fractions of log K
        assert 0 < scalars[f"teacher/{term}/entropy"] <= 1 + 1e-6
        assert 0 < scalars[f"teacher/{term}/batch_entropy"] <= 1 + 1e-6


def test_a_uniform_teacher_is_reported_once_with_the_fix(event: StepEvent) -> None:
    lines: list[str] = []
    warning = UniformTeacherWarning(lines.append, patience=3)
    entropies = [0.99, 0.99, 0.5, 0.97, 0.99, 0.98, 0.99, 0.99]  # streak from 4
    for step, entropy in enumerate(entropies, 1):
        warning(replace(event, step=step, teacher=_teacher(entropy)))
    assert len(lines) == 1 and warning.warned
    assert "for 3 steps (up to step 6)" in lines[0]
    assert "head_init='data'" in lines[0]  # the fix for random heads
    assert "momentum_start closer to 1, e.g. 0.996" in lines[0]  # for a collapse


def test_one_informative_term_is_not_a_uniform_teacher(event: StepEvent) -> None:
    lines: list[str] = []
    warning = UniformTeacherWarning(lines.append, patience=2)
    for step in range(1, 6):
        teacher = {**_teacher(0.99), "teacher/regional/entropy": 0.6}
        warning(replace(event, step=step, teacher=teacher))
    assert not lines


def test_summary_reads_the_first_and_last_records() -> None:
    records = [
        {"step": 1, **_teacher(0.4)},
        {"step": 2, **_teacher(0.5)},
        {"step": 3, **_teacher(0.6)},
    ]
    lines = teacher_summary(records)
    assert "step 1 -> 3" in lines[0]
    values = "entropy 0.40 -> 0.60, batch entropy 0.90 -> 0.90, KL 0.10 -> 0.10"
    assert lines[1:] == [f"    global: {values}", f"    regional: {values}"]
    assert teacher_summary([{"step": 1, "loss/total": 1.0}]) == []
