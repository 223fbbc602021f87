"""Unlabeled pre-training data for mmengine: an image folder and its sampler.

Resume determinism: mmengine restores weights, optimizer, schedulers and the
iteration, but not the global RNG state, and its ``IterBasedTrainLoop`` replays
the sampler to the resumed iteration. Therefore the augmentations of a sample
are drawn from a generator seeded with ``(seed, epoch * len(dataset) + index)``
(the number :class:`GlareInfiniteSampler` yields) and never from the global RNG:
the same in any worker process and after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from mmengine.dataset import InfiniteSampler
from mmseg.registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
from torch.utils.data import Dataset

from lightly_glare.data.image_folder import ImageFolderDataset
from lightly_glare.data.seeded import derive_seed, draw_order
from lightly_glare.openmmlab import components  # noqa: F401  (GlareTransform)
from lightly_glare.openmmlab.config_validation import validate_arguments


@DATA_SAMPLERS.register_module()
@validate_arguments
class GlareInfiniteSampler(InfiniteSampler):
    """mmengine's ``InfiniteSampler`` that also tells the dataset the epoch.

    Yields ``epoch * len(dataset) + index`` instead of ``index`` (a fresh
    permutation per epoch, seeded by ``seed``), so that
    :class:`GlarePretrainDataset` draws the augmentations from ``(seed, epoch,
    index)``. Ranks take every ``world_size``-th number, as in the parent class.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Shuffle the images in each epoch. Defaults to True.
        seed (int, optional): Seed of the permutations; None draws one shared
            by all ranks. Defaults to None.
    """

    def _infinite_indices(self) -> Iterator[int]:
        return draw_order(self.size, self.seed, self.shuffle)


@DATASETS.register_module()
@validate_arguments
class GlarePretrainDataset(Dataset[dict[str, Any]]):
    """An unlabeled image folder with ``GlareTransform`` for pre-training.

    Item ``k`` is image ``k % len(self)`` (``k`` may exceed the length:
    :class:`GlareInfiniteSampler` passes ``epoch * len + index``) as
    ``dict(inputs=(views, geometry))``, which mmengine's ``default_collate``
    turns into ``([view_0 (B, 3, H, W), view_1], geometry (B, 2, 5))``. The
    augmentation of item ``k`` is drawn from torch's RNG seeded with
    ``(seed, k)`` inside :func:`torch.random.fork_rng`, so it depends neither
    on worker processes nor on what ran before (resume).

    Images are read by :class:`~lightly_glare.data.ImageFolderDataset`
    (recursive search; greyscale, 16-bit and RGBA files converted to RGB as
    documented there).

    Args:
        data_root (str): Folder with the images (searched recursively).
        transform (dict, optional): Config of the two-view transform, built
            from mmseg's ``TRANSFORMS`` registry, e.g.
            ``dict(type='GlareTransform', input_size=126, min_overlap=0.25)``.
            Defaults to None (``GlareTransform()``, 224 px).
        seed (int): Augmentation seed. Defaults to 0.
        skip_bad (bool): Skip unreadable images (reported once) instead of
            failing. Defaults to False.
        min_size (int, optional): Reject images whose shorter side is smaller.
            Defaults to None.
    """

    def __init__(
        self,
        data_root: str,
        transform: dict[str, Any] | None = None,
        seed: int = 0,
        skip_bad: bool = False,
        min_size: int | None = None,
    ) -> None:
        self.transform = TRANSFORMS.build(transform or {"type": "GlareTransform"})
        self.images = ImageFolderDataset(
            data_root, skip_bad=skip_bad, min_size=min_size
        )
        self.data_root = data_root
        self.seed = seed

    @property
    def metainfo(self) -> dict[str, Any]:
        """What mmengine stores in checkpoints as ``dataset_meta``."""
        return {"data_root": self.data_root, "num_images": len(self)}

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``dict(inputs=(views, geometry))`` of image ``index % len(self)``."""
        image = self.images.load(index % len(self.images))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, index))
            *views, geometry = self.transform(image)
        return {"inputs": (views, geometry)}
