"""The pre-training job: what to train (:class:`FolderPretraining`) and the one builder.

:func:`build_glare` assembles the GLARE model around a backbone and a loss
(the patch distortion only when the loss computes L_loc1): the plain job
(:func:`build_job`, used by :func:`lightly_glare.pretrain` and the experiment
tools) and the mmengine model
(:class:`~lightly_glare.openmmlab.pretrainer.GlarePretrainer`) both build
through it, and load a checkpoint's projection heads with
:func:`load_checkpoint_heads`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from lightly_glare.loss import ALL_TERMS, LOCAL_DISTORTION, GlareLoss
from lightly_glare.models import (
    DEFAULT_HEAD_INIT_IMAGES,
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    DEFAULT_OUTPUT_DIM,
    DEFAULT_STUDENT_DROP_PATH,
    GLARE,
    AttentionRegionSampler,
    GlareProjectionHead,
    UniAdapterViT,
)
from lightly_glare.models.defaults import HIDDEN_DIM, MOMENTUM_START
from lightly_glare.models.patch_augmentations import PatchAugmentation
from lightly_glare.precision import resolve_amp
from lightly_glare.pretraining.loop import BASE_LR, PretrainConfig
from lightly_glare.transforms import PATCH_AUGMENTATIONS, build_patch_augmentation
from lightly_glare.weights import load_projection_heads

#: Images per step of a job.
BATCH_SIZE = 16
#: DataLoader worker processes of a job.
WORKERS = 2
#: The student's patch distortion for L_loc1, by name.
PATCH_AUGMENTATION = "blur"
#: How the projection heads start when the checkpoint has none (ours; see
#: :attr:`FolderPretraining.head_init`).
HEAD_INITS = ("auto", "data", "random")
#: The default of :data:`HEAD_INITS`.
HEAD_INIT = "auto"
#: Settings of a short continual pre-training (a few dozen steps on 2 CPU
#: cores), the defaults of the experiment tools' options; the library's own
#: defaults (DINO's) are those of :class:`FolderPretraining` and the components.
SHORT_SCHEDULE: dict[str, Any] = {
    "steps": 40,
    "batch_size": BATCH_SIZE,
    "base_lr": 5e-3,
    "momentum_start": 0.9,
    "output_dim": 2048,
    "hidden_dim": 512,
}


def check_head_init(head_init: str, images: int) -> None:
    """Refuses an unknown ``head_init`` or an empty initialisation sample.

    Raises:
        ValueError: Naming the value and the valid ones.
    """
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}.")
    if images < 1:
        raise ValueError(f"head_init_images must be at least 1, got {images}.")


def resolve_head_init(head_init: str, checkpoint_heads_loaded: bool) -> str:
    """``"data"`` or ``"random"``: what ``head_init`` means for a checkpoint.

    Args:
        head_init: ``"auto"``, ``"data"`` or ``"random"``.
        checkpoint_heads_loaded: Whether the checkpoint's heads were loaded.

    Returns:
        ``"auto"`` resolved: ``"random"`` (keep the loaded heads) when the
        checkpoint provided heads, else ``"data"``.
    """
    if head_init == "auto":
        return "random" if checkpoint_heads_loaded else "data"
    return head_init


@dataclass
class FolderPretraining:
    """GLARE continual pre-training of a local SSL checkpoint on an image folder.

    The whole job of :func:`lightly_glare.pretrain` and of
    :func:`~lightly_glare.pretraining.folder.pretrain_folder` (the experiment
    tools): build the ViT, loss and model (:func:`build_job`), train, export.
    The field names are the components' argument names, the keys of
    ``lightly-glare pretrain`` and the tools' flags (``output_dim`` is
    ``output_dim=`` and ``--output-dim``; :mod:`~lightly_glare.pretraining.fields`).

    Attributes:
        model: timm model name of the checkpoint (the ``model`` of
            :func:`lightly_glare.pretrain` and of both command lines).
        checkpoint: Local SSL checkpoint (any layout
            :func:`~lightly_glare.weights.create_vit` reads).
        data: Folder of unlabeled images (searched recursively).
        img_size: Input size of the views (a multiple of the patch size).
        steps: Optimizer steps.
        indices: Train on these images only, by position in the folder's
            sorted file list (``ImageFolderDataset.files``); None: all.
        batch_size: Images per step.
        seed: Seed of head initialisation, data order and augmentations
            (:func:`~lightly_glare.pretraining.folder.seeded_loader`): jobs
            that differ only in their loss
            weights start from the same heads and see the same views in the
            same order.
        weights: Weight of each term (``global``, ``regional``,
            ``local_distortion``, ``local_matching``); a term left out has
            weight 1, a term weighted 0 is not computed.
        output_dim: Output size of the projection heads
            (:class:`~lightly_glare.models.GlareProjectionHead`).
        hidden_dim: Hidden size of the heads (DINO: 2048).
        adapter_bottleneck: Hidden size of every UniAdapter (None:
            ``embed_dim // 12``, 32 for ViT-S, 64 for ViT-B; ours; see
            :class:`~lightly_glare.models.UniAdapterViT`). The export records
            it, so loaders build adapters of this size.
        workers: DataLoader worker processes.
        base_lr: Learning rate per 256 images.
        momentum_start: EMA momentum of the teacher at step 0 (cosine to 1).
            DINO's 0.996 suits long schedules; over a few dozen steps the
            teacher (which is exported) then keeps about 1 % of what the
            student learned, so short runs need a lower value (0.9).
        amp: bf16 autocast; None: where the device has native bf16 (see
            :class:`PretrainConfig`).
        local_patches_per_view: Patch pairs per image and view of each local
            term (see :class:`~lightly_glare.models.GLARE`; None: every valid
            patch).
        student_drop_path: Sample-skipping stochastic depth of the student's
            frozen blocks (see :class:`~lightly_glare.models.GLARE`).
        num_regions: Most regions drawn per image from the teacher's attention
            heads, at most one per head (None: the sampler's default, 6).
        head_warmup_steps: See :class:`PretrainConfig`.
        patch_augmentation: The student's patch distortion for L_loc1, by name
            (``"blur"``, ``"noise"``, ``"color_jitter"``, ``"mask"``; see
            :func:`~lightly_glare.transforms.build_patch_augmentation`).
        checkpoint_heads: Start the heads from the checkpoint's projection
            heads when it has them (DINO / iBOT / DINOv2 training checkpoints;
            ``output_dim`` and ``hidden_dim`` must then be the checkpoint's).
        freeze_heads: Train only the adapters (load the checkpoint's heads
            or initialise them from the data then: frozen random heads give
            the adapters no signal).
        head_init: How heads that the checkpoint did not provide start
            (ours): ``"data"`` fits them to the data before the first step
            (:func:`~lightly_glare.models.initialize_heads_from_data`: centred
            input, prototypes by spherical k-means; the loss's centres start
            at the mean teacher output), so the teacher is sharp from step 0;
            ``"random"`` keeps DINO's random initialisation (the teacher of a
            random head is near uniform); ``"auto"`` (default) is ``"data"``
            unless the checkpoint's heads were loaded.
        head_init_images: Images read to initialise the heads from the data.
    """

    model: str
    checkpoint: str | Path
    data: str | os.PathLike[str]
    img_size: int
    steps: int
    indices: Sequence[int] | None = None
    batch_size: int = BATCH_SIZE
    seed: int = 0
    weights: Mapping[str, float] = field(default_factory=dict)
    output_dim: int = DEFAULT_OUTPUT_DIM
    hidden_dim: int = HIDDEN_DIM
    adapter_bottleneck: int | None = None
    workers: int = WORKERS
    base_lr: float = BASE_LR
    momentum_start: float = MOMENTUM_START
    amp: bool | None = None
    local_patches_per_view: int | None = DEFAULT_LOCAL_PATCHES_PER_VIEW
    student_drop_path: float = DEFAULT_STUDENT_DROP_PATH
    num_regions: int | None = None
    head_warmup_steps: int = 0
    patch_augmentation: str = field(
        default=PATCH_AUGMENTATION,
        metadata={"choices": tuple(sorted(PATCH_AUGMENTATIONS))},
    )
    checkpoint_heads: bool = True
    freeze_heads: bool = False
    head_init: str = field(default=HEAD_INIT, metadata={"choices": HEAD_INITS})
    head_init_images: int = DEFAULT_HEAD_INIT_IMAGES

    def __post_init__(self) -> None:
        check_head_init(self.head_init, self.head_init_images)

    def config(self, device: torch.device | str) -> PretrainConfig:
        """The optimisation settings of the job on ``device``.

        Args:
            device: Where the job trains (``amp=None`` turns bf16 on where the
                device has it natively, :func:`~lightly_glare.precision.native_bf16`).

        Returns:
            The :class:`PretrainConfig` of :func:`train_steps`; its ``amp`` is
            resolved for ``device`` (True or False, never None).
        """
        return PretrainConfig(
            steps=self.steps,
            base_lr=self.base_lr,
            momentum_start=self.momentum_start,
            amp=resolve_amp(self.amp, device),
            head_warmup_steps=self.head_warmup_steps,
        )


def build_glare(
    backbone: VisionTransformer | UniAdapterViT,
    criterion: GlareLoss,
    head: torch.nn.Module,
    patch_augmentation: Callable[[], PatchAugmentation],
    **options: Any,
) -> GLARE:
    """The GLARE model of ``criterion``'s terms around ``backbone``.

    The one assembly of the model: the terms are the loss's active terms (a
    term weighted 0 costs nothing) and the student's patch distortion is built
    only when the loss computes L_loc1 (it exists for that term).

    Args:
        backbone: A plain timm ViT (adapters are inserted) or a
            :class:`~lightly_glare.models.UniAdapterViT`.
        criterion: The loss the model feeds.
        head: The [CLS] / region projection head.
        patch_augmentation: Builds the student's patch distortion.
        **options: Further arguments of :class:`~lightly_glare.models.GLARE`
            (``region_sampler``, ``freeze_heads``, ``local_patches_per_view``,
            ...).

    Returns:
        The model (student and teacher; heads as built).
    """
    distortion = None
    if LOCAL_DISTORTION in criterion.active_terms:
        distortion = patch_augmentation()
    return GLARE(
        backbone,
        head=head,
        terms=criterion.active_terms,
        patch_augmentation=distortion,
        **options,
    )


def build_job(
    job: FolderPretraining, vit: VisionTransformer
) -> tuple[GLARE, GlareLoss]:
    """The GLARE model and loss of ``job`` around ``vit`` (heads as built).

    Args:
        job: Its term weights, head sizes and model options are used.
        vit: The frozen ViT (on any device, ``meta`` included).

    Returns:
        The model and its loss.

    Raises:
        ValueError: If ``job.weights`` names an unknown term.
    """
    unknown = set(job.weights) - set(ALL_TERMS)
    if unknown:
        raise ValueError(f"Unknown terms {sorted(unknown)}; terms are {ALL_TERMS}.")
    weights = {term: job.weights.get(term, 1.0) for term in ALL_TERMS}
    criterion = GlareLoss(
        output_dim=job.output_dim,
        global_weight=weights["global"],
        regional_weight=weights["regional"],
        local_distortion_weight=weights["local_distortion"],
        local_matching_weight=weights["local_matching"],
    )
    model = build_glare(
        vit,
        criterion,
        GlareProjectionHead(
            vit.embed_dim, hidden_dim=job.hidden_dim, output_dim=job.output_dim
        ),
        lambda: build_patch_augmentation(job.patch_augmentation),
        adapter_bottleneck=job.adapter_bottleneck,
        freeze_heads=job.freeze_heads,
        region_sampler=AttentionRegionSampler(num_regions=job.num_regions),
        local_patches_per_view=job.local_patches_per_view,
        student_drop_path=job.student_drop_path,
    )
    return model, criterion


def load_checkpoint_heads(
    model: GLARE, checkpoint: Any, source: str | os.PathLike[str]
) -> list[str]:
    """Loads the projection heads of a read checkpoint into student and teacher.

    Args:
        model: The built model.
        checkpoint: What :func:`~lightly_glare.weights.read_ssl_checkpoint`
            read.
        source: The checkpoint's file, for messages.

    Returns:
        The heads loaded (empty when the checkpoint holds none).
    """
    heads = load_projection_heads(
        checkpoint, source=source, input_dim=model.backbone.embed_dim
    )
    return model.load_heads(heads)
