"""Mixed precision: bf16 autocast where the device computes bf16 natively."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

import torch

#: /proc/cpuinfo flags of native bf16 arithmetic: x86 AVX-512 BF16 and AMX
#: (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later), Arm
#: BF16 (``Features`` line; Neoverse V1 / N2, Graviton 3 and later).
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where it reports none).

    Args:
        cpuinfo: The kernel's CPU description (Linux).

    Returns:
        The words of the ``flags`` (x86) and ``Features`` (Arm) lines; empty on
        systems without ``/proc/cpuinfo``.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively (not by emulation).

    CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` (compute
    capability 8.0 and later). CPU: one of :data:`CPU_BF16_FLAGS` in
    ``/proc/cpuinfo`` (PyTorch's own checks answer whether oneDNN *runs* bf16,
    which it also does by emulation on any AVX-512 CPU, slower than fp32).
    Other devices: False.

    Args:
        device: The device, e.g. ``"cpu"``, ``"cuda:0"``.

    Returns:
        True where bf16 autocast speeds the step up.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
    if device.type == "cpu":
        return bool(cpu_flags() & CPU_BF16_FLAGS)
    return False


#: Help text of the tools' ``--amp/--no-amp`` flag (``amp=None`` by default).
AMP_HELP: Final = (
    "bf16 autocast (default: where the device has native bf16: CUDA compute "
    "capability >= 8, CPUs with AVX-512 BF16 / AMX / Arm BF16)"
)


def resolve_amp(amp: bool | None, device: torch.device | str) -> bool:
    """The bf16 autocast setting to use: ``amp``, or :func:`native_bf16` if None.

    Args:
        amp: True / False forces bf16 autocast on / off; None chooses it where
            the device has native bf16.
        device: The training device.

    Returns:
        Whether to run the forward and the loss under bf16 autocast.
    """
    return native_bf16(device) if amp is None else amp
