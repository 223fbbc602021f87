"""tools/dataset_converters/prepare_data.py, run as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytest.importorskip("nibabel")


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "tools/dataset_converters/prepare_data.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_mri_twice(tmp_path: Path) -> None:
    first = _run("mri", "--out", str(tmp_path))
    assert "mri: reading the MNI ICBM152" in first
    assert '"train": 96, "val": 27' in first
    assert "grey_matter" in first
    second = _run("mri", "--out", str(tmp_path))
    assert "already prepared" in second
    assert '"train": 96, "val": 27' in second


def test_aerial_options(tmp_path: Path) -> None:
    output = _run(
        "aerial", "--out", str(tmp_path), "--tile-size", "256", "--no-landsat"
    )
    # 900 px -> 3 x 3 tiles of 256, 1 val row; 1300 px -> 5 x 5, 2 val rows.
    assert '"tiles": {"train": 6, "val": 3}' in output
    assert '"tiles": {"train": 15, "val": 10}' in output
    assert (tmp_path / "buildings" / "img_dir" / "val").is_dir()


def test_offline_without_cache_explains(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LIGHTLY_GLARE_CACHE": str(tmp_path / "empty_cache"),
        "PIP_CONFIG_FILE": os.devnull,  # no extra indexes / find-links
        "PIP_NO_INDEX": "1",  # pip finds nothing
        "https_proxy": "http://127.0.0.1:9",  # the direct fallback cannot connect
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [
            sys.executable,
            "tools/dataset_converters/prepare_data.py",
            "mri",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Could not download nilearn==0.14.1" in result.stderr
    assert str(tmp_path / "empty_cache") in result.stderr
    assert not (tmp_path / "img_dir").exists()
