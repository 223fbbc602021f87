import pytest
import timm
import torch
from timm.layers.pos_embed import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import default_collate

from lightly_glare.models import GLARE, UniAdapterViT
from lightly_glare.transforms import GlareTransform
from tests.conftest import VIT_VARIANTS, image_size, make_vit, real_photo


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_zero_init_adapters_leave_output_unchanged_exactly(variant: str) -> None:
    vit = make_vit(variant)
    images = torch.randn(2, 3, image_size(vit), image_size(vit))
    expected = vit.forward_features(images)
    adapted = UniAdapterViT(vit)
    assert torch.equal(adapted(images), expected)


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_cls_attention_matches_explicit_attention(variant: str) -> None:
    vit = make_vit(variant)
    adapted = UniAdapterViT(vit)
    images = torch.randn(2, 3, image_size(vit), image_size(vit))
    captured = {}
    last = vit.blocks[-1]
    handle = last.norm1.register_forward_hook(
        lambda module, args, out: captured.setdefault("x", out)
    )
    out = adapted.forward_features(images, return_cls_attention=True)
    handle.remove()
    x = captured["x"]
    attn = last.attn
    qkv = attn.qkv(x).reshape(2, x.shape[1], 3, attn.num_heads, attn.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)  # (B, H, T, T)
    expected = weights[:, :, 0, vit.num_prefix_tokens :]
    expected = expected / expected.sum(-1, keepdim=True)
    assert out.cls_attention is not None
    torch.testing.assert_close(out.cls_attention, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.cls_attention.sum(-1), torch.ones(2, 3))
    # The block output is unchanged by requesting the map.
    torch.testing.assert_close(out.tokens, adapted(images), atol=1e-6, rtol=1e-5)


def spy_on_sdpa(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of ``F.scaled_dot_product_attention``: one entry per call."""
    calls: list[int] = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def test_other_blocks_keep_fused_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    vit = make_vit()
    assert all(block.attn.fused_attn for block in vit.blocks)
    calls = spy_on_sdpa(monkeypatch)
    UniAdapterViT(vit).forward_features(
        torch.randn(1, 3, 32, 32), return_cls_attention=True
    )
    assert len(calls) == len(vit.blocks)


def test_backbone_frozen_and_adapters_trainable() -> None:
    adapted = UniAdapterViT(make_vit(), bottleneck=4)
    assert not any(p.requires_grad for p in adapted.vit.parameters())
    assert all(p.requires_grad for p in adapted.adapters.parameters())
    assert adapted.report.adapters == sum(
        p.numel() for p in adapted.adapters.parameters()
    )


def test_report_for_vit_small_matches_spec() -> None:
    vit = timm.create_model("vit_small_patch16_224", num_classes=0)
    backbone_params = sum(p.numel() for p in vit.parameters())
    report = UniAdapterViT(vit, bottleneck=64).report
    assert report.adapters == 12 * (3 * 384 + 2 * 384 * 64 + 64)  # 604,416
    assert report.backbone == backbone_params
    assert report.percent == pytest.approx(100 * 604_416 / backbone_params)
    # docs/ARCHITECTURE.md: 2.8 % of ViT-S/16 for bottleneck 64
    assert 2.7 < report.percent < 2.9
    assert "604,416" in str(report)
    # The default, embed_dim // 12 = 32: 1.4 %.
    default = UniAdapterViT(vit)
    assert {adapter.bottleneck for adapter in default.adapters} == {32}
    assert default.report.adapters == 12 * (3 * 384 + 2 * 384 * 32 + 32)  # 309,120
    assert 1.3 < default.report.percent < 1.5


@pytest.mark.parametrize(("dim", "bottleneck"), [(384, 32), (768, 64), (1024, 85)])
def test_default_bottleneck_is_a_twelfth_of_the_width(
    dim: int, bottleneck: int
) -> None:
    from lightly_glare.models import UniAdapter, default_bottleneck

    assert default_bottleneck(dim) == bottleneck
    assert UniAdapter(dim).bottleneck == bottleneck


def test_intermediates_and_teacher_adapters() -> None:
    vit = make_vit()
    adapted = UniAdapterViT(vit, zero_init=False)
    images = torch.randn(2, 3, 32, 32)
    out = adapted.forward_features(images, intermediate_indices=(0, -1))
    assert out.intermediates is not None and len(out.intermediates) == 2
    torch.testing.assert_close(vit.norm(out.intermediates[1]), out.tokens)
    other = torch.nn.ModuleList(
        type(a)(a.dim, a.bottleneck) for a in adapted.adapters
    )  # zero-initialised: plain backbone
    torch.testing.assert_close(
        adapted.forward_features(images, adapters=other).tokens,
        vit.forward_features(images),
    )
    with pytest.raises(ValueError, match="adapters"):
        adapted.forward_features(images, adapters=other[:1])


def test_rejects_unsupported_models() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        UniAdapterViT(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    vit = make_vit()
    vit.blocks[0] = torch.nn.Identity()
    with pytest.raises(TypeError, match="Block 0"):
        UniAdapterViT(vit)
    assert isinstance(make_vit(), VisionTransformer)


def nonzero_adapters(adapted: UniAdapterViT) -> UniAdapterViT:
    """Adapters whose output is large enough that their placement matters."""
    with torch.no_grad():
        for adapter in adapted.adapters:
            adapter.up.weight.normal_(0.0, 0.5)
            adapter.up.bias.normal_(0.0, 0.1)
    return adapted


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_adapter_reads_the_stream_after_attention_outside_layerscale(
    variant: str,
) -> None:
    """h = x + ls1(attn(norm1(x))); x' = h + ls2(mlp(norm2(h))) + adapter(h)."""
    vit = make_vit(variant)
    images = torch.randn(2, 3, image_size(vit), image_size(vit))
    embedded: list[torch.Tensor] = []  # (B, P + N, D): the tokens entering block 0
    handle = vit.blocks[0].register_forward_pre_hook(
        lambda module, args: embedded.append(args[0])
    )
    vit.forward_features(images)  # timm's own forward, fixed image size
    handle.remove()
    adapted = nonzero_adapters(UniAdapterViT(vit, bottleneck=64))
    depth = len(vit.blocks)
    out = adapted.forward_features(images, intermediate_indices=range(depth))
    assert out.intermediates is not None
    x = embedded[0]
    for block, adapter, actual in zip(
        vit.blocks, adapted.adapters, out.intermediates, strict=True
    ):
        h = x + block.ls1(block.attn(block.norm1(x)))
        x = h + block.ls2(block.mlp(block.norm2(h))) + adapter(h)
        torch.testing.assert_close(actual, x)
    torch.testing.assert_close(out.tokens, vit.norm(x))
    # Preconditions: the adapter output is not negligible, and (DINOv2-like)
    # LayerScale is not 1, so that a misplaced adapter changes the output.
    if variant == "dinov2_like":
        assert not torch.allclose(vit.blocks[0].ls2.gamma, torch.ones(48))
    assert all(adapter(x).abs().mean() > 0.1 for adapter in adapted.adapters)


def built_at(
    adapted: UniAdapterViT, variant: str, size: tuple[int, int]
) -> UniAdapterViT:
    """A copy of ``adapted`` whose ViT is built at ``size``, its position
    embedding resampled from ``adapted``'s with timm's ``resample_abs_pos_embed``
    (what timm's dynamic image size does on the fly)."""
    vit = adapted.vit
    patch = adapted.patch_size
    reference = UniAdapterViT(make_vit(variant, img_size=size))
    state = adapted.state_dict()
    state["vit.pos_embed"] = resample_abs_pos_embed(
        vit.pos_embed,
        new_size=[size[0] // patch, size[1] // patch],
        old_size=list(vit.patch_embed.grid_size),
        num_prefix_tokens=vit.num_prefix_tokens,
    )
    reference.load_state_dict(state)
    return reference


@pytest.mark.parametrize("grid", [(6, 6), (8, 8), (6, 8)])
@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_other_input_sizes_resample_the_position_embedding(
    variant: str, grid: tuple[int, int]
) -> None:
    vit = make_vit(variant)  # built for a 4 x 4 grid (32 px at patch 8)
    adapted = nonzero_adapters(UniAdapterViT(vit))
    patch = adapted.patch_size
    size = (grid[0] * patch, grid[1] * patch)  # e.g. 48 x 48, 64 x 64, 48 x 64
    reference = built_at(adapted, variant, size)
    images = torch.randn(2, 3, *size)
    kwargs = {"return_cls_attention": True, "intermediate_indices": (0, -1)}
    out = adapted.forward_features(images, **kwargs)  # type: ignore[arg-type]
    expected = reference.forward_features(images, **kwargs)  # type: ignore[arg-type]
    assert adapted.grid_size(*size) == grid
    assert out.tokens.shape == (2, vit.num_prefix_tokens + grid[0] * grid[1], 48)
    torch.testing.assert_close(out.tokens, expected.tokens)
    assert out.cls_attention is not None and expected.cls_attention is not None
    assert out.cls_attention.shape == (2, 3, grid[0] * grid[1])
    torch.testing.assert_close(out.cls_attention, expected.cls_attention)
    assert out.intermediates is not None and expected.intermediates is not None
    for actual, wanted in zip(out.intermediates, expected.intermediates, strict=True):
        torch.testing.assert_close(actual, wanted)


@pytest.mark.parametrize(
    ("variant", "size", "fix"),
    [("plain", (50, 64), "48 x 64"), ("dinov2_like", (28, 45), "28 x 42")],
)
def test_sizes_off_the_patch_grid_are_refused_up_front(
    variant: str, size: tuple[int, int], fix: str
) -> None:
    adapted = UniAdapterViT(make_vit(variant))
    patch = adapted.patch_size
    message = (
        rf"Input size {size[0]} x {size[1]} is not a multiple of the patch size "
        rf"{patch}\. .* multiples of {patch}, e.g\. {fix} .*GlareTransform"
    )
    with pytest.raises(ValueError, match=message):
        adapted.grid_size(*size)
    with pytest.raises(ValueError, match=message):
        adapted(torch.randn(1, 3, *size))


def test_vits_that_pad_their_inputs_keep_padding() -> None:
    vit = make_vit(dynamic_img_size=True, dynamic_img_pad=True)  # mmseg's GlareViT
    adapted = UniAdapterViT(vit)
    images = torch.randn(1, 3, 50, 60)
    assert adapted.grid_size(50, 60) == (7, 8)  # rounded up
    torch.testing.assert_close(adapted(images), vit.forward_features(images))


def test_glare_trains_on_views_of_another_size_than_the_vit() -> None:
    vit = make_vit()  # built at 32 px, patch 8
    model = GLARE(vit)
    transform = GlareTransform(input_size=48)  # a 6 x 6 patch grid
    *views, geometry = default_collate([transform(real_photo()) for _ in range(2)])
    assert views[0].shape == (2, 3, 48, 48)
    output = model(views, geometry)
    assert set(output.pairs) == {"regional", "local_distortion", "local_matching"}
    assert len(output.student_global) == 2
    assert all(torch.isfinite(glob).all() for glob in output.student_global)
    for pair in output.pairs.values():
        assert pair.student.shape == pair.teacher.shape
        assert pair.student.shape[0] > 0 and torch.isfinite(pair.student).all()


def _adapted_with_active_adapters(variant: str = "plain") -> UniAdapterViT:
    torch.manual_seed(0)
    adapted = UniAdapterViT(make_vit(variant), bottleneck=4, zero_init=False)
    return adapted


def _forward_backward(
    adapted: UniAdapterViT, images: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs (tokens, class attention, blocks 0 and -1) and adapter gradients
    of one forward/backward under the current autocast state."""
    adapted.zero_grad(set_to_none=True)
    out = adapted.forward_features(
        images, return_cls_attention=True, intermediate_indices=(0, -1)
    )
    out.tokens.float().square().mean().backward()
    assert out.cls_attention is not None and out.intermediates is not None
    grads = [p.grad.clone() for p in adapted.adapters.parameters()]  # type: ignore[union-attr]
    return [out.tokens, out.cls_attention, *out.intermediates], grads


def _autocast_run(
    adapted: UniAdapterViT, images: torch.Tensor, cache: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and adapter gradients of one bf16 autocast forward/backward."""
    adapted.cache_autocast_weights = cache
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return _forward_backward(adapted, images)


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_autocast_weight_copies_are_bit_identical_to_autocast_casts(
    variant: str,
) -> None:
    adapted = _adapted_with_active_adapters(variant)
    images = torch.randn(2, 3, image_size(adapted.vit), image_size(adapted.vit))
    expected, expected_grads = _autocast_run(adapted, images, cache=False)
    assert not adapted._autocast_weights  # nothing copied with the cache off
    for _ in range(2):  # made at the first forward, reused at the second
        outputs, grads = _autocast_run(adapted, images, cache=True)
        for got, want in zip(outputs + grads, expected + expected_grads, strict=True):
            assert torch.equal(got, want)
    copies = adapted._autocast_weights
    assert len(copies) == 4 * adapted.num_blocks  # qkv, proj, fc1, fc2
    assert all(weight.dtype == torch.bfloat16 for weight, _ in copies.values())


def test_autocast_weight_copies_are_remade_when_weights_change() -> None:
    adapted = _adapted_with_active_adapters()
    images = torch.randn(2, 3, image_size(adapted.vit), image_size(adapted.vit))
    _autocast_run(adapted, images, cache=True)
    state = {k: v + 0.01 for k, v in adapted.vit.state_dict().items()}
    adapted.vit.load_state_dict(state)  # in place: new versions, same storage
    expected, expected_grads = _autocast_run(adapted, images, cache=False)
    outputs, grads = _autocast_run(adapted, images, cache=True)
    for got, want in zip(outputs + grads, expected + expected_grads, strict=True):
        assert torch.equal(got, want)
    # A layer that trains again is left to autocast (and gets its gradient).
    qkv = adapted.blocks[0].attn.qkv
    assert isinstance(qkv, torch.nn.Linear)
    qkv.requires_grad_(True)
    _autocast_run(adapted, images, cache=True)
    assert qkv not in adapted._autocast_weights
    assert qkv.weight.grad is not None and qkv.weight.grad.abs().sum() > 0


def test_no_weight_copies_without_autocast() -> None:
    adapted = _adapted_with_active_adapters()
    images = torch.randn(2, 3, image_size(adapted.vit), image_size(adapted.vit))
    assert adapted.autocast_weights(images.device) is None
    adapted.forward_features(images)
    assert not adapted._autocast_weights


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_matmul_attention_is_timms_unfused_attention(variant: str) -> None:
    adapted = _adapted_with_active_adapters(variant)
    adapted.attention = "matmul"
    images = torch.randn(2, 3, image_size(adapted.vit), image_size(adapted.vit))
    outputs, grads = _forward_backward(adapted, images)
    for block in adapted.blocks:  # timm's own explicit attention
        block.attn.fused_attn = False
    adapted.attention = "sdpa"
    expected, expected_grads = _forward_backward(adapted, images)
    for got, want in zip(outputs + grads, expected + expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_matmul_and_fused_attention_agree_under_bf16_autocast() -> None:
    adapted = _adapted_with_active_adapters()
    images = torch.randn(2, 3, image_size(adapted.vit), image_size(adapted.vit))
    results = {}
    for kernel in ("matmul", "sdpa"):
        adapted.attention = kernel
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[kernel] = _forward_backward(adapted, images)
    (tokens, cls_map, *_), grads = results["matmul"]
    (want_tokens, want_map, *_), want_grads = results["sdpa"]
    torch.testing.assert_close(tokens, want_tokens, atol=0.02, rtol=0.0)
    torch.testing.assert_close(cls_map, want_map, atol=1e-4, rtol=0.0)
    for got, want in zip(grads, want_grads, strict=True):
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, atol=0.02 * scale, rtol=0.0)


def test_auto_attention_multiplies_matrices_on_the_cpu_under_bf16_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapted = _adapted_with_active_adapters()
    cpu = torch.device("cpu")
    assert adapted.attention == "auto"
    assert not adapted.uses_matmul_attention(cpu)
    assert not adapted.uses_matmul_attention(torch.device("cuda"))
    calls = spy_on_sdpa(monkeypatch)
    images = torch.randn(1, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert adapted.uses_matmul_attention(cpu)
        assert not adapted.uses_matmul_attention(torch.device("cuda"))
        adapted.forward_features(images, return_cls_attention=True)
        assert not calls
        adapted.attention = "sdpa"
        assert not adapted.uses_matmul_attention(cpu)
        adapted.forward_features(images)
        assert len(calls) == adapted.num_blocks
    with torch.autocast("cpu", dtype=torch.float16):
        adapted.attention = "auto"
        assert not adapted.uses_matmul_attention(cpu)
    adapted.attention = "matmul"
    assert adapted.uses_matmul_attention(cpu)


def test_unknown_attention_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, sdpa, matmul; got 'flash'"):
        UniAdapterViT(make_vit(), attention="flash")  # type: ignore[arg-type]


def _sample_skipping_reference(
    adapted: UniAdapterViT, images: torch.Tensor, drop_path: float, seed: int
) -> torch.Tensor:
    """DINOv2's ``drop_add_residual_stochastic_depth`` written out per branch:
    ``x[rows] += B / kept * branch(x[rows])`` for ``kept`` rows drawn from the
    same generator stream, the adapters on every row."""
    vit = adapted.vit
    generator = torch.Generator().manual_seed(seed)
    batch = images.shape[0]
    kept = max(1, round(batch * (1 - drop_path)))

    def add_residual(x: torch.Tensor, branch: torch.nn.Module) -> torch.Tensor:
        rows = torch.rand(batch, generator=generator).argsort()[:kept]
        out = x.clone()
        out[rows] += batch / kept * branch(x[rows])
        return out

    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    for block, adapter in zip(vit.blocks, adapted.adapters, strict=True):
        h = add_residual(x, lambda t, b=block: b.ls1(b.attn(b.norm1(t))))
        x = add_residual(h, lambda t, b=block: b.ls2(b.mlp(b.norm2(t))))
        x = x + adapter(h)
    return vit.norm(x)


@pytest.mark.parametrize("variant", VIT_VARIANTS)
@pytest.mark.parametrize("drop_path", [0.25, 0.5])
def test_drop_path_skips_frozen_branches_per_sample_as_dinov2(
    variant: str, drop_path: float
) -> None:
    adapted = nonzero_adapters(UniAdapterViT(make_vit(variant), bottleneck=8))
    size = image_size(adapted.vit)
    images = torch.randn(4, 3, size, size)
    out = adapted.forward_features(
        images, drop_path=drop_path, generator=torch.Generator().manual_seed(3)
    )
    expected = _sample_skipping_reference(adapted, images, drop_path, seed=3)
    torch.testing.assert_close(out.tokens, expected)
    full = adapted(images)
    skipped = (out.tokens - full).abs().amax(dim=(1, 2))  # (B,)
    assert (skipped > 1e-3).all()  # every image lost some branch


def test_drop_path_computes_frozen_branches_only_for_the_kept_rows() -> None:
    adapted = UniAdapterViT(make_vit(), bottleneck=4)
    rows: dict[str, list[int]] = {"qkv": [], "fc1": [], "adapter": []}
    for block, adapter in zip(adapted.vit.blocks, adapted.adapters, strict=True):
        for name, layer in (
            ("qkv", block.attn.qkv),
            ("fc1", block.mlp.fc1),
            ("adapter", adapter.down),
        ):
            layer.register_forward_pre_hook(
                lambda module, args, name=name: rows[name].append(args[0].shape[0])
            )
    images = torch.randn(8, 3, 32, 32)
    adapted.forward_features(images, drop_path=0.3)
    depth = len(adapted.vit.blocks)
    assert rows == {"qkv": [6] * depth, "fc1": [6] * depth, "adapter": [8] * depth}


def test_drop_path_reaches_every_adapter_and_nothing_frozen() -> None:
    adapted = UniAdapterViT(make_vit(), bottleneck=4, zero_init=False)
    images = torch.randn(4, 3, 32, 32)
    tokens = adapted.forward_features(images, drop_path=0.5).tokens
    tokens.square().mean().backward()
    assert all(p.grad is None for p in adapted.vit.parameters())
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in adapted.adapters.parameters()
    )


def test_invalid_drop_path_is_refused() -> None:
    adapted = UniAdapterViT(make_vit())
    images = torch.randn(2, 3, 32, 32)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"drop_path must be in \[0, 1\)"):
            adapted.forward_features(images, drop_path=bad)
    with pytest.raises(ValueError, match="return_cls_attention needs every row"):
        adapted.forward_features(images, drop_path=0.1, return_cls_attention=True)
