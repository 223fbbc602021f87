"""tools/analysis_tools/visualize_attention.py and visualize_pca.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, load_tool, real_photo
from tests.visualization.test_visualization import PHOTO, TITLE_PIXELS

TINY = ["--arch", "vit_tiny_patch16_224", "--img-size", "64"]


@pytest.mark.parametrize("name", ["visualize_attention", "visualize_pca"])
def test_tools_refuse_random_weights_without_flag(name: str, tmp_path: Path) -> None:
    tool = load_tool(f"analysis_tools/{name}")
    base = ["--image", str(PHOTO), "--out", str(tmp_path / "x.png"), *TINY]
    with pytest.raises(SystemExit, match="--random-init"):
        tool.main([*base, "--checkpoint", "none"])
    with pytest.raises(SystemExit, match="does not exist"):
        tool.main([*base, "--checkpoint", str(tmp_path / "missing.pth")])
    with pytest.raises(SystemExit, match="multiple of the patch size 16"):
        tool.main([*base[:-1], "60", "--checkpoint", "none", "--random-init"])
    assert not (tmp_path / "x.png").exists()


def _run_tool(name: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "analysis_tools" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_visualize_attention_tool_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "attention.png"
    stdout = _run_tool(
        "visualize_attention",
        *["--image", str(PHOTO), "--out", str(out), *TINY, "--panel-height", "96"],
        *["--checkpoint", "none", "--random-init", "--label", "before"],
        *["--compare-checkpoint", "none", "--compare-label", "after"],
    )
    assert str(out) in stdout
    with Image.open(out) as png:  # vit_tiny: 3 heads; two models
        assert png.size == ((1 + 3) * 96, 2 * (96 + TITLE_PIXELS))
        assert np.asarray(png.convert("L")).std() > 10


def test_visualize_pca_tool_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "pca.png"
    other = tmp_path / "flipped.png"
    real_photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    stdout = _run_tool(
        "visualize_pca",
        *["--image", str(PHOTO), "--image", str(other), "--out", str(out), *TINY],
        *["--checkpoint", "none", "--random-init", "--remove-background"],
        *["--panel-height", "64"],
    )
    assert str(out) in stdout
    with Image.open(out) as png:  # images + one PCA row, two columns
        assert png.size == (2 * 64, 2 * (64 + TITLE_PIXELS))
        pca_row = np.asarray(png.convert("RGB"))[TITLE_PIXELS * 2 + 64 :]
        assert (pca_row.sum(axis=-1) < 30).any()  # some background is black
        assert (pca_row.sum(axis=-1) > 100).any()  # some foreground is coloured
