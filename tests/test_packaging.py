"""``pip install`` of a built wheel carries the configs, the tools and the CLI.

The wheel is built from a copy of the checkout (``pip wheel --no-deps
--no-build-isolation``) and installed into a fresh virtual environment that
reuses the project venv's installed dependencies (torch, mmseg, ...) through a
``.pth`` line naming its site-packages: a path line does not process that
directory's own ``.pth`` files, so the project's editable install of
lightly_glare stays inactive (checked). Every command runs from an empty folder
with a clean environment (no PYTHONPATH): only the installed wheel can answer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_ade_folder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: What a build of the project reads (pyproject.toml names README.md).
BUILD_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "lightly_glare",
    "mmseg_configs",
    "tools",
)
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".mim")
#: mmseg's ViT-B UperNet shrunk to a ViT-Ti/16 at 64 px with 32-channel heads.
TINY_MODEL = [
    "model.backbone.arch=vit_tiny_patch16_224",
    "model.backbone.img_size=(64,64)",
    "model.backbone.checkpoint=None",
    "model.neck.in_channels=[192,192,192,192]",
    "model.neck.out_channels=192",
    "model.decode_head.in_channels=[192,192,192,192]",
    "model.decode_head.channels=32",
    "model.auxiliary_head.in_channels=192",
    "model.auxiliary_head.channels=32",
    "model.data_preprocessor.size=(64,64)",
]
USER_CONFIG = """\
# A user's config in any folder: the shipped config + one override.
_base_ = ['lightly_glare::glare_ade20k.py']
model = dict(backbone=dict(arch='vit_tiny_patch16_224', img_size=64, checkpoint=None))
"""
#: Run by the fresh venv's Python in an empty folder: argv = checkout, deps dir.
CHECK_INSTALLED = """\
import sys
from pathlib import Path

checkout, deps = Path(sys.argv[1]), Path(sys.argv[2])
import lightly_glare
from lightly_glare.cli import shipped_dir

package = Path(lightly_glare.__file__).resolve().parent
assert package.is_relative_to(Path(sys.prefix).resolve()), package
assert not package.is_relative_to(checkout), package
assert not any(name.startswith("__editable__") for name in sys.modules)
for entry in sys.path:
    path = Path(entry or ".").resolve()
    assert path == deps or not path.is_relative_to(checkout), sys.path
assert shipped_dir("configs") == package / ".mim" / "configs"
assert shipped_dir("tools") == package / ".mim" / "tools"

import lightly_glare.openmmlab
from mmengine.config import Config
from mmseg.registry import MODELS

cfg = Config.fromfile("my_config.py")
model = MODELS.build(cfg.model)
print(type(model).__name__, type(model.backbone).__name__)
print(cfg.model.backbone.arch, cfg.model.decode_head.num_classes)
print(cfg.train_dataloader.dataset.type)
"""


def tree_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user's shell with the fresh venv active."""
    env = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**env, "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=IGNORED)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    pip_wheel += ["--no-build-isolation", "--no-index", "-q", "-w", str(dist), "."]
    run(pip_wheel, cwd=source)
    (path,) = dist.glob("lightly_glare-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; dependencies from the project venv."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    python = str(venv / "bin" / "python")
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=venv.parent,
        env=clean_env(venv),
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # the project venv's site-packages
    (Path(purelib) / "_project_dependencies.pth").write_text(deps + "\n")
    # --ignore-installed: never uninstall the project venv's editable install.
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    run([*install, "--ignore-installed", str(wheel)], cwd=venv.parent)
    return venv


def empty_dir(tmp_path: Path, name: str = "user") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_wheel_ships_configs_and_tools(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points_txt,) = [n for n in names if n.endswith("/entry_points.txt")]
        entry_points = archive.read(entry_points_txt).decode()
    for tree, source in (("configs", "mmseg_configs"), ("tools", "tools")):
        prefix = f"lightly_glare/.mim/{tree}/"
        shipped = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
        assert shipped == tree_files(ROOT / source), tree
    assert "lightly_glare/.mim/configs/glare_ade20k.py" in names
    assert "lightly-glare = lightly_glare.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "mmseg_configs/", "tools/")) for n in names)


def test_user_config_inherits_shipped_config_from_the_wheel(
    venv: Path, tmp_path: Path
) -> None:
    user = empty_dir(tmp_path)
    (user / "my_config.py").write_text(USER_CONFIG)
    (user / "check.py").write_text(CHECK_INSTALLED)
    deps = sysconfig.get_paths()["purelib"]
    result = run(
        [str(venv / "bin" / "python"), "check.py", str(ROOT), deps],
        cwd=user,
        env=clean_env(venv),
    )
    assert result.stdout.splitlines() == [
        "EncoderDecoder GlareViT",
        "vit_tiny_patch16_224 150",  # the override, and ADE20k's 150 classes
        "ADE20KDataset",
    ]


def test_console_script_trains_a_shipped_config(venv: Path, tmp_path: Path) -> None:
    """``lightly-glare train glare_ade20k``: 2 iterations + validation, tiny model."""
    user = empty_dir(tmp_path)
    env = clean_env(venv)
    help_text = run(["lightly-glare", "--help"], cwd=user, env=env).stdout
    assert "  train " in help_text and "  export " in help_text
    data, work_dir = tmp_path / "ade", tmp_path / "work"
    make_ade_folder(data, counts=(2, 1), size=(128, 96))
    options = [
        *TINY_MODEL,
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
        "train_dataloader.batch_size=2",  # PPM pooling needs 2 in training
        "train_cfg.max_iters=2",
        "train_cfg.val_interval=2",
        "train_dataloader.dataset.pipeline.2.scale=(128,64)",
        "train_dataloader.dataset.pipeline.3.crop_size=(64,64)",
        "val_dataloader.dataset.pipeline.1.scale=(128,64)",
        "default_hooks.checkpoint.save_last=False",
        "default_hooks.logger.interval=1",
        *(
            f"{split}_dataloader.{key}"
            for split in ("train", "val")
            for key in ("num_workers=0", "persistent_workers=False")
        ),
    ]
    command = ["lightly-glare", "train", "glare_ade20k", "--work-dir", str(work_dir)]
    run([*command, "--cfg-options", *options], cwd=user, env=env)
    assert (work_dir / "glare_ade20k.py").is_file()  # mmengine's dump of the config
    (scalars,) = work_dir.glob("*/vis_data/scalars.json")
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    (metrics,) = [r for r in records if "mIoU" in r]
    assert 0.0 <= metrics["mIoU"] <= 100.0
    assert not list(user.iterdir())  # nothing written into the current folder
