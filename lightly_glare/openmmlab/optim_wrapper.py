"""bf16 autocast for mmengine on any device, the CPU included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class Bf16AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under bf16 ``torch.autocast``.

    mmengine 0.10.7's ``AmpOptimWrapper`` asserts a CUDA / NPU / MLU / MUSA
    device, so it cannot run bf16 on a CPU (AVX-512 BF16 / AMX); this wrapper
    can, on the device mmengine trains on (``mmengine.device.get_device``). bf16
    has fp32's exponent range: no loss scaling. The weights, gradients and
    optimizer state stay fp32. ``tools/train.py --amp`` selects it on a CPU
    with native bf16 (:func:`~lightly_glare.precision.native_bf16`).

    Examples:
        >>> optim_wrapper = dict(type='Bf16AutocastOptimWrapper',
        ...                      optimizer=dict(type='AdamW', lr=1e-4))
    """

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """The parent's context (gradient accumulation) plus bf16 autocast.

        Args:
            model: The trained model.

        Yields:
            Nothing; the forward runs inside.
        """
        device_type = torch.device(get_device()).type
        with (
            super().optim_context(model),
            torch.autocast(device_type, dtype=torch.bfloat16),
        ):
            yield
