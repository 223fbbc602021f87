import os
import stat
from pathlib import Path

import pytest
import torch

from lightly_glare.models import (
    CheckpointMismatchError,
    UniAdapterViT,
    export_adapted_backbone,
    load_adapted_backbone,
    save_atomic,
)
from tests.conftest import make_vit


def test_export_then_load_gives_identical_features(tmp_path: Path) -> None:
    source = UniAdapterViT(make_vit(), zero_init=False)
    path = export_adapted_backbone(source, tmp_path / "export.pth", extra_meta={"a": 1})
    target = UniAdapterViT(make_vit())
    meta = load_adapted_backbone(target, path)
    assert meta["a"] == 1
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(target(images), source(images))


def test_architecture_mismatch_names_the_difference(tmp_path: Path) -> None:
    path = export_adapted_backbone(UniAdapterViT(make_vit()), tmp_path / "e.pth")
    with pytest.raises(CheckpointMismatchError, match="adapter_bottleneck"):
        load_adapted_backbone(UniAdapterViT(make_vit(), bottleneck=32), path)
    with pytest.raises(CheckpointMismatchError, match="patch_size"):
        load_adapted_backbone(UniAdapterViT(make_vit("dinov2_like")), path)


def test_plain_checkpoint_is_not_an_export(tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    torch.save(make_vit().state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="load_ssl_checkpoint"):
        load_adapted_backbone(UniAdapterViT(make_vit()), path)


def test_save_atomic_keeps_old_file_on_failure_and_normal_mode(tmp_path: Path) -> None:
    path = save_atomic({"x": torch.ones(1)}, tmp_path / "f.pth")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("interrupted while saving")

    with pytest.raises(RuntimeError, match="interrupted"):
        save_atomic({"x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["f.pth"]  # no temporary left
