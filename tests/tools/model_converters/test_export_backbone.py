"""The export tool on files it cannot read: one line naming the file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, load_tool


def truncated(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.randn(64, 64)}, "meta": {}}, path)
    path.write_bytes(path.read_bytes()[:2000])


def not_a_torch_file(path: Path) -> None:
    path.write_text("iteration 300, loss 4.1\n")


def pickled_code(path: Path) -> None:
    torch.save({"state_dict": {}, "meta": {"hook": Path("x")}}, path)


@pytest.mark.parametrize(
    "make", [truncated, not_a_torch_file, pickled_code], ids=lambda f: f.__name__
)
def test_unreadable_checkpoint_exits_with_one_line_naming_it(
    make: Callable[[Path], None], tmp_path: Path
) -> None:
    path = tmp_path / "iter_300.pth"
    make(path)
    with pytest.raises(SystemExit) as exit_info:
        load_tool("model_converters/export_backbone").main(
            [str(path), str(tmp_path / "out.pth")]
        )
    message = str(exit_info.value.code)
    assert message.startswith(f"export_backbone: cannot read checkpoint {path} (")
    assert "\n" not in message
    assert not (tmp_path / "out.pth").exists()


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "absent.pth"
    with pytest.raises(SystemExit, match=f"checkpoint {absent} not found"):
        load_tool("model_converters/export_backbone").main(
            [str(absent), str(tmp_path / "out.pth")]
        )


def test_command_line_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "iter_300.pth"
    truncated(path)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/model_converters/export_backbone.py"),
            str(path),
            "o",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line]
    assert "Traceback" not in result.stderr
    assert any(line.startswith("export_backbone: cannot read") for line in lines)
    assert str(path) in result.stderr
