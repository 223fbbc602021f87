import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from lightly.data import LightlyDataset
from lightly.data.multi_view_collate import MultiViewCollate
from lightly.transforms.multi_view_transform import MultiViewTransform
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from lightly_glare.models.geometry import crop_overlap, map_patch_centers
from lightly_glare.transforms import GlareTransform, box_overlap

#: Photometric augmentations off, no normalisation: pixels keep their values.
GEOMETRY_ONLY: dict[str, object] = {
    "cj_prob": 0.0,
    "random_gray_scale": 0.0,
    "gaussian_blur": (0.0, 0.0),
    "solarization_prob": 0.0,
    "normalize": None,
}

HEIGHT, WIDTH = 192, 256


def ramp_image() -> Image.Image:
    """Red = column index, green = row index: every pixel encodes its position."""
    rows, cols = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    pixels = np.stack([cols, rows, np.full_like(rows, 128)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def patch_centre_values(view: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean of the 2 x 2 pixels around each patch centre, shape (N, C)."""
    c, height, width = view.shape
    grid = view.reshape(c, height // patch, patch, width // patch, patch)
    half = patch // 2
    centre = grid[:, :, half - 1 : half + 1, :, half - 1 : half + 1].mean(dim=(2, 4))
    return centre.flatten(1).T  # (N, C)


@pytest.mark.parametrize("input_size", [64, (48, 80)])
@pytest.mark.parametrize("hf_prob", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_geometry_matches_the_pixels(
    input_size: int | tuple[int, int], hf_prob: float, as_tensor: bool
) -> None:
    transform = GlareTransform(input_size=input_size, hf_prob=hf_prob, **GEOMETRY_ONLY)
    image = ramp_image()
    source = T.functional.pil_to_tensor(image) if as_tensor else image
    size = (input_size, input_size) if isinstance(input_size, int) else input_size
    patch = 16
    grid = (size[0] // patch, size[1] // patch)
    full_image = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])
    flips = []
    for seed in range(8):
        torch.manual_seed(seed)
        *views, geometry = transform(source)
        for view, geom in zip(views, geometry, strict=True):
            assert view.shape == (3, *size)
            flips.append(geom[4].item())
            # Each view patch centre in original pixels, where pixel k of the
            # original image is centred at k: the image as an (H, W) "patch grid".
            expected, inside = map_patch_centers(
                geom[None], full_image, grid, (HEIGHT, WIDTH)
            )  # (1, N, 2) as (row, col)
            assert inside.all()
            values = patch_centre_values(view * 255.0, patch)  # (N, 3)
            measured = torch.stack([values[:, 1], values[:, 0]], dim=-1)  # (row, col)
            assert (measured - expected[0]).abs().max() < 1.0
    if hf_prob == 0.5:
        assert set(flips) == {0.0, 1.0}
    else:
        assert set(flips) == {hf_prob}


def test_min_overlap_holds() -> None:
    image = Image.new("RGB", (64, 48))
    transform = GlareTransform(input_size=16, **GEOMETRY_ONLY)
    free = GlareTransform(input_size=16, min_overlap=0.0, **GEOMETRY_ONLY)
    torch.manual_seed(0)
    geometry = torch.stack([transform(image)[2] for _ in range(200)])  # (200, 2, 5)
    free_geometry = torch.stack([free(image)[1] for _ in range(200)])
    assert (crop_overlap(geometry[:, 0], geometry[:, 1]) >= 0.25 - 1e-6).all()
    # Without the condition some pairs do violate it: the test is not vacuous.
    assert (crop_overlap(free_geometry[:, 0], free_geometry[:, 1]) < 0.25).any()


@pytest.mark.parametrize("min_overlap", [0.5, 0.75, 0.95, 1.0])
def test_fallback_keeps_the_condition(min_overlap: float) -> None:
    image = Image.new("RGB", (120, 90))
    transform = GlareTransform(min_overlap=min_overlap, max_tries=0)
    for seed in range(50):
        torch.manual_seed(seed)
        first, second = transform.sample_boxes(image)
        assert box_overlap(first, second) >= min_overlap
        for top, left, height, width in (first, second):
            assert 0 <= top and top + height <= 90
            assert 0 <= left and left + width <= 120


def test_fallback_centres_the_drawn_box() -> None:
    image = Image.new("RGB", (120, 90))
    transform = GlareTransform(min_overlap=0.5, max_tries=0)
    params = (image, [0.25, 1.0], [3 / 4, 4 / 3])
    for seed in range(50):
        torch.manual_seed(seed)
        expected_first = T.RandomResizedCrop.get_params(*params)
        drawn = T.RandomResizedCrop.get_params(*params)
        torch.manual_seed(seed)
        first, second = transform.sample_boxes(image)
        assert first == expected_first
        assert second[2:] == drawn[2:]  # same size, only shifted
        # Per axis the shorter box lies inside the longer one.
        for axis in (0, 1):
            start = (first[axis], second[axis])
            end = (first[axis] + first[axis + 2], second[axis] + second[axis + 2])
            shorter = 0 if first[axis + 2] <= second[axis + 2] else 1
            assert start[shorter] >= start[1 - shorter]
            assert end[shorter] <= end[1 - shorter]


def test_shift_onto_hand_built_boxes() -> None:
    transform = GlareTransform()
    # A larger box far away is centred on the first and clamped into the image.
    assert transform._shift_onto((0, 0, 10, 10), (80, 80, 20, 20), 100, 100) == (
        0,
        0,
        20,
        20,
    )
    # A smaller box moves into the middle of the first one.
    assert transform._shift_onto((40, 20, 20, 30), (0, 90, 4, 6), 100, 100) == (
        48,
        32,
        4,
        6,
    )


def test_photometric_augmentations_do_not_change_the_geometry() -> None:
    image = ramp_image()
    plain = GlareTransform(input_size=32, **GEOMETRY_ONLY)
    full = GlareTransform(
        input_size=32,
        cj_prob=1.0,
        random_gray_scale=0.5,
        gaussian_blur=(1.0, 1.0),
        solarization_prob=1.0,
    )
    for seed in range(10):
        torch.manual_seed(seed)
        *plain_views, plain_geometry = plain(image)
        torch.manual_seed(seed)
        *views, geometry = full(image)
        assert torch.equal(geometry, plain_geometry)
        assert not torch.allclose(views[1], plain_views[1])


def test_reproducible_with_torch_seed() -> None:
    transform = GlareTransform(input_size=32)
    image = ramp_image()
    torch.manual_seed(5)
    first = transform(image)
    torch.manual_seed(5)
    second = transform(image)
    assert len(first) == 3
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_picklable_for_dataloader_workers() -> None:
    transform = GlareTransform(input_size=32)
    copy = pickle.loads(pickle.dumps(transform))
    image = ramp_image()
    torch.manual_seed(2)
    *views, geometry = transform(image)
    torch.manual_seed(2)
    *copy_views, copy_geometry = copy(image)
    assert torch.equal(geometry, copy_geometry)
    assert torch.equal(views[0], copy_views[0])


def test_tensor_inputs_match_pil() -> None:
    transform = GlareTransform(input_size=32)
    image = ramp_image()
    as_uint8 = T.functional.pil_to_tensor(image)  # (3, H, W) uint8
    as_float = as_uint8.float() / 255.0
    outputs = []
    for source in (image, as_uint8, as_float):
        torch.manual_seed(1)
        outputs.append(transform(source))
    for *views, geometry in outputs[1:]:
        assert torch.equal(geometry, outputs[0][2])
        for view, reference in zip(views, outputs[0][:2], strict=True):
            assert torch.allclose(view, reference, atol=1e-5)


def test_grayscale_input_gives_rgb_views() -> None:
    *views, _ = GlareTransform(input_size=32)(Image.new("L", (40, 40), 100))
    assert all(view.shape == (3, 32, 32) for view in views)


def test_default_collate_shapes() -> None:
    transform = GlareTransform(input_size=32)
    image = ramp_image()
    batch = default_collate([transform(image) for _ in range(4)])
    view0, view1, geometry = batch
    assert view0.shape == view1.shape == (4, 3, 32, 32)
    assert view0.dtype == torch.float32
    assert view0.min() < 0  # ImageNet normalisation by default
    assert geometry.shape == (4, 2, 5) and geometry.dtype == torch.float32
    assert ((geometry[..., :4] >= 0) & (geometry[..., :4] <= 1)).all()
    assert ((geometry[..., 0] + geometry[..., 2]) <= 1 + 1e-6).all()
    assert ((geometry[..., 1] + geometry[..., 3]) <= 1 + 1e-6).all()


def test_lightly_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index, size in enumerate([(40, 30), (64, 64), (50, 70)]):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"image_{index}.png")
    dataset = LightlyDataset(str(tmp_path), transform=GlareTransform(input_size=32))
    assert len(dataset) == 3
    loader = DataLoader(dataset, batch_size=3, num_workers=0)
    (view0, view1, geometry), targets, filenames = next(iter(loader))
    assert view0.shape == view1.shape == (3, 3, 32, 32)
    assert geometry.shape == (3, 2, 5)
    assert sorted(filenames) == [f"image_{i}.png" for i in range(3)]
    assert targets.shape == (3,)


def test_a_lightly_multi_view_transform_with_both_collates(tmp_path: Path) -> None:
    """lightly's MultiViewCollate and torch's default collate give one batch."""
    transform = GlareTransform(input_size=32)
    assert isinstance(transform, MultiViewTransform)
    assert len(transform.transforms) == 2  # one photometric pipeline per view
    image = ramp_image()
    items = []
    for index in range(3):
        torch.manual_seed(index)
        items.append((transform(image), index, f"image_{index}.png"))
    lightly_views, labels, names = MultiViewCollate()(items)
    torch_views, torch_labels, torch_names = default_collate(items)
    assert len(lightly_views) == len(torch_views) == 3  # view 0, view 1, geometry
    for ours, theirs in zip(lightly_views, torch_views, strict=True):
        assert torch.equal(ours, theirs)
    assert torch_views[2].shape == (3, 2, 5)
    assert torch.equal(labels, torch_labels) and list(names) == list(torch_names)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_overlap": 1.5},
        {"max_tries": -1},
        {"crop_scale": (0.0, 1.0)},
        {"crop_scale": (0.5, 0.4)},
        {"crop_ratio": (2.0, 1.0)},
        {"gaussian_blur": (1.0, 0.1, 0.5)},
        {"input_size": 0},
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GlareTransform(**kwargs)  # type: ignore[arg-type]


def test_bad_tensor_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        GlareTransform()(torch.zeros(1, 3, 8, 8))
