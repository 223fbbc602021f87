from pathlib import Path

import pytest
import torch

from lightly_glare import precision
from lightly_glare.precision import cpu_flags, native_bf16, resolve_amp

X86 = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (X86, {"fpu", "sse", "avx512f", "avx512_bf16"}),
        (ARM, {"fp", "asimd", "sve", "bf16"}),
        ("processor\t: 0\nmodel name\t: flags are not here\n", set()),
    ],
)
def test_cpu_flags_reads_the_flags_and_features_lines(
    tmp_path: Path, text: str, expected: set[str]
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_flags(cpuinfo) == expected


def test_cpu_flags_without_cpuinfo_is_empty(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "avx512bw"}, False),  # AVX-512 alone: oneDNN emulates bf16
        ({"avx512f", "avx512_bf16"}, True),
        ({"amx_tile", "amx_bf16"}, True),
        ({"asimd", "bf16"}, True),
        (set(), False),
    ],
)
def test_native_bf16_on_cpu_follows_the_flags(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: bool
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert native_bf16("cpu") is expected
    assert native_bf16(torch.device("cpu")) is expected
    assert resolve_amp(None, "cpu") is expected
    assert resolve_amp(True, "cpu") is True and resolve_amp(False, "cpu") is False


@pytest.mark.parametrize("supported", [False, True])
def test_native_bf16_on_cuda_asks_without_emulation(
    monkeypatch: pytest.MonkeyPatch, supported: bool
) -> None:
    calls: list[bool] = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return supported

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert native_bf16("cuda:0") is supported
    assert calls == [False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert native_bf16("cuda") is False


def test_native_bf16_is_false_on_other_devices() -> None:
    assert native_bf16("meta") is False
