"""Step-seeded data: augmentations and order that a resumed run repeats exactly.

A run that is interrupted and resumed must see the same batches, with the same
augmentations, as an uninterrupted one. Here both depend only on a seed and on
the draw number ``k`` (``epoch * len(dataset) + index``): the order is a fresh
seeded permutation per epoch (:func:`draw_order`), and item ``k`` is augmented
under torch's RNG seeded with ``(seed, k)`` (:class:`SeededDataset`), the same in
any worker process and after a resume. The mmengine pre-training data
(``GlareInfiniteSampler``, ``GlarePretrainDataset``) follows the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

_SEED_STRIDE = 1_000_003  # a prime: distinct (seed, draw) pairs, distinct seeds


def derive_seed(seed: int, draw: int) -> int:
    """The seed of draw number ``draw`` of a stream seeded with ``seed``."""
    return seed * _SEED_STRIDE + draw


def draw_order(
    size: int, seed: int, shuffle: bool = True, start: int = 0
) -> Iterator[int]:
    """The endless stream of draw numbers ``epoch * size + index``.

    Each epoch visits every index once, in a permutation drawn from one
    generator seeded with ``seed`` (in order when ``shuffle`` is False).

    Args:
        size: Number of items.
        seed: Seed of the permutations.
        shuffle: Permute each epoch.
        start: Skip the first ``start`` draws (resume at a draw).

    Yields:
        ``epoch * size + index`` for epochs 0, 1, ... from draw ``start`` on.

    Raises:
        ValueError: If ``size`` is not positive or ``start`` is negative.
    """
    if size < 1 or start < 0:
        raise ValueError(f"Need size >= 1 and start >= 0, got {size} and {start}.")
    generator = torch.Generator()
    generator.manual_seed(seed)
    epoch = 0
    while True:
        if shuffle:
            order = torch.randperm(size, generator=generator).tolist()
        else:
            order = list(range(size))
        first = max(0, start - epoch * size)
        yield from (epoch * size + index for index in order[first:])
        epoch += 1


class DrawSampler(Sampler[int]):
    """A sampler yielding :func:`draw_order` from a given draw on.

    Attributes:
        size: Items of the dataset.
        seed: Seed of the permutations.
        start: First draw (``step * batch_size`` to resume at ``step``).
    """

    def __init__(self, size: int, seed: int, start: int = 0) -> None:
        super().__init__()
        self.size = size
        self.seed = seed
        self.start = start

    def __iter__(self) -> Iterator[int]:
        """The endless draw numbers."""
        return draw_order(self.size, self.seed, start=self.start)


class SeededDataset(Dataset[Any]):
    """Item ``k`` is ``dataset[k % len(dataset)]`` drawn under the seed ``(seed, k)``.

    The item is computed inside :func:`torch.random.fork_rng` with torch's RNG
    seeded by :func:`derive_seed`, so a random transform of ``dataset`` draws
    the same augmentation whatever ran before, and the caller's RNG state is
    left unchanged.

    Attributes:
        dataset: The wrapped dataset (e.g. an
            :class:`~lightly_glare.data.ImageFolderDataset` with a
            :class:`~lightly_glare.transforms.GlareTransform`).
        seed: Augmentation seed.

    Examples:
        >>> views = SeededDataset(ImageFolderDataset("images", GlareTransform(224)))
        >>> sampler = DrawSampler(len(views), seed=0)
        >>> loader = DataLoader(views, batch_size=16, sampler=sampler)
    """

    def __init__(self, dataset: Dataset[Any], seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        """Items of the wrapped dataset."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, draw: int) -> Any:
        """Item ``draw % len(self)`` with the augmentation of draw ``draw``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, draw))
            return self.dataset[draw % len(self)]
