"""benchmarks/step_throughput.py: its options."""

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT
from tests.tools.experiments.test_pretraining_args import check_refuses_patch_counts


def load_benchmark() -> ModuleType:
    """Imports ``benchmarks/step_throughput.py`` as a module."""
    path = ROOT / "benchmarks" / "step_throughput.py"
    spec = importlib.util.spec_from_file_location("step_throughput", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_throughput"] = module
    spec.loader.exec_module(module)
    return module


def test_local_patches_per_view_takes_k_or_all_and_refuses_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    benchmark = load_benchmark()
    assert benchmark.parse_args([]).local_patches_per_view == [4]
    args = benchmark.parse_args(["--local-patches-per-view", "all", "4"])
    assert args.local_patches_per_view == [None, 4]
    check_refuses_patch_counts(benchmark.parse_args, capsys)
