"""Patch-level augmentations for GLARE's local distortion term (L_loc1).

GLARE distorts a random subset of the patches of each student view and asks the
student's tokens of those patches to match the teacher's tokens of the clean
view (GLARE, Sec. "local consistency"; the paper studies patch blurring among
other strategies). Every augmentation here shares one interface:

.. code-block:: python

    distorted, mask = augmentation(images, patch_size, generator=generator)

with ``images`` of shape (B, C, H, W), ``distorted`` of the same shape, dtype and
device, and ``mask`` a boolean tensor with shape (B, N), ``N = (H / p) * (W / p)``
in row-major order of the patch grid, True for the distorted patches. Pixels
outside the selected patches are bit-identical to the input. Everything runs
batched on the input's device, without a Python loop over images and without
host synchronisation.
"""

from __future__ import annotations

import math

import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import Tensor, nn
from torch.nn import functional as F

from lightly_glare.models.defaults import BLUR_SIGMAS, PATCH_RATIO
from lightly_glare.models.geometry import patch_grid_mask_to_pixels
from lightly_glare.models.randomness import random_tensor

__all__ = [
    "PATCH_AUGMENTATIONS",
    "PatchAugmentation",
    "PatchBlur",
    "PatchColorJitter",
    "PatchMasking",
    "PatchNoise",
    "build_patch_augmentation",
]


class PatchAugmentation(nn.Module):
    """Distorts a random subset of the patches of each image.

    Subclasses implement :meth:`distort`, which returns a distorted version of
    the *whole* batch; this base class draws the patch selection and keeps the
    distorted pixels only inside the selected patches (``torch.where``, so every
    other pixel is bit-identical to the input).

    Exactly ``round(patch_ratio * N)`` patches (Python's ``round``, ties to even)
    are selected per image, uniformly at random without replacement: the first
    ones in a batched ``argsort`` of uniform random values.

    Attributes:
        patch_ratio: Fraction of the patches distorted per image, in [0, 1].
            Defaults to 0.3 (ours). 0 returns the images unchanged with an empty
            mask; 1 distorts every patch.
    """

    def __init__(self, patch_ratio: float = PATCH_RATIO) -> None:
        """Initialises the augmentation.

        Args:
            patch_ratio: Fraction of the patches distorted per image, in [0, 1].

        Raises:
            ValueError: If ``patch_ratio`` is outside [0, 1].
        """
        super().__init__()
        if not 0.0 <= patch_ratio <= 1.0:
            raise ValueError(f"patch_ratio must be in [0, 1], got {patch_ratio}.")
        self.patch_ratio = patch_ratio

    def extra_repr(self) -> str:  # noqa: D102
        return f"patch_ratio={self.patch_ratio}"

    def num_selected(self, num_patches: int) -> int:
        """Number of patches distorted per image for a grid of ``num_patches``."""
        return round(self.patch_ratio * num_patches)

    def sample_mask(
        self,
        batch: int,
        num_patches: int,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws which patches to distort.

        Args:
            batch: Number of images B.
            num_patches: Patches per image N.
            device: Device of the mask.
            generator: Optional random generator.

        Returns:
            Boolean mask with shape (B, N) and exactly :meth:`num_selected`
            True entries per row.
        """
        count = self.num_selected(num_patches)
        mask = torch.zeros(batch, num_patches, dtype=torch.bool, device=device)
        if count == 0:
            return mask
        scores = random_tensor((batch, num_patches), generator, device)  # (B, N)
        chosen = scores.argsort(dim=1)[:, :count]  # (B, count)
        return mask.scatter_(1, chosen, True)

    def distort(
        self, images: Tensor, patch_size: int, generator: torch.Generator | None
    ) -> Tensor:
        """Returns a distorted version of the whole batch.

        Args:
            images: Images with shape (B, C, H, W).
            patch_size: Patch side p in pixels (H and W are multiples of it).
            generator: Optional random generator.

        Returns:
            Distorted images with the shape, dtype and device of ``images``.
        """
        raise NotImplementedError

    def forward(
        self,
        images: Tensor,
        patch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Distorts a random subset of the patches of each image.

        Args:
            images: Floating point images with shape (B, C, H, W) (C = 3 for
                colour jitter); H and W must be multiples of ``patch_size``.
            patch_size: Patch side p in pixels (the ViT's patch size).
            generator: Optional random generator for reproducibility; best on
                the images' device (samples are copied over otherwise).

        Returns:
            ``(distorted, mask)``: images with the shape, dtype and device of
            ``images`` where only the selected patches differ, and a boolean mask
            with shape (B, N), ``N = (H // p) * (W // p)``, row-major, True for
            the distorted patches.

        Raises:
            ValueError: If ``images`` is not a 4-D floating point tensor, or H or
                W is not a multiple of ``patch_size``.
        """
        self._check_input(images, patch_size)
        batch, _, height, width = images.shape
        grid = (height // patch_size, width // patch_size)
        mask = self.sample_mask(batch, grid[0] * grid[1], images.device, generator)
        if self.num_selected(grid[0] * grid[1]) == 0:
            return images.clone(), mask
        distorted = self.distort(images, patch_size, generator)  # (B, C, H, W)
        pixels = patch_grid_mask_to_pixels(mask, grid, patch_size)  # (B, 1, H, W)
        return torch.where(pixels, distorted.to(images.dtype), images), mask

    def _check_input(self, images: Tensor, patch_size: int) -> None:
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                "images must be a floating point tensor of shape (B, C, H, W), got "
                f"shape {tuple(images.shape)} and dtype {images.dtype}."
            )
        if int(patch_size) != patch_size or patch_size < 1:
            raise ValueError(
                f"patch_size must be a positive integer, got {patch_size}."
            )
        height, width = images.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"Image size (H, W) = {(height, width)} of images with shape "
                f"{tuple(images.shape)} must be divisible by patch_size {patch_size}."
            )


class PatchBlur(PatchAugmentation):
    """Replaces a random subset of patches by a Gaussian-blurred version.

    GLARE's default patch-level augmentation ("patch blurring"). Each image gets
    its own sigma, drawn uniformly from ``sigmas``; the kernel covers
    ``+-ceil(3 sigma)`` pixels. The whole batch is blurred with one separable,
    depthwise convolution (replicate padding at the image border, so a constant
    image stays constant), and only the selected patches take the blurred
    pixels; blurred patches see their neighbours' pixels, like a blur of the
    whole image would.

    Attributes:
        patch_ratio: Fraction of the patches blurred per image. Defaults to 0.3.
        sigmas: (min, max) of the uniform sigma distribution, in pixels.
            Defaults to (0.1, 2.0) (ours, DINO's blur range).

    Examples:
        >>> blur = PatchBlur(patch_ratio=0.3)
        >>> images = torch.randn(8, 3, 224, 224)
        >>> distorted, mask = blur(images, patch_size=16)  # mask: (8, 196)
    """

    def __init__(
        self,
        patch_ratio: float = PATCH_RATIO,
        sigmas: tuple[float, float] = BLUR_SIGMAS,
    ) -> None:
        """Initialises the blur.

        Args:
            patch_ratio: Fraction of the patches blurred per image, in [0, 1].
            sigmas: (min, max) of the per-image sigma, with 0 < min <= max.

        Raises:
            ValueError: If an argument is out of range.
        """
        super().__init__(patch_ratio)
        if len(sigmas) != 2 or not 0.0 < sigmas[0] <= sigmas[1]:
            raise ValueError(f"sigmas must satisfy 0 < min <= max, got {sigmas}.")
        self.sigmas = (float(sigmas[0]), float(sigmas[1]))

    def extra_repr(self) -> str:  # noqa: D102
        return f"patch_ratio={self.patch_ratio}, sigmas={self.sigmas}"

    def kernels(self, sigma: Tensor) -> Tensor:
        """Normalised 1-D Gaussian kernels, one per sigma.

        Args:
            sigma: Standard deviations with shape (B,).

        Returns:
            Kernels with shape (B, 2 R + 1), ``R = ceil(3 * max sigma)``; the
            taps beyond ``ceil(3 sigma)`` of each kernel are zero.
        """
        radius = math.ceil(3.0 * self.sigmas[1])
        offsets = torch.arange(
            -radius, radius + 1, device=sigma.device, dtype=sigma.dtype
        )
        sigma = sigma[:, None]  # (B, 1)
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)  # (B, 2R + 1)
        weights = weights * (offsets.abs() <= torch.ceil(3.0 * sigma))
        return weights / weights.sum(dim=1, keepdim=True)

    def distort(
        self, images: Tensor, patch_size: int, generator: torch.Generator | None
    ) -> Tensor:
        """Blurs every image with its own sigma (see class docstring)."""
        del patch_size  # the whole image is blurred
        batch, channels, height, width = images.shape
        low, high = self.sigmas
        sigma = low + (high - low) * random_tensor(
            (batch,), generator, images.device
        )  # (B,)
        kernel = self.kernels(sigma).to(images.dtype)  # (B, K)
        size = kernel.shape[1]
        radius = size // 2
        # Depthwise convolution over B * C channels, one kernel per image.
        kernel = kernel.repeat_interleave(channels, dim=0)  # (B * C, K)
        flat = images.reshape(1, batch * channels, height, width)  # (1, B*C, H, W)
        flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
        flat = F.conv2d(flat, kernel.reshape(-1, 1, 1, size), groups=batch * channels)
        flat = F.conv2d(flat, kernel.reshape(-1, 1, size, 1), groups=batch * channels)
        return flat.reshape(batch, channels, height, width)  # (B, C, H, W)


class PatchNoise(PatchAugmentation):
    """Adds Gaussian noise to a random subset of patches.

    Attributes:
        patch_ratio: Fraction of the patches distorted per image. Defaults to 0.3.
        std: Standard deviation of the additive noise, in the units of the input
            (for ImageNet-normalised views, 1 is about one standard deviation of
            natural pixel values). Defaults to 0.2 (ours).

    Examples:
        >>> noise = PatchNoise(std=0.2)
        >>> distorted, mask = noise(torch.randn(8, 3, 224, 224), patch_size=16)
    """

    def __init__(self, patch_ratio: float = PATCH_RATIO, std: float = 0.2) -> None:
        """Initialises the noise.

        Args:
            patch_ratio: Fraction of the patches distorted per image, in [0, 1].
            std: Non-negative standard deviation of the noise.

        Raises:
            ValueError: If an argument is out of range.
        """
        super().__init__(patch_ratio)
        if std < 0:
            raise ValueError(f"std must be non-negative, got {std}.")
        self.std = std

    def extra_repr(self) -> str:  # noqa: D102
        return f"patch_ratio={self.patch_ratio}, std={self.std}"

    def distort(
        self, images: Tensor, patch_size: int, generator: torch.Generator | None
    ) -> Tensor:
        """Adds ``std``-scaled standard normal noise to every pixel."""
        del patch_size
        noise = random_tensor(
            images.shape, generator, images.device, images.dtype, normal=True
        )
        return images + self.std * noise


class PatchColorJitter(PatchAugmentation):
    """Jitters brightness, contrast and saturation of each selected patch.

    Every patch gets its own random factors (per-patch jitter), so a distorted
    patch differs in colour from its neighbours, unlike the view-level colour
    jitter that changes a whole view at once. The factors are drawn uniformly
    from ``[1 - s, 1 + s]`` and applied in a fixed order, as
    ``torchvision.transforms.functional.adjust_*`` would on the patch alone:
    brightness ``x * b``, contrast ``(x - m) * c + m`` with ``m`` the patch's
    mean grey level, saturation ``g + s * (x - g)`` with ``g`` the pixel's grey
    level (ITU-R 601-2 luma); results are clamped to [0, 1]. Hue is not
    jittered. The jitter is applied to un-normalised pixels: inputs are
    de-normalised with ``normalize`` first and normalised again afterwards.

    Attributes:
        patch_ratio: Fraction of the patches distorted per image. Defaults to 0.3.
        brightness: Brightness strength. Defaults to 0.4 (DINO's view jitter).
        contrast: Contrast strength. Defaults to 0.4.
        saturation: Saturation strength. Defaults to 0.2.
        normalize: ``{"mean": [...], "std": [...]}`` the inputs were normalised
            with, or None for inputs in [0, 1]. Defaults to ImageNet's.

    Examples:
        >>> jitter = PatchColorJitter()
        >>> distorted, mask = jitter(torch.randn(8, 3, 224, 224), patch_size=16)
    """

    mean: Tensor  # (1, 3, 1, 1) buffer
    std: Tensor  # (1, 3, 1, 1) buffer
    luma: Tensor  # (1, 3, 1, 1) buffer

    def __init__(
        self,
        patch_ratio: float = PATCH_RATIO,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        """Initialises the jitter.

        Args:
            patch_ratio: Fraction of the patches distorted per image, in [0, 1].
            brightness: Strength in [0, 1].
            contrast: Strength in [0, 1].
            saturation: Strength in [0, 1].
            normalize: Normalisation of the inputs, or None for [0, 1] pixels.

        Raises:
            ValueError: If an argument is out of range.
        """
        super().__init__(patch_ratio)
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.normalize = normalize
        mean = [0.0, 0.0, 0.0] if normalize is None else list(normalize["mean"])
        std = [1.0, 1.0, 1.0] if normalize is None else list(normalize["std"])
        self.register_buffer(
            "mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "luma",
            torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1),
            persistent=False,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"patch_ratio={self.patch_ratio}, brightness={self.brightness}, "
            f"contrast={self.contrast}, saturation={self.saturation}"
        )

    def distort(
        self, images: Tensor, patch_size: int, generator: torch.Generator | None
    ) -> Tensor:
        """Jitters every patch with its own factors (see class docstring)."""
        batch, channels, height, width = images.shape
        if channels != 3:
            raise ValueError(
                "PatchColorJitter needs RGB images (B, 3, H, W), got shape "
                f"{tuple(images.shape)}."
            )
        p = patch_size
        h, w = height // p, width // p
        mean = self.mean.to(images.device, images.dtype)
        std = self.std.to(images.device, images.dtype)
        luma = self.luma.to(images.device, images.dtype).reshape(1, 3, 1, 1, 1, 1)
        uniform = random_tensor(
            (3, batch, h, w), generator, images.device, images.dtype
        )
        uniform = uniform.reshape(3, batch, 1, h, 1, w, 1)  # per patch, broadcastable
        signed = 2.0 * uniform - 1.0  # (3, B, 1, h, 1, w, 1), in [-1, 1)
        brightness = 1.0 + self.brightness * signed[0]  # (B, 1, h, 1, w, 1)
        contrast = 1.0 + self.contrast * signed[1]
        saturation = 1.0 + self.saturation * signed[2]
        pixels = images * std + mean  # (B, 3, H, W), in [0, 1]
        pixels = pixels.reshape(batch, channels, h, p, w, p)  # (B, 3, h, p, w, p)
        # Brightness.
        pixels = (pixels * brightness).clamp(0.0, 1.0)
        # Contrast around the patch's mean grey level.
        grey = (pixels * luma).sum(dim=1, keepdim=True)  # (B, 1, h, p, w, p)
        grey_mean = grey.mean(dim=(3, 5), keepdim=True)  # (B, 1, h, 1, w, 1)
        pixels = ((pixels - grey_mean) * contrast + grey_mean).clamp(0.0, 1.0)
        # Saturation: blend with the pixel's grey level.
        grey = (pixels * luma).sum(dim=1, keepdim=True)  # (B, 1, h, p, w, p)
        pixels = (grey + saturation * (pixels - grey)).clamp(0.0, 1.0)
        pixels = pixels.reshape(batch, channels, height, width)  # (B, 3, H, W)
        return (pixels - mean) / std


class PatchMasking(PatchAugmentation):
    """Fills a random subset of patches with the image's mean colour.

    The fill value is the per-image, per-channel mean over all pixels, so a
    masked patch carries no local information but keeps the image's overall
    colour statistics.

    Attributes:
        patch_ratio: Fraction of the patches masked per image. Defaults to 0.3.

    Examples:
        >>> masking = PatchMasking()
        >>> distorted, mask = masking(torch.randn(8, 3, 224, 224), patch_size=16)
    """

    def distort(
        self, images: Tensor, patch_size: int, generator: torch.Generator | None
    ) -> Tensor:
        """Returns every image filled with its per-channel mean."""
        del patch_size, generator  # deterministic, independent of the grid
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)  # (B,C,H,W)


#: Names accepted by :func:`build_patch_augmentation`.
PATCH_AUGMENTATIONS: dict[str, type[PatchAugmentation]] = {
    "blur": PatchBlur,
    "noise": PatchNoise,
    "color_jitter": PatchColorJitter,
    "mask": PatchMasking,
}


def build_patch_augmentation(name: str, **kwargs: object) -> PatchAugmentation:
    """Builds a patch augmentation by name.

    Args:
        name: One of ``"blur"``, ``"noise"``, ``"color_jitter"``, ``"mask"``.
        **kwargs: Constructor arguments of the chosen class (e.g.
            ``patch_ratio=0.3``).

    Returns:
        The patch augmentation.

    Raises:
        ValueError: If ``name`` is unknown.

    Examples:
        >>> blur = build_patch_augmentation("blur", patch_ratio=0.5)
    """
    if name not in PATCH_AUGMENTATIONS:
        raise ValueError(
            f"Unknown patch augmentation {name!r}; valid names are "
            f"{sorted(PATCH_AUGMENTATIONS)}."
        )
    return PATCH_AUGMENTATIONS[name](**kwargs)  # type: ignore[arg-type]
