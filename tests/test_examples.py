"""The Lightly-style example scripts run end to end on real images (CPU, tiny)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from lightly_glare.models import UniAdapterViT
from lightly_glare.weights.export import load_adapted_backbone
from tests.conftest import real_photo

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model",
    "vit_tiny_patch16_224",
    "--input-size",
    "32",
    "--batch-size",
    "2",
    "--output-dim",
    "64",
    "--workers",
    "0",
    "--max-steps",
    "3",
]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    photo = real_photo()
    for i in range(4):
        photo.crop((i * 50, i * 40, i * 50 + 256, i * 40 + 256)).save(
            folder / f"{i}.jpg"
        )
    return folder


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "ssl.pth"
    torch.save(
        {"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}, path
    )
    return path


def run_example(script: str, args: list[str], cwd: Path) -> str:
    # Launcher variables left by other tests (tools/train.py sets LOCAL_RANK)
    # would make Lightning believe it runs inside an existing process group.
    launcher = {"LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def check_export(path: Path) -> None:
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32
    )
    load_adapted_backbone(UniAdapterViT(vit), path)


def test_pytorch_example(image_folder: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.pth"
    log = run_example(
        "examples/pytorch/glare.py",
        [
            "--data",
            str(image_folder),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            *TINY,
        ],
        tmp_path,
    )
    losses = [
        float(line.split()[3]) for line in log.splitlines() if line.startswith("step ")
    ]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    check_export(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [
        "examples/pytorch_lightning/glare.py",
        "examples/pytorch_lightning_distributed/glare.py",
    ],
)
def test_lightning_examples(
    script: str, image_folder: Path, checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export.pth"
    run_example(
        script,
        [
            "--data",
            str(image_folder),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            *TINY,
        ],
        tmp_path,
    )
    metrics = (next((tmp_path / "lightning_logs").rglob("metrics.csv"))).read_text()
    rows = [line.split(",") for line in metrics.splitlines()]
    column = rows[0].index("train_loss")
    losses = [float(row[column]) for row in rows[1:] if row[column]]
    assert len(losses) >= 3 and all(torch.isfinite(torch.tensor(losses)))
    check_export(out)
