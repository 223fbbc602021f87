"""GLARE: student/teacher continual pre-training of a frozen ViT with UniAdapters."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import torch
from lightly.models.utils import update_momentum
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from lightly_glare.loss.glare_output import (
    ALL_TERMS,
    GLOBAL,
    LOCAL_DISTORTION,
    LOCAL_MATCHING,
    REGIONAL,
    GlareOutput,
    MatchedPair,
)
from lightly_glare.models.adapted_vit import (
    BackboneOutput,
    UniAdapterViT,
    check_drop_path,
)
from lightly_glare.models.defaults import ADAPTER_SCALE
from lightly_glare.models.geometry import (
    bilinear_gather,
    map_patch_centers,
    transfer_masks,
)
from lightly_glare.models.patch_augmentations import (
    PatchAugmentation,
    PatchBlur,
)
from lightly_glare.models.projection_head import GlareProjectionHead
from lightly_glare.models.randomness import random_tensor
from lightly_glare.models.region_pooling import CrossAttentionRegionPooling
from lightly_glare.models.region_sampler import AttentionRegionSampler

if TYPE_CHECKING:  # lightly_glare.weights imports this package
    from lightly_glare.weights.checkpoint_heads import CheckpointHeads

ModuleT = TypeVar("ModuleT", bound=nn.Module)
RegionMatch = Literal["geometry", "attention"]
LocalPatches = Literal["distorted", "all"]

#: Default patch pairs per image and view of each local term (ours): the cheapest
#: K tested (2, 4, every patch) whose segmentation transfer is not below every
#: patch's by more than the seed spread; its step costs at most 1 / 0.95 of a
#: two-view DINO step (matmul FLOPs, ViT-S/16, ViT-B/16 and DINOv2-S/14 at
#: 224 px; docs/PERFORMANCE.md).
DEFAULT_LOCAL_PATCHES_PER_VIEW = 2

#: Default sample-skipping stochastic depth of the student's frozen blocks (ours):
#: DINOv2's and LightlyTrain's student rate. On the segmentation-transfer
#: harness (DINOv2-S/14, holdout split) it was not below 0 on aerial (5 seeds) and
#: above it on MRI (3 seeds), at 0.82x the step's FLOPs (docs/PERFORMANCE.md).
DEFAULT_STUDENT_DROP_PATH = 0.3


def parse_patch_count(value: str) -> int | None:
    """A ``local_patches_per_view`` as typed: a positive integer, or ``all``.

    The one parser of the tools' ``--local-patches-per-view K`` (argparse shows
    the message of a ``ValueError`` re-raised as ``ArgumentTypeError``).

    Args:
        value: E.g. ``"4"`` or ``"all"``.

    Returns:
        The count; None for ``all`` (every valid patch, see :class:`GLARE`).

    Raises:
        ValueError: ``value`` is neither a positive integer nor ``all``; the
            message names it.
    """
    if value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0  # not an integer: refused below with the same message
    if count < 1:
        raise ValueError(f"expected a positive integer or 'all', got {value!r}")
    return count


def _deepcopy(module: ModuleT) -> ModuleT:
    """``copy.deepcopy`` with an error that names the module that cannot be copied."""
    try:
        return copy.deepcopy(module)
    except RuntimeError as error:  # e.g. torch.nn.utils.weight_norm's hooks
        raise ValueError(
            f"GLARE's EMA teacher copies the student's modules with copy.deepcopy, "
            f"which failed ({error}). Heads built with the hook-based "
            "torch.nn.utils.weight_norm (lightly's DINOProjectionHead) cannot be "
            "copied: use lightly_glare.models.GlareProjectionHead (same function)."
        ) from error


def _sizes_of(head: nn.Module) -> str:
    """``input_dim=..., output_dim=...`` of a head, for messages."""
    names = ("input_dim", "hidden_dim", "bottleneck_dim", "output_dim", "num_layers")
    sizes = [f"{name}={getattr(head, name)}" for name in names if hasattr(head, name)]
    return ", ".join(sizes) or type(head).__name__


def _reinitialised_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with freshly initialised weights.

    Uses the module's own ``reset_parameters`` (e.g.
    :meth:`GlareProjectionHead.reset_parameters`), else that of each submodule.
    """
    fresh = _deepcopy(module)
    reset = getattr(fresh, "reset_parameters", None)
    if callable(reset):
        reset()
        return fresh
    for submodule in fresh.modules():
        if callable(getattr(submodule, "reset_parameters", None)):
            submodule.reset_parameters()  # type: ignore[operator]
    return fresh


@dataclass
class _TokenPair:
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


def _sample_patches(
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


class GLARE(nn.Module):
    """GLARE student/teacher model (Global, Local And Regional Enforcement).

    - [0]: GLARE, Ebouky et al., https://arxiv.org/abs/2509.17816

    The backbone is frozen; the student trains one UniAdapter per block plus the
    projection heads (and the region pooling's projections when learnable). The
    teacher is an exponential moving average of those trainable modules only:
    it reuses the student's single copy of the frozen backbone weights, passing
    its own adapters (see :class:`UniAdapterViT`). The teacher runs under
    ``torch.no_grad`` once per view (both views in one batched call) on the clean
    views; the student runs on the views distorted by a patch-level augmentation.

    One call computes the projections of the terms in ``terms`` and returns a
    :class:`~lightly_glare.loss.GlareOutput` for :class:`~lightly_glare.loss.GlareLoss`:

    - global: [CLS] projections of both views;
    - regional: regions drawn from the teacher's last-block [CLS] attention heads
      on view a, mapped into view b through the crop geometry, pooled by
      cross-attention; student on a against teacher on b, both directions;
    - local distortion: the student's distorted patches against the teacher's
      clean patches at the same positions;
    - local matching: each student patch of view a whose centre lies inside view
      b against the teacher's view-b tokens bilinearly interpolated there.

    Every part is a module of its own, passed in or built with its defaults:
    the heads (:class:`GlareProjectionHead`), the region sampler, the region
    pooling and the patch augmentation. The teacher's copies are made with
    ``copy.deepcopy``, so heads must be deep-copyable (lightly's
    ``DINOProjectionHead`` uses the old hook-based weight norm and is not;
    :class:`GlareProjectionHead` computes the same function and is).

    Heads (ours; the paper lists only adapters as trainable): trainable and
    EMA-tracked by default; ``freeze_heads=True`` freezes them (load the heads
    of a DINO / iBOT checkpoint first, :meth:`load_heads`).

    Attributes:
        backbone: The adapted backbone holding the frozen ViT and the student's
            adapters.
        student_head: [CLS] and region projection head.
        student_patch_head: Patch projection head (the [CLS] head itself when
            ``share_patch_head``).
        region_pooling: The student's cross-attention region pooling.
        teacher: EMA copies: ``adapters``, ``head``, ``patch_head``,
            ``region_pooling``.
        region_sampler: The attention-guided region sampler.
        patch_augmentation: The student's patch-level augmentation (None: the
            student sees the clean views and L_loc1 is unavailable).
        terms: The terms computed by :meth:`forward`.
        local_patches_per_view: Patch pairs per image and view of each local
            term (None: every valid patch).

    Examples:
        >>> vit = timm.create_model("vit_small_patch16_224", num_classes=0)
        >>> criterion = GlareLoss()
        >>> model = GLARE(vit, terms=criterion.active_terms)
        >>> (view0, view1), geometry = batch  # from GlareTransform
        >>> model.update_teacher(momentum=0.996)
        >>> loss = criterion(model([view0, view1], geometry), epoch=0)
    """

    def __init__(
        self,
        backbone: VisionTransformer | UniAdapterViT,
        head: nn.Module | None = None,
        patch_head: nn.Module | None = None,
        share_patch_head: bool = False,
        terms: Collection[str] = ALL_TERMS,
        adapter_bottleneck: int | None = None,
        adapter_scale: float = ADAPTER_SCALE,
        freeze_heads: bool = False,
        patch_augmentation: PatchAugmentation | None = None,
        region_sampler: AttentionRegionSampler | None = None,
        region_pooling: CrossAttentionRegionPooling | None = None,
        region_match: RegionMatch = "geometry",
        min_region_patches: int = 2,
        local_distortion_patches: LocalPatches = "distorted",
        local_patches_per_view: int | None = DEFAULT_LOCAL_PATCHES_PER_VIEW,
        student_drop_path: float = DEFAULT_STUDENT_DROP_PATH,
    ) -> None:
        """Builds student and teacher.

        Args:
            backbone: A timm ``VisionTransformer`` (adapters are inserted and the
                backbone frozen) or an existing :class:`UniAdapterViT`.
            head: Projection head of the [CLS] token and the regions, e.g. a
                :class:`GlareProjectionHead` (the default, with its default
                sizes) or lightly's ``DINOProjectionHead``. The teacher's is a
                deep copy.
            patch_head: Projection head of the patch tokens. None: a deep copy
                of ``head`` with fresh initial weights (iBOT's untied heads), or
                ``head`` itself with ``share_patch_head``.
            share_patch_head: Use ``head`` for patches too (iBOT's tied variant).
                Defaults to False (untied).
            terms: Terms to compute; pass ``GlareLoss.active_terms`` so that
                switched-off terms cost nothing.
            adapter_bottleneck: Adapter bottleneck when wrapping a plain ViT.
                Defaults to None: ``embed_dim // 12`` (ours).
            adapter_scale: Adapter output scale when wrapping a plain ViT.
                Defaults to 0.1 (UniAdapter).
            freeze_heads: Freeze the heads (the paper's literal reading: only
                adapters train); load head weights before training then.
            patch_augmentation: Distortion applied to the student's views.
                None: :class:`PatchBlur` on 30 % of the patches (ours) when the
                local distortion term is computed, else no distortion (the
                distortion exists for L_loc1; without it, e.g. for DINO-only
                continual pre-training, the student sees the clean views).
            region_sampler: Defaults to :class:`AttentionRegionSampler` with
                ``min(heads, 6)`` regions, mass 0.6.
            region_pooling: Defaults to a parameter-free
                :class:`CrossAttentionRegionPooling`.
            region_match: ``"geometry"`` maps each region into the other view
                through the crop boxes (default); ``"attention"`` lets the region
                representation from view a attend over all patches of view b.
            min_region_patches: A region with fewer patches than this in either
                view is skipped. Defaults to 2 (ours).
            local_distortion_patches: ``"distorted"`` (default) compares only the
                distorted patches in L_loc1; ``"all"`` compares every patch.
            local_patches_per_view: Cost bound (ours): each local term uses K
                patch pairs per image and view, drawn uniformly (with the step's
                ``generator``) from its valid patches (L_loc1: the distorted ones;
                L_loc2: those whose centre lies inside the other view), so that
                the patch heads see ``2 * B * K`` tokens per term instead of
                hundreds per image, with fixed shapes (no host sync). An image
                with fewer valid patches contributes all of them (the remaining
                slots are marked invalid in :attr:`MatchedPair.valid`). K is
                capped at the number of patches. Defaults to
                :data:`DEFAULT_LOCAL_PATCHES_PER_VIEW` (2). None: every valid
                patch (boolean indexing: data-dependent shapes, a host sync).
            student_drop_path: Sample-skipping stochastic depth of the
                student's frozen blocks in training (ours, as DINOv2 and
                LightlyTrain train their students): each block's attention
                and MLP branch runs on a random ``1 - student_drop_path``
                share of the 2B rows, scaled up to keep its expectation (see
                :meth:`UniAdapterViT.forward_features`); the adapters, the
                teacher and evaluation see every row. Defaults to
                :data:`DEFAULT_STUDENT_DROP_PATH`.
        """
        super().__init__()
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
        self.terms = tuple(term for term in ALL_TERMS if term in terms)
        if patch_augmentation is None and LOCAL_DISTORTION in self.terms:
            patch_augmentation = PatchBlur()
        if isinstance(backbone, UniAdapterViT):
            self.backbone = backbone
        else:
            self.backbone = UniAdapterViT(
                backbone, bottleneck=adapter_bottleneck, scale=adapter_scale
            )
        dim = self.backbone.embed_dim
        self.student_head = head or GlareProjectionHead(dim)
        if share_patch_head:
            self.student_patch_head = self.student_head
        else:
            self.student_patch_head = patch_head or _reinitialised_copy(
                self.student_head
            )
        if freeze_heads:
            self.student_head.requires_grad_(False)
            self.student_patch_head.requires_grad_(False)
        self.region_pooling = region_pooling or CrossAttentionRegionPooling(dim)
        self.region_sampler = region_sampler or AttentionRegionSampler()
        self.patch_augmentation = patch_augmentation
        self.region_match = region_match
        self.min_region_patches = min_region_patches
        self.local_distortion_patches = local_distortion_patches
        self.local_patches_per_view = local_patches_per_view
        self.student_drop_path = student_drop_path
        # One deep copy of all student modules: a head shared between [CLS]
        # and patches stays shared in the teacher.
        self.teacher = _deepcopy(self._student_modules())
        self.teacher.requires_grad_(False)

    def load_heads(self, heads: CheckpointHeads) -> list[str]:
        """Loads the projection heads of a DINO / iBOT / DINOv2 checkpoint.

        Call it before building the optimizer (the modules are loaded in
        place). The student's heads take the checkpoint's student heads and
        the teacher's copies its teacher heads; where the checkpoint holds only
        one of the two (iBOT's released teacher files), both take it. Patch
        heads (unless :attr:`student_patch_head` is the [CLS] head) take the
        checkpoint's separate patch heads, or its [CLS] heads where it has none
        (DINO, iBOT with a shared head): the patch tokens then start in the
        prototype space the backbone was trained with, not in a random one.

        Args:
            heads: From :func:`lightly_glare.weights.load_projection_heads`.

        Returns:
            What was loaded, e.g. ``["student head <- student", ...]`` (empty
            when the checkpoint has no heads).

        Raises:
            CheckpointMismatchError: A head of this model has other sizes than
                the checkpoint's (the message names both and the fix).
        """
        # lightly_glare.weights imports this package: import at call time.
        from lightly_glare.weights.checkpoint_io import CheckpointMismatchError

        other = {"student": "teacher", "teacher": "student"}
        separate_patch_heads = (heads.student_patch or heads.teacher_patch) is not None
        shared = self.student_patch_head is self.student_head
        targets = {
            ("student", "head"): self.student_head,
            ("teacher", "head"): self.teacher["head"],
            ("student", "patch_head"): self.student_patch_head,
            ("teacher", "patch_head"): self.teacher["patch_head"],
        }
        plan = []
        for (network, kind), module in targets.items():
            if kind == "patch_head" and shared:
                continue
            use_patch = kind == "patch_head" and separate_patch_heads
            suffix = "_patch" if use_patch else ""
            source = network if getattr(heads, network + suffix) else other[network]
            state = getattr(heads, source + suffix)
            if state is not None:
                label = f"{network} {kind.replace('_', ' ')}"
                plan.append((module, state, label, f"{source}{suffix} head"))
        for module, state, label, source in plan:  # all or nothing
            try:
                _deepcopy(module).load_state_dict(state, strict=True)
            except RuntimeError as error:
                sizes = heads.patch_sizes if "patch" in source else heads.sizes
                raise CheckpointMismatchError(
                    f"{heads.source}: the checkpoint's {source} has sizes "
                    f"{sizes}, which this model's {label} ({_sizes_of(module)}) "
                    "cannot hold. Build the head with the checkpoint's sizes "
                    f"(output_dim={getattr(sizes, 'output_dim', '?')}) or do not "
                    "load the checkpoint's heads."
                ) from error
        for module, state, _, _ in plan:
            module.load_state_dict(state, strict=True)
        loaded = [f"{label} <- {source}" for _, _, label, source in plan]
        return loaded

    @property
    def teacher_adapters(self) -> nn.ModuleList:
        """The teacher's EMA adapters (one per block)."""
        return cast(nn.ModuleList, self.teacher["adapters"])

    def _student_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "adapters": self.backbone.adapters,
                "head": self.student_head,
                "patch_head": self.student_patch_head,
                "region_pooling": self.region_pooling,
            }
        )

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA update ``teacher <- m * teacher + (1 - m) * student``.

        Args:
            momentum: The momentum m in [0, 1] (use
                :func:`lightly.utils.scheduler.cosine_schedule` from 0.996 to 1).
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
        update_momentum(self._student_modules(), self.teacher, m=momentum)

    def export_backbone(
        self,
        path: str | Path,
        which: Literal["teacher", "student"] = "teacher",
        extra_meta: dict[str, Any] | None = None,
    ) -> Path:
        """Writes the adapted backbone (frozen ViT + adapters) for downstream use.

        Args:
            path: Destination file (written atomically).
            which: Export the teacher's EMA adapters (default, as DINO evaluates
                its teacher) or the student's.
            extra_meta: Information stored with the weights (e.g. timm name).

        Returns:
            The destination path.
        """
        # lightly_glare.weights imports this package: import at call time.
        from lightly_glare.weights.export import export_adapted_backbone

        adapters = self.teacher_adapters if which == "teacher" else None
        return export_adapted_backbone(
            self.backbone, path, adapters=adapters, extra_meta=extra_meta
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer should update (adapters, heads, pooling)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(
        self,
        views: Sequence[Tensor],
        geometry: Tensor,
        generator: torch.Generator | None = None,
    ) -> GlareOutput:
        """Runs teacher and student on two views and projects every active term.

        Args:
            views: Two augmented views of the same images, each (B, 3, H, W),
                normalised as the backbone expects.
            geometry: Crop geometry of the views, shape (B, 2, 5), as produced
                by :class:`~lightly_glare.transforms.GlareTransform`.
            generator: Optional generator for the patch augmentation, the
                region sampler and the local pair sampling (reproducibility).

        Returns:
            The :class:`~lightly_glare.loss.GlareOutput` for ``GlareLoss``.
        """
        if len(views) != 2 or views[0].shape != views[1].shape:
            raise ValueError(
                "GLARE expects two views of equal shape, got "
                f"{[tuple(view.shape) for view in views]}."
            )
        batch = views[0].shape[0]
        if geometry.shape != (batch, 2, 5):
            raise ValueError(
                f"Expected geometry of shape ({batch}, 2, 5), got "
                f"{tuple(geometry.shape)}."
            )
        clean = torch.cat(list(views))  # (2B, 3, H, W): both views in one pass
        grid = self.backbone.grid_size(clean.shape[2], clean.shape[3])
        with torch.no_grad():
            teacher = self.backbone.forward_features(
                clean,
                adapters=self.teacher_adapters,
                return_cls_attention=REGIONAL in self.terms,
            )
        needs_distortion = LOCAL_DISTORTION in self.terms
        patch_masks = None
        student_input = clean
        if self.patch_augmentation is not None:
            student_input, patch_masks = self.patch_augmentation(
                clean, self.backbone.patch_size, generator=generator
            )
        elif needs_distortion:
            raise ValueError("The local distortion term needs a patch augmentation.")
        student = self.backbone.forward_features(
            student_input,
            drop_path=self.student_drop_path if self.training else 0.0,
            generator=generator,
        )
        # Every term's tokens are collected first and each head runs once per
        # network on all of them (ours): one weight-norm recomputation, one
        # low-precision cast of the teacher's weights and larger matmuls
        # instead of one call per term. Rows are projected independently, so
        # the projections are those of separate calls.
        tokens: dict[str, _TokenPair] = {}
        if GLOBAL in self.terms:
            tokens[GLOBAL] = _TokenPair(
                student.tokens[:, 0], teacher.tokens[:, 0], head="head"
            )  # (2B, D) each: both views
        regions = None
        if REGIONAL in self.terms:
            assert teacher.cls_attention is not None  # requested above
            # Drawn before the local pair sampling: local_patches_per_view
            # leaves the regions unchanged.
            regions = self.region_sampler(
                teacher.cls_attention, generator
            )  # (2B, R, N), (2B, R)
        if needs_distortion and patch_masks is not None:
            tokens[LOCAL_DISTORTION] = self._local_distortion(
                student, teacher, patch_masks, generator
            )
        if LOCAL_MATCHING in self.terms:
            tokens[LOCAL_MATCHING] = self._local_matching(
                student, teacher, geometry, grid, generator
            )
        region_masks = None
        if regions is not None:
            tokens[REGIONAL], region_masks = self._regional(
                student, teacher, geometry, grid, *regions
            )
        pairs = self._project(tokens)
        output = GlareOutput(teacher_global=[], student_global=[])
        if GLOBAL in pairs:
            global_pair = pairs.pop(GLOBAL)
            output.teacher_global = list(global_pair.teacher.chunk(2))  # 2 x (B, K)
            output.student_global = list(global_pair.student.chunk(2))
        output.pairs = {term: pairs[term] for term in ALL_TERMS if term in pairs}
        output.patch_masks = (
            None if patch_masks is None else patch_masks.unflatten(0, (2, batch))
        )
        output.region_masks = region_masks
        return output

    def _project(self, tokens: Mapping[str, _TokenPair]) -> dict[str, MatchedPair]:
        """Projects every term's tokens with one call of each head and network.

        Args:
            tokens: The matched tokens per term.

        Returns:
            The matched projections per term, in the order of ``tokens``.
        """
        groups: dict[int, list[str]] = {}  # one group per distinct student head
        for term, pair in tokens.items():
            groups.setdefault(id(self._student_head(pair.head)), []).append(term)
        pairs: dict[str, MatchedPair] = {}
        for terms in groups.values():
            head = tokens[terms[0]].head
            sizes = [tokens[term].student.shape[0] for term in terms]
            student_in = torch.cat([tokens[term].student for term in terms])
            teacher_in = torch.cat([tokens[term].teacher for term in terms])
            student_out = self._student_head(head)(student_in)  # (sum M, K)
            with torch.no_grad():
                teacher_out = self.teacher[head](teacher_in)  # (sum M, K)
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

    def _student_head(self, head: str) -> nn.Module:
        return self.student_head if head == "head" else self.student_patch_head

    def _patch_tokens(self, out: BackboneOutput) -> Tensor:
        return out.tokens[:, self.backbone.num_prefix_tokens :]  # (2B, N, D)

    def _local_pair(
        self,
        student_tokens: Tensor,
        teacher_tokens: Tensor,
        candidates: Tensor,
        generator: torch.Generator | None,
    ) -> _TokenPair:
        """The patch pairs of a local term, for the patch heads.

        Args:
            student_tokens: Student patch tokens, shape (2B, N, D).
            teacher_tokens: The teacher's target for each student patch, shape
                (2B, N, D).
            candidates: Boolean mask of the valid pairs, shape (2B, N).
            generator: Generator of the pair sampling.

        Returns:
            Every valid pair (M = number of candidates) or, with
            ``local_patches_per_view`` K, K sampled per row (M = 2B * K) with
            their validity.
        """
        if self.local_patches_per_view is None:
            return _TokenPair(
                student_tokens[candidates],  # (M, D)
                teacher_tokens[candidates],  # (M, D)
                head="patch_head",
            )
        index, valid = _sample_patches(
            candidates, self.local_patches_per_view, generator
        )  # (2B, K), (2B, K)
        index = index[..., None].expand(-1, -1, student_tokens.shape[-1])  # (2B,K,D)
        return _TokenPair(
            student_tokens.gather(1, index).flatten(0, 1),  # (2B * K, D)
            teacher_tokens.gather(1, index).flatten(0, 1),  # (2B * K, D)
            head="patch_head",
            valid=valid.flatten(),  # (2B * K,)
        )

    def _local_distortion(
        self,
        student: BackboneOutput,
        teacher: BackboneOutput,
        patch_masks: Tensor,
        generator: torch.Generator | None,
    ) -> _TokenPair:
        selected = (
            patch_masks
            if self.local_distortion_patches == "distorted"
            else torch.ones_like(patch_masks)
        )  # (2B, N)
        return self._local_pair(
            self._patch_tokens(student),
            self._patch_tokens(teacher),
            selected,
            generator,
        )

    def _local_matching(
        self,
        student: BackboneOutput,
        teacher: BackboneOutput,
        geometry: Tensor,
        grid: tuple[int, int],
        generator: torch.Generator | None,
    ) -> _TokenPair:
        teacher_patches = self._patch_tokens(teacher).chunk(2)  # 2 x (B, N, D)
        student_patches = self._patch_tokens(student)  # (2B, N, D): views a = 0, 1
        coords, inside = [], []
        for a, b in ((0, 1), (1, 0)):
            coords_b, inside_b = map_patch_centers(
                geometry[:, a], geometry[:, b], grid, grid
            )  # (B, N, 2): view-a patch centres in view b's grid, (B, N)
            coords.append(coords_b)
            inside.append(inside_b)
        candidates = torch.cat(inside)  # (2B, N)
        if self.local_patches_per_view is None:
            targets = [
                bilinear_gather(teacher_patches[b], coords[a], grid)
                for a, b in ((0, 1), (1, 0))
            ]  # 2 x (B, N, D): view b's teacher tokens at view a's patches
            return self._local_pair(
                student_patches, torch.cat(targets), candidates, generator
            )
        # Draw the pairs first and interpolate the teacher's tokens only there
        # (ours): the same pairs and targets as interpolating at every patch.
        index, valid = _sample_patches(
            candidates, self.local_patches_per_view, generator
        )  # (2B, K), (2B, K)
        index_a = index.chunk(2)  # 2 x (B, K)
        targets = [
            bilinear_gather(
                teacher_patches[b],
                coords[a].gather(1, index_a[a][..., None].expand(-1, -1, 2)),
                grid,
            )  # (B, K, D)
            for a, b in ((0, 1), (1, 0))
        ]
        gather_index = index[..., None].expand(-1, -1, student_patches.shape[-1])
        return _TokenPair(
            student_patches.gather(1, gather_index).flatten(0, 1),  # (2B * K, D)
            torch.cat(targets).flatten(0, 1),  # (2B * K, D)
            head="patch_head",
            valid=valid.flatten(),  # (2B * K,)
        )

    def _regional(
        self,
        student: BackboneOutput,
        teacher: BackboneOutput,
        geometry: Tensor,
        grid: tuple[int, int],
        region_masks: Tensor,
        region_valid: Tensor,
    ) -> tuple[_TokenPair, Tensor]:
        masks = region_masks.chunk(2)  # 2 x (B, R, N)
        valid = region_valid.chunk(2)  # 2 x (B, R)
        student_cls = student.tokens[:, 0].chunk(2)  # 2 x (B, D)
        teacher_cls = teacher.tokens[:, 0].chunk(2)
        student_patches = self._patch_tokens(student).chunk(2)  # 2 x (B, N, D)
        teacher_patches = self._patch_tokens(teacher).chunk(2)
        student_regions, teacher_regions, kept = [], [], []
        for a, b in ((0, 1), (1, 0)):
            keep = valid[a] & (masks[a].sum(dim=-1) >= self.min_region_patches)
            with torch.no_grad():
                if self.region_match == "geometry":
                    masks_b = transfer_masks(
                        masks[a], geometry[:, a], geometry[:, b], grid, grid
                    )  # (B, R, N)
                    keep &= masks_b.sum(dim=-1) >= self.min_region_patches
                    query: Tensor = teacher_cls[b]  # (B, D)
                else:
                    masks_b = torch.ones_like(masks[a])  # attend over all of b
                    query = self.teacher["region_pooling"](
                        teacher_cls[a], teacher_patches[a], masks[a]
                    )  # (B, R, D): the region's representation on view a
                target = self.teacher["region_pooling"](
                    query, teacher_patches[b], masks_b
                )  # (B, R, D)
            pooled = self.region_pooling(
                student_cls[a], student_patches[a], masks[a]
            )  # (B, R, D)
            # Every slot is projected, the skipped ones marked invalid: fixed
            # shapes, no boolean indexing (host sync).
            student_regions.append(pooled.flatten(0, 1))  # (B * R, D)
            teacher_regions.append(target.flatten(0, 1))
            kept.append(keep.flatten())  # (B * R,)
        pair = _TokenPair(
            torch.cat(student_regions),  # (2B * R, D)
            torch.cat(teacher_regions),
            head="head",
            valid=torch.cat(kept),  # (2B * R,)
        )
        return pair, torch.stack(masks)  # (2, B, R, N)
