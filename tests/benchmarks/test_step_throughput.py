"""benchmarks/step_throughput.py: its options."""

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT
from tests.tools.experiments.test_pretraining_args import check_refuses_patch_counts


def load_benchmark(name: str = "step_throughput") -> ModuleType:
    """Imports ``benchmarks/<name>.py`` as a module."""
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_local_patches_per_view_takes_k_or_all_and_refuses_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    benchmark = load_benchmark()
    assert benchmark.parse_args([]).local_patches_per_view == [2]  # the library's
    args = benchmark.parse_args(["--local-patches-per-view", "all", "4"])
    assert args.local_patches_per_view == [None, 4]
    check_refuses_patch_counts(benchmark.parse_args, capsys)


def test_rounds_time_every_step_in_turn() -> None:
    benchmark = load_benchmark()
    calls: list[str] = []
    runners = {
        label: benchmark.StepRunner(
            lambda label=label: calls.append(label), batch=2, device="cpu"
        )
        for label in ("dino", "glare")
    }
    args = benchmark.parse_args(["--rounds", "3", "--steps", "2"])
    results = benchmark.time_rounds(runners, args)
    assert calls == ["dino", "dino", "glare", "glare"] * 3
    for speeds, peak in results.values():
        assert len(speeds) == 3 and min(speeds) > 0 and peak > 0


@pytest.mark.parametrize(
    ("option", "bad", "message"),
    [
        ("--rounds", "0", "expected a positive integer, got 0"),
        ("--steps", "0", "expected a positive integer, got 0"),
        ("--student-drop-path", "1", "expected a number in [0, 1), got 1"),
    ],
)
def test_refuses_bad_rounds_steps_and_drop_path(
    option: str, bad: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmark = load_benchmark()
    with pytest.raises(SystemExit):
        benchmark.parse_args([option, bad])
    assert f"argument {option}: {message}" in capsys.readouterr().err
