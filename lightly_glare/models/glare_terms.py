"""The matched tokens of GLARE's terms, before the projection heads.

:meth:`GLARE.forward <lightly_glare.models.GLARE.forward>` runs the teacher on
the clean views and the student on the distorted ones, then collects, per term,
which student token is compared with which teacher token (a :class:`TokenPair`);
the heads project all terms at once. Everything here is batched over both
views: view a = 0 against b = 1 and a = 1 against b = 0, rows ``[0, B)`` and
``[B, 2B)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightly_glare.loss.glare_output import MatchedPair
from lightly_glare.models.geometry import (
    bilinear_gather,
    map_patch_centers,
    transfer_masks,
)
from lightly_glare.models.randomness import random_tensor

RegionMatch = Literal["geometry", "attention"]
LocalPatches = Literal["distorted", "all"]
#: The (view a, view b) pairs of the two directions.
DIRECTIONS = ((0, 1), (1, 0))


@dataclass
class TokenPair:
    """Matched student and teacher tokens of one term, before the projection.

    Attributes:
        student: Student tokens, shape (M, D).
        teacher: The teacher's target tokens, shape (M, D).
        head: ``"head"`` ([CLS] / regions) or ``"patch_head"``.
        valid: Which of the M pairs count, shape (M,); None: all.
    """

    student: Tensor
    teacher: Tensor
    head: str
    valid: Tensor | None = None


def sample_patches(
    candidates: Tensor, count: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draws a fixed number of patches per row, uniformly among the candidates.

    The patches with the ``count`` largest uniform random scores, candidates
    ranked before every other patch (masked ``topk``): a uniform random subset
    of the candidates, or all of them plus non-candidates as padding when a row
    has fewer than ``count``. Shapes never depend on the data and nothing
    synchronises with the host.

    Args:
        candidates: Boolean mask of the patches to sample from, shape (B, N).
        count: Patches drawn per row; capped at N.
        generator: Optional random generator.

    Returns:
        ``(index, valid)``, each with shape (B, min(count, N)): the drawn patch
        indices (distinct within a row) and whether each one is a candidate.
    """
    scores = random_tensor(
        candidates.shape, generator, candidates.device
    )  # (B, N), [0, 1)
    scores = scores.masked_fill(~candidates, -1.0)  # candidates rank first
    index = scores.topk(min(count, candidates.shape[1]), dim=1).indices  # (B, K)
    return index, candidates.gather(1, index)


def local_pair(
    student_tokens: Tensor,
    teacher_tokens: Tensor,
    candidates: Tensor,
    patches_per_view: int | None,
    generator: torch.Generator | None,
) -> TokenPair:
    """The patch pairs of a local term, for the patch heads.

    Args:
        student_tokens: Student patch tokens, shape (2B, N, D).
        teacher_tokens: The teacher's target for each student patch, shape
            (2B, N, D).
        candidates: Boolean mask of the valid pairs, shape (2B, N).
        patches_per_view: K pairs drawn per row; None: every valid pair.
        generator: Generator of the pair sampling.

    Returns:
        Every valid pair (M = number of candidates) or, with ``patches_per_view``
        K, K sampled per row (M = 2B * K) with their validity.
    """
    if patches_per_view is None:
        return TokenPair(
            student_tokens[candidates],  # (M, D)
            teacher_tokens[candidates],  # (M, D)
            head="patch_head",
        )
    index, valid = sample_patches(
        candidates, patches_per_view, generator
    )  # (2B, K), (2B, K)
    index = index[..., None].expand(-1, -1, student_tokens.shape[-1])  # (2B,K,D)
    return TokenPair(
        student_tokens.gather(1, index).flatten(0, 1),  # (2B * K, D)
        teacher_tokens.gather(1, index).flatten(0, 1),  # (2B * K, D)
        head="patch_head",
        valid=valid.flatten(),  # (2B * K,)
    )


def local_distortion_tokens(
    student_patches: Tensor,
    teacher_patches: Tensor,
    patch_masks: Tensor,
    which: LocalPatches,
    patches_per_view: int | None,
    generator: torch.Generator | None,
) -> TokenPair:
    """L_loc1's pairs: the student's distorted patches against the clean ones.

    Args:
        student_patches: Student patch tokens, shape (2B, N, D).
        teacher_patches: Teacher patch tokens of the clean views, (2B, N, D).
        patch_masks: The distorted patches, shape (2B, N) (bool).
        which: ``"distorted"`` compares only the distorted patches, ``"all"``
            every patch.
        patches_per_view: K pairs drawn per row; None: every valid pair.
        generator: Generator of the pair sampling.

    Returns:
        The pairs of :func:`local_pair`.
    """
    selected = (
        patch_masks if which == "distorted" else torch.ones_like(patch_masks)
    )  # (2B, N)
    return local_pair(
        student_patches, teacher_patches, selected, patches_per_view, generator
    )


def local_matching_tokens(
    student_patches: Tensor,
    teacher_patches: Tensor,
    geometry: Tensor,
    grid: tuple[int, int],
    patches_per_view: int | None,
    generator: torch.Generator | None,
) -> TokenPair:
    """L_loc2's pairs: view-a student patches against view b's teacher tokens.

    Each student patch of view a whose centre lies inside view b is paired with
    the teacher's view-b tokens bilinearly interpolated at that centre.

    Args:
        student_patches: Student patch tokens, shape (2B, N, D).
        teacher_patches: Teacher patch tokens, shape (2B, N, D).
        geometry: Crop geometry of the views, shape (B, 2, 5).
        grid: The patch grid (h, w), N = h * w.
        patches_per_view: K pairs drawn per row; None: every valid pair.
        generator: Generator of the pair sampling.

    Returns:
        The pairs of :func:`local_pair`.
    """
    teacher_views = teacher_patches.chunk(2)  # 2 x (B, N, D)
    coords, inside = [], []
    for a, b in DIRECTIONS:
        coords_b, inside_b = map_patch_centers(
            geometry[:, a], geometry[:, b], grid, grid
        )  # (B, N, 2): view-a patch centres in view b's grid, (B, N)
        coords.append(coords_b)
        inside.append(inside_b)
    candidates = torch.cat(inside)  # (2B, N)
    if patches_per_view is None:
        targets = [
            bilinear_gather(teacher_views[b], coords[a], grid) for a, b in DIRECTIONS
        ]  # 2 x (B, N, D): view b's teacher tokens at view a's patches
        return local_pair(
            student_patches, torch.cat(targets), candidates, None, generator
        )
    # Draw the pairs first and interpolate the teacher's tokens only there
    # (ours): the same pairs and targets as interpolating at every patch.
    index, valid = sample_patches(
        candidates, patches_per_view, generator
    )  # (2B, K), (2B, K)
    index_a = index.chunk(2)  # 2 x (B, K)
    targets = [
        bilinear_gather(
            teacher_views[b],
            coords[a].gather(1, index_a[a][..., None].expand(-1, -1, 2)),
            grid,
        )  # (B, K, D)
        for a, b in DIRECTIONS
    ]
    gather_index = index[..., None].expand(-1, -1, student_patches.shape[-1])
    return TokenPair(
        student_patches.gather(1, gather_index).flatten(0, 1),  # (2B * K, D)
        torch.cat(targets).flatten(0, 1),  # (2B * K, D)
        head="patch_head",
        valid=valid.flatten(),  # (2B * K,)
    )


def regional_tokens(
    student: tuple[Tensor, Tensor],
    teacher: tuple[Tensor, Tensor],
    geometry: Tensor,
    grid: tuple[int, int],
    regions: tuple[Tensor, Tensor],
    pooling: tuple[nn.Module, nn.Module],
    region_match: RegionMatch,
    min_region_patches: int,
) -> tuple[TokenPair, Tensor]:
    """L_reg's pairs: regions pooled by the student on a, the teacher on b.

    Args:
        student: The student's [CLS] tokens (2B, D) and patch tokens (2B, N, D).
        teacher: The teacher's [CLS] tokens (2B, D) and patch tokens (2B, N, D).
        geometry: Crop geometry of the views, shape (B, 2, 5).
        grid: The patch grid (h, w), N = h * w.
        regions: The sampler's region masks (2B, R, N) and validity (2B, R).
        pooling: The student's and the teacher's region pooling.
        region_match: ``"geometry"`` maps each region into view b through the
            crop boxes; ``"attention"`` lets the region's view-a representation
            attend over all patches of view b.
        min_region_patches: A region with fewer patches in either view is
            marked invalid.

    Returns:
        The pairs (M = 2B * R, every slot projected, the skipped ones invalid:
        fixed shapes, no host sync) and the region masks, shape (2, B, R, N).
    """
    masks = regions[0].chunk(2)  # 2 x (B, R, N)
    valid = regions[1].chunk(2)  # 2 x (B, R)
    student_cls, student_patches = (part.chunk(2) for part in student)
    teacher_cls, teacher_patches = (part.chunk(2) for part in teacher)
    student_pooling, teacher_pooling = pooling
    student_regions, teacher_regions, kept = [], [], []
    for a, b in DIRECTIONS:
        keep = valid[a] & (masks[a].sum(dim=-1) >= min_region_patches)
        with torch.no_grad():
            if region_match == "geometry":
                masks_b = transfer_masks(
                    masks[a], geometry[:, a], geometry[:, b], grid, grid
                )  # (B, R, N)
                keep &= masks_b.sum(dim=-1) >= min_region_patches
                query: Tensor = teacher_cls[b]  # (B, D)
            else:
                masks_b = torch.ones_like(masks[a])  # attend over all of b
                query = teacher_pooling(
                    teacher_cls[a], teacher_patches[a], masks[a]
                )  # (B, R, D): the region's representation on view a
            target = teacher_pooling(query, teacher_patches[b], masks_b)  # (B, R, D)
        pooled = student_pooling(
            student_cls[a], student_patches[a], masks[a]
        )  # (B, R, D)
        student_regions.append(pooled.flatten(0, 1))  # (B * R, D)
        teacher_regions.append(target.flatten(0, 1))
        kept.append(keep.flatten())  # (B * R,)
    pair = TokenPair(
        torch.cat(student_regions),  # (2B * R, D)
        torch.cat(teacher_regions),
        head="head",
        valid=torch.cat(kept),  # (2B * R,)
    )
    return pair, torch.stack(masks)  # (2, B, R, N)


def project_pairs(
    tokens: Mapping[str, TokenPair],
    student_head: Callable[[str], nn.Module],
    teacher: nn.ModuleDict,
) -> dict[str, MatchedPair]:
    """Projects every term's tokens with one call of each head and network.

    Terms whose student head is the same module are concatenated, projected
    together and split again (rows are projected independently, so the
    projections equal those of separate calls).

    Args:
        tokens: The matched tokens per term.
        student_head: The student's module for a ``TokenPair.head`` name.
        teacher: The teacher's modules, with the heads under those names.

    Returns:
        The matched projections per term, in the order of ``tokens``.
    """
    groups: dict[int, list[str]] = {}  # one group per distinct student head
    for term, pair in tokens.items():
        groups.setdefault(id(student_head(pair.head)), []).append(term)
    pairs: dict[str, MatchedPair] = {}
    for terms in groups.values():
        head = tokens[terms[0]].head
        sizes = [tokens[term].student.shape[0] for term in terms]
        student_in = torch.cat([tokens[term].student for term in terms])
        teacher_in = torch.cat([tokens[term].teacher for term in terms])
        student_out = student_head(head)(student_in)  # (sum M, K)
        with torch.no_grad():
            teacher_out = teacher[head](teacher_in)  # (sum M, K)
        for term, student_part, teacher_part in zip(
            terms,
            student_out.split(sizes),
            teacher_out.split(sizes),
            strict=True,
        ):
            pairs[term] = MatchedPair(
                teacher=teacher_part, student=student_part, valid=tokens[term].valid
            )
    return {term: pairs[term] for term in tokens}
