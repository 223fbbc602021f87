import math

import pytest
import torch
import torchvision.transforms.functional as TF

from lightly_glare.models.geometry import patch_grid_mask_to_pixels
from lightly_glare.models.patch_augmentations import (
    PATCH_AUGMENTATIONS,
    PatchAugmentation,
    PatchBlur,
    PatchColorJitter,
    PatchMasking,
    PatchNoise,
    build_patch_augmentation,
)
from tests.conftest import DEVICES


def make(name: str, **kwargs: object) -> PatchAugmentation:
    if name == "blur":  # sigmas large enough that every blurred pixel changes
        kwargs.setdefault("sigmas", (1.0, 2.0))
    return build_patch_augmentation(name, **kwargs)


def patches(images: torch.Tensor, p: int) -> torch.Tensor:
    b, c, height, width = images.shape
    grid = images.reshape(b, c, height // p, p, width // p, p)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c, p, p)  # (B, N, C, p, p)


@pytest.mark.parametrize("name", PATCH_AUGMENTATIONS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 1.0])
def test_exactly_the_selected_patches_change(name: str, ratio: float) -> None:
    images = torch.randn(3, 3, 32, 48)
    distorted, mask = make(name, patch_ratio=ratio)(images, patch_size=8)
    assert mask.shape == (3, 24) and mask.dtype == torch.bool
    changed = (patches(distorted, 8) != patches(images, 8)).flatten(2)  # (B, N, .)
    assert torch.equal(changed.any(dim=-1), mask)  # every selected patch changes
    outside = ~patch_grid_mask_to_pixels(mask, (4, 6), 8).expand_as(images)
    assert torch.equal(distorted[outside], images[outside])  # bit-identical


@pytest.mark.parametrize("name", PATCH_AUGMENTATIONS)
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("size", [(16, 16), (24, 40), (56, 56)])
def test_number_of_selected_patches(
    name: str, ratio: float, size: tuple[int, int]
) -> None:
    images = torch.rand(5, 3, *size)
    _, mask = make(name, patch_ratio=ratio)(images, patch_size=8)
    num_patches = (size[0] // 8) * (size[1] // 8)
    assert mask.shape == (5, num_patches)
    assert (mask.sum(dim=1) == round(ratio * num_patches)).all()


def test_selection_is_uniform() -> None:
    # Over many draws every patch is selected about ratio of the time.
    _, mask = PatchMasking(patch_ratio=0.25)(torch.rand(4000, 3, 16, 16), 4)
    frequency = mask.float().mean(dim=0)  # (16,)
    assert (frequency - 0.25).abs().max() < 0.04


@pytest.mark.parametrize("name", PATCH_AUGMENTATIONS)
def test_reproducible_with_generator(name: str) -> None:
    images = torch.randn(4, 3, 32, 32)
    augmentation = make(name)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return augmentation(images, 8, generator=torch.Generator().manual_seed(seed))

    first, second, other = run(1), run(1), run(2)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("name", PATCH_AUGMENTATIONS)
def test_ratio_zero_and_one(name: str) -> None:
    images = torch.randn(2, 3, 16, 24)
    unchanged, mask = make(name, patch_ratio=0.0)(images, 8)
    assert not mask.any()
    assert torch.equal(unchanged, images)
    assert unchanged.data_ptr() != images.data_ptr()  # a copy, not an alias
    everything, mask = make(name, patch_ratio=1.0)(images, 8)
    assert mask.all()
    assert (everything != images).flatten(1).any(dim=1).all()


@pytest.mark.parametrize("name", PATCH_AUGMENTATIONS)
@pytest.mark.parametrize("value", [0.0, 0.5, -2.1])
def test_constant_image_stays_finite(name: str, value: float) -> None:
    images = torch.full((2, 3, 16, 16), value)
    distorted, _ = make(name, patch_ratio=1.0)(images, 8)
    assert torch.isfinite(distorted).all()


@pytest.mark.parametrize("name", ["blur", "mask"])
def test_blur_and_mask_keep_a_constant_image_constant(name: str) -> None:
    images = torch.full((2, 3, 16, 16), 0.7)
    distorted, _ = build_patch_augmentation(name, patch_ratio=1.0)(images, 8)
    assert torch.allclose(distorted, images, atol=1e-6)


def test_blur_of_a_constant_patch_is_constant() -> None:
    # A constant region wider than the kernel reach (6 px) around patch (1, 1):
    # the blurred patch keeps its value although the rest of the image is noise.
    images = torch.randn(1, 3, 48, 48)
    images[:, :, 10:38, 10:38] = 0.3
    distorted, mask = PatchBlur(patch_ratio=1.0)(images, 16)
    assert mask.all()
    assert torch.allclose(distorted[:, :, 16:32, 16:32], torch.tensor(0.3), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 2.0])
def test_blur_matches_torchvision_inside(sigma: float) -> None:
    images = torch.rand(2, 3, 40, 40)
    distorted, _ = PatchBlur(patch_ratio=1.0, sigmas=(sigma, sigma))(images, 8)
    radius = math.ceil(3 * sigma)
    reference = TF.gaussian_blur(images, [2 * radius + 1] * 2, [sigma, sigma])
    interior = (
        slice(None),
        slice(None),
        slice(radius, -radius),
        slice(radius, -radius),
    )
    assert torch.allclose(distorted[interior], reference[interior], atol=1e-5)


def test_blur_kernels_cover_three_sigma_and_sum_to_one() -> None:
    blur = PatchBlur(sigmas=(0.1, 2.0))
    kernels = blur.kernels(torch.tensor([0.1, 0.9, 2.0]))
    assert kernels.shape == (3, 13)
    assert torch.allclose(kernels.sum(dim=1), torch.ones(3))
    support = (kernels > 0).sum(dim=1)
    assert support.tolist() == [3, 7, 13]  # 2 * ceil(3 sigma) + 1 taps


def test_masking_fills_with_the_image_mean() -> None:
    images = torch.randn(2, 3, 16, 16)
    distorted, mask = PatchMasking(patch_ratio=0.5)(images, 8)
    mean = images.mean(dim=(2, 3))  # (B, C)
    selected = patches(distorted, 8)[mask]  # (M, C, p, p)
    owners = mask.nonzero()[:, 0]
    assert torch.allclose(selected, mean[owners][:, :, None, None].expand_as(selected))


def test_noise_has_the_requested_std() -> None:
    images = torch.zeros(8, 3, 64, 64)
    distorted, _ = PatchNoise(patch_ratio=1.0, std=0.3)(images, 16)
    assert abs(distorted.std().item() - 0.3) < 0.01
    same, _ = PatchNoise(patch_ratio=1.0, std=0.0)(images, 16)
    assert torch.equal(same, images)


def test_color_jitter_is_per_patch_and_identity_without_strength() -> None:
    images = torch.full((2, 3, 32, 32), 0.5)
    jitter = PatchColorJitter(patch_ratio=1.0, normalize=None)
    distorted, _ = jitter(images, 8)
    per_patch = patches(distorted, 8)  # (B, N, C, p, p)
    flat = per_patch.flatten(3)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat))  # constant in a patch
    assert per_patch[..., 0, 0].unique().numel() > 8  # but differs across patches
    assert ((distorted >= 0) & (distorted <= 1)).all()

    images = torch.rand(2, 3, 32, 32)
    identity = PatchColorJitter(1.0, brightness=0, contrast=0, saturation=0)
    normalized = (images - identity.mean) / identity.std
    out, _ = identity(normalized, 8)
    assert torch.allclose(out, normalized, atol=1e-5)


@pytest.mark.parametrize("name", PATCH_AUGMENTATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_dtype_and_device_are_preserved(
    name: str, dtype: torch.dtype, device: str
) -> None:
    images = torch.randn(2, 3, 16, 16, device=device).to(dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    distorted, mask = make(name).to(device)(images, 8, generator=generator)
    assert distorted.dtype == dtype and distorted.device == images.device
    assert mask.device == images.device
    assert torch.isfinite(distorted.float()).all()


@pytest.mark.parametrize(
    "images, patch_size",
    [
        (torch.randn(3, 16, 16), 8),  # 3-D
        (torch.randint(0, 255, (2, 3, 16, 16)), 8),  # integer
        (torch.randn(2, 3, 16, 20), 8),  # width not divisible
        (torch.randn(2, 3, 12, 16), 8),  # height not divisible
        (torch.randn(2, 3, 16, 16), 0),  # bad patch size
    ],
)
def test_bad_inputs_raise(images: torch.Tensor, patch_size: int) -> None:
    with pytest.raises(ValueError, match="shape|patch_size"):
        PatchBlur()(images, patch_size)


def test_color_jitter_needs_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        PatchColorJitter()(torch.randn(2, 1, 16, 16), 8)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="patch_ratio"):
        PatchBlur(patch_ratio=1.5)
    with pytest.raises(ValueError, match="sigmas"):
        PatchBlur(sigmas=(0.0, 1.0))
    with pytest.raises(ValueError, match="std"):
        PatchNoise(std=-1.0)
    with pytest.raises(ValueError, match="brightness"):
        PatchColorJitter(brightness=2.0)


def test_factory() -> None:
    assert isinstance(build_patch_augmentation("blur"), PatchBlur)
    noise = build_patch_augmentation("noise", patch_ratio=0.5, std=0.1)
    assert isinstance(noise, PatchNoise) and noise.std == 0.1
    assert noise.patch_ratio == 0.5
    assert isinstance(build_patch_augmentation("color_jitter"), PatchColorJitter)
    assert isinstance(build_patch_augmentation("mask"), PatchMasking)
    with pytest.raises(ValueError, match="blur.*color_jitter.*mask.*noise"):
        build_patch_augmentation("cutout")
