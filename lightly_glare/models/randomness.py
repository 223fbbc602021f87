"""Seeded random draws shared by GLARE's stochastic parts.

Patch augmentations, patch sampling, the region sampler's head order and the
backbone's sample-skipping stochastic depth all draw through
:func:`random_tensor`, so one ``torch.Generator`` makes a step reproducible
(step-seeded randomness: a resumed run repeats an uninterrupted one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def random_tensor(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    normal: bool = False,
) -> Tensor:
    """Uniform [0, 1) (or standard normal) samples on ``device``.

    With a generator, the samples are drawn on the generator's device and moved
    to ``device`` (pass a generator on the images' device to avoid the copy).

    Args:
        shape: Shape of the samples.
        generator: Optional random generator of the draw; None: the global one.
        device: Device of the returned tensor.
        dtype: Floating dtype of the samples. Defaults to float32.
        normal: Draw from N(0, 1) instead of U[0, 1). Defaults to False.

    Returns:
        A tensor of ``shape`` on ``device``.
    """
    sample = torch.randn if normal else torch.rand
    if generator is None:
        return sample(tuple(shape), device=device, dtype=dtype)
    drawn = sample(
        tuple(shape), generator=generator, device=generator.device, dtype=dtype
    )
    return drawn.to(device, non_blocking=True)
