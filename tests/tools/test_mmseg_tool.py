"""tools/mmseg_tool.py: mmseg's own tools, run unchanged on this project's configs.

Run alone, mmseg's tools fail on them with the errors docs/mmseg.md quotes; the
tests check both, so that the page says what a user sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mmseg

from tests.conftest import ROOT
from tests.openmmlab.test_analysis import ROADS_CONFIG, TINY_MODEL

MMSEG_TOOLS = Path(mmseg.__file__).parent / ".mim" / "tools"
#: A user's config that inherits ours by the lightly_glare:: scope.
USER_CONFIG = (
    '_base_ = ["lightly_glare::segmentation/'
    'upernet_glare-vit-s16_mln_4xb4-160k_ade20k-512x512.py"]\n'
    "model = dict(decode_head=dict(num_classes=7))\n"
)
TINY_ARGS = [f"{key}={value}" for key, value in TINY_MODEL.items()]


def python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_mmseg_print_config_reads_a_lightly_glare_base(tmp_path: Path) -> None:
    config = tmp_path / "my_config.py"
    config.write_text(USER_CONFIG)
    # mmseg's train.py imports mmengine and mmseg.registry only: the base fails.
    alone = python(str(MMSEG_TOOLS / "train.py"), str(config), cwd=tmp_path)
    assert alone.returncode != 0
    raw = "AssertionError: mmengine does not support to load lightly_glare config."
    assert raw in alone.stderr
    docs = (ROOT / "docs" / "mmseg.md").read_text()
    assert raw in docs

    # mmseg's print_config.py also dumps the config into ./example.py: not here.
    ours = python(
        str(ROOT / "tools" / "mmseg_tool.py"),
        "misc/print_config",
        str(config),
        cwd=tmp_path,
    )
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert "type='GlareViT'" in ours.stdout and "num_classes=7" in ours.stdout
    assert not (ROOT / "example.py").exists()


def test_mmseg_analysis_tools_pass_the_mmcv_ext_import_as_documented(
    roads_folder: Path, tmp_path: Path
) -> None:
    """Alone, mmseg's browse_dataset.py and get_flops.py stop at ``import
    mmseg.models`` on mmcv-lite. Through mmseg_tool they get past it and stop
    in mmseg 1.2.2's own code (OpenCV 5 in its visualizer; both input_shape
    and inputs given to mmengine 0.10.7's counter): docs/mmseg.md quotes each
    error and points to our tools."""
    docs = (ROOT / "docs" / "mmseg.md").read_text()
    browse = [
        ROADS_CONFIG,
        "--not-show",
        "--output-dir",
        str(tmp_path / "vis"),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={roads_folder}",
    ]
    flops = [ROADS_CONFIG, "--shape", "112", "--cfg-options", *TINY_ARGS]
    upstream = {
        "browse_dataset": (browse, "in function 'rectangle'"),
        "get_flops": (
            flops,
            'ValueError: "input_shape" and "inputs" cannot be both set.',
        ),
    }
    raw = "ModuleNotFoundError: No module named 'mmcv._ext'"
    assert raw in docs
    for name, (args, error) in upstream.items():
        alone = python(str(MMSEG_TOOLS / "analysis_tools" / f"{name}.py"), *args)
        assert alone.returncode != 0 and raw in alone.stderr, name
        ours = python("tools/mmseg_tool.py", name, *args)
        assert ours.returncode != 0 and raw not in ours.stderr, name
        assert error in ours.stderr, ours.stderr[-2000:]
        assert error in docs, name


def test_lists_mmseg_tools_and_names_an_unknown_one() -> None:
    listed = python("tools/mmseg_tool.py", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "  misc/print_config\n" in listed.stdout
    assert "  analysis_tools/get_flops\n" in listed.stdout
    unknown = python("tools/mmseg_tool.py", "get_flop")
    assert unknown.returncode != 0
    assert "unknown command 'get_flop'. Did you mean: get_flops" in unknown.stderr
