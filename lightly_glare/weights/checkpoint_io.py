"""Checkpoint I/O: atomic, durable writes; NaN/inf guards; strict key checks.

Every weights file lightly-glare writes goes through :func:`save_atomic`
(temporary file, ``fsync``, rename: a kill never leaves a truncated file, and
weights holding NaN or inf are never written), and every loader reports a
mismatch as a :class:`CheckpointMismatchError` that lists the first keys
(:func:`check_state_dict`). Pure PyTorch; used by the adapted-backbone export
(:mod:`lightly_glare.weights.export`), the SSL checkpoint readers and the
one-call run's outputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: How many keys an error message lists before "... and N more".
LISTED_KEYS = 5
#: The fix named when a file to load holds NaN or infinite weights.
LOAD_FIX = (
    "Such weights come from a diverged run or a damaged file and make every "
    "loss NaN: use an earlier checkpoint of that run, or a fresh copy of the file."
)
#: The fix named when weights to save hold NaN or infinite values.
SAVE_FIX = (
    "The training diverged; nothing was written (an existing file is kept): "
    "export an earlier checkpoint of the run."
)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class NonFiniteWeightsError(CheckpointMismatchError):
    """A checkpoint, or weights about to be saved, hold NaN or infinite values."""


def listed(items: Sequence[str]) -> str:
    """The first :data:`LISTED_KEYS` items, and how many more there are.

    Args:
        items: Keys or descriptions, most informative first.

    Returns:
        E.g. ``"['a', 'b', 'c', 'd', 'e'] ... and 145 more"``.
    """
    more = len(items) - LISTED_KEYS
    return f"{list(items[:LISTED_KEYS])}" + (
        f" ... and {more} more" if more > 0 else ""
    )


def check_finite(state: Mapping[str, object], source: str, fix: str = LOAD_FIX) -> None:
    """Raises if a floating-point tensor of ``state`` holds NaN or inf.

    Args:
        state: A flat mapping of names to tensors (other values are skipped).
        source: What ``state`` is, for the message (e.g. the file name).
        fix: What the user should do, appended to the message.

    Raises:
        NonFiniteWeightsError: Names ``source``, how many tensors are affected
            and the first of them with their count of non-finite values.
    """
    bad = []
    for key, value in state.items():
        if isinstance(value, Tensor) and value.is_floating_point():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f"{key} ({count} of {value.numel()} values)")
    if bad:
        raise NonFiniteWeightsError(
            f"{source} holds NaN or infinite weights in {len(bad)} of "
            f"{len(state)} tensors: {listed(bad)}. {fix}"
        )


def _flat_tensors(obj: object, prefix: str = "") -> dict[str, Tensor]:
    """The tensors inside nested dicts, lists and tuples, by dotted path."""
    if isinstance(obj, Tensor):
        return {prefix.rstrip("."): obj}
    if isinstance(obj, Mapping):
        items: Any = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return {}
    found: dict[str, Tensor] = {}
    for key, value in items:
        found.update(_flat_tensors(value, f"{prefix}{key}."))
    return found


def replace_durably(partial: Path, target: Path) -> None:
    """Flushes ``partial`` to disk and renames it over ``target``, durably.

    The file's data is ``fsync``-ed before the rename and the folder after it,
    so that after a crash ``target`` is either the old or the new complete file.

    Args:
        partial: A fully written file in ``target``'s folder.
        target: The destination.
    """
    with partial.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)


def save_atomic(obj: object, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename.

    A kill during saving never leaves a truncated file at ``path``, and
    weights holding NaN or inf are never written.

    Args:
        obj: What to save: tensors, possibly nested in dicts, lists, tuples.
        path: Destination file.

    Returns:
        The destination path.

    Raises:
        NonFiniteWeightsError: A floating-point tensor of ``obj`` holds NaN or
            inf; nothing is written and an existing ``path`` is kept.
    """
    path = Path(path)
    check_finite(_flat_tensors(obj), f"Refusing to write {path}: it", SAVE_FIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
        umask = os.umask(0)  # mkstemp creates 0600 files: apply the usual mode
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        replace_durably(Path(tmp_name), path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def check_state_dict(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    diagnosis: str = "",
) -> None:
    """Raises if ``state`` does not have exactly ``model``'s keys and shapes.

    The message leads with the counts and ``diagnosis``, then lists the first
    :data:`LISTED_KEYS` missing keys, unexpected keys and shape mismatches
    each (in the model's, respectively the checkpoint's, key order: embeddings
    first), with how many more there are.

    Args:
        model: The model to load into.
        state: The state dict to load.
        source: Where ``state`` comes from, for the message.
        diagnosis: Lines that explain the mismatch (e.g. the architecture the
            file seems to hold), placed right after the first line.

    Raises:
        CheckpointMismatchError: Lists missing keys, unexpected keys and shape
            mismatches.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key}: checkpoint {tuple(state[key].shape)}, model "
        f"{tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    kinds = (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    )
    if missing or unexpected or shapes:
        counts = ", ".join(f"{len(items)} {name}" for name, items in kinds if items)
        lines = [
            f"Checkpoint {source} does not match {type(model).__name__} ({counts})."
        ]
        lines += [diagnosis] if diagnosis else []
        lines += [f"  {name} ({len(items)}): {listed(items)}" for name, items in kinds]
        raise CheckpointMismatchError("\n".join(lines))
