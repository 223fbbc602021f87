"""The Lightly-only install: the core needs torch, lightly and timm, no extra.

``pip install lightly-glare`` (no extra) must give a user of a Lightly script
the GLARE components: :mod:`lightly_glare.models`, ``loss``, ``transforms``,
``pretraining``, ``weights`` and ``data``. The OpenMMLab stack (``[openmmlab]``),
matplotlib (``[viz]``) and the offline-data readers (``[data]``) are extras.

The check runs in a fresh interpreter in which the extras' packages cannot be
imported. A meta-path hook answers every import of them (and of their
submodules) with ``ModuleNotFoundError`` and records the attempt; their
top-level names are also set to ``None`` in ``sys.modules``, so that
``importlib.util.find_spec`` answers None, exactly as for a package that is
not installed (torch probes optional packages such as onnx that way; a hook
alone would make the probe raise instead of answering "absent").
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

#: Every extra's distribution (as pyproject.toml names it) -> its import name;
#: the core must need none of them.
EXTRAS = {
    "mmengine": "mmengine",
    "mmsegmentation": "mmseg",
    "mmcv-lite": "mmcv",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "tensorboard": "tensorboard",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tifffile": "tifffile",
    "nibabel": "nibabel",
    "ftfy": "ftfy",
    "regex": "regex",
    "setuptools": "pkg_resources",
}

CORE_STEP = """\
import importlib.abc
import sys
import tempfile
from pathlib import Path

BLOCKED = set(sys.argv[1].split(","))
attempts = []


class BlockExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, BlockExtras())
for name in BLOCKED:
    sys.modules[name] = None

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import lightly_glare
import lightly_glare.weights
from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE, GlareProjectionHead, UniAdapterViT
from lightly_glare.pretraining.loop import PretrainConfig, train_steps
from lightly_glare.transforms import GlareTransform, PatchBlur
from timm.models.vision_transformer import VisionTransformer

torch.manual_seed(0)
with tempfile.TemporaryDirectory() as folder:
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(Path(folder) / f"{i}.png")
    dataset = ImageFolderDataset(folder, transform=GlareTransform(input_size=32))
    loader = DataLoader(dataset, batch_size=2)
    vit = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=0
    )
    head = GlareProjectionHead(48, hidden_dim=32, bottleneck_dim=8, output_dim=32)
    model = GLARE(
        vit, head=head, adapter_bottleneck=8, patch_augmentation=PatchBlur()
    )
    assert isinstance(model.backbone, UniAdapterViT)
    history = train_steps(
        model,
        GlareLoss(output_dim=32),
        loader,
        PretrainConfig(steps=1),
        batch_size=2,
        log=lambda _: None,
    )
assert len(history.losses) == 1 and np.isfinite(history.losses[0]), history
loaded = sorted({m.partition(".")[0] for m in sys.modules if sys.modules[m]})
print("blocked imports:", sorted(set(attempts)))
print("loaded extras:", sorted(set(loaded) & BLOCKED))
"""


def test_core_imports_and_trains_a_step_without_any_extra() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CORE_STEP, ",".join(EXTRAS.values())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "loaded extras: []" in result.stdout, result.stdout


def test_core_dependencies_name_no_extra() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    core = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)
    assert core is not None
    names = {
        re.split(r"[<>=!~\[ ]", entry, maxsplit=1)[0].lower()
        for entry in re.findall(r'"([^"]+)"', core[1])
    }
    assert {"torch", "lightly", "timm"} <= names
    assert not names & set(EXTRAS), names
    for extra in ("openmmlab", "viz", "data", "all", "dev"):
        assert re.search(rf"^{extra} = \[", text, re.M), extra


def test_the_all_extra_names_every_runtime_extra_once() -> None:
    """``[all]`` refers to the other extras instead of repeating their lists."""
    text = (ROOT / "pyproject.toml").read_text()
    table = re.search(
        r"^\[project\.optional-dependencies\]$(.*?)(?=^\[)", text, re.M | re.S
    )
    assert table is not None
    extras = set(re.findall(r"^([\w-]+) = \[", table[1], re.M))
    runtime = sorted(extras - {"all", "dev", "docs"})
    named = re.search(r'^all = \["lightly-glare\[([\w,-]+)\]"\]$', table[1], re.M)
    assert named is not None, 'all = ["lightly-glare[EXTRA,...]"]'
    assert sorted(named[1].split(",")) == runtime
