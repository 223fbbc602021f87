"""GLARE continual pre-training as mmengine components (registered in mmseg).

Run it with ``tools/train.py`` and a config such as
``mmseg_configs/glare_pretrain_vit-s14-dinov2_aerial-112.py``:

- :class:`GlarePretrainer`: the GLARE model and its loss as an mmengine
  ``BaseModel`` (one ``train_step`` = forward, :class:`GlareLoss`, backward,
  clipping and AdamW through the optimizer wrapper);
- :class:`GlarePretrainDataPreprocessor`: moves the collated
  ``(views, geometry)`` batch to the model's device;
- :class:`GlarePretrainDataset` and :class:`GlareInfiniteSampler`: an unlabeled
  image folder with :class:`~lightly_glare.transforms.GlareTransform`, whose
  augmentations depend only on ``(seed, epoch, index)``;
- :class:`GlareTeacherEMAHook`: the teacher's EMA update with a cosine momentum
  schedule that depends only on the iteration.

Resume determinism: mmengine restores weights, optimizer, schedulers and the
iteration, but not the global RNG state. Therefore nothing here draws from the
global RNG across steps: each sample seeds its own augmentation from the
sampler's ``epoch * len(dataset) + index`` (the sampler replays the same
sequence on resume), and the model's patch augmentation and region sampler use
a generator seeded from a step counter kept in the model's state dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightly.utils.scheduler import cosine_schedule
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import BaseDataPreprocessor, BaseModel, is_model_wrapper
from mmseg.registry import DATA_SAMPLERS, DATASETS, HOOKS, MODELS
from torch import Tensor
from torch.utils.data import Dataset

from lightly_glare.data.image_folder import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE
from lightly_glare.training import NonFiniteLossError
from lightly_glare.transforms import GlareTransform
from lightly_glare.weights.ssl_checkpoints import create_vit

#: A collated pre-training batch: ``([view_0 (B,3,H,W), view_1], geometry (B,2,5))``.
PretrainInputs = tuple[list[Tensor], Tensor]

_SEED_STRIDE = 1_000_003  # a prime: (seed, draw) pairs map to distinct seeds


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
class GlarePretrainDataPreprocessor(BaseDataPreprocessor):
    """Moves a collated ``(views, geometry)`` batch to the model's device.

    The views are already normalised by :class:`GlareTransform`; nothing else
    is done to them.
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
class GlarePretrainer(BaseModel):
    """GLARE continual pre-training of a frozen timm ViT as an mmengine model.

    Builds the ViT with :func:`~lightly_glare.weights.create_vit` (loading a
    local SSL checkpoint), :class:`GlareLoss` and :class:`GLARE` with the
    loss's active terms. ``forward(inputs, mode='loss')`` returns
    ``{'loss': total, 'term_<name>': ...}``: mmengine sums the keys containing
    ``loss``, so the parts are logged under ``term_*`` (detached) and the
    logged ``loss`` is the optimised total.

    The patch augmentation and the region sampler draw from a generator seeded
    with ``seed`` and the number of training steps taken (a buffer in the state
    dict), so a resumed run repeats an uninterrupted one.

    Args:
        arch: timm model name, e.g. ``'vit_small_patch14_dinov2'``.
        img_size: Input size of the ViT (position embedding resampled).
        checkpoint: Local SSL checkpoint of the ViT, or None for random weights
            (tests, or when an mmengine checkpoint is loaded afterwards).
        checkpoint_key: Sub-dict of the checkpoint holding the weights (see
            :func:`~lightly_glare.weights.normalize_state_dict`).
        vit_cfg: Further keyword arguments of ``timm.create_model`` (e.g.
            ``drop_path_rate``; ``depth`` for tiny test models).
        output_dim: Output dimension of the projection heads.
        hidden_dim: Hidden size of the heads.
        head_bottleneck_dim: Bottleneck before the heads' last layer.
        adapter_bottleneck: UniAdapter bottleneck.
        adapter_scale: UniAdapter output scale.
        global_weight: Weight of the global term.
        regional_weight: Weight of the regional term.
        local_distortion_weight: Weight of L_loc1.
        local_matching_weight: Weight of L_loc2.
        student_temp: Student temperature.
        teacher_temp: Teacher temperature.
        seed: Seed of the per-step generator.
        glare_cfg: Further keyword arguments of :class:`GLARE`.
        data_preprocessor: Defaults to :class:`GlarePretrainDataPreprocessor`.
        init_cfg: mmengine initialisation config (unused by default).
    """

    def __init__(
        self,
        arch: str,
        img_size: int = 224,
        checkpoint: str | None = None,
        checkpoint_key: str | None = None,
        vit_cfg: dict[str, Any] | None = None,
        output_dim: int = 8192,
        hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        adapter_bottleneck: int = 64,
        adapter_scale: float = 0.1,
        global_weight: float = 1.0,
        regional_weight: float = 1.0,
        local_distortion_weight: float = 1.0,
        local_matching_weight: float = 1.0,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        seed: int = 0,
        glare_cfg: dict[str, Any] | None = None,
        data_preprocessor: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = {"type": "GlarePretrainDataPreprocessor"}
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.arch = arch
        self.img_size = img_size
        self.seed = seed
        vit = create_vit(
            arch,
            checkpoint=checkpoint,
            img_size=img_size,
            checkpoint_key=checkpoint_key,
            **(vit_cfg or {}),
        )
        self.criterion = GlareLoss(
            output_dim=output_dim,
            global_weight=global_weight,
            regional_weight=regional_weight,
            local_distortion_weight=local_distortion_weight,
            local_matching_weight=local_matching_weight,
            student_temp=student_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp=teacher_temp,
        )
        self.glare = GLARE(
            vit,
            terms=self.criterion.active_terms,
            output_dim=output_dim,
            hidden_dim=hidden_dim,
            head_bottleneck_dim=head_bottleneck_dim,
            adapter_bottleneck=adapter_bottleneck,
            adapter_scale=adapter_scale,
            **(glare_cfg or {}),
        )
        self.num_steps: Tensor
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def step_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded from ``seed``, step count and rank."""
        generator = torch.Generator(device=device)
        step_seed = self.seed * _SEED_STRIDE + int(self.num_steps)
        generator.manual_seed(step_seed + (get_rank() << 40))
        return generator

    def export_meta(self) -> dict[str, Any]:
        """Meta information stored with an exported backbone."""
        return {"arch": self.arch, "img_size": self.img_size}

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
            ``{'loss': total, 'term_<name>': detached part, ...}``.

        Raises:
            RuntimeError: (:class:`NonFiniteLossError`) if the loss is NaN or
                infinite; the weights are not updated and the checkpoints
                written so far are kept.
        """
        if mode != "loss":
            raise ValueError(
                f"GlarePretrainer supports only mode='loss', got {mode!r}."
            )
        views, geometry = _split_inputs(inputs)
        generator = self.step_generator(views[0].device)
        if self.training:
            self.num_steps += 1
        loss = self.criterion(self.glare(views, geometry, generator=generator))
        if not torch.isfinite(loss):
            terms = {k: float(v) for k, v in self.criterion.last_terms.items()}
            raise NonFiniteLossError(
                f"Non-finite GLARE loss at step {int(self.num_steps)}: {terms}. "
                "Lower the learning rate or raise the teacher temperature; the "
                "last checkpoint in the work dir is intact (resume with --resume)."
            )
        losses = {"loss": loss}
        for name, value in self.criterion.last_terms.items():
            losses[f"term_{name}"] = value.detach()
        return losses


@DATA_SAMPLERS.register_module()
class GlareInfiniteSampler(InfiniteSampler):
    """mmengine's ``InfiniteSampler`` that also tells the dataset the epoch.

    Yields ``epoch * len(dataset) + index`` instead of ``index`` (a fresh
    permutation per epoch, seeded by ``seed``), so that
    :class:`GlarePretrainDataset` draws its augmentations from ``(seed, epoch,
    index)`` in any worker. The sequence is the same after a resume, where
    mmengine's ``IterBasedTrainLoop`` replays the sampler.
    """

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        epoch = 0
        while True:
            if self.shuffle:
                order = torch.randperm(self.size, generator=generator).tolist()
            else:
                order = list(range(self.size))
            offset = epoch * self.size
            yield from (offset + index for index in order)
            epoch += 1


@DATASETS.register_module()
class GlarePretrainDataset(Dataset[dict[str, Any]]):
    """An unlabeled image folder with :class:`GlareTransform` for pre-training.

    Item ``k`` is image ``k % len(self)`` (``k`` may exceed the length:
    :class:`GlareInfiniteSampler` passes ``epoch * len + index``); its
    augmentation is drawn from torch's RNG seeded with ``(seed, k)`` inside
    :func:`torch.random.fork_rng`, so it depends neither on worker processes
    nor on what ran before (resume).

    Args:
        data_root: Folder with the images (searched recursively).
        input_size: Side of the views.
        seed: Augmentation seed.
        transform_cfg: Further keyword arguments of :class:`GlareTransform`.
        skip_bad: Skip unreadable images instead of failing.
        min_size: Skip/reject images smaller than this on their shorter side.
    """

    def __init__(
        self,
        data_root: str,
        input_size: int = 224,
        seed: int = 0,
        transform_cfg: dict[str, Any] | None = None,
        skip_bad: bool = False,
        min_size: int | None = None,
    ) -> None:
        self.transform = GlareTransform(input_size, **(transform_cfg or {}))
        self.images = ImageFolderDataset(
            data_root, skip_bad=skip_bad, min_size=min_size
        )
        self.seed = seed

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``dict(inputs=(views, geometry))`` of image ``index % len(self)``."""
        image = self.images.load(index % len(self.images))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * _SEED_STRIDE + index)
            views, geometry = self.transform(image)
        return {"inputs": (views, geometry)}


@HOOKS.register_module()
class GlareTeacherEMAHook(Hook):
    """Updates the GLARE teacher after every training iteration.

    After iteration ``i`` (0-based) the teacher moves with momentum
    ``cosine_schedule(i + 1, max_iters, momentum_start, momentum_end)``, as the
    plain loop in :mod:`lightly_glare.training` does before step ``i + 1``. The
    momentum depends only on the iteration, so a resumed run repeats an
    uninterrupted one.

    Args:
        momentum_start: Momentum at iteration 0 (DINO: 0.996).
        momentum_end: Momentum at the last iteration.
    """

    priority = "NORMAL"  # before the CheckpointHook (VERY_LOW) saves the teacher

    def __init__(
        self, momentum_start: float = 0.996, momentum_end: float = 1.0
    ) -> None:
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end

    def momentum(self, iteration: int, max_iters: int) -> float:
        """The momentum applied after ``iteration`` of ``max_iters``."""
        step = min(iteration + 1, max_iters)
        return float(
            cosine_schedule(step, max_iters, self.momentum_start, self.momentum_end)
        )

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: Any = None,
    ) -> None:
        """EMA update of the teacher of the runner's :class:`GlarePretrainer`."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, GlarePretrainer):
            raise TypeError(
                "GlareTeacherEMAHook needs a GlarePretrainer, got "
                f"{type(model).__name__}."
            )
        model.glare.update_teacher(self.momentum(runner.iter, runner.max_iters))
