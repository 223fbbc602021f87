"""GLARE continual pre-training as an mmengine model (registered in mmseg).

Run it with ``tools/train.py`` and a config such as
``mmseg_configs/glare_pretrain_vit-s14-dinov2_aerial-126.py``; the pieces:

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

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmseg.registry import MODELS
from torch import Tensor

from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE
from lightly_glare.openmmlab.config_validation import validate_arguments
from lightly_glare.openmmlab.pretrain_data import derive_seed
from lightly_glare.training import NonFiniteLossError
from lightly_glare.weights.ssl_checkpoints import create_vit

#: A collated pre-training batch: ``([view_0 (B,3,H,W), view_1], geometry (B,2,5))``.
PretrainInputs = tuple[list[Tensor], Tensor]


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
    """GLARE continual pre-training of a frozen timm ViT as an mmengine model.

    Builds the ViT with :func:`~lightly_glare.weights.create_vit` (loading a
    local SSL checkpoint strictly; nothing is downloaded),
    :class:`~lightly_glare.loss.GlareLoss` and
    :class:`~lightly_glare.models.GLARE` with the loss's active terms.
    ``forward(inputs, mode='loss')`` returns ``{'loss': total, 'term_<name>':
    ..., 'teacher_temp': ...}``: mmengine sums the keys containing ``loss``, so
    the parts are logged under ``term_*`` (detached) and the logged ``loss`` is
    the optimised total. The teacher is updated by
    :class:`~lightly_glare.openmmlab.hooks.GlareTeacherEMAHook` after each
    optimizer step.

    Everything that changes over training depends only on the number of steps
    taken (``num_steps``, a buffer in the state dict): the teacher temperature
    (linear warm-up over ``warmup_teacher_temp_iters``, as DINO's over epochs)
    and the generator of the patch augmentation and the region sampler (seeded
    with ``seed``, the step and the rank). A resumed run therefore repeats an
    uninterrupted one.

    Args:
        arch (str): timm model name, e.g. ``'vit_small_patch14_dinov2'``.
        img_size (int): Input size of the ViT (a checkpoint's position
            embedding is resampled). Defaults to 224.
        checkpoint (str, optional): Local SSL checkpoint of the ViT (DINO,
            DINOv2, iBOT or timm layout). None keeps random weights (tests, or
            when an mmengine checkpoint is loaded afterwards). Defaults to None.
        checkpoint_key (str, optional): Sub-dict of the checkpoint holding the
            weights (see :func:`~lightly_glare.weights.normalize_state_dict`).
            Defaults to None.
        vit_cfg (dict, optional): Further keyword arguments of
            ``timm.create_model`` (e.g. ``drop_path_rate``; ``depth`` for tiny
            test models). Defaults to None.
        output_dim (int): Output dimension of the projection heads.
            Defaults to 8192.
        hidden_dim (int): Hidden size of the heads. Defaults to 2048.
        head_bottleneck_dim (int): Bottleneck before the heads' last layer.
            Defaults to 256.
        adapter_bottleneck (int): UniAdapter bottleneck. Defaults to 64.
        adapter_scale (float): UniAdapter output scale. Defaults to 0.1.
        global_weight (float): Weight of the global term. Defaults to 1.0.
        regional_weight (float): Weight of the regional term. Defaults to 1.0.
        local_distortion_weight (float): Weight of L_loc1. Defaults to 1.0.
        local_matching_weight (float): Weight of L_loc2. Defaults to 1.0.
        student_temp (float): Student temperature. Defaults to 0.1.
        teacher_temp (float): Teacher temperature (after the warm-up).
            Defaults to 0.04.
        warmup_teacher_temp (float, optional): Teacher temperature at step 0,
            e.g. 0.04 with ``teacher_temp=0.07`` (DINO). None: no warm-up.
            Defaults to None.
        warmup_teacher_temp_iters (int): Steps of the linear teacher-temperature
            warm-up. Defaults to 0.
        seed (int): Seed of the per-step generator. Defaults to 0.
        glare_cfg (dict, optional): Further keyword arguments of
            :class:`~lightly_glare.models.GLARE` (e.g. ``region_match``).
            Defaults to None.
        data_preprocessor (dict, optional): Config of the data preprocessor.
            Defaults to None (a :class:`GlarePretrainDataPreprocessor`).
        init_cfg (dict, optional): mmengine initialisation config (unused by
            default). Defaults to None.

    Examples:
        >>> model = dict(type='GlarePretrainer', arch='vit_small_patch16_224',
        ...              checkpoint='dino_deitsmall16_pretrain.pth')
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
        warmup_teacher_temp: float | None = None,
        warmup_teacher_temp_iters: int = 0,
        seed: int = 0,
        glare_cfg: dict[str, Any] | None = None,
        data_preprocessor: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor or GlarePretrainDataPreprocessor(),
            init_cfg=init_cfg,
        )
        if warmup_teacher_temp_iters < 0:
            raise ValueError(
                "warmup_teacher_temp_iters must be >= 0, got "
                f"{warmup_teacher_temp_iters}."
            )
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
            # GlareLoss's schedule unit ("epoch") is the optimizer step here.
            warmup_teacher_temp=(
                teacher_temp if warmup_teacher_temp is None else warmup_teacher_temp
            ),
            warmup_teacher_temp_epochs=warmup_teacher_temp_iters,
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
        print_log(
            f"GlarePretrainer: {arch} at {img_size} px from "
            f"{checkpoint or 'random weights'}; terms {self.glare.terms}; "
            f"{self.glare.backbone.report}",
            logger="current",
        )

    def step_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded from ``seed``, step count and rank."""
        generator = torch.Generator(device=device)
        step_seed = derive_seed(self.seed, int(self.num_steps))
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
        loss = self.criterion(
            self.glare(views, geometry, generator=generator), epoch=step
        )
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
        losses["teacher_temp"] = loss.new_tensor(
            self.criterion.teacher_temperature(step)
        )
        return losses
