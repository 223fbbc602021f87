import os
import stat
from math import inf
from pathlib import Path

import pytest
import torch

from lightly_glare.models import UniAdapterViT
from lightly_glare.weights.checkpoint_io import (
    LISTED_KEYS,
    CheckpointMismatchError,
    NonFiniteWeightsError,
    check_state_dict,
    save_atomic,
)
from lightly_glare.weights.export import export_adapted_backbone, load_adapted_backbone
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


def test_export_never_writes_non_finite_weights(tmp_path: Path) -> None:
    path = tmp_path / "export.pth"
    backbone = UniAdapterViT(make_vit(), zero_init=False)
    export_adapted_backbone(backbone, path)
    before = path.read_bytes()
    with torch.no_grad():
        backbone.adapters[1].up.weight[0, 0] = float("nan")
        backbone.vit.blocks[2].norm1.bias[:2] = float("inf")
    with pytest.raises(NonFiniteWeightsError) as error:
        export_adapted_backbone(backbone, path)
    message = str(error.value)
    assert f"Refusing to write {path}" in message and "in 2 of" in message
    assert "state_dict.vit.blocks.2.norm1.bias (2 of 48 values)" in message
    assert "state_dict.adapters.1.up.weight (1 of" in message
    assert path.read_bytes() == before  # the earlier export is kept
    assert [p.name for p in tmp_path.iterdir()] == ["export.pth"]


def test_loading_an_export_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    path = export_adapted_backbone(UniAdapterViT(make_vit()), tmp_path / "e.pth")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["vit.pos_embed"][0, 0, 0] = float("nan")
    torch.save(checkpoint, path)  # e.g. an export written by an older version
    with pytest.raises(NonFiniteWeightsError, match=r"e\.pth holds NaN") as error:
        load_adapted_backbone(UniAdapterViT(make_vit()), path)
    assert "vit.pos_embed (1 of" in str(error.value)


def test_save_atomic_refuses_nested_non_finite_tensors(tmp_path: Path) -> None:
    path = tmp_path / "f.pth"
    with pytest.raises(NonFiniteWeightsError, match=r"model\.1\.w"):
        save_atomic({"model": [torch.ones(2), {"w": torch.tensor([1.0, -inf])}]}, path)
    assert not path.exists()
    save_atomic({"steps": torch.tensor([3]), "x": torch.ones(1)}, path)  # finite


def test_wrong_depth_export_leads_with_counts_and_caps(tmp_path: Path) -> None:
    path = export_adapted_backbone(UniAdapterViT(make_vit()), tmp_path / "e.pth")
    state = torch.load(path, weights_only=True)["state_dict"]
    deeper = UniAdapterViT(make_vit(depth=12))
    missing = len(deeper.state_dict()) - len(state)
    with pytest.raises(CheckpointMismatchError) as error:
        check_state_dict(deeper, state, source=str(path))
    first = str(error.value).splitlines()[0]
    assert f"({missing} missing keys)" in first
    assert f"... and {missing - LISTED_KEYS} more" in str(error.value)
