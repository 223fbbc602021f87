"""GLARE's two-view image augmentation with tracked crop geometry."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image, ImageFilter, ImageOps
from torch import Tensor

from lightly_glare.models.defaults import BLUR_SIGMAS, IMG_SIZE
from lightly_glare.models.geometry import view_geometry

__all__ = [
    "Box",
    "GlareTransform",
    "RandomGaussianBlur",
    "RandomSolarization",
    "box_overlap",
]

#: A crop box in pixels: (top, left, height, width).
Box = tuple[int, int, int, int]


def box_overlap(box_a: Box, box_b: Box) -> float:
    """Intersection area of two boxes over the area of the smaller one.

    Args:
        box_a: (top, left, height, width) in pixels.
        box_b: (top, left, height, width) in pixels.

    Returns:
        The overlap fraction in [0, 1].
    """
    top_a, left_a, height_a, width_a = box_a
    top_b, left_b, height_b, width_b = box_b
    rows = min(top_a + height_a, top_b + height_b) - max(top_a, top_b)
    cols = min(left_a + width_a, left_b + width_b) - max(left_a, left_b)
    smaller = min(height_a * width_a, height_b * width_b)
    return max(rows, 0) * max(cols, 0) / max(smaller, 1)


class RandomGaussianBlur:
    """PIL Gaussian blur applied with probability ``prob`` (torch's RNG).

    Same operation as lightly's ``GaussianBlur`` (PIL's ``GaussianBlur`` with
    ``radius = sigma``, sigma uniform in ``sigmas``), but drawn from torch's
    global generator so that ``torch.manual_seed`` reproduces a whole view.

    Attributes:
        prob: Probability of blurring.
        sigmas: (min, max) of the uniform sigma, in pixels.
    """

    def __init__(self, prob: float, sigmas: tuple[float, float] = BLUR_SIGMAS) -> None:
        self.prob = prob
        self.sigmas = sigmas

    def __call__(self, image: Image.Image) -> Image.Image:
        """Blurs ``image`` with probability ``prob``."""
        if self.prob <= 0.0 or torch.rand(()) >= self.prob:
            return image
        sigma = float(torch.empty(()).uniform_(self.sigmas[0], self.sigmas[1]))
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))


class RandomSolarization:
    """PIL solarisation applied with probability ``prob`` (torch's RNG).

    Same operation as lightly's ``RandomSolarization``, drawn from torch's
    global generator.

    Attributes:
        prob: Probability of solarising.
        threshold: Pixel values at or above this are inverted.
    """

    def __init__(self, prob: float, threshold: int = 128) -> None:
        self.prob = prob
        self.threshold = threshold

    def __call__(self, image: Image.Image) -> Image.Image:
        """Solarises ``image`` with probability ``prob``."""
        if self.prob <= 0.0 or torch.rand(()) >= self.prob:
            return image
        return ImageOps.solarize(image, threshold=self.threshold)


class GlareTransform(MultiViewTransform):
    """Two global views of an image and the geometry relating them, for GLARE.

    Implements GLARE's image-level augmentation (two views X and X' per image)
    with DINO's augmentation chain [ours, DINO's defaults] and records each
    view's crop box and flip, so that patch correspondences between the views
    (L_loc2, region transfer) can be computed exactly from the geometry, see
    :mod:`lightly_glare.models.geometry`.

    Input to this transform:
        PIL Image, or a tensor image (C, H, W) / (H, W): uint8 in [0, 255] or
        floating point in [0, 1] (clamped); tensors are converted to 8-bit RGB
        PIL images first.

    Output of this transform:
        ``[view_0, view_1, geometry]``, as lightly's multi-view transforms
        (views first, then their locations, like ``VICRegLTransform``'s grids):
        each view a float tensor (3, H, W); ``geometry`` a float32 tensor
        (2, 5) holding, per view, ``(top, left, height, width, hflip)`` (see
        :func:`~lightly_glare.transforms.view_geometry`): the crop box in
        normalised original-image coordinates and 1.0 when the view was flipped
        horizontally after cropping. Both torch's default collate and lightly's
        ``MultiViewCollate`` turn a batch into
        ``[V0 (B, 3, H, W), V1 (B, 3, H, W), G (B, 2, 5)]``.

    A :class:`~lightly.transforms.multi_view_transform.MultiViewTransform`:
    ``transforms`` holds the two per-view photometric pipelines. The views are
    not drawn independently (the second crop must overlap the first), hence
    the own ``__call__``.

    Geometry first, photometry second: both crop boxes and both flips are
    drawn before any photometric augmentation, and the photometric
    augmentations act on pixel values only, so the geometry does not depend on
    them (with the same seed, a transform with and without colour
    augmentations yields the same geometry).

    Applied per view, in order:
        - random resized crop (bicubic), the second box drawn to overlap the
          first (below);
        - horizontal flip with probability ``hf_prob``;
        - colour jitter with probability ``cj_prob``;
        - grayscale with probability ``random_gray_scale``;
        - Gaussian blur with probability ``gaussian_blur[v]`` (PIL, sigma in
          ``sigmas``);
        - solarisation with probability ``solarization_prob`` (view 1 only);
        - conversion to a tensor and normalisation.

    Overlap [ours, as UDI's paired crops]: the second box is redrawn until the
    intersection of the two boxes covers at least ``min_overlap`` of the
    smaller box, at most ``max_tries`` times; if no draw qualifies, the last
    draw is shifted (same size) so that its centre lies on the first box's
    centre, clamped into the image. With aspect ratios in ``crop_ratio``
    that shift gives an overlap of about ``sqrt(min(ratio) / max(ratio))`` or
    more (0.75 with the defaults, up to pixel rounding); if that is still
    below ``min_overlap``, the second box becomes a copy of the first. The
    condition therefore always holds.

    All randomness is drawn from torch's global generator (DataLoader workers
    seed it per worker), so ``torch.manual_seed`` reproduces a draw.

    Attributes:
        input_size: Output size of both views, an int (square) or (H, W).
            Defaults to 224.
        crop_scale: (min, max) area of a crop box relative to the image.
            Defaults to (0.25, 1.0) (ours).
        crop_ratio: (min, max) aspect ratio (width / height) of a crop box.
            Defaults to (3/4, 4/3).
        hf_prob: Probability of a horizontal flip. Defaults to 0.5.
        cj_prob: Probability of colour jitter. Defaults to 0.8.
        cj_bright: Brightness jitter. Defaults to 0.4.
        cj_contrast: Contrast jitter. Defaults to 0.4.
        cj_sat: Saturation jitter. Defaults to 0.2.
        cj_hue: Hue jitter. Defaults to 0.1.
        random_gray_scale: Probability of grayscale conversion. Defaults to 0.2.
        gaussian_blur: Blur probabilities of (view 0, view 1). Defaults to
            (1.0, 0.1).
        sigmas: (min, max) blur sigma in pixels. Defaults to (0.1, 2.0).
        solarization_prob: Probability of solarising view 1. Defaults to 0.2.
        normalize: ``{"mean": [...], "std": [...]}`` for the final
            normalisation, or None to keep pixels in [0, 1]. Defaults to
            ImageNet's.
        min_overlap: Minimum intersection of the two boxes as a fraction of the
            smaller box, in [0, 1]; 0 draws the boxes independently. Defaults to
            0.25 (ours).
        max_tries: Draws of the second box before the fallback. Defaults to 10;
            0 always centres one draw's box on the first box.

    Examples:
        >>> from lightly.data import LightlyDataset
        >>> transform = GlareTransform(input_size=224)
        >>> dataset = LightlyDataset("path/to/images", transform=transform)
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=64)
        >>> for (view0, view1, geometry), _, _ in loader:
        ...     output = model([view0, view1], geometry)  # geometry: (64, 2, 5)
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = IMG_SIZE,
        crop_scale: tuple[float, float] = (0.25, 1.0),
        crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hf_prob: float = 0.5,
        cj_prob: float = 0.8,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        random_gray_scale: float = 0.2,
        gaussian_blur: tuple[float, float] = (1.0, 0.1),
        sigmas: tuple[float, float] = BLUR_SIGMAS,
        solarization_prob: float = 0.2,
        normalize: dict[str, list[float]] | None = IMAGENET_NORMALIZE,
        min_overlap: float = 0.25,
        max_tries: int = 10,
    ) -> None:
        """Initialises the transform; see the class docstring for the arguments.

        Raises:
            ValueError: If an argument is out of range.
        """
        size = (input_size, input_size) if isinstance(input_size, int) else input_size
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"input_size must be positive, got {input_size}.")
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(
                f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}."
            )
        if not 0.0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(
                f"crop_ratio must satisfy 0 < min <= max, got {crop_ratio}."
            )
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}.")
        if max_tries < 0:
            raise ValueError(f"max_tries must be >= 0, got {max_tries}.")
        if len(gaussian_blur) != 2:
            raise ValueError(
                f"gaussian_blur must hold two probabilities, got {gaussian_blur}."
            )
        self.input_size = (int(size[0]), int(size[1]))
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.hf_prob = hf_prob
        self.min_overlap = min_overlap
        self.max_tries = max_tries
        super().__init__(
            [
                self._photometric(
                    cj_prob=cj_prob,
                    color_jitter=(cj_bright, cj_contrast, cj_sat, cj_hue),
                    random_gray_scale=random_gray_scale,
                    blur_prob=blur_prob,
                    sigmas=sigmas,
                    solarization_prob=solarization,
                    normalize=normalize,
                )
                for blur_prob, solarization in zip(
                    gaussian_blur, (0.0, solarization_prob), strict=True
                )
            ]
        )

    @staticmethod
    def _photometric(
        cj_prob: float,
        color_jitter: tuple[float, float, float, float],
        random_gray_scale: float,
        blur_prob: float,
        sigmas: tuple[float, float],
        solarization_prob: float,
        normalize: dict[str, list[float]] | None,
    ) -> Callable[[Image.Image], Tensor]:
        transforms: list[Callable[..., object]] = [
            T.RandomApply([T.ColorJitter(*color_jitter)], p=cj_prob),
            T.RandomGrayscale(p=random_gray_scale),
            RandomGaussianBlur(prob=blur_prob, sigmas=sigmas),
            RandomSolarization(prob=solarization_prob),
            T.ToTensor(),
        ]
        if normalize:
            transforms.append(T.Normalize(mean=normalize["mean"], std=normalize["std"]))
        return T.Compose(transforms)

    def sample_boxes(self, image: Image.Image) -> tuple[Box, Box]:
        """Draws the two crop boxes (pixels) with the overlap condition.

        Args:
            image: The image to crop (only its size is used).

        Returns:
            Two boxes (top, left, height, width) whose intersection covers at
            least ``min_overlap`` of the smaller box.
        """
        scale, ratio = list(self.crop_scale), list(self.crop_ratio)
        first: Box = T.RandomResizedCrop.get_params(image, scale, ratio)
        for _ in range(max(self.max_tries, 1)):
            second: Box = T.RandomResizedCrop.get_params(image, scale, ratio)
            if self.max_tries > 0 and box_overlap(first, second) >= self.min_overlap:
                return first, second
        return first, self._shift_onto(first, second, image.height, image.width)

    def _shift_onto(self, first: Box, second: Box, height: int, width: int) -> Box:
        """Deterministic fallback: centre ``second`` on ``first``, inside the image.

        Per axis, a box no longer than the first ends up inside it and a longer
        one contains it (also after clamping into the image), so the
        intersection is ``min(h0, h1) * min(w0, w1)``.
        """
        top, left, box_height, box_width = first
        _, _, second_height, second_width = second
        new_top = top + (box_height - second_height) // 2
        new_left = left + (box_width - second_width) // 2
        new_top = min(max(new_top, 0), height - second_height)
        new_left = min(max(new_left, 0), width - second_width)
        shifted: Box = (new_top, new_left, second_height, second_width)
        if box_overlap(first, shifted) >= self.min_overlap:
            return shifted
        return first

    def __call__(self, image: Image.Image | Tensor) -> list[Tensor]:
        """Returns two augmented views of ``image`` and their geometry.

        Args:
            image: PIL image or tensor image (see the class docstring).

        Returns:
            ``[view_0, view_1, geometry]``: two float tensors (3, H, W) and a
            float32 tensor (2, 5) of ``(top, left, height, width, hflip)`` per
            view, normalised.
        """
        pil = self._to_pil(image)
        boxes = self.sample_boxes(pil)
        flips = [bool(torch.rand(()) < self.hf_prob) for _ in boxes]
        views, rows = [], []
        for box, flip, photometric in zip(boxes, flips, self.transforms, strict=True):
            top, left, box_height, box_width = box
            view = F.resized_crop(
                pil,
                top,
                left,
                box_height,
                box_width,
                list(self.input_size),
                interpolation=T.InterpolationMode.BICUBIC,
                antialias=True,
            )
            if flip:
                view = F.hflip(view)
            views.append(photometric(view))
            rows.append(view_geometry(box, flip, (pil.height, pil.width)))
        return [*views, torch.tensor(rows, dtype=torch.float32)]  # + (2, 5)

    @staticmethod
    def _to_pil(image: Image.Image | Tensor) -> Image.Image:
        if isinstance(image, Tensor):
            if image.ndim not in (2, 3):
                raise ValueError(
                    f"Tensor images must have shape (C, H, W) or (H, W), got "
                    f"{tuple(image.shape)}."
                )
            if image.is_floating_point():
                image = image.clamp(0.0, 1.0)
            image = F.to_pil_image(image)
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"Expected a PIL image or a tensor, got {type(image).__name__}."
            )
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, "
            f"crop_scale={self.crop_scale}, min_overlap={self.min_overlap}, "
            f"max_tries={self.max_tries})"
        )
