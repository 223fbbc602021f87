import pytest
import torch
from torch.nn import functional as F

from lightly_glare.models.geometry import (
    bilinear_gather,
    crop_overlap,
    map_coords,
    map_patch_centers,
    nearest_patch_index,
    patch_centers,
    transfer_masks,
)

FULL = [0.0, 0.0, 1.0, 1.0, 0.0]
FULL_FLIPPED = [0.0, 0.0, 1.0, 1.0, 1.0]
RIGHT_HALF = [0.0, 0.5, 1.0, 0.5, 0.0]


def geometry(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)  # (B, 5)


def random_geometry(batch: int, generator: torch.Generator) -> torch.Tensor:
    size = 0.3 + 0.7 * torch.rand(batch, 2, generator=generator)  # (B, 2)
    corner = (1.0 - size) * torch.rand(batch, 2, generator=generator)
    flip = (torch.rand(batch, 1, generator=generator) < 0.5).float()
    return torch.cat([corner, size, flip], dim=1)  # (B, 5)


@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (1, 1)])
@pytest.mark.parametrize(
    "box",
    [FULL, FULL_FLIPPED, RIGHT_HALF, [0.1, 0.3, 0.37, 0.61, 1.0]],
)
def test_identical_crops_map_to_identity_exactly(
    grid: tuple[int, int], box: list[float]
) -> None:
    geom = geometry(box, box)
    coords, inside = map_patch_centers(geom, geom, grid, grid)
    expected = patch_centers(grid).expand(2, -1, -1)
    assert coords.shape == (2, grid[0] * grid[1], 2)
    assert coords.dtype == torch.float32
    assert torch.equal(coords, expected)
    assert inside.all()


def test_right_half_at_double_resolution() -> None:
    # View A: whole image, 4 x 4 patches. View B: right half of the image,
    # also 4 x 4 patches, i.e. twice A's resolution horizontally.
    a, b = geometry(FULL), geometry(RIGHT_HALF)
    coords, inside = map_patch_centers(a, b, (4, 4), (4, 4))
    coords, inside = coords.view(4, 4, 2), inside.view(4, 4)
    assert torch.equal(inside, torch.tensor([[False, False, True, True]] * 4))
    rows = torch.arange(4.0)[:, None].expand(4, 4)
    assert torch.equal(coords[..., 0], rows)  # rows are untouched
    # A's columns 2 and 3 (centres 0.625, 0.875) land on B's columns 0.5 and 2.5.
    assert torch.equal(coords[:, 2:, 1], torch.tensor([[0.5, 2.5]] * 4))

    back, back_inside = map_patch_centers(b, a, (4, 4), (4, 4))
    assert back_inside.all()
    assert torch.allclose(
        back.view(4, 4, 2)[..., 1], torch.tensor([[1.75, 2.25, 2.75, 3.25]] * 4)
    )
    index = nearest_patch_index(back, (4, 4)).view(4, 4)
    expected = torch.arange(4)[:, None] * 4 + torch.tensor([2, 2, 3, 3])
    assert torch.equal(index, expected)


def test_flip_of_one_view_mirrors_columns() -> None:
    coords, inside = map_patch_centers(
        geometry(FULL), geometry(FULL_FLIPPED), (3, 5), (3, 5)
    )
    centres = patch_centers((3, 5))
    mirrored = torch.stack([centres[:, 0], 4.0 - centres[:, 1]], dim=-1)
    assert inside.all()
    assert torch.equal(coords[0], mirrored)
    index = nearest_patch_index(coords, (3, 5)).view(3, 5)
    assert torch.equal(index, torch.arange(15).view(3, 5).flip(1))


def test_flipped_source_into_right_half() -> None:
    # Flipped full view: its column 0 shows the image's right edge.
    coords, inside = map_patch_centers(
        geometry(FULL_FLIPPED), geometry(RIGHT_HALF), (4, 4), (4, 4)
    )
    coords, inside = coords.view(4, 4, 2), inside.view(4, 4)
    assert torch.equal(inside, torch.tensor([[True, True, False, False]] * 4))
    assert torch.equal(coords[:, :2, 1], torch.tensor([[2.5, 0.5]] * 4))


@pytest.mark.parametrize("box", [FULL_FLIPPED, [0.2, 0.1, 0.5, 0.7, 1.0]])
def test_both_flipped_is_identity_for_identical_boxes(box: list[float]) -> None:
    geom = geometry(box, box)
    coords, inside = map_patch_centers(geom, geom, (4, 6), (4, 6))
    assert inside.all()
    assert torch.equal(coords, patch_centers((4, 6)).expand(2, -1, -1))


def test_both_flipped_equals_neither_flipped() -> None:
    a = [0.1, 0.2, 0.6, 0.5, 0.0]
    b = [0.3, 0.1, 0.5, 0.7, 0.0]
    plain = map_patch_centers(geometry(a), geometry(b), (4, 4), (5, 3))
    a[4], b[4] = 1.0, 1.0
    flipped = map_patch_centers(geometry(a), geometry(b), (4, 4), (5, 3))
    # Source column j of the flipped view is column 3 - j of the plain view, and
    # the target's columns are mirrored too.
    coords = flipped[0].view(1, 4, 4, 2).flip(2).reshape(1, 16, 2)
    inside = flipped[1].view(1, 4, 4).flip(2).reshape(1, 16)
    assert torch.equal(inside, plain[1])
    assert torch.allclose(coords[..., 0], plain[0][..., 0], atol=1e-6)
    assert torch.allclose(coords[..., 1], 2.0 - plain[0][..., 1], atol=1e-6)


def test_disjoint_crops_have_nothing_inside() -> None:
    a = geometry([0.0, 0.0, 0.5, 0.5, 0.0])
    b = geometry([0.5, 0.5, 0.5, 0.5, 1.0])
    for source, target in ((a, b), (b, a)):
        _, inside = map_patch_centers(source, target, (4, 4), (4, 4))
        assert not inside.any()
    masks = torch.ones(1, 3, 16, dtype=torch.bool)
    assert not transfer_masks(masks, a, b, (4, 4), (4, 4)).any()


def test_round_trip_returns_original_coordinates() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = random_geometry(256, generator), random_geometry(256, generator)
    grid_a, grid_b = (4, 6), (5, 3)
    coords, inside = map_patch_centers(a, b, grid_a, grid_b)
    back, back_inside = map_coords(coords, b, a, grid_b, grid_a)
    centres = patch_centers(grid_a).expand(256, -1, -1)
    assert inside.float().mean() > 0.2  # the property is not vacuous
    assert (~inside).any()
    assert back_inside[inside].all()
    assert torch.allclose(back[inside], centres[inside], atol=1e-5)


def test_inside_means_within_the_target_grid() -> None:
    generator = torch.Generator().manual_seed(1)
    a, b = random_geometry(128, generator), random_geometry(128, generator)
    coords, inside = map_patch_centers(a, b, (4, 4), (3, 5))
    eps = 1e-5
    within = (
        (coords[..., 0] > -0.5 + eps)
        & (coords[..., 0] < 2.5 - eps)
        & (coords[..., 1] > -0.5 + eps)
        & (coords[..., 1] < 4.5 - eps)
    )
    outside = (
        (coords[..., 0] < -0.5 - eps)
        | (coords[..., 0] > 2.5 + eps)
        | (coords[..., 1] < -0.5 - eps)
        | (coords[..., 1] > 4.5 + eps)
    )
    assert inside[within].all()
    assert not inside[outside].any()


def test_float64_geometry_gives_float64_coords() -> None:
    geom = geometry(FULL).double()
    coords, _ = map_patch_centers(geom, geom, (2, 2), (2, 2))
    assert coords.dtype == torch.float64


def test_bilinear_gather_is_exact_at_centres() -> None:
    tokens = torch.randn(3, 12, 7)
    centres = patch_centers((3, 4)).expand(3, -1, -1)
    assert torch.equal(bilinear_gather(tokens, centres, (3, 4)), tokens)
    shuffled = centres[:, torch.randperm(12)]
    expected = tokens[:, nearest_patch_index(shuffled, (3, 4))[0]]
    assert torch.equal(bilinear_gather(tokens, shuffled, (3, 4)), expected)


def test_bilinear_gather_midpoints_and_border() -> None:
    tokens = torch.randn(1, 12, 5)  # grid (3, 4)
    t = tokens[0].view(3, 4, 5)
    coords = torch.tensor(
        [
            [
                [0.0, 0.5],  # between (0, 0) and (0, 1)
                [0.5, 0.0],  # between (0, 0) and (1, 0)
                [1.5, 2.5],  # middle of four patches
                [0.0, 0.25],  # a quarter of the way
                [-3.0, -1.0],  # clamped to (0, 0)
                [2.0, 7.0],  # clamped to (2, 3)
                [5.0, 1.5],  # clamped row, midpoint column
            ]
        ]
    )
    expected = torch.stack(
        [
            (t[0, 0] + t[0, 1]) / 2,
            (t[0, 0] + t[1, 0]) / 2,
            (t[1, 2] + t[1, 3] + t[2, 2] + t[2, 3]) / 4,
            0.75 * t[0, 0] + 0.25 * t[0, 1],
            t[0, 0],
            t[2, 3],
            (t[2, 1] + t[2, 2]) / 2,
        ]
    )[None]
    out = bilinear_gather(tokens, coords, (3, 4))
    assert torch.allclose(out, expected, atol=1e-6)


def test_bilinear_gather_matches_grid_sample() -> None:
    h, w, dim = 5, 7, 6
    tokens = torch.randn(4, h * w, dim)
    coords = torch.rand(4, 50, 2) * torch.tensor([h + 2.0, w + 2.0]) - 1.5
    grid = torch.stack(
        [coords[..., 1] / (w - 1) * 2 - 1, coords[..., 0] / (h - 1) * 2 - 1], dim=-1
    )  # (B, M, 2) as (x, y) in [-1, 1], align_corners=True
    images = tokens.transpose(1, 2).reshape(4, dim, h, w)  # (B, D, h, w)
    reference = F.grid_sample(
        images, grid[:, :, None], padding_mode="border", align_corners=True
    )  # (B, D, M, 1)
    reference = reference[..., 0].transpose(1, 2)  # (B, M, D)
    out = bilinear_gather(tokens, coords, (h, w))
    assert torch.allclose(out, reference, atol=1e-5)


def test_bilinear_gather_keeps_dtype_and_gradient() -> None:
    tokens = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    out = bilinear_gather(tokens, torch.full((2, 1, 2), 0.5), (2, 2))
    assert out.dtype == torch.float64
    out.sum().backward()
    assert tokens.grad is not None
    assert torch.allclose(tokens.grad, torch.full_like(tokens, 0.25))


def test_nearest_patch_index_rounds_and_clamps() -> None:
    coords = torch.tensor([[[0.4, 0.6], [1.49, 2.51], [-2.0, 9.0], [9.0, -0.4]]])
    index = nearest_patch_index(coords, (3, 4))
    assert torch.equal(index, torch.tensor([[1, 4 + 3, 3, 8]]))
    assert index.dtype == torch.long


def test_transfer_masks_right_half() -> None:
    a, b = geometry(FULL), geometry(RIGHT_HALF)
    columns = torch.arange(16) % 4
    masks_a = torch.stack([columns == 3, columns == 0, columns >= 2])[None]
    masks_b = transfer_masks(masks_a, a, b, (4, 4), (4, 4))
    assert masks_b.shape == (1, 3, 16)
    assert torch.equal(masks_b[0, 0], columns >= 2)  # A's column 3 covers B's 2, 3
    assert not masks_b[0, 1].any()  # A's column 0 lies outside B
    assert masks_b[0, 2].all()
    # Back from B: B's columns 0, 1 are A's column 2, B's 2, 3 are A's column 3;
    # A's columns 0 and 1 lie outside B and are dropped.
    back = transfer_masks(
        torch.stack([columns <= 1, columns >= 2, columns >= 0])[None],
        b,
        a,
        (4, 4),
        (4, 4),
    )
    assert torch.equal(back[0, 0], columns == 2)
    assert torch.equal(back[0, 1], columns == 3)
    assert torch.equal(back[0, 2], columns >= 2)


def test_transfer_masks_flip_and_batch() -> None:
    a = geometry(FULL, FULL)
    b = geometry(FULL_FLIPPED, FULL)
    masks = torch.zeros(2, 1, 12, dtype=torch.bool)
    masks[:, 0, [0, 5]] = True  # patches (0, 0) and (1, 1) of a (3, 4) grid
    out = transfer_masks(masks, a, b, (3, 4), (3, 4))
    assert torch.equal(out[0, 0].nonzero().flatten(), torch.tensor([3, 6]))
    assert torch.equal(out[1, 0], masks[1, 0])


def test_crop_overlap() -> None:
    a = geometry(FULL, [0.0, 0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.5, 0.5, 1.0])
    b = geometry(RIGHT_HALF, [0.25, 0.25, 0.5, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5, 0.0])
    assert torch.allclose(crop_overlap(a, b), torch.tensor([1.0, 0.25, 0.0]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: map_patch_centers(torch.zeros(2, 4), torch.zeros(2, 4), (2, 2), (2, 2)),
        lambda: map_patch_centers(torch.zeros(2, 5), torch.zeros(3, 5), (2, 2), (2, 2)),
        lambda: map_patch_centers(torch.zeros(2, 5), torch.zeros(2, 5), (0, 2), (2, 2)),
        lambda: bilinear_gather(torch.zeros(2, 5, 3), torch.zeros(2, 1, 2), (2, 2)),
        lambda: bilinear_gather(torch.zeros(2, 4, 3), torch.zeros(2, 1, 3), (2, 2)),
        lambda: transfer_masks(
            torch.zeros(2, 1, 5, dtype=torch.bool),
            torch.zeros(2, 5),
            torch.zeros(2, 5),
            (2, 2),
            (2, 2),
        ),
        lambda: nearest_patch_index(torch.zeros(4, 2), (2, 2)),
    ],
)
def test_bad_shapes_raise(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
