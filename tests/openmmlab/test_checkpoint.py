"""Resuming mmengine Runner checkpoints with torch.load(weights_only=True)."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner
from torch import nn
from torch.utils.data import Dataset

from lightly_glare.openmmlab.checkpoint import MMENGINE_RESUME_GLOBALS

MAX_ITERS = 4
RESUME_ITER = 2


class ToyDataset(Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 2 * MAX_ITERS

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {
            "inputs": torch.randn(3, generator=generator),
            "targets": torch.randn(1, generator=generator),
        }


class ToyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, mode: str = "tensor"
    ) -> dict[str, torch.Tensor]:
        return {"loss": ((self.linear(inputs) - targets) ** 2).mean()}


class RecordingHook(Hook):
    """Logs numpy values to the MessageHub; records losses and the resumed state."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.iter_at_start = -1
        self.scalars_at_start: dict[str, np.ndarray] = {}
        self.np_info_at_start: np.ndarray | None = None
        self.lr_at_start: list[float] = []

    def before_train(self, runner: Runner) -> None:  # after load_or_resume
        hub = runner.message_hub
        self.iter_at_start = runner.iter
        self.scalars_at_start = {
            key: buffer.data[0].copy() for key, buffer in hub.log_scalars.items()
        }
        self.np_info_at_start = hub.get_info("np_info")
        self.lr_at_start = runner.optim_wrapper.get_lr()["lr"]

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: Any = None,
        outputs: dict[str, torch.Tensor] | None = None,
    ) -> None:
        assert outputs is not None
        self.losses.append(outputs["loss"].item())
        runner.message_hub.update_scalar("train/np_metric", np.float64(batch_idx) + 0.5)
        runner.message_hub.update_info("np_info", np.arange(batch_idx + 1))


def train(work_dir: Path, name: str, resume_from: Path | None = None) -> RecordingHook:
    torch.manual_seed(0)
    hook = RecordingHook()
    runner = Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader={
            "dataset": ToyDataset(),
            "sampler": {"type": "DefaultSampler", "shuffle": True},
            "batch_size": 2,
            "collate_fn": {"type": "default_collate"},
        },
        train_cfg={"by_epoch": False, "max_iters": MAX_ITERS},
        optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}},
        param_scheduler={
            "type": "MultiStepLR",
            "milestones": [1, 3],
            "by_epoch": False,
        },
        default_hooks={
            "checkpoint": {
                "type": "CheckpointHook",
                "interval": RESUME_ITER,
                "by_epoch": False,
            },
            "logger": {"type": "LoggerHook", "interval": 1},
        },
        custom_hooks=[hook],
        randomness={"seed": 0},
        resume=resume_from is not None,
        load_from=None if resume_from is None else str(resume_from),
    )
    runner.train()
    return hook


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """A full run; returns its checkpoint after RESUME_ITER iterations and losses."""
    work_dir = tmp_path_factory.mktemp("uninterrupted")
    hook = train(work_dir, "glare_uninterrupted")
    return work_dir / f"iter_{RESUME_ITER}.pth", hook.losses


def test_resume_restores_state_and_continues_identically(
    uninterrupted: tuple[Path, list[float]], tmp_path: Path
) -> None:
    checkpoint, losses = uninterrupted
    assert len(losses) == MAX_ITERS

    resumed = train(tmp_path, "glare_resumed", resume_from=checkpoint)

    assert resumed.iter_at_start == RESUME_ITER
    scalars = resumed.scalars_at_start
    np.testing.assert_allclose(scalars["train/loss"], losses[:RESUME_ITER])
    np.testing.assert_array_equal(scalars["train/np_metric"], [0.5, 1.5])
    np.testing.assert_array_equal(resumed.np_info_at_start, np.arange(RESUME_ITER))
    assert resumed.lr_at_start == pytest.approx([0.01])  # first milestone passed
    # Model, momentum buffers, scheduler and data order all restored:
    assert resumed.losses == losses[RESUME_ITER:]


def test_checkpoint_needs_only_registered_globals(
    uninterrupted: tuple[Path, list[float]],
) -> None:
    checkpoint, _ = uninterrupted
    registered = {
        entry[1]
        if isinstance(entry, tuple)
        else f"{entry.__module__}.{entry.__qualname__}"
        for entry in MMENGINE_RESUME_GLOBALS
    }
    # A fresh interpreter without lightly-glare: what torch refuses by default.
    code = f"""
import json, torch
path = {str(checkpoint)!r}
print(json.dumps(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
try:
    torch.load(path)
except Exception as error:
    print(type(error).__name__)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    unsafe_line, load_outcome = result.stdout.splitlines()
    needed = set(json.loads(unsafe_line))
    assert {"mmengine.logging.history_buffer.HistoryBuffer", "numpy.ndarray"} <= needed
    assert load_outcome == "UnpicklingError"
    assert needed <= registered, needed - registered
    assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) == []


def test_plain_weight_files_load_weights_only(tmp_path: Path) -> None:
    weights = nn.Linear(3, 2).state_dict()
    path = tmp_path / "weights.pth"
    torch.save(weights, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[key], weights[key]) for key in weights)


class Reduce:
    """Pickles as `function(*args)`, the way a malicious checkpoint would."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.function, self.args


@pytest.mark.parametrize("runs_code", [os.system, builtins.exec])
def test_checkpoint_with_arbitrary_callable_is_refused(
    runs_code: Callable[[str], Any], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    command = (
        f"touch {marker}" if runs_code is os.system else f"open({str(marker)!r}, 'w')"
    )
    path = tmp_path / "malicious.pth"
    torch.save({"state_dict": {}, "meta": Reduce(runs_code, command)}, path)

    with pytest.raises(pickle.UnpicklingError, match=runs_code.__name__):
        CheckpointLoader.load_checkpoint(str(path), map_location="cpu")  # resume path
    assert not marker.exists()


def test_unknown_global_error_names_it_and_how_to_allow_it(tmp_path: Path) -> None:
    path = tmp_path / "custom.pth"
    torch.save({"meta": {"log": Path("some/where")}}, path)
    with pytest.raises(pickle.UnpicklingError) as error:
        CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert "pathlib" in str(error.value) and "PosixPath" in str(error.value)
    assert "torch.serialization.add_safe_globals" in str(error.value)


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (HistoryBuffer, "register_statistics"),
        (np.ndarray, "tofile"),
        (getattr, "__self__"),
    ],
)
def test_getattr_resolves_only_history_buffer_statistics(
    owner: object, name: str, tmp_path: Path
) -> None:
    path = tmp_path / "getattr.pth"
    torch.save({"statistic": Reduce(getattr, owner, name)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Refusing builtins.getattr"):
        torch.load(path)

    torch.save({"statistic": Reduce(getattr, HistoryBuffer, "mean")}, path)
    assert torch.load(path)["statistic"] is HistoryBuffer.mean


def test_numpy_1_checkpoints_load(tmp_path: Path) -> None:
    """numpy 1.x pickles name `numpy.core.multiarray` (numpy 2: `numpy._core`)."""
    values = {"array": np.arange(4.0), "scalar": np.float32(1.5)}
    buffer = io.BytesIO()
    torch.save(values, buffer, _use_new_zipfile_serialization=False)
    current, legacy = b"numpy._core.multiarray", b"numpy.core.multiarray"
    data = buffer.getvalue()
    if current in data:  # numpy 2: rewrite to what numpy 1.x writes
        data = data.replace(current, legacy)
    assert legacy in data
    path = tmp_path / "numpy1.pth"
    path.write_bytes(data)
    loaded = torch.load(path, weights_only=True)
    np.testing.assert_array_equal(loaded["array"], values["array"])
    assert loaded["scalar"] == values["scalar"]
    assert loaded["scalar"].dtype == np.float32
