"""Data-aware initialisation of GLARE's projection heads (ours).

Checkpoints without projection heads (DINOv2, timm) leave GLARE's heads random.
A random DINO head maps the frozen model's tokens into a narrow cone (their
bottleneck outputs are nearly collinear), so after centring every prototype
scores about the same: the teacher is close to uniform at step 0 and the
gradients it sends into the adapters carry no signal. This module places the
heads on the user's data before training, in one pass over a sample of the
images, with the frozen model (the adapters start at zero, so the adapted
backbone equals it):

1. the first linear layer's bias becomes ``-W mean(features)``, so the MLP sees
   centred tokens (this spreads the bottleneck outputs apart);
2. the last layer's prototypes become the spherical k-means centroids of the
   L2-normalised bottleneck outputs.

The [CLS] / region head is fitted on [CLS] tokens and pooled regions, the patch
head on patch tokens (a head shared by both on all of them). The teacher's
heads are copies of the student's, and the loss's centres can start at the
mean teacher output of each term (:attr:`HeadInitialization.centers`), so the
first step already sees a centred, sharp teacher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightly_glare.loss.glare_output import (
    GLOBAL,
    LOCAL_DISTORTION,
    LOCAL_MATCHING,
    REGIONAL,
)
from lightly_glare.models.glare import GLARE
from lightly_glare.models.projection_head import GlareProjectionHead

#: Default number of images of the initialisation pass (ours): enough [CLS]
#: samples for a few hundred clusters, a few seconds of inference on a CPU.
DEFAULT_HEAD_INIT_IMAGES = 512
#: Patch tokens kept per view in the initialisation pass (ours): bounds the
#: k-means cost while covering every image.
DEFAULT_PATCHES_PER_VIEW = 16
#: Iterations of spherical k-means (ours).
KMEANS_ITERATIONS = 20
#: Scale of the noise that tells apart the copies of a centroid when there are
#: fewer samples than prototypes (ours; cosine distance ~1e-2 per copy).
_COPY_NOISE = 0.1


@dataclass
class HeadInitialization:
    """What :func:`initialize_heads_from_data` fitted.

    Attributes:
        samples: Feature rows each head was fitted on, by head
            (``"head"``, ``"patch_head"``).
        clusters: Distinct prototypes (k-means clusters) per head; below the
            head's output size when it had fewer samples than prototypes (the
            remaining prototypes are noisy copies of these).
        centers: Mean teacher output of each term on the sample, shape (K,)
            each, for :meth:`~lightly_glare.loss.GlareLoss.set_centers`.
    """

    samples: dict[str, int] = field(default_factory=dict)
    clusters: dict[str, int] = field(default_factory=dict)
    centers: dict[str, Tensor] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: samples and clusters per head."""
        return "; ".join(
            f"{head}: {self.clusters[head]} prototypes from {self.samples[head]} "
            "samples"
            for head in self.samples
        )


def spherical_kmeans(
    points: Tensor,
    clusters: int,
    iterations: int = KMEANS_ITERATIONS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Spherical k-means: unit centroids maximising the summed cosine.

    Seeded by k-means++ (each next start drawn with probability proportional
    to its squared chordal distance ``2 - 2 cos`` to the nearest start, so
    separated clusters get a start each); a cluster left empty is moved onto
    the point worst served by its centroid, so every centroid stays in use.

    - [0]: k-means++, Arthur & Vassilvitskii, SODA 2007

    Args:
        points: Rows to cluster, shape (N, C) (normalised here).
        clusters: Number k of centroids, 1 <= k <= N.
        iterations: Assignment / update rounds.
        generator: Generator of the seeding (CPU).

    Returns:
        Unit centroids, shape (k, C).

    Raises:
        ValueError: If ``clusters`` is not in [1, N].
    """
    count = points.shape[0]
    if not 1 <= clusters <= count:
        raise ValueError(
            f"clusters must be in [1, {count}] (the points), got {clusters}."
        )
    points = F.normalize(points.float(), dim=-1)  # (N, C)
    centroids = _kmeans_plus_plus(points, clusters, generator)  # (k, C)
    for _ in range(iterations):
        similarity, assignment = (points @ centroids.T).max(dim=1)  # (N,), (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)  # (k, C)
        sizes = torch.bincount(assignment, minlength=clusters)  # (k,)
        empty = (sizes == 0).nonzero().flatten()
        if len(empty):  # re-seed on the points farthest from their centroid
            worst = similarity.argsort()[: len(empty)]
            sums[empty] = points[worst]
        centroids = F.normalize(sums, dim=-1)
    return centroids


def _kmeans_plus_plus(
    points: Tensor, clusters: int, generator: torch.Generator | None
) -> Tensor:
    """k-means++ starts among unit ``points`` (N, C): (k, C)."""
    chosen = torch.empty(clusters, dtype=torch.long)
    chosen[0] = torch.randint(points.shape[0], (1,), generator=generator)[0]
    nearest = points @ points[chosen[0]]  # (N,): cosine to the nearest start
    for index in range(1, clusters):
        weights = (1.0 - nearest).clamp_min(0.0).cpu()  # (N,) ~ squared distance
        if weights.sum() <= 0:  # every point sits on a start: any other point
            weights = torch.ones_like(weights).index_fill_(0, chosen[:index], 0.0)
        chosen[index] = torch.multinomial(weights, 1, generator=generator)[0]
        nearest = torch.maximum(nearest, points @ points[chosen[index]])
    return points[chosen.to(points.device)].clone()


def prototypes_from_samples(
    bottleneck: Tensor, output_dim: int, generator: torch.Generator | None = None
) -> tuple[Tensor, int]:
    """``output_dim`` unit prototypes placed by spherical k-means.

    With at least ``output_dim`` samples, the prototypes are the k-means
    centroids. With fewer samples N (a small folder), N centroids are the
    samples' clusters and the remaining prototypes are copies of them, in
    turn, each moved by a small random noise (ours): the teacher then splits a
    cluster's probability between its copies instead of giving mass to random
    directions no image is near, and training can pull the copies apart.

    Args:
        bottleneck: The head's bottleneck outputs of the samples, shape (N, C).
        output_dim: Number K of prototypes.
        generator: Generator of the k-means start and the copies' noise (CPU).

    Returns:
        The prototypes, shape (K, C), and the number of distinct clusters.
    """
    clusters = min(output_dim, bottleneck.shape[0])
    centroids = spherical_kmeans(bottleneck, clusters, generator=generator)  # (k, C)
    if clusters == output_dim:
        return centroids, clusters
    copies = centroids.repeat(math.ceil(output_dim / clusters), 1)[clusters:output_dim]
    noise = torch.randn(copies.shape, generator=generator).to(copies)
    copies = F.normalize(
        copies + _COPY_NOISE / math.sqrt(copies.shape[1]) * noise, dim=-1
    )
    return torch.cat([centroids, copies]), clusters  # (K, C)


@torch.no_grad()
def initialize_head(
    head: nn.Module, features: Tensor, generator: torch.Generator | None = None
) -> int:
    """Centres a head's input and places its prototypes on ``features``.

    The first linear layer's bias becomes ``-W mean`` (the MLP sees centred
    tokens) and the last layer's directions ``v`` become the spherical k-means
    centroids of the head's L2-normalised bottleneck outputs (its norms ``g``
    are reset to 1). The MLP's weights are kept.

    Args:
        head: The head to initialise in place.
        features: Tokens of the data, shape (N, input_dim), N >= 1.
        generator: Generator of the k-means start and the copies' noise (CPU).

    Returns:
        The number of distinct prototypes (k-means clusters).

    Raises:
        TypeError: If ``head`` is not a :class:`GlareProjectionHead`.
        ValueError: If ``features`` is empty or has the wrong width.
    """
    if not isinstance(head, GlareProjectionHead):
        raise TypeError(
            "Data initialisation needs GlareProjectionHead heads (it sets their "
            f"first-layer bias and prototypes), got {type(head).__name__}: pass "
            "head_init='random' or use GlareProjectionHead."
        )
    if features.ndim != 2 or features.shape[1] != head.input_dim or not len(features):
        raise ValueError(
            f"Expected features of shape (N >= 1, {head.input_dim}), got "
            f"{tuple(features.shape)}."
        )
    features = features.to(head.last_layer.parametrizations.weight.original1)
    first = head.mlp[0]
    assert isinstance(first, nn.Linear)  # GlareProjectionHead's layout
    first.bias.copy_(-(first.weight @ features.mean(dim=0)))
    bottleneck = F.normalize(head.mlp(features), dim=-1)  # (N, bottleneck_dim)
    prototypes, clusters = prototypes_from_samples(
        bottleneck.cpu(), head.output_dim, generator
    )  # (K, bottleneck_dim)
    weight = head.last_layer.parametrizations.weight
    weight.original1.copy_(prototypes)
    weight.original0.fill_(1.0)
    return clusters


#: Token kinds of the initialisation pass and the terms they stand for.
_TOKEN_TERMS = {
    "cls": (GLOBAL,),
    "regions": (REGIONAL,),
    "patches": (LOCAL_DISTORTION, LOCAL_MATCHING),
}


def _collect(
    model: GLARE,
    views: Tensor,
    samples: dict[str, list[Tensor]],
    patches_per_view: int,
    generator: torch.Generator,
) -> None:
    """Adds the frozen model's tokens of ``views`` (2B, 3, H, W) to ``samples``.

    The tokens of the active terms: [CLS] tokens (global), pooled regions
    (regional; the teacher's sampler and pooling, each view on itself) and
    ``patches_per_view`` random patch tokens per view (local).
    """
    regional = REGIONAL in model.terms
    out = model.backbone.forward_features(
        views, adapters=model.teacher_adapters, return_cls_attention=regional
    )
    cls = out.tokens[:, 0]  # (2B, D)
    patches = out.tokens[:, model.backbone.num_prefix_tokens :]  # (2B, N, D)
    if GLOBAL in model.terms:
        samples["cls"].append(cls.float().cpu())
    if regional:
        assert out.cls_attention is not None  # requested above
        masks, valid = model.region_sampler(
            out.cls_attention.float(), generator
        )  # (2B, R, N), (2B, R)
        pooled = model.teacher["region_pooling"](cls, patches, masks)  # (2B, R, D)
        keep = valid & (masks.sum(dim=-1) >= model.min_region_patches)  # (2B, R)
        samples["regions"].append(pooled[keep].float().cpu())  # (M, D)
    if LOCAL_DISTORTION in model.terms or LOCAL_MATCHING in model.terms:
        count = min(patches_per_view, patches.shape[1])
        scores = torch.rand(patches.shape[:2], generator=generator)  # (2B, N)
        index = scores.topk(count, dim=1).indices.to(patches.device)  # (2B, n)
        index = index[..., None].expand(-1, -1, patches.shape[-1])  # (2B, n, D)
        samples["patches"].append(patches.gather(1, index).flatten(0, 1).float().cpu())


@torch.no_grad()
def initialize_heads_from_data(
    model: GLARE,
    batches: Iterable[Any],
    images: int = DEFAULT_HEAD_INIT_IMAGES,
    seed: int = 0,
    patches_per_view: int = DEFAULT_PATCHES_PER_VIEW,
    amp: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> HeadInitialization:
    """Initialises GLARE's student and teacher heads from a sample of the data.

    Runs the frozen model (teacher adapters, zero at step 0) on both views of
    up to ``images`` images and fits each head with :func:`initialize_head`:
    the [CLS] / region head on [CLS] tokens and pooled regions, the patch head
    on ``patches_per_view`` random patch tokens per view (a shared head on all
    of them). The teacher's heads are then copies of the student's. Only the
    tokens of the model's active terms are collected.

    Args:
        model: The GLARE model, on its device, before training.
        batches: Lightly-style batches ``((view_0, view_1, geometry), ...)``
            (e.g. the training DataLoader); read until ``images`` images.
        images: Images to read (both views of each are used).
        seed: Seed of the patch choice, the k-means starts and the noise.
        patches_per_view: Patch tokens kept per view for the patch head.
        amp: Run the backbone under bf16 autocast.
        progress: Called with (images read, images wanted) after each batch.

    Returns:
        Samples and clusters per head, and the mean teacher output per term
        (for the loss's centres).

    Raises:
        ValueError: If ``batches`` yields no image or ``images`` < 1.
    """
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}.")
    generator = torch.Generator().manual_seed(seed)
    samples: dict[str, list[Tensor]] = {kind: [] for kind in _TOKEN_TERMS}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    read = 0
    for batch in batches:
        *views, _ = batch[0]
        clean = torch.cat([view[: images - read] for view in views])  # (2B, 3, H, W)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _collect(model, clean.to(device), samples, patches_per_view, generator)
        read += clean.shape[0] // 2
        if progress is not None:
            progress(read, images)
        if read >= images:
            break
    model.train(was_training)
    if read == 0:
        raise ValueError("No image to initialise the heads from: the data is empty.")
    tokens = {kind: torch.cat(parts) for kind, parts in samples.items() if parts}
    shared = model.student_patch_head is model.student_head
    head_of = {"cls": "head", "regions": "head", "patches": "patch_head"}
    if shared:
        head_of["patches"] = "head"
    students = {"head": model.student_head, "patch_head": model.student_patch_head}
    result = HeadInitialization()
    for head, student in students.items():
        kinds = [kind for kind in tokens if head_of[kind] == head]
        if not kinds or (shared and head == "patch_head"):
            continue
        features = torch.cat([tokens[kind] for kind in kinds]).to(device)  # (n, D)
        result.samples[head] = features.shape[0]
        result.clusters[head] = initialize_head(student, features, generator)
        model.teacher[head].load_state_dict(student.state_dict())
    for kind, features in tokens.items():
        outputs = model.teacher[head_of[kind]](features.to(device))  # (n, K)
        for term in _TOKEN_TERMS[kind]:
            if term in model.terms:
                result.centers[term] = outputs.float().mean(dim=0)  # (K,)
    return result
