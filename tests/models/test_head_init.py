"""Data-aware head initialisation: k-means prototypes, centred input, GLARE."""

import pytest
import torch
from torch.nn import functional as F

from lightly_glare.loss import GlareLoss
from lightly_glare.models import (
    GLARE,
    GlareProjectionHead,
    initialize_head,
    initialize_heads_from_data,
    spherical_kmeans,
)
from lightly_glare.models.head_init import prototypes_from_samples
from lightly_glare.transforms import GlareTransform
from tests.conftest import make_vit, real_photo

SIZE = 32  # the plain test ViT's input size


def _directions(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, dim, generator=generator), dim=-1)


def test_spherical_kmeans_finds_separated_clusters() -> None:
    centers = _directions(4, 16)  # nearly orthogonal in 16 dims
    generator = torch.Generator().manual_seed(1)
    points = centers.repeat_interleave(30, dim=0)  # (120, 16)
    points = points + 0.05 * torch.randn(points.shape, generator=generator)
    found = spherical_kmeans(points, 4, generator=torch.Generator().manual_seed(2))
    assert found.shape == (4, 16)
    assert torch.allclose(found.norm(dim=-1), torch.ones(4))
    match = (found @ centers.T).max(dim=0).values  # each true centre is found
    assert match.min() > 0.99
    with pytest.raises(ValueError, match=r"clusters must be in \[1, 120\]"):
        spherical_kmeans(points, 121)


def test_every_centroid_is_used() -> None:
    # 3 distinct points and 3 clusters, whatever the start: no empty cluster.
    points = _directions(3, 8).repeat(5, 1)  # (15, 8)
    for seed in range(5):
        found = spherical_kmeans(
            points, 3, generator=torch.Generator().manual_seed(seed)
        )
        assert (found @ _directions(3, 8).T).max(dim=0).values.min() > 0.999


def test_fewer_samples_than_prototypes_give_noisy_copies() -> None:
    samples = _directions(5, 16)
    prototypes, clusters = prototypes_from_samples(
        samples, 12, torch.Generator().manual_seed(0)
    )
    assert clusters == 5 and prototypes.shape == (12, 16)
    assert torch.allclose(prototypes.norm(dim=-1), torch.ones(12))
    # the first 5 are the samples themselves (each its own cluster) ...
    assert (prototypes[:5] @ samples.T).max(dim=1).values.min() > 0.9999
    # ... and the others close but distinct copies of them
    nearest = (prototypes[5:] @ samples.T).max(dim=1).values
    assert nearest.min() > 0.99 and nearest.max() < 0.99999
    again, _ = prototypes_from_samples(samples, 12, torch.Generator().manual_seed(0))
    assert torch.equal(prototypes, again)


def test_initialize_head_centres_its_input_and_places_prototypes() -> None:
    head = GlareProjectionHead(8, hidden_dim=16, bottleneck_dim=6, output_dim=4)
    generator = torch.Generator().manual_seed(0)
    features = 3.0 + torch.randn(200, 8, generator=generator)  # off-centre
    clusters = initialize_head(head, features, torch.Generator().manual_seed(1))
    assert clusters == 4
    first = head.mlp[0]
    assert torch.allclose(first(features).mean(dim=0), torch.zeros(16), atol=1e-5)
    weight = head.last_layer.weight  # (K, C): unit rows, the k-means centroids
    assert torch.allclose(weight.norm(dim=-1), torch.ones(4), atol=1e-6)
    bottleneck = F.normalize(head.mlp(features), dim=-1)
    expected = spherical_kmeans(
        bottleneck, 4, generator=torch.Generator().manual_seed(1)
    )
    assert torch.allclose(weight, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(N >= 1, 8\)"):
        initialize_head(head, torch.zeros(0, 8))


def test_other_heads_are_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match="head_init='random'"):
        initialize_head(torch.nn.Linear(8, 4), torch.randn(10, 8))


def _batches(count: int, batch: int = 4) -> list[object]:
    """Lightly-style batches of GlareTransform views of real photo crops."""
    photo = real_photo()
    transform = GlareTransform(SIZE)
    torch.manual_seed(0)
    items = [
        transform(photo.crop((40 * i, 20 * i, 40 * i + 300, 20 * i + 300)))
        for i in range(count)
    ]  # each [view_0 (3, H, W), view_1, geometry (2, 5)]
    return [
        (
            [
                torch.stack(part)
                for part in zip(*items[start : start + batch], strict=True)
            ],
            None,
            None,
        )
        for start in range(0, count, batch)
    ]


def _glare(**kwargs: object) -> GLARE:
    """GLARE on a small random ViT (4 x 4 patches of 8 px)."""
    torch.manual_seed(0)
    vit = make_vit("plain")
    head = GlareProjectionHead(vit.embed_dim, hidden_dim=64, output_dim=256)
    return GLARE(vit, head=head, **kwargs)  # type: ignore[arg-type]


def _teacher_entropy(
    model: GLARE, criterion: GlareLoss, batches: list[object]
) -> dict[str, float]:
    """Each term's teacher entropy / log K at step 0, over the batches."""
    model.eval()
    totals: dict[str, float] = {}
    with torch.no_grad():
        for batch in batches:
            *views, geometry = batch[0]  # type: ignore[index]
            criterion(model(views, geometry))
            for term, stats in criterion.last_statistics.items():
                totals[term] = (
                    totals.get(term, 0.0) + float(stats.entropy) / stats.log_k
                )
    return {term: total / len(batches) for term, total in totals.items()}


def test_data_initialised_teacher_is_sharp_at_step_zero() -> None:
    """On real images the teacher of random heads is near uniform; fitted, sharp."""
    batches = _batches(16)
    entropies = {}
    for init in ("random", "data"):
        model = _glare()
        criterion = GlareLoss(output_dim=256)
        if init == "data":
            fitted = initialize_heads_from_data(model, batches, images=16, seed=0)
            criterion.set_centers(fitted.centers)
        entropies[init] = _teacher_entropy(model, criterion, batches)
    # K = 256, 16 images: random heads ~0.8 log K, fitted heads 0.4-0.65
    assert min(entropies["random"].values()) > 0.75
    assert max(entropies["data"].values()) < 0.7
    for term, random_entropy in entropies["random"].items():
        assert entropies["data"][term] < random_entropy - 0.1, term


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"share_patch_head": True},
        {"terms": ("global",)},
        {"terms": ("local_matching",)},
    ],
    ids=["untied", "shared", "global-only", "local-only"],
)
def test_every_head_layout_is_fitted_and_copied_to_the_teacher(
    layout: dict[str, object],
) -> None:
    model = _glare(**layout)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = initialize_heads_from_data(model, _batches(8), images=8, seed=0)
    shared = model.student_patch_head is model.student_head
    terms = set(model.terms)
    expected = set()
    if terms & {"global", "regional"} or shared:
        expected.add("head")
    if terms & {"local_distortion", "local_matching"} and not shared:
        expected.add("patch_head")
    assert set(fitted.samples) == expected
    assert set(fitted.centers) == terms
    for name in expected:
        student = model.student_head if name == "head" else model.student_patch_head
        teacher = model.teacher[name].state_dict()
        assert all(torch.equal(v, teacher[k]) for k, v in student.state_dict().items())
        prototypes = f"student_{name}.last_layer.parametrizations.weight.original1"
        assert not torch.equal(before[prototypes], model.state_dict()[prototypes])
    unfitted = {"head", "patch_head"} - expected - ({"patch_head"} if shared else set())
    for name in unfitted:  # heads of inactive terms keep their weights
        prefix = f"student_{name}."
        assert all(
            torch.equal(v, model.state_dict()[k])
            for k, v in before.items()
            if k.startswith(prefix)
        )
    frozen = [k for k in before if k.startswith("backbone.")]
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in frozen)


def test_small_samples_report_fewer_clusters_than_prototypes() -> None:
    model = _glare(terms=("global",))
    fitted = initialize_heads_from_data(model, _batches(4), images=4, seed=0)
    assert fitted.samples == {"head": 8}  # 4 images x 2 views of [CLS]
    assert fitted.clusters == {"head": 8}  # below K = 256: noisy copies
    assert "8 prototypes from 8 samples" in fitted.describe()
    assert fitted.centers["global"].shape == (256,)


def test_initialisation_is_fixed_by_the_seed() -> None:
    batches = _batches(8)
    states = []
    for seed in (0, 0, 1):
        model = _glare()
        initialize_heads_from_data(model, batches, images=8, seed=seed)
        states.append(model.state_dict())
    heads = [k for k in states[0] if "head" in k]
    assert all(torch.equal(states[0][k], states[1][k]) for k in heads)
    assert not all(torch.equal(states[0][k], states[2][k]) for k in heads)


def test_images_bound_the_pass_and_empty_data_is_refused() -> None:
    model = _glare(terms=("global",))
    seen: list[tuple[int, int]] = []
    fitted = initialize_heads_from_data(
        model, _batches(8), images=6, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(4, 6), (6, 6)] and fitted.samples == {"head": 12}
    # Both views of the first 2 images of the second batch, not 4 views of one.
    seen_views: list[torch.Tensor] = []
    model.backbone.forward_features = (  # type: ignore[method-assign]
        lambda views, **_: seen_views.append(views) or _forward(views)
    )
    _forward = type(model.backbone).forward_features.__get__(model.backbone)
    batches = _batches(8)
    initialize_heads_from_data(model, batches, images=6)
    view_0, view_1, _ = batches[1][0]  # type: ignore[index]
    assert torch.equal(seen_views[1], torch.cat([view_0[:2], view_1[:2]]))
    with pytest.raises(ValueError, match="data is empty"):
        initialize_heads_from_data(model, [], images=4)
    with pytest.raises(ValueError, match="at least 1"):
        initialize_heads_from_data(model, _batches(4), images=0)
