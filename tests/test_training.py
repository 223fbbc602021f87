import dataclasses
import math
from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightly_glare import precision
from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE, GlareProjectionHead, UniAdapterViT
from lightly_glare.pretraining.folder import (
    build_folder_job,
    folder_loader,
    pretrain_folder,
)
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.loop import (
    NonFiniteLossError,
    NoTrainingStepsError,
    PretrainConfig,
    fused_adamw,
    learning_rate,
    parameter_groups,
    steps_per_epoch,
    train_steps,
)
from lightly_glare.transforms import GlareTransform
from lightly_glare.weights import (
    CheckpointMismatchError,
    build_backbone,
    load_adapted_backbone,
    load_exported_checkpoint,
    load_projection_heads,
)
from tests.conftest import make_vit, real_photo
from tests.weights.test_checkpoint_heads import official_head


@pytest.fixture
def loader(tmp_path: Path) -> DataLoader:
    photo = real_photo()
    for i in range(4):
        photo.crop((i * 60, i * 40, i * 60 + 300, i * 40 + 300)).save(
            tmp_path / f"{i}.png"
        )
    dataset = ImageFolderDataset(tmp_path, transform=GlareTransform(input_size=32))
    return DataLoader(dataset, batch_size=2, shuffle=True, drop_last=True)


def small_model() -> tuple[GLARE, GlareLoss]:
    criterion = GlareLoss(output_dim=32)
    model = GLARE(
        make_vit(),
        head=GlareProjectionHead(48, hidden_dim=32, bottleneck_dim=8, output_dim=32),
        adapter_bottleneck=8,
    )
    return model, criterion


def test_pretrain_runs_on_real_images_and_reiterates(loader: DataLoader) -> None:
    model, criterion = small_model()
    teacher_before = [p.clone() for p in model.teacher.parameters()]
    lines: list[str] = []
    history = train_steps(
        model,
        criterion,
        loader,
        PretrainConfig(steps=5, log_every=2),
        batch_size=2,
        log=lines.append,
    )
    assert len(history.losses) == 5  # 2 batches per epoch: the loader was re-iterated
    assert all(math.isfinite(v) for v in history.losses)
    assert set(history.terms[-1]) == set(criterion.active_terms)
    assert len(lines) == 3 and "step 5/5" in lines[-1]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(teacher_before, model.teacher.parameters(), strict=True)
    )


def test_non_finite_loss_stops_before_the_update(loader: DataLoader) -> None:
    model, criterion = small_model()
    model.student_head.register_forward_hook(lambda m, i, out: out * float("nan"))
    adapters = [p.clone() for p in model.backbone.adapters.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_steps(model, criterion, loader, PretrainConfig(steps=3), batch_size=2)
    for before, after in zip(
        adapters, model.backbone.adapters.parameters(), strict=True
    ):
        assert torch.equal(before, after)


def test_learning_rate_schedule() -> None:
    config = PretrainConfig(steps=100, warmup_fraction=0.1, min_lr=1e-6)
    assert learning_rate(0, 1.0, config) == pytest.approx(0.1)
    assert learning_rate(9, 1.0, config) == pytest.approx(1.0)
    assert learning_rate(10, 1.0, config) == pytest.approx(1.0)
    assert learning_rate(99, 1.0, config) < 1e-3
    values = [learning_rate(s, 1.0, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_no_weight_decay_on_norms_and_biases() -> None:
    model, _ = small_model()
    decay, no_decay = parameter_groups(model, 0.04)
    assert all(p.ndim >= 2 for p in decay["params"])  # type: ignore[union-attr]
    assert all(p.ndim <= 1 for p in no_decay["params"])  # type: ignore[union-attr]
    n = len(decay["params"]) + len(no_decay["params"])  # type: ignore[arg-type]
    assert n == len(model.trainable_parameters())


def test_fused_adamw_follows_the_reference_adamw() -> None:
    """Fused on CPU (a kernel instead of per-tensor loops), same updates."""
    torch.manual_seed(0)
    models = [small_model()[0] for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = [p.detach().clone() for p in models[0].trainable_parameters()]
    optimizers = [
        fused_adamw(parameter_groups(models[0], 0.04), 1e-2, "cpu"),
        torch.optim.AdamW(parameter_groups(models[1], 0.04), lr=1e-2),
    ]
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults["fused"]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in start]
        for model, optimizer in zip(models, optimizers, strict=True):
            for param, grad in zip(model.trainable_parameters(), grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
    fused, reference = (list(m.trainable_parameters()) for m in models)
    for got, want, before in zip(fused, reference, start, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        assert not torch.equal(got, before)
    # A device without the fused kernel gets the default implementation.
    optimizer = fused_adamw([{"params": [torch.zeros(1)]}], 1.0, "meta")
    assert not optimizer.defaults["fused"]


def test_bf16_autocast_on_cpu_stays_finite_on_real_images(loader: DataLoader) -> None:
    model, criterion = small_model()
    before = [p.detach().clone() for p in model.trainable_parameters()]
    dtypes: list[torch.dtype] = []
    model.backbone.adapters[0].down.register_forward_hook(
        lambda module, inputs, out: dtypes.append(out.dtype)
    )
    history = train_steps(
        model,
        criterion,
        loader,
        PretrainConfig(steps=3, base_lr=0.05, amp=True),
        batch_size=2,
        log=lambda line: None,
    )
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast was on
    assert len(history.terms) == 3
    for terms in history.terms:
        assert set(terms) == set(criterion.active_terms)
        assert all(math.isfinite(value) for value in terms.values())
    after = model.trainable_parameters()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in after)
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert sum(changed) > len(changed) // 2
    assert all(adapter.up.weight.abs().sum() > 0 for adapter in model.backbone.adapters)


@pytest.mark.parametrize(
    ("flags", "amp", "dtype"),
    [
        ({"avx512f"}, None, torch.float32),  # default: fp32 without native bf16
        ({"avx512f", "avx512_bf16"}, None, torch.bfloat16),  # bf16 with it
        ({"amx_bf16"}, False, torch.float32),  # forced off
    ],
)
def test_autocast_follows_native_bf16_by_default(
    loader: DataLoader,
    monkeypatch: pytest.MonkeyPatch,
    flags: set[str],
    amp: bool | None,
    dtype: torch.dtype,
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    model, criterion = small_model()
    dtypes: list[torch.dtype] = []
    model.backbone.adapters[0].down.register_forward_hook(
        lambda module, inputs, out: dtypes.append(out.dtype)
    )
    config = PretrainConfig(steps=1, amp=amp)
    train_steps(model, criterion, loader, config, 2, log=print)
    assert set(dtypes) == {dtype}


def test_compiled_step_gives_the_eager_losses_and_weights(loader: DataLoader) -> None:
    losses, weights = [], []
    for compile in (False, True):
        torch.manual_seed(0)
        model, criterion = small_model()
        config = PretrainConfig(steps=3, amp=False, compile=compile)
        # Inductor's own random kernels draw other numbers than eager ones.
        with torch._inductor.config.patch(fallback_random=True):
            history = train_steps(model, criterion, loader, config, 2, log=print)
        losses.append(history.losses)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    torch._dynamo.reset()
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for name, eager in weights[0].items():  # the gradients were the eager ones
        torch.testing.assert_close(weights[1][name], eager, msg=name)


def _folder_job(tmp_path: Path, **overrides: object) -> FolderPretraining:
    images = tmp_path / "images"
    images.mkdir()
    photo = real_photo()
    for i in range(4):
        photo.crop((i * 50, 0, i * 50 + 200, 200)).save(images / f"{i}.png")
    vit = timm.create_model("vit_small_patch14_dinov2", img_size=28, num_classes=0)
    checkpoint = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), checkpoint)
    fields: dict[str, object] = {
        "model": "vit_small_patch14_dinov2",
        "checkpoint": checkpoint,
        "data": images,
        "img_size": 28,
        "steps": 2,
        "batch_size": 2,
        "output_dim": 32,
        "hidden_dim": 32,
        "workers": 0,
        **overrides,
    }
    return FolderPretraining(**fields)  # type: ignore[arg-type]


def test_pretrain_folder_trains_the_chosen_images_and_exports(tmp_path: Path) -> None:
    job = _folder_job(
        tmp_path, indices=[1, 3], weights={"regional": 0.0}, steps=3, momentum_start=0.5
    )
    lines: list[str] = []
    export, history = pretrain_folder(job, tmp_path / "out.pth", log=lines.append)
    assert any(line.startswith("  2 images, 3 steps") for line in lines)  # 2 of 4
    assert len(history.losses) == 3 and all(math.isfinite(v) for v in history.losses)
    assert set(history.terms[0]) == {"global", "local_distortion", "local_matching"}
    backbone = UniAdapterViT(
        timm.create_model("vit_small_patch14_dinov2", img_size=28, num_classes=0)
    )
    meta = load_adapted_backbone(backbone, export)
    assert meta["seed"] == 0 and meta["losses"] == history.losses
    # the exported teacher moved away from the zero-initialised adapters
    assert any(adapter.up.weight.abs().sum() > 0 for adapter in backbone.adapters)


def test_pretrain_folder_adapter_bottleneck_round_trips_through_the_export(
    tmp_path: Path,
) -> None:
    job = _folder_job(tmp_path, steps=1, adapter_bottleneck=16)
    export, _ = pretrain_folder(job, tmp_path / "out.pth", log=lambda _: None)
    state, meta = load_exported_checkpoint(export)
    assert meta["architecture"]["adapter_bottleneck"] == 16
    backbone = build_backbone(job.model, export, checkpoint_type="glare", img_size=28)
    assert {adapter.bottleneck for adapter in backbone.adapters} == {16}
    loaded = backbone.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in state.items())


def test_pretrain_folder_rejects_unknown_terms_and_too_few_images(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="Unknown terms"):
        pretrain_folder(
            _folder_job(tmp_path, weights={"regionl": 0.0}), tmp_path / "x.pth"
        )
    (tmp_path / "b").mkdir()
    one_image = _folder_job(tmp_path / "b", indices=[0])  # batch 2, drop_last
    with pytest.raises(NoTrainingStepsError, match="1 image.s. with batch_size=2"):
        pretrain_folder(one_image, tmp_path / "y.pth", log=lambda _: None)


def test_pretrain_folder_starts_from_the_checkpoint_heads(tmp_path: Path) -> None:
    job = _folder_job(tmp_path, steps=1, freeze_heads=True)
    backbone = torch.load(job.checkpoint, weights_only=True)
    head = official_head(dim=384, hidden=32, bottleneck=256, out_dim=64)
    dino = {f"backbone.{k}": v for k, v in backbone.items()}
    dino |= {f"head.{k}": v for k, v in head.items()}
    torch.save({"teacher": dino}, job.checkpoint)  # DINO's checkpoint.pth layout
    with pytest.raises(CheckpointMismatchError, match="output_dim=64"):
        pretrain_folder(job, tmp_path / "x.pth", log=lambda _: None)  # heads: 32
    lines: list[str] = []
    job.output_dim = 64
    pretrain_folder(job, tmp_path / "y.pth", log=lines.append)
    assert "  heads from the checkpoint: student head <- teacher head, teacher " \
        "head <- teacher head, student patch head <- teacher head, teacher " \
        "patch head <- teacher head" in lines  # fmt: skip
    job.output_dim, job.checkpoint_heads = 32, False
    pretrain_folder(job, tmp_path / "z.pth", log=lines.append)  # new heads


def test_the_start_checkpoint_is_read_once_for_the_vit_and_the_heads(
    tmp_path: Path, torch_loads: list[object]
) -> None:
    job = _folder_job(tmp_path, output_dim=64)
    vit = torch.load(job.checkpoint, weights_only=True)
    head = official_head(dim=384, hidden=32, bottleneck=256, out_dim=64)
    dino = {f"backbone.{k}": v for k, v in vit.items()}
    dino |= {f"head.{k}": v for k, v in head.items()}
    torch.save({"teacher": dino}, job.checkpoint)  # DINO's checkpoint.pth layout
    torch_loads.clear()
    model, _, _ = build_folder_job(job, log=lambda _: None)
    assert torch_loads == [Path(job.checkpoint)]
    state = model.backbone.vit.state_dict()
    assert all(torch.equal(state[k], v) for k, v in vit.items())
    expected = load_projection_heads(job.checkpoint).build("teacher")
    assert expected is not None
    tokens = torch.randn(3, 384)
    for module in (model.student_head, model.teacher["patch_head"]):
        torch.testing.assert_close(module(tokens), expected(tokens))


def test_head_warmup_holds_the_adapters_then_trains_them(
    loader: DataLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, criterion = small_model()
    snapshots: list[tuple[list[Tensor], list[Tensor], list[Tensor]]] = []
    update_teacher = model.update_teacher

    def snapshot(momentum: float) -> None:  # called at the start of every step
        snapshots.append(
            (
                [p.detach().clone() for p in model.backbone.adapters.parameters()],
                [p.detach().clone() for p in model.student_head.parameters()],
                [p.detach().clone() for p in model.teacher.adapters.parameters()],
            )
        )
        update_teacher(momentum)

    monkeypatch.setattr(model, "update_teacher", snapshot)
    config = PretrainConfig(steps=4, head_warmup_steps=2, momentum_start=0.5)
    train_steps(model, criterion, loader, config, batch_size=2)
    adapters, heads, teacher = zip(*snapshots, strict=True)

    def same(a: list[Tensor], b: list[Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    assert same(adapters[0], adapters[2]) and same(teacher[0], teacher[2])
    assert not same(heads[0], heads[1]) and not same(heads[1], heads[2])
    assert not same(adapters[2], adapters[3])  # step 2 trained the adapters
    assert all(p.requires_grad for p in model.backbone.adapters.parameters())
    with pytest.raises(ValueError, match="head_warmup_steps"):
        PretrainConfig(steps=4, head_warmup_steps=4)
    with pytest.raises(ValueError, match="head_warmup_steps"):
        PretrainConfig(steps=4, head_warmup_steps=-1)


def test_adapters_stay_trainable_after_an_error_in_the_warmup(
    loader: DataLoader,
) -> None:
    model, criterion = small_model()
    model.student_head.register_forward_hook(lambda m, i, out: out * float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 0"):
        config = PretrainConfig(steps=3, head_warmup_steps=2)
        train_steps(model, criterion, loader, config, batch_size=2)
    assert all(p.requires_grad for p in model.backbone.adapters.parameters())


def test_a_run_with_zero_steps_is_refused_naming_images_and_batch(
    tmp_path: Path, loader: DataLoader
) -> None:
    """drop_last with fewer images than a batch: refused, not an untrained export."""
    few = DataLoader(loader.dataset, batch_size=8, drop_last=True)
    message = r"4 image\(s\) with batch_size=8 and drop_last=True give 0 batches"
    with pytest.raises(NoTrainingStepsError, match=message):
        steps_per_epoch(few)
    model, criterion = small_model()
    with pytest.raises(NoTrainingStepsError, match=message):
        train_steps(model, criterion, few, PretrainConfig(steps=2), batch_size=8)
    with pytest.raises(NoTrainingStepsError, match="steps must be at least 1"):
        PretrainConfig(steps=0)
    job = _folder_job(tmp_path, batch_size=8)
    with pytest.raises(NoTrainingStepsError, match="batch_size=8"):
        pretrain_folder(job, tmp_path / "never.pth", log=lambda _: None)
    assert not (tmp_path / "never.pth").exists()
    assert steps_per_epoch(loader) == 2


def test_the_seed_alone_fixes_heads_views_and_order_across_variants(
    tmp_path: Path,
) -> None:
    """Variants of one seed (GLARE vs DINO-only weights) share heads and batches.

    The model draws from torch's RNG between batches (region sampler, patch
    distortion); the batches must not depend on it nor on the worker count.
    Random heads (data-initialised heads are fitted to each variant's own
    tokens: test_data_initialised_heads_are_fixed_by_the_seed).
    """
    glare = _folder_job(tmp_path, batch_size=2, seed=3, head_init="random")
    off = {"regional": 0.0, "local_distortion": 0.0, "local_matching": 0.0}
    dino = dataclasses.replace(glare, weights=off, workers=1)
    built = {}
    for name, job in (("glare", glare), ("dino", dino)):
        model, _, dataset = build_folder_job(job, log=lambda _: None)
        batches = folder_loader(job, dataset)
        views = []
        for _ in range(3):  # 1.5 epochs of 4 images
            (view_0, view_1, geometry), _, names = next(batches)
            views.append((view_0, view_1, geometry, list(names)))
            torch.rand(100 if name == "glare" else 7)  # the model's own draws
        built[name] = (model, views)
    heads = [
        {
            key: value
            for key, value in model.state_dict().items()
            if key.startswith(("student_head.", "student_patch_head."))
        }
        for model, _ in built.values()
    ]
    assert heads[0].keys() == heads[1].keys() and heads[0]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    for first, second in zip(built["glare"][1], built["dino"][1], strict=True):
        assert first[3] == second[3]  # the same images in the same order
        assert all(
            torch.equal(a, b) for a, b in zip(first[:3], second[:3], strict=True)
        )
    other, _, dataset = build_folder_job(
        dataclasses.replace(glare, seed=4), log=lambda _: None
    )
    assert not torch.equal(
        other.student_head.state_dict()["mlp.0.weight"],
        built["glare"][0].student_head.state_dict()["mlp.0.weight"],
    )


def test_data_initialised_heads_are_fixed_by_the_seed(tmp_path: Path) -> None:
    """head_init='data' gives the same heads and centres for the same seed."""
    job = _folder_job(tmp_path, batch_size=2, seed=3, head_init="data")
    built = [build_folder_job(job, log=lambda _: None) for _ in range(2)]
    other = build_folder_job(dataclasses.replace(job, seed=4), log=lambda _: None)
    states = [
        {**model.state_dict(), **criterion.state_dict()}
        for model, criterion, _ in (*built, other)
    ]
    heads = [k for k in states[0] if "head" in k or "center" in k]
    assert any("center" in k for k in heads)
    assert all(torch.equal(states[0][k], states[1][k]) for k in heads)
    prototypes = "student_head.last_layer.parametrizations.weight.original1"
    assert not torch.equal(states[0][prototypes], states[2][prototypes])


def test_a_head_warmup_with_frozen_heads_is_refused(tmp_path: Path) -> None:
    """Nothing would train during the warm-up: refused before the first step."""
    job = _folder_job(tmp_path, freeze_heads=True, head_warmup_steps=1, steps=2)
    with pytest.raises(ValueError, match="set head_warmup_steps=0"):
        pretrain_folder(job, tmp_path / "out.pth", log=lambda _: None)
    assert not (tmp_path / "out.pth").exists()
    unfrozen = dataclasses.replace(job, freeze_heads=False)
    _, history = pretrain_folder(unfrozen, tmp_path / "out.pth", log=lambda _: None)
    assert len(history.losses) == 2
