"""GLARE starts from the projection heads of DINO / iBOT checkpoints.

The checkpoints are built in the official layouts (tests.weights.test_checkpoint_heads)
and each loaded head is compared with the official head's forward written out
from the DINO / iBOT source.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lightly_glare.models import GLARE, GlareProjectionHead
from lightly_glare.weights import load_projection_heads
from lightly_glare.weights.checkpoint_io import CheckpointMismatchError
from tests.conftest import make_vit
from tests.weights.test_checkpoint_heads import (
    BOTTLENECK,
    DIM,
    HIDDEN,
    K_PATCH,
    K,
    official_head,
    reference,
    training_checkpoint,
)


def head(output_dim: int = K) -> GlareProjectionHead:
    return GlareProjectionHead(DIM, HIDDEN, BOTTLENECK, output_dim)


def glare(**kwargs: object) -> GLARE:
    vit = make_vit(embed_dim=DIM, num_heads=3, depth=1)
    return GLARE(vit, head=head(), **kwargs)  # type: ignore[arg-type]


def saved(tmp_path: Path, checkpoint: object) -> Path:
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    return path


def assert_computes(module: nn.Module, official: dict[str, Tensor], layer: str) -> None:
    tokens = torch.randn(4, DIM)
    with torch.no_grad():
        torch.testing.assert_close(module(tokens), reference(official, tokens, layer))


def test_dino_checkpoint_heads_reach_student_teacher_and_patch_heads(
    tmp_path: Path,
) -> None:
    student, teacher = official_head(), official_head()
    path = saved(tmp_path, training_checkpoint(student, teacher, "dino_loss"))
    model = glare()
    loaded = model.load_heads(load_projection_heads(path, input_dim=DIM))
    assert len(loaded) == 4
    assert_computes(model.student_head, student, "last_layer")
    assert_computes(model.teacher["head"], teacher, "last_layer")
    # DINO has no patch head: the untied patch heads start from the [CLS] heads.
    assert_computes(model.student_patch_head, student, "last_layer")
    assert_computes(model.teacher["patch_head"], teacher, "last_layer")
    assert model.student_patch_head is not model.student_head


def test_ibot_separate_patch_head_reaches_the_patch_heads(tmp_path: Path) -> None:
    student = official_head(patch_out_dim=K_PATCH)
    teacher = official_head(patch_out_dim=K_PATCH)
    path = saved(tmp_path, training_checkpoint(student, teacher, "ibot_loss"))
    model = glare(patch_head=head(K_PATCH))
    model.load_heads(load_projection_heads(path, input_dim=DIM))
    assert_computes(model.student_head, student, "last_layer")
    assert_computes(model.student_patch_head, student, "last_layer2")
    assert_computes(model.teacher["patch_head"], teacher, "last_layer2")


def test_teacher_only_file_starts_student_and_teacher_alike(tmp_path: Path) -> None:
    teacher = official_head()
    released = {"state_dict": {f"head.{k}": v for k, v in teacher.items()}}
    model = glare(share_patch_head=True, freeze_heads=True)
    loaded = model.load_heads(load_projection_heads(saved(tmp_path, released)))
    assert loaded == ["student head <- teacher head", "teacher head <- teacher head"]
    assert_computes(model.student_head, teacher, "last_layer")
    assert_computes(model.teacher["head"], teacher, "last_layer")
    # Frozen heads stay frozen after loading: only adapters (and pooling) train.
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not trainable & {id(p) for p in model.student_head.parameters()}
    assert trainable >= {id(p) for p in model.backbone.adapters.parameters()}


def test_head_size_conflict_is_refused_naming_both(tmp_path: Path) -> None:
    path = saved(
        tmp_path, training_checkpoint(official_head(), official_head(), "dino_loss")
    )
    model = GLARE(make_vit(embed_dim=DIM, num_heads=3, depth=1), head=head(2 * K))
    before = [p.clone() for p in model.student_head.parameters()]
    with pytest.raises(CheckpointMismatchError) as error:
        model.load_heads(load_projection_heads(path, input_dim=DIM))
    message = str(error.value)
    assert f"output_dim={K}" in message and f"output_dim={2 * K}" in message
    assert str(path) in message
    for old, new in zip(before, model.student_head.parameters(), strict=True):
        assert torch.equal(old, new)


def test_checkpoint_without_heads_loads_nothing(tmp_path: Path) -> None:
    path = saved(tmp_path, {"cls_token": torch.zeros(1, 1, DIM)})
    model = glare()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.load_heads(load_projection_heads(path)) == []
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value), key
