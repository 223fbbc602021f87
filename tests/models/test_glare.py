import math
from collections.abc import Mapping

import pytest
import torch
from torch._dynamo.backends.debugging import ExplainOutput
from torch.utils.data import default_collate

from lightly_glare.loss import (
    ALL_TERMS,
    LOCAL_DISTORTION,
    LOCAL_MATCHING,
    REGIONAL,
    GlareLoss,
    MatchedPair,
)
from lightly_glare.models import (
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    GLARE,
    CrossAttentionRegionPooling,
    GlareProjectionHead,
)
from lightly_glare.models.adapted_vit import BackboneOutput
from lightly_glare.models.geometry import bilinear_gather, map_patch_centers
from lightly_glare.models.glare_terms import TokenPair, sample_patches
from lightly_glare.pretraining.fields import parse_patch_count
from lightly_glare.transforms import GlareTransform, PatchBlur
from tests.conftest import VIT_VARIANTS, image_size, make_vit, real_photo

DIM = 64  # small head output for fast tests


def small_head(dim: int = DIM) -> GlareProjectionHead:
    return GlareProjectionHead(48, hidden_dim=32, bottleneck_dim=16, output_dim=dim)


def small_glare(variant: str = "plain", **kwargs: object) -> GLARE:
    defaults: dict[str, object] = {"head": small_head(), "adapter_bottleneck": 8}
    defaults.update(kwargs)
    return GLARE(make_vit(variant), **defaults)  # type: ignore[arg-type]


def random_batch(
    model: GLARE, batch: int = 3
) -> tuple[list[torch.Tensor], torch.Tensor]:
    size = image_size(model.backbone.vit)
    views = [torch.randn(batch, 3, size, size) for _ in range(2)]
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0], [0.25, 0.25, 0.75, 0.75, 1.0]])
    return views, boxes.expand(batch, 2, 5).clone()


def record_backbone_outputs(
    model: GLARE, monkeypatch: pytest.MonkeyPatch
) -> list[BackboneOutput]:
    """The list the model's backbone outputs are appended to (teacher first)."""
    outputs: list[BackboneOutput] = []
    forward_features = model.backbone.forward_features

    def recording(*args: object, **kwargs: object) -> BackboneOutput:
        outputs.append(forward_features(*args, **kwargs))  # type: ignore[arg-type]
        return outputs[-1]

    monkeypatch.setattr(model.backbone, "forward_features", recording)
    return outputs


def real_batch(size: int, batch: int = 4) -> tuple[list[torch.Tensor], torch.Tensor]:
    transform = GlareTransform(input_size=size)
    photo = real_photo()
    torch.manual_seed(3)
    *views, geometry = default_collate([transform(photo) for _ in range(batch)])
    return views, geometry


@pytest.mark.parametrize("local_patches_per_view", [None, 2])
@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_gradients_reach_exactly_the_trainable_parameters(
    variant: str, local_patches_per_view: int | None
) -> None:
    model = small_glare(
        variant,
        region_pooling=CrossAttentionRegionPooling(48, learnable=True),
        local_patches_per_view=local_patches_per_view,
    )
    # Non-zero adapters so that every adapter parameter receives a gradient.
    for adapter in model.backbone.adapters:
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    criterion = GlareLoss(output_dim=DIM)
    views, geometry = random_batch(model)
    criterion(model(views, geometry)).backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    with_grad = {
        name
        for name, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert with_grad == trainable
    prefixes = (
        "backbone.adapters.",
        "student_head.",
        "student_patch_head.",
        "region_pooling.",
    )
    assert trainable and all(name.startswith(prefixes) for name in trainable)
    assert not any(p.requires_grad for p in model.backbone.vit.parameters())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert set(map(id, model.trainable_parameters())) == {
        id(p) for n, p in model.named_parameters() if n in trainable
    }


def test_ema_update_matches_formula() -> None:
    model = small_glare()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    student = [p.clone() for p in model._student_modules().parameters()]
    teacher = [p.clone() for p in model.teacher.parameters()]
    backbone = [p.clone() for p in model.backbone.vit.parameters()]
    model.update_teacher(momentum=0.9)
    for s, t, new in zip(student, teacher, model.teacher.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * t + 0.1 * s)
    for old, new in zip(backbone, model.backbone.vit.parameters(), strict=True):
        assert torch.equal(old, new)
    with pytest.raises(ValueError, match="momentum"):
        model.update_teacher(1.5)


def test_backbone_weights_exist_once() -> None:
    model = small_glare()
    vit_params = sum(p.numel() for p in model.backbone.vit.parameters())
    trainable_side = sum(p.numel() for p in model._student_modules().parameters())
    total = sum(p.numel() for p in model.parameters())
    assert total == vit_params + 2 * trainable_side
    vit_storage = {p.data_ptr() for p in model.backbone.vit.parameters()}
    teacher_storage = {p.data_ptr() for p in model.teacher.parameters()}
    assert not vit_storage & teacher_storage


def separate_projections(
    model: GLARE, tokens: Mapping[str, TokenPair]
) -> dict[str, MatchedPair]:
    """The previous projection: each term through the heads in a call of its own."""
    pairs = {}
    for term, pair in tokens.items():
        with torch.no_grad():
            teacher = model.teacher[pair.head](pair.teacher)
        student = model._student_head(pair.head)(pair.student)
        pairs[term] = MatchedPair(teacher=teacher, student=student, valid=pair.valid)
    return pairs


@pytest.mark.parametrize("share_patch_head", [False, True])
def test_heads_run_once_and_equal_a_call_per_term(
    share_patch_head: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = small_glare(
        region_pooling=CrossAttentionRegionPooling(48, learnable=True),
        share_patch_head=share_patch_head,
        student_drop_path=0,  # the head layouts only
    ).double()  # fp64: equal up to rounding, at fp64's default tolerance
    for adapter in model.backbone.adapters:
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    views, geometry = random_batch(model, batch=4)
    views = [view.double() for view in views]

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        criterion = GlareLoss(output_dim=DIM).double()
        model.zero_grad(set_to_none=True)
        output = model(views, geometry, generator=torch.Generator().manual_seed(1))
        loss = criterion(output)
        loss.backward()
        tensors = [*output.teacher_global, *output.student_global, loss]
        for pair in output.pairs.values():
            tensors += [pair.teacher, pair.student]
        grads = [p.grad for p in model.trainable_parameters()]
        return tensors, grads  # type: ignore[return-value]

    calls: list[str] = []
    heads = {
        "student_head": model.student_head,
        "student_patch_head": model.student_patch_head,
        "teacher_head": model.teacher["head"],
        "teacher_patch_head": model.teacher["patch_head"],
    }
    distinct = {id(head): (name, head) for name, head in heads.items()}
    for name, head in distinct.values():  # a shared head is hooked once
        head.register_forward_hook(lambda *_, name=name: calls.append(name))
    batched, batched_grads = run()
    assert sorted(calls) == sorted(name for name, _ in distinct.values())
    monkeypatch.setattr(
        GLARE, "_project", lambda self, tokens: separate_projections(self, tokens)
    )
    separate, separate_grads = run()
    for got, want in zip(batched, separate, strict=True):
        torch.testing.assert_close(got, want)
    for got, want in zip(batched_grads, separate_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_frozen_weights_stay_bit_identical_through_bf16_steps() -> None:
    model = small_glare()
    for adapter in model.backbone.adapters:
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    criterion = GlareLoss(output_dim=DIM)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    frozen = {k: v.clone() for k, v in model.backbone.vit.state_dict().items()}
    trained = [p.clone() for p in model.trainable_parameters()]
    for _ in range(2):
        views, geometry = random_batch(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(views, geometry))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_teacher(0.9)
    assert model.backbone._autocast_weights  # the bf16 copies were used
    for key, value in model.backbone.vit.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, frozen[key])
    assert all(
        not torch.equal(old, new)
        for old, new in zip(trained, model.trainable_parameters(), strict=True)
        if new.grad is not None and new.grad.abs().sum() > 0
    )


def test_teacher_outputs_carry_no_gradient_and_shapes() -> None:
    model = small_glare()
    views, geometry = random_batch(model, batch=3)
    output = model(views, geometry)
    assert [t.shape for t in output.student_global] == [(3, DIM)] * 2
    assert all(not t.requires_grad for t in output.teacher_global)
    assert set(output.pairs) == set(ALL_TERMS[1:])
    for pair in output.pairs.values():
        assert pair.student.shape == pair.teacher.shape
        assert pair.student.requires_grad and not pair.teacher.requires_grad
    assert output.patch_masks is not None and output.patch_masks.shape == (2, 3, 16)
    # L_loc1 projects K pairs per image and view (the default K), all of
    # them distorted patches (30 % of 16 -> 5 candidates).
    distortion = output.pairs["local_distortion"]
    assert distortion.student.shape[0] == 2 * 3 * DEFAULT_LOCAL_PATCHES_PER_VIEW
    assert distortion.valid is not None
    assert distortion.valid.all() and int(output.patch_masks.sum()) == 2 * 3 * 5
    assert output.region_masks is not None and output.region_masks.shape == (
        2,
        3,
        3,
        16,
    )


def test_default_distortion_only_with_the_local_distortion_term() -> None:
    assert isinstance(small_glare().patch_augmentation, PatchBlur)
    without = small_glare(terms=("global", "regional", "local_matching"))
    assert without.patch_augmentation is None
    views, geometry = random_batch(without, batch=2)
    assert without(views, geometry).patch_masks is None  # student sees clean views


def test_identical_views_without_distortion_give_identical_local_targets() -> None:
    """With identical crops, L_loc2 pairs each student patch with its own token."""
    model = small_glare(
        terms=("local_matching",), local_patches_per_view=None, student_drop_path=0
    )  # student and teacher compute the same function
    model.patch_augmentation = None
    model.teacher.load_state_dict(model._student_modules().state_dict())
    image = torch.randn(2, 3, 32, 32)
    identity = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]).expand(2, 2, 5).clone()
    pair = model([image, image], identity).pairs["local_matching"]
    assert pair.student.shape[0] == 2 * 2 * 16
    torch.testing.assert_close(pair.student, pair.teacher)


def test_switched_off_terms_are_not_computed() -> None:
    criterion = GlareLoss(output_dim=DIM, regional_weight=0, local_matching_weight=0)
    model = small_glare(terms=criterion.active_terms)
    views, geometry = random_batch(model)
    output = model(views, geometry)
    assert set(output.pairs) == {"local_distortion"} and output.region_masks is None
    assert torch.isfinite(criterion(output))


def test_attention_region_matching() -> None:
    model = small_glare(region_match="attention", terms=("regional",))
    views, geometry = random_batch(model)
    pair = model(views, geometry).pairs["regional"]
    assert pair.student.shape[0] > 0 and torch.isfinite(pair.student).all()


@pytest.mark.parametrize(
    "case", ["constant_image", "one_region", "all_patches_distorted", "disjoint_views"]
)
def test_degenerate_inputs_stay_finite(case: str) -> None:
    kwargs: dict[str, object] = {}
    if case == "all_patches_distorted":
        kwargs["patch_augmentation"] = PatchBlur(patch_ratio=1.0)
    if case == "one_region":
        from lightly_glare.models import AttentionRegionSampler

        kwargs["region_sampler"] = AttentionRegionSampler(num_regions=1)
    model = small_glare(**kwargs)
    views, geometry = random_batch(model)
    if case == "constant_image":
        views = [torch.zeros_like(v) for v in views]
    if case == "disjoint_views":
        geometry[:, 0] = torch.tensor([0.0, 0.0, 0.4, 0.4, 0.0])
        geometry[:, 1] = torch.tensor([0.6, 0.6, 0.4, 0.4, 0.0])
    criterion = GlareLoss(output_dim=DIM)
    loss = criterion(model(views, geometry))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in criterion.last_terms.values())
    for p in model.trainable_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_overfitting_real_images_decreases_loss() -> None:
    """The student fits fixed teacher targets on one batch of real crops.

    Teacher (momentum 1) and centers (momentum 1) are held fixed so that the
    targets do not move: with DINO's moving center the loss first rises towards
    log K while the center catches up, which says nothing about learning.
    """
    torch.manual_seed(0)
    model = small_glare(adapter_bottleneck=16)
    criterion = GlareLoss(output_dim=DIM, center_momentum=1.0)
    views, geometry = real_batch(size=32, batch=4)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    losses = []
    first_terms = {}
    for _ in range(30):
        loss = criterion(
            model(views, geometry, generator=torch.Generator().manual_seed(0))
        )
        first_terms = first_terms or dict(criterion.last_terms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_teacher(1.0)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    # Terms whose start is not already near their optimum must fall (L_loc1
    # starts with student == teacher, up to the blur, so it is close to it).
    for term in ("global", "regional", "local_matching"):
        assert criterion.last_terms[term] < first_terms[term], (term, losses)


@pytest.mark.parametrize("count", [16, 100])  # every patch; capped at N = 16
@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_sampling_at_least_every_valid_patch_equals_all_patches(
    variant: str, count: int
) -> None:
    model = small_glare(variant)
    for adapter in model.backbone.adapters:
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    views, geometry = real_batch(image_size(model.backbone.vit), batch=4)
    runs = []
    for local_patches_per_view in (None, count):
        model.local_patches_per_view = local_patches_per_view
        criterion = GlareLoss(output_dim=DIM)
        output = model(views, geometry, generator=torch.Generator().manual_seed(0))
        loss = criterion(output)
        centers = {
            name: loss_fn.center for name, loss_fn in criterion.pair_losses.items()
        }
        runs.append((output, loss, criterion.last_terms, centers))
    (all_out, all_loss, all_terms, all_centers), (out, loss, terms, centers) = runs
    for term in (LOCAL_DISTORTION, LOCAL_MATCHING):
        pair = out.pairs[term]
        assert pair.student.shape == (2 * 4 * 16, DIM) and pair.valid is not None
        assert int(pair.valid.sum()) == all_out.pairs[term].student.shape[0]
        # Images have fewer valid patches than K: padding exists and is ignored.
        assert not pair.valid.all()
    assert torch.equal(out.pairs[REGIONAL].student, all_out.pairs[REGIONAL].student)
    torch.testing.assert_close(loss, all_loss)
    for term in ALL_TERMS:
        torch.testing.assert_close(terms[term], all_terms[term])
    for term in centers:  # the center update ignores the padding too
        torch.testing.assert_close(centers[term], all_centers[term])


def test_sampled_local_pairs_are_valid_patches_with_fixed_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    count, batch = 3, 4
    model = small_glare(
        terms=(LOCAL_DISTORTION, LOCAL_MATCHING), local_patches_per_view=count
    )
    backbone_outputs = record_backbone_outputs(model, monkeypatch)
    head_inputs: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    for role, head in (
        ("student", model.student_patch_head),
        ("teacher", model.teacher["patch_head"]),
    ):
        head.register_forward_hook(
            lambda _, args, __, role=role: head_inputs[role].append(args[0])
        )
    views, geometry = random_batch(model, batch=batch)
    grid = (4, 4)
    geometry[0, 1] = geometry[0, 0]  # identical crops: 16 patches inside
    geometry[1, 1] = torch.tensor([0.8, 0.8, 0.5, 0.5, 0.0])  # 1 and 4 inside
    geometry[2] = torch.tensor([[0.0, 0.0, 0.4, 0.4, 0.0], [0.6, 0.6, 0.4, 0.4, 0.0]])
    output = model(views, geometry, generator=torch.Generator().manual_seed(0))
    prefix = model.backbone.num_prefix_tokens
    teacher, student = (out.tokens[:, prefix:] for out in backbone_outputs)
    # (2B, N, D) each
    mapped = [
        map_patch_centers(geometry[:, a], geometry[:, b], grid, grid)
        for a, b in ((0, 1), (1, 0))
    ]
    bilinear = torch.cat(
        [
            bilinear_gather(teacher.chunk(2)[b], mapped[a][0], grid)
            for a, b in ((0, 1), (1, 0))
        ]
    )  # (2B, N, D): the teacher's view-b token at each view-a patch centre
    assert output.patch_masks is not None
    expected = {
        LOCAL_DISTORTION: (output.patch_masks.flatten(0, 1), teacher),
        LOCAL_MATCHING: (torch.cat([inside for _, inside in mapped]), bilinear),
    }
    # One call per head and network on both terms' tokens, in term order.
    assert len(head_inputs["student"]) == len(head_inputs["teacher"]) == 1
    student_inputs = head_inputs["student"][0].chunk(len(expected))
    teacher_inputs = head_inputs["teacher"][0].chunk(len(expected))
    for call, (term, (candidates, targets)) in enumerate(expected.items()):
        pair = output.pairs[term]
        assert pair.student.shape == pair.teacher.shape == (2 * batch * count, DIM)
        assert pair.valid is not None and pair.valid.shape == (2 * batch * count,)
        sampled = student_inputs[call].unflatten(0, (2 * batch, count))
        matches = (sampled[:, :, None] == student[:, None]).all(dim=-1)  # (2B, K, N)
        assert (matches.sum(dim=-1) == 1).all()  # a patch token of its own image
        index = matches.int().argmax(dim=-1)  # (2B, K)
        assert (index.sort(dim=1).values.diff(dim=1) > 0).all()  # distinct patches
        valid = pair.valid.unflatten(0, (2 * batch, count))
        assert torch.equal(valid, candidates.gather(1, index))
        # Images with fewer candidates than K contribute exactly those.
        assert torch.equal(valid.sum(dim=1), candidates.sum(dim=1).clamp(max=count))
        target = teacher_inputs[call].unflatten(0, (2 * batch, count))
        assert torch.equal(
            target, targets.gather(1, index[..., None].expand_as(target))
        )
    inside_counts = expected[LOCAL_MATCHING][0].sum(dim=1)
    assert (inside_counts < count).any() and (inside_counts > count).any()
    # Shapes do not depend on the data: disjoint views give padding only.
    geometry[:] = geometry[2]
    pair = model(views, geometry).pairs[LOCAL_MATCHING]
    assert pair.student.shape == (2 * batch * count, DIM)
    assert pair.valid is not None and not pair.valid.any()


def test_sampled_local_pairs_are_uniform_among_candidates() -> None:
    candidates = torch.zeros(2000, 6, dtype=torch.bool)
    candidates[:, 1:5] = True  # 4 candidates, 2 drawn per row
    generator = torch.Generator().manual_seed(0)
    index, valid = sample_patches(candidates, 2, generator)
    assert index.shape == valid.shape == (2000, 2) and valid.all()
    frequency = torch.bincount(index.flatten(), minlength=6) / index.numel()
    torch.testing.assert_close(
        frequency, torch.tensor([0, 0.25, 0.25, 0.25, 0.25, 0]), atol=0.02, rtol=0
    )


@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_default_training_step_does_not_synchronise_with_the_host(
    seeded: bool,
) -> None:
    model = small_glare().cuda()
    criterion = GlareLoss(output_dim=DIM).cuda()
    views, geometry = random_batch(model)
    views, geometry = [view.cuda() for view in views], geometry.cuda()
    generator = torch.Generator("cuda").manual_seed(0) if seeded else None
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = criterion(model(views, geometry, generator=generator))
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="terms"):
        small_glare(terms=("global", "typo"))
    with pytest.raises(ValueError, match="local_patches_per_view"):
        small_glare(local_patches_per_view=0)
    with pytest.raises(ValueError, match="region_match"):
        small_glare(region_match="nearest")
    model = small_glare()
    views, geometry = random_batch(model)
    with pytest.raises(ValueError, match="geometry"):
        model(views, geometry[:, :1])
    with pytest.raises(ValueError, match="two views"):
        model(views[:1], geometry)


def explain_training_step(
    model: GLARE, generator: torch.Generator | None = None, amp: bool = False
) -> ExplainOutput:
    """``torch._dynamo.explain`` of a step: forward, loss and backward."""
    criterion = GlareLoss(output_dim=DIM)
    views, geometry = real_batch(image_size(model.backbone.vit))

    def step(views: list[torch.Tensor], geometry: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = criterion(model(views, geometry, generator=generator))
        loss.backward()
        return loss.detach()

    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return torch._dynamo.explain(step)(views, geometry)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_default_training_step_is_one_graph_without_host_syncs(variant: str) -> None:
    explanation = explain_training_step(small_glare(variant))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_bf16_training_step_is_one_graph_without_host_syncs() -> None:
    """Under CPU bf16 autocast: the matmul attention, no frozen-weight cache."""
    model = small_glare()
    assert model.backbone.cache_autocast_weights
    explanation = explain_training_step(model, amp=True)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_seeded_training_step_breaks_only_at_the_generator_draws() -> None:
    # Dynamo does not trace an explicit torch.Generator: each draw is a graph
    # break, but no break comes from a data-dependent shape.
    generator = torch.Generator().manual_seed(0)
    explanation = explain_training_step(small_glare(), generator)
    assert explanation.graph_break_count > 0
    frames = {reason.user_stack[-1].name for reason in explanation.break_reasons}
    assert frames == {"random_tensor"}, explanation.break_reasons


def test_every_valid_patch_needs_data_dependent_shapes() -> None:
    explanation = explain_training_step(small_glare(local_patches_per_view=None))
    assert explanation.graph_break_count > 0
    assert "nonzero" in str(explanation.break_reasons[0].reason)


def test_student_drop_path_only_thins_the_training_student(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = small_glare(student_drop_path=0.5)
    rows: list[int] = []  # rows entering block 0's qkv: teacher, then student
    model.backbone.vit.blocks[0].attn.qkv.register_forward_pre_hook(
        lambda module, args: rows.append(args[0].shape[0])
    )
    views, geometry = random_batch(model, batch=4)
    model(views, geometry)
    assert rows == [8, 4]  # 2B rows; the student computes half of them
    rows.clear()
    model.eval()
    model(views, geometry)
    assert rows == [8, 8]
    with pytest.raises(ValueError, match=r"student_drop_path must be in \[0, 1\)"):
        small_glare(student_drop_path=1.0)


def test_drop_path_training_step_is_one_graph_without_host_syncs() -> None:
    explanation = explain_training_step(small_glare(student_drop_path=0.3))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_parse_patch_count_takes_k_or_all() -> None:
    assert parse_patch_count("all") is None and parse_patch_count("4") == 4
    for bad in ("0", "-1", "four", ""):
        with pytest.raises(ValueError, match=f"integer or 'all', got '{bad}'"):
            parse_patch_count(bad)
