"""Building GLARE's parts: option checks, the heads and the teacher's copies."""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import TypeVar

from torch import nn

from lightly_glare.loss.glare_output import ALL_TERMS
from lightly_glare.models.block_kernels import check_drop_path
from lightly_glare.models.projection_head import GlareProjectionHead

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def deepcopy_module(module: ModuleT) -> ModuleT:
    """``copy.deepcopy`` with an error that names the module that cannot be copied.

    Args:
        module: A student module to copy for the teacher.

    Returns:
        The copy.

    Raises:
        ValueError: The module cannot be deep-copied (e.g. a head with the
            hook-based ``torch.nn.utils.weight_norm``); the message names the fix.
    """
    try:
        return copy.deepcopy(module)
    except RuntimeError as error:  # e.g. torch.nn.utils.weight_norm's hooks
        raise ValueError(
            f"GLARE's EMA teacher copies the student's modules with copy.deepcopy, "
            f"which failed ({error}). Heads built with the hook-based "
            "torch.nn.utils.weight_norm (lightly's DINOProjectionHead) cannot be "
            "copied: use lightly_glare.models.GlareProjectionHead (same function)."
        ) from error


def reinitialised_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with freshly initialised weights.

    Uses the module's own ``reset_parameters`` (e.g.
    :meth:`GlareProjectionHead.reset_parameters`), else that of each submodule.

    Args:
        module: The module to copy.

    Returns:
        The re-initialised copy.
    """
    fresh = deepcopy_module(module)
    reset = getattr(fresh, "reset_parameters", None)
    if callable(reset):
        reset()
        return fresh
    for submodule in fresh.modules():
        if callable(getattr(submodule, "reset_parameters", None)):
            submodule.reset_parameters()  # type: ignore[operator]
    return fresh


def check_options(
    terms: Collection[str],
    region_match: str,
    local_distortion_patches: str,
    local_patches_per_view: int | None,
    student_drop_path: float,
    share_patch_head: bool,
    patch_head: nn.Module | None,
) -> tuple[str, ...]:
    """Refuses GLARE options outside their domain (see :class:`GLARE`).

    Args:
        terms: The terms to compute.
        region_match: ``"geometry"`` or ``"attention"``.
        local_distortion_patches: ``"distorted"`` or ``"all"``.
        local_patches_per_view: None or a positive integer.
        student_drop_path: A rate in [0, 1).
        share_patch_head: Whether the [CLS] head serves the patches too.
        patch_head: The patch head passed in, if any.

    Returns:
        The terms in the order of :data:`~lightly_glare.loss.ALL_TERMS`.

    Raises:
        ValueError: An option is invalid; the message names it and its value.
    """
    unknown = set(terms) - set(ALL_TERMS)
    if unknown or not terms:
        raise ValueError(
            f"terms must be a non-empty subset of {ALL_TERMS}, got {tuple(terms)}."
        )
    if region_match not in ("geometry", "attention"):
        raise ValueError(
            f"region_match must be 'geometry' or 'attention', got {region_match!r}."
        )
    if local_distortion_patches not in ("distorted", "all"):
        raise ValueError(
            "local_distortion_patches must be 'distorted' or 'all', got "
            f"{local_distortion_patches!r}."
        )
    if local_patches_per_view is not None and local_patches_per_view < 1:
        raise ValueError(
            "local_patches_per_view must be None or a positive integer, got "
            f"{local_patches_per_view}."
        )
    check_drop_path(student_drop_path, "student_drop_path")
    if share_patch_head and patch_head is not None:
        raise ValueError("Pass either patch_head or share_patch_head=True.")
    return tuple(term for term in ALL_TERMS if term in terms)


def build_heads(
    dim: int,
    head: nn.Module | None,
    patch_head: nn.Module | None,
    share_patch_head: bool,
    freeze_heads: bool,
) -> tuple[nn.Module, nn.Module]:
    """The student's [CLS] / region head and its patch head.

    Args:
        dim: Token dimension D of the backbone.
        head: The [CLS] head passed in; None: a :class:`GlareProjectionHead`.
        patch_head: The patch head passed in; None: a re-initialised copy of
            the [CLS] head, or the [CLS] head itself with ``share_patch_head``.
        share_patch_head: Use the [CLS] head for patches too.
        freeze_heads: Freeze both heads.

    Returns:
        ``(head, patch_head)``, the same module twice when shared.
    """
    student_head = head or GlareProjectionHead(dim)
    if share_patch_head:
        student_patch_head = student_head
    else:
        student_patch_head = patch_head or reinitialised_copy(student_head)
    if freeze_heads:
        student_head.requires_grad_(False)
        student_patch_head.requires_grad_(False)
    return student_head, student_patch_head
