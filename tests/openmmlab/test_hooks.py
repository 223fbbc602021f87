"""NonFiniteLossHook in an mmseg fine-tuning run (tiny UperNet, real images, CPU)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from PIL import Image

import lightly_glare.openmmlab  # noqa: F401  (registers the modules)
from lightly_glare.openmmlab.hooks import NonFiniteLossHook
from lightly_glare.pretraining.loop import NonFiniteLossError
from tests.conftest import real_photo

CONFIG = (
    Path(__file__).resolve().parents[2]
    / "mmseg_configs"
    / "segmentation"
    / "upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_aerial-buildings-126x126.py"
)
SIZE = 56  # 4 x 4 patches of 14 px
DIM = 48


@pytest.fixture(scope="module")
def buildings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops of a real photo in mmseg layout, labels 0/1 from a grey threshold."""
    root = tmp_path_factory.mktemp("buildings")
    (root / "img_dir" / "train").mkdir(parents=True)
    (root / "ann_dir" / "train").mkdir(parents=True)
    photo = real_photo()
    for i in range(4):
        crop = photo.crop((80 * i, 60 * i, 80 * i + 224, 60 * i + 224))
        crop = crop.resize((SIZE, SIZE))
        crop.save(root / "img_dir" / "train" / f"{i}.png")
        label = (np.asarray(crop.convert("L")) > 100).astype(np.uint8)
        Image.fromarray(label).save(root / "ann_dir" / "train" / f"{i}.png")
    return root


def tiny_finetune_cfg(work_dir: Path, data_root: Path, max_iters: int) -> Config:
    """The CPU aerial-buildings UperNet config, 4-block 48-dim GlareViT, 56 px."""
    cfg = Config.fromfile(str(CONFIG))
    channels = [DIM] * 4
    cfg.merge_from_dict(
        {
            "model.backbone.img_size": (SIZE, SIZE),
            "model.backbone.out_indices": (0, 1, 2, 3),
            "model.backbone.checkpoint": None,
            "model.data_preprocessor.size": (SIZE, SIZE),
            "model.neck.in_channels": channels,
            "model.neck.out_channels": DIM,
            "model.decode_head.in_channels": channels,
            "model.decode_head.channels": 16,
            "model.auxiliary_head.in_channels": DIM,
            "model.auxiliary_head.channels": 16,
            "train_dataloader.batch_size": 2,
            "train_dataloader.num_workers": 0,
            "train_dataloader.persistent_workers": False,
            "train_dataloader.dataset.data_root": str(data_root),
            "train_cfg.max_iters": max_iters,
            "default_hooks.checkpoint.interval": 1,
            "default_hooks.logger.interval": 1,
        }
    )
    cfg.model.backbone.arch = dict(patch_size=14, embed_dim=DIM, depth=4, num_heads=3)
    cfg.train_dataloader.dataset.pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="PackSegInputs"),
    ]
    for stage in ("val", "test"):
        cfg[f"{stage}_cfg"] = cfg[f"{stage}_dataloader"] = None
        cfg[f"{stage}_evaluator"] = None
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f"finetune_{uuid.uuid4().hex[:8]}"
    cfg.log_level = "WARNING"
    return cfg


class NaNLogitsAt(Hook):
    """Makes the decode head's logits NaN from iteration ``at`` (1-based) on."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner: Any, *args: Any, **kw: Any) -> None:
        if runner.iter + 1 == self.at:
            runner.model.decode_head.conv_seg.register_forward_hook(
                lambda module, inputs, out: out * float("nan")
            )


def test_nan_loss_stops_finetuning_and_keeps_last_checkpoint(
    buildings_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_finetune_cfg(tmp_path, buildings_dir, max_iters=5)
    assert [h.type for h in cfg.custom_hooks] == ["NonFiniteLossHook"]
    runner = Runner.from_cfg(cfg)
    runner.register_hook(NaNLogitsAt(at=3))
    kept = tmp_path / "iter_2.pth"
    with pytest.raises(NonFiniteLossError) as error:
        runner.train()
    message = str(error.value)
    assert "Non-finite loss at iteration 3: loss=nan" in message
    assert "decode.loss_ce=nan" in message and "aux.loss_ce=" in message
    assert "aux.loss_ce=nan" not in message  # the auxiliary head was finite
    assert f"the last checkpoint {kept} is intact" in message
    # The optimizer did apply the NaN gradients: these weights were not saved.
    assert not torch.isfinite(runner.model.decode_head.conv_seg.weight).all()
    assert not (tmp_path / "iter_3.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == str(kept)
    state = torch.load(kept, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    runner.model.load_state_dict(state, strict=True)
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_hook_ignores_finite_and_non_loss_entries() -> None:
    class FakeRunner:
        iter = 0

    outputs = {
        "loss": torch.tensor(1.0),
        "decode.acc_seg": torch.tensor(float("nan")),  # not a loss
    }
    NonFiniteLossHook().after_train_iter(FakeRunner(), 0, outputs=outputs)
    NonFiniteLossHook().after_train_iter(FakeRunner(), 0, outputs=None)
