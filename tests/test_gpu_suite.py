"""benchmarks/gpu_suite.sh in its CPU smoke mode: every section runs and reports."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_smoke_mode_writes_the_report(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "gpu_suite.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert len(sections) == 6
    assert report.count("(exit 0,") == 6
    assert "dino (2 views)" in report and "glare + loading" in report
    assert "32 x  6 x  65 bf16" in report  # the attention kernels table
    assert "Iter(train) [2/2]" in report
    assert not (tmp_path / "crops").exists()
