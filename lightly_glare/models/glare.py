"""GLARE: student/teacher continual pre-training of a frozen ViT with UniAdapters."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

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
)
from lightly_glare.models.defaults import ADAPTER_SCALE, MIN_REGION_PATCHES
from lightly_glare.models.glare_parts import (
    build_heads,
    check_options,
    deepcopy_module,
)
from lightly_glare.models.glare_terms import (
    LocalPatches,
    RegionMatch,
    TokenPair,
    local_distortion_tokens,
    local_matching_tokens,
    project_pairs,
    regional_tokens,
)
from lightly_glare.models.patch_augmentations import (
    PatchAugmentation,
    PatchBlur,
)
from lightly_glare.models.region_pooling import CrossAttentionRegionPooling
from lightly_glare.models.region_sampler import AttentionRegionSampler

if TYPE_CHECKING:  # lightly_glare.weights imports this package
    from lightly_glare.weights.checkpoint_heads import CheckpointHeads


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


def _check_views(views: Sequence[Tensor], geometry: Tensor) -> int:
    """The batch size B of two equal views, refusing other shapes."""
    if len(views) != 2 or views[0].shape != views[1].shape:
        raise ValueError(
            "GLARE expects two views of equal shape, got "
            f"{[tuple(view.shape) for view in views]}."
        )
    batch = views[0].shape[0]
    if geometry.shape != (batch, 2, 5):
        raise ValueError(
            f"Expected geometry of shape ({batch}, 2, 5), got {tuple(geometry.shape)}."
        )
    return int(batch)


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
        min_region_patches: int = MIN_REGION_PATCHES,
        local_distortion_patches: LocalPatches = "distorted",
        local_patches_per_view: int | None = DEFAULT_LOCAL_PATCHES_PER_VIEW,
        student_drop_path: float = DEFAULT_STUDENT_DROP_PATH,
    ) -> None:
        """Builds student and teacher (the arguments: see :class:`GLARE`)."""
        super().__init__()
        self.terms = check_options(
            terms,
            region_match,
            local_distortion_patches,
            local_patches_per_view,
            student_drop_path,
            share_patch_head,
            patch_head,
        )
        if patch_augmentation is None and LOCAL_DISTORTION in self.terms:
            patch_augmentation = PatchBlur()
        if isinstance(backbone, UniAdapterViT):
            self.backbone = backbone
        else:
            self.backbone = UniAdapterViT(
                backbone, bottleneck=adapter_bottleneck, scale=adapter_scale
            )
        dim = self.backbone.embed_dim
        self.student_head, self.student_patch_head = build_heads(
            dim, head, patch_head, share_patch_head, freeze_heads
        )
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
        self.teacher = deepcopy_module(self._student_modules())
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
        from lightly_glare.weights.checkpoint_heads import load_heads_into

        targets = {
            ("student", "head"): self.student_head,
            ("teacher", "head"): self.teacher["head"],
        }
        if self.student_patch_head is not self.student_head:
            targets[("student", "patch_head")] = self.student_patch_head
            targets[("teacher", "patch_head")] = self.teacher["patch_head"]
        return load_heads_into(targets, heads)

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
        batch = _check_views(views, geometry)
        clean = torch.cat(list(views))  # (2B, 3, H, W): both views in one pass
        grid = self.backbone.grid_size(clean.shape[2], clean.shape[3])
        with torch.no_grad():
            teacher = self.backbone.forward_features(
                clean,
                adapters=self.teacher_adapters,
                return_cls_attention=REGIONAL in self.terms,
            )
        patch_masks = None
        student_input = clean
        if self.patch_augmentation is not None:
            student_input, patch_masks = self.patch_augmentation(
                clean, self.backbone.patch_size, generator=generator
            )
        elif LOCAL_DISTORTION in self.terms:
            raise ValueError("The local distortion term needs a patch augmentation.")
        student = self.backbone.forward_features(
            student_input,
            drop_path=self.student_drop_path if self.training else 0.0,
            generator=generator,
        )
        tokens, region_masks = self._term_tokens(
            student, teacher, patch_masks, geometry, grid, generator
        )
        # Every term's tokens are collected first and each head runs once per
        # network on all of them (ours): one weight-norm recomputation, one
        # low-precision cast of the teacher's weights and larger matmuls
        # instead of one call per term. Rows are projected independently, so
        # the projections are those of separate calls.
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

    def _term_tokens(
        self,
        student: BackboneOutput,
        teacher: BackboneOutput,
        patch_masks: Tensor | None,
        geometry: Tensor,
        grid: tuple[int, int],
        generator: torch.Generator | None,
    ) -> tuple[dict[str, TokenPair], Tensor | None]:
        """The matched tokens of every active term, and the region masks.

        Args:
            student: The student's backbone output on the distorted views (2B).
            teacher: The teacher's on the clean views, with the class-token
                attention when the regional term is active.
            patch_masks: The distorted patches, shape (2B, N); None: none.
            geometry: Crop geometry of the views, shape (B, 2, 5).
            grid: The patch grid (h, w).
            generator: Generator of the region and pair draws.

        Returns:
            The token pairs per term and the region masks (2, B, R, N) (None
            without the regional term).
        """
        tokens: dict[str, TokenPair] = {}
        if GLOBAL in self.terms:
            tokens[GLOBAL] = TokenPair(
                student.tokens[:, 0], teacher.tokens[:, 0], head="head"
            )  # (2B, D) each: both views
        regions = None
        if REGIONAL in self.terms:
            assert teacher.cls_attention is not None  # requested by forward
            # Drawn before the local pair sampling: local_patches_per_view
            # leaves the regions unchanged.
            regions = self.region_sampler(
                teacher.cls_attention, generator
            )  # (2B, R, N), (2B, R)
        student_patches = self._patch_tokens(student)  # (2B, N, D)
        teacher_patches = self._patch_tokens(teacher)
        if LOCAL_DISTORTION in self.terms and patch_masks is not None:
            tokens[LOCAL_DISTORTION] = local_distortion_tokens(
                student_patches,
                teacher_patches,
                patch_masks,
                self.local_distortion_patches,
                self.local_patches_per_view,
                generator,
            )
        if LOCAL_MATCHING in self.terms:
            tokens[LOCAL_MATCHING] = local_matching_tokens(
                student_patches,
                teacher_patches,
                geometry,
                grid,
                self.local_patches_per_view,
                generator,
            )
        region_masks = None
        if regions is not None:
            tokens[REGIONAL], region_masks = regional_tokens(
                (student.tokens[:, 0], student_patches),
                (teacher.tokens[:, 0], teacher_patches),
                geometry,
                grid,
                regions,
                (self.region_pooling, self.teacher["region_pooling"]),
                self.region_match,
                self.min_region_patches,
            )
        return tokens, region_masks

    def _project(self, tokens: Mapping[str, TokenPair]) -> dict[str, MatchedPair]:
        """The matched projections per term (see :func:`project_pairs`)."""
        return project_pairs(tokens, self._student_head, self.teacher)

    def _student_head(self, head: str) -> nn.Module:
        return self.student_head if head == "head" else self.student_patch_head

    def _patch_tokens(self, out: BackboneOutput) -> Tensor:
        return out.tokens[:, self.backbone.num_prefix_tokens :]  # (2B, N, D)
