"""GLARE continual pre-training as an mmengine model (registered in mmseg).

Run it with ``tools/train.py`` and a config such as
``mmseg_configs/pretrain/glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py``;
the pieces:

- :class:`GlarePretrainer`: the GLARE model and its loss as an mmengine
  ``BaseModel`` (one ``train_step`` = forward, :class:`GlareLoss`, backward,
  clipping and AdamW through the optimizer wrapper);
- :class:`GlarePretrainDataPreprocessor`: moves the collated
  ``(views, geometry)`` batch to the model's device;
- :mod:`~lightly_glare.openmmlab.pretrain_data`: the unlabeled image folder and
  its sampler;
- :mod:`~lightly_glare.openmmlab.hooks`: the teacher's EMA update.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from mmengine.dist import broadcast, get_rank
from mmengine.logging import print_log
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmseg.registry import MODELS
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from lightly_glare.data.seeded import derive_seed
from lightly_glare.loss import LOCAL_DISTORTION, statistics_scalars
from lightly_glare.models import (
    DEFAULT_HEAD_INIT_IMAGES,
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    DEFAULT_STUDENT_DROP_PATH,
    HeadInitialization,
    initialize_heads_from_data,
)
from lightly_glare.models.defaults import IMG_SIZE, MIN_REGION_PATCHES
from lightly_glare.models.glare_terms import LocalPatches, RegionMatch
from lightly_glare.openmmlab import components  # registers the parts
from lightly_glare.openmmlab.config_validation import validate_arguments
from lightly_glare.pretraining.job import (
    HEAD_INIT,
    build_glare,
    check_head_init,
    load_checkpoint_heads,
    resolve_head_init,
)
from lightly_glare.pretraining.loop import NonFiniteLossError
from lightly_glare.weights import read_ssl_checkpoint

#: A collated pre-training batch: ``([view_0 (B,3,H,W), view_1], geometry (B,2,5))``.
PretrainInputs = tuple[list[Tensor], Tensor]


def _build(cfg: dict[str, Any] | None, default_type: str, **defaults: Any) -> Any:
    """Builds a part from ``MODELS``; ``defaults`` fill keys the config omits."""
    return MODELS.build({"type": default_type, **defaults, **(cfg or {})})


def _with_loaded_checkpoint(backbone: dict[str, Any], loaded: Any) -> dict[str, Any]:
    """``backbone`` given the object read from its checkpoint, if it takes one.

    The ``UniAdapterViT`` builder takes it instead of the path (so the file is
    read once for the backbone and the heads); other backbones read the path.
    """
    kind = backbone.get("type")
    builder = MODELS.get(kind) if isinstance(kind, str) else kind
    if builder is not components.UniAdapterViT or not isinstance(loaded, Mapping):
        return backbone  # the builder reads the path (and names what is wrong)
    path = str(backbone["checkpoint"])
    return {**backbone, "checkpoint": loaded, "checkpoint_source": path}


def _build_loss(
    loss: dict[str, Any] | None,
    head: Any,
    patch_head: Any,
    patch_augmentation: dict[str, Any] | None,
) -> Any:
    """The loss of ``loss``'s config, its output sizes filled in from the heads.

    Says so when ``patch_augmentation`` is configured but the loss does not
    compute L_loc1 (:func:`~lightly_glare.pretraining.job.build_glare` then
    does not build it).
    """
    loss_cfg = dict(loss or {"type": "GlareLoss"})
    loss_cfg.setdefault("output_dim", head.output_dim)
    loss_cfg.setdefault("patch_output_dim", patch_head.output_dim)
    criterion = MODELS.build(loss_cfg)
    if (
        LOCAL_DISTORTION not in criterion.active_terms
        and patch_augmentation is not None
    ):
        print_log(
            f"patch_augmentation {patch_augmentation.get('type')} is not built: "
            "the local distortion weight is 0, so the student sees clean views.",
            logger="current",
        )
    return criterion


def _split_inputs(inputs: Sequence[Any]) -> PretrainInputs:
    """Checks and unpacks the collated ``(views, geometry)`` structure."""
    if len(inputs) != 2:
        raise ValueError(
            "Expected inputs (views, geometry) as collated from GlarePretrainDataset, "
            f"got a sequence of {len(inputs)} items."
        )
    views, geometry = inputs
    if not isinstance(geometry, Tensor) or len(views) != 2:
        raise ValueError(
            "Expected inputs ([view_0, view_1], geometry (B, 2, 5)), got "
            f"{type(views).__name__} of {len(views)} and {type(geometry).__name__}."
        )
    return list(views), geometry


@MODELS.register_module()
@validate_arguments
class GlarePretrainDataPreprocessor(BaseDataPreprocessor):
    """Moves a collated ``(views, geometry)`` batch to the model's device.

    The views are already normalised by
    :class:`~lightly_glare.transforms.GlareTransform`; nothing else is done to
    them.

    Args:
        non_blocking (bool): Asynchronous host-to-device copies.
            Defaults to False.
    """

    def forward(self, data: dict[str, Any], training: bool = False) -> dict[str, Any]:
        """Casts the batch to the device.

        Args:
            data: ``dict(inputs=(views, geometry))`` from the dataloader (a
                ``data_samples`` entry, if any, is dropped).
            training: Unused (the same in training and inference).

        Returns:
            ``dict(inputs=(views, geometry), data_samples=None)`` on the device.
        """
        views, geometry = _split_inputs(data["inputs"])
        moved = self.cast_data({"views": views, "geometry": geometry})
        return {"inputs": (moved["views"], moved["geometry"]), "data_samples": None}


@MODELS.register_module()
@validate_arguments
class GlarePretrainer(BaseModel):
    """GLARE continual pre-training as an mmengine model, composed from parts.

    Every part is a nested config built from mmseg's ``MODELS`` registry (see
    :mod:`~lightly_glare.openmmlab.components`), as mmpretrain composes its
    DINO model from ``backbone``, ``neck`` and ``head``:

    - ``backbone``: a frozen ViT with UniAdapters (``UniAdapterViT``);
    - ``head`` / ``patch_head``: projection heads (``GlareProjectionHead``;
      ``input_dim`` is filled in from the backbone);
    - ``region_sampler``, ``region_pooling`` (``dim`` filled in);
    - ``patch_augmentation``: the student's distortion for L_loc1
      (``PatchBlur``, ``PatchNoise``, ``PatchColorJitter``, ``PatchMasking``);
    - ``loss``: ``GlareLoss`` with the term weights (output sizes filled in
      from the heads; its teacher-temperature warm-up counts iterations here).

    ``forward(inputs, mode='loss')`` returns ``{'loss': total, 'term_<name>':
    ..., 'teacher_<name>_<entropy|batch_entropy|kl>': ..., 'teacher_temp':
    ...}``: mmengine sums the keys containing ``loss``, so the parts and the
    teacher diagnostics (fractions of log K; see
    :func:`~lightly_glare.loss.statistics_scalars`) are logged beside the
    optimised total. Heads the checkpoint lacks are fitted to the data before
    the first iteration by
    :class:`~lightly_glare.openmmlab.hooks.GlareHeadInitHook`
    (:meth:`initialize_heads`). The teacher is updated by
    :class:`~lightly_glare.openmmlab.hooks.GlareTeacherEMAHook` after each
    optimizer step.

    Everything that changes over training depends only on the number of steps
    taken (``num_steps``, a buffer in the state dict): the teacher temperature
    and the generator of the patch augmentation and the region sampler (seeded
    with ``seed``, the step and the rank). A resumed run therefore repeats an
    uninterrupted one.

    Args:
        backbone (dict): Config of the adapted ViT, e.g.
            ``dict(type='UniAdapterViT', arch='vit_small_patch16_224',
            checkpoint='dino_deitsmall16_pretrain.pth')``.
        head (dict, optional): Config of the [CLS] / region head. Defaults to
            None (``GlareProjectionHead`` with its defaults).
        patch_head (dict, optional): Config of the patch head. Defaults to None
            (an untied head of ``head``'s architecture, or ``head`` itself with
            ``share_patch_head``).
        share_patch_head (bool): One head for [CLS], regions and patches.
            Defaults to False.
        region_sampler (dict, optional): Config of the region sampler.
            Defaults to None (``AttentionRegionSampler()``).
        region_pooling (dict, optional): Config of the region pooling.
            Defaults to None (``CrossAttentionRegionPooling()``).
        patch_augmentation (dict, optional): Config of the student's patch
            distortion; built only when the L_loc1 weight is positive (it
            exists for that term). Defaults to None (``PatchBlur()``).
        loss (dict, optional): Config of the loss. Defaults to None
            (``GlareLoss()``: every weight 1).
        region_match (str): ``'geometry'`` or ``'attention'`` (see
            :class:`~lightly_glare.models.GLARE`). Defaults to ``'geometry'``.
        min_region_patches (int): Smallest region kept. Defaults to 2.
        local_distortion_patches (str): ``'distorted'`` or ``'all'``.
            Defaults to ``'distorted'``.
        local_patches_per_view (int, optional): Patch pairs per image and view
            of each local term (None: every valid patch, with data-dependent
            shapes). Defaults to 2 (``DEFAULT_LOCAL_PATCHES_PER_VIEW``).
        student_drop_path (float): Sample-skipping stochastic depth of the
            student's frozen blocks (see :class:`~lightly_glare.models.GLARE`).
            Defaults to ``DEFAULT_STUDENT_DROP_PATH``.
        freeze_heads (bool): Train only the adapters. Defaults to False.
        head_init (str): How heads the checkpoint did not provide start:
            ``'data'`` (fitted to the data, :meth:`initialize_heads`),
            ``'random'`` (DINO's initialisation) or ``'auto'`` (``'data'``
            unless the checkpoint's heads were loaded). Defaults to
            ``'auto'``.
        head_init_images (int): Images read to fit the heads. Defaults to
            ``DEFAULT_HEAD_INIT_IMAGES``.
        checkpoint_heads (bool): Load the projection heads of the backbone's
            checkpoint when it has them (DINO / iBOT / DINOv2 training
            checkpoints; see :meth:`~lightly_glare.models.GLARE.load_heads`):
            ``head`` must then have the checkpoint's sizes (a conflict is
            refused naming both). Defaults to True.
        seed (int): Seed of the per-step generator. Defaults to 0.
        compile (bool): Run the GLARE forward and the loss through
            ``torch.compile`` (the optimizer step stays eager). Use this instead
            of mmengine's ``compile=True``, which also compiles the optimizer
            wrapper and fails in Dynamo's optimizer tracing on torch 2.14.
            The seeded generator of each step is a graph break, not a
            recompilation. Defaults to False.
        data_preprocessor (dict, optional): Config of the data preprocessor.
            Defaults to None (a :class:`GlarePretrainDataPreprocessor`).
        init_cfg (dict, optional): mmengine initialisation config (unused by
            default). Defaults to None.

    Examples:
        >>> model = dict(
        ...     type='GlarePretrainer',
        ...     backbone=dict(type='UniAdapterViT', arch='vit_small_patch16_224',
        ...                   checkpoint='dino_deitsmall16_pretrain.pth'),
        ...     patch_augmentation=dict(type='PatchNoise'),
        ...     loss=dict(type='GlareLoss', regional_weight=0.))
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        head: dict[str, Any] | None = None,
        patch_head: dict[str, Any] | None = None,
        share_patch_head: bool = False,
        region_sampler: dict[str, Any] | None = None,
        region_pooling: dict[str, Any] | None = None,
        patch_augmentation: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        region_match: RegionMatch = "geometry",
        min_region_patches: int = MIN_REGION_PATCHES,
        local_distortion_patches: LocalPatches = "distorted",
        local_patches_per_view: int | None = DEFAULT_LOCAL_PATCHES_PER_VIEW,
        student_drop_path: float = DEFAULT_STUDENT_DROP_PATH,
        freeze_heads: bool = False,
        head_init: str = HEAD_INIT,
        head_init_images: int = DEFAULT_HEAD_INIT_IMAGES,
        checkpoint_heads: bool = True,
        seed: int = 0,
        compile: bool = False,
        data_preprocessor: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor or GlarePretrainDataPreprocessor(),
            init_cfg=init_cfg,
        )
        check_head_init(head_init, head_init_images)
        self.seed = seed
        self.head_init = head_init
        self.head_init_images = head_init_images
        self.checkpoint_heads_loaded = False
        self.backbone_cfg = dict(backbone)
        checkpoint = backbone.get("checkpoint") if checkpoint_heads else None
        loaded = None if not checkpoint else read_ssl_checkpoint(checkpoint)
        adapted = MODELS.build(_with_loaded_checkpoint(backbone, loaded))
        dim = adapted.embed_dim
        head_module = _build(head, "GlareProjectionHead", input_dim=dim)
        patch_module = (
            None
            if patch_head is None
            else _build(patch_head, "GlareProjectionHead", input_dim=dim)
        )
        self.criterion = _build_loss(
            loss, head_module, patch_module or head_module, patch_augmentation
        )
        self.glare = build_glare(
            adapted,
            self.criterion,
            head_module,
            lambda: _build(patch_augmentation, "PatchBlur"),
            patch_head=patch_module,
            share_patch_head=share_patch_head,
            freeze_heads=freeze_heads,
            region_sampler=_build(region_sampler, "AttentionRegionSampler"),
            region_pooling=_build(
                region_pooling, "CrossAttentionRegionPooling", dim=dim
            ),
            region_match=region_match,
            min_region_patches=min_region_patches,
            local_distortion_patches=local_distortion_patches,
            local_patches_per_view=local_patches_per_view,
            student_drop_path=student_drop_path,
        )
        if checkpoint:
            self._load_checkpoint_heads(str(checkpoint), loaded)
        self.num_steps: Tensor
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self._glare_loss = (
            torch.compile(self._eager_loss) if compile else self._eager_loss
        )
        print_log(
            f"GlarePretrainer: {backbone.get('arch')} at {backbone.get('img_size')} "
            f"px from {backbone.get('checkpoint') or 'random weights'}; terms "
            f"{self.glare.terms}; {self.glare.backbone.report}",
            logger="current",
        )

    def _load_checkpoint_heads(self, checkpoint: str, read: Any) -> None:
        """Loads the heads of ``checkpoint`` (``read`` from it) into both networks."""
        loaded = load_checkpoint_heads(self.glare, read, checkpoint)
        self.checkpoint_heads_loaded = bool(loaded)
        print_log(
            f"Heads from {checkpoint}: {', '.join(loaded)}."
            if loaded
            else f"{checkpoint} holds no projection heads: the heads start "
            "from random weights.",
            logger="current",
        )

    def initialize_heads(self, dataset: Any) -> HeadInitialization | None:
        """Fits the heads and the loss's centres to ``dataset`` (``head_init``).

        Reads ``head_init_images`` items of ``dataset`` (a seeded choice) and
        runs :func:`~lightly_glare.models.initialize_heads_from_data`; in a
        distributed run every rank then takes rank 0's heads and centres.

        Args:
            dataset: The training dataset (items ``dict(inputs=(views,
                geometry))``).

        Returns:
            What was fitted, or None when ``head_init`` resolves to
            ``'random'`` (e.g. the checkpoint's heads were loaded).
        """
        if resolve_head_init(self.head_init, self.checkpoint_heads_loaded) != "data":
            return None
        order = torch.randperm(
            len(dataset), generator=torch.Generator().manual_seed(self.seed)
        )[: self.head_init_images]
        loader = DataLoader(Subset(dataset, order.tolist()), batch_size=16)
        fitted = initialize_heads_from_data(
            self.glare,
            self._head_init_batches(loader),
            images=len(order),
            seed=self.seed,
        )
        self.criterion.set_centers(fitted.centers)
        for key, tensor in self.state_dict().items():
            if not key.startswith("glare.backbone.vit."):  # frozen: equal already
                broadcast(tensor)  # rank 0's heads and centres; no-op alone
        print_log(
            f"Heads initialised from {len(order)} images: {fitted.describe()}",
            logger="current",
        )
        return fitted

    def _head_init_batches(self, loader: DataLoader[Any]) -> Iterator[Any]:
        """``([view_0, view_1, geometry], _, _)`` batches of ``loader``."""
        for data in loader:
            views, geometry = self.data_preprocessor(data, False)["inputs"]
            yield [*views, geometry], None, None

    def step_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded from ``seed``, step count and rank."""
        generator = torch.Generator(device=device)
        step_seed = derive_seed(self.seed, int(self.num_steps))
        generator.manual_seed(step_seed + (get_rank() << 40))
        return generator

    def _teacher_scalars(self) -> dict[str, float]:
        """``teacher_<term>_<entropy|batch_entropy|kl>`` of the last step."""
        terms = {k: float(v) for k, v in self.criterion.last_terms.items()}
        return {
            tag.replace("/", "_"): value
            for tag, value in statistics_scalars(
                self.criterion.last_statistics, terms
            ).items()
        }

    def export_meta(self) -> dict[str, Any]:
        """Meta information stored with an exported backbone."""
        return {
            "arch": self.backbone_cfg.get("arch"),
            "img_size": self.backbone_cfg.get("img_size", IMG_SIZE),
        }

    def _eager_loss(
        self,
        views: list[Tensor],
        geometry: Tensor,
        generator: torch.Generator,
        step: int,
    ) -> Tensor:
        """The GLARE loss of the views (the loss's warm-up "epoch" is ``step``)."""
        return self.criterion(
            self.glare(views, geometry, generator=generator), epoch=step
        )

    def forward(
        self,
        inputs: Sequence[Any],
        data_samples: Any = None,
        mode: str = "loss",
    ) -> dict[str, Tensor]:
        """Computes the GLARE loss of a batch.

        Args:
            inputs: The collated ``(views, geometry)``.
            data_samples: Unused (unlabeled data).
            mode: Only ``'loss'`` is supported.

        Returns:
            ``{'loss': total, 'term_<name>': detached part, ...,
            'teacher_temp': temperature used}``.

        Raises:
            NonFiniteLossError: (a ``RuntimeError``) if the loss is NaN or
                infinite; the weights are not updated and the checkpoints
                written so far are kept.
        """
        if mode != "loss":
            raise ValueError(
                f"GlarePretrainer supports only mode='loss', got {mode!r}."
            )
        views, geometry = _split_inputs(inputs)
        step = int(self.num_steps)
        generator = self.step_generator(views[0].device)
        if self.training:
            self.num_steps += 1
        loss = self._glare_loss(views, geometry, generator, step)
        if not torch.isfinite(loss):
            terms = {k: float(v) for k, v in self.criterion.last_terms.items()}
            raise NonFiniteLossError(
                f"Non-finite GLARE loss at step {step + 1}: {terms}. "
                "Lower the learning rate or raise the teacher temperature; the "
                "last checkpoint in the work dir is intact (resume with --resume)."
            )
        losses = {"loss": loss}
        for name, value in self.criterion.last_terms.items():
            losses[f"term_{name}"] = value.detach()
        for tag, value in self._teacher_scalars().items():
            losses[tag] = loss.new_tensor(value)
        losses["teacher_temp"] = loss.new_tensor(
            self.criterion.teacher_temperature(step)
        )
        return losses
