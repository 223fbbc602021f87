"""Resuming mmengine checkpoints under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: its unpickler
builds only tensors, containers and explicitly allowed globals. Resume checkpoints
of mmengine 0.10.7 (``Runner.save_checkpoint``) also hold the MessageHub's logs,
which that unpickler refuses (mmengine issue 1655): ``HistoryBuffer`` objects with
numpy arrays, numpy scalars and arrays in the runtime info, and numpy dtypes.

Importing this module (which :mod:`lightly_glare.openmmlab` does) allows exactly
those objects with ``torch.serialization.add_safe_globals``, so resuming works
without ``weights_only=False`` and without environment variables. The list was
found by inspecting (``torch.serialization.get_unsafe_globals_in_checkpoint``) and
loading a checkpoint of a Runner with a MessageHub, an SGD optimizer, a parameter
scheduler and numpy-valued logs:

* ``mmengine.logging.HistoryBuffer``;
* numpy's ``ndarray``, ``dtype``, the array and scalar reconstructors
  (``multiarray._reconstruct``, ``multiarray.scalar``; under their numpy 1.x and
  2.x module paths), and the dtype classes of booleans and numbers;
* ``builtins.getattr``, which ``HistoryBuffer`` uses to pickle its statistics
  methods (``getattr(HistoryBuffer, "mean")``), mapped to
  :func:`history_buffer_statistic`, which resolves only those four methods.

Nothing in that list executes code from the file. A checkpoint that needs anything
else still fails, with torch's error naming the global and how to allow it
(``torch.serialization.add_safe_globals([...])``, if the file is trusted).

Attributes:
    MMENGINE_RESUME_GLOBALS: The safe globals this module registers, as accepted by
        ``torch.serialization.add_safe_globals``.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

#: The methods HistoryBuffer.__getstate__ pickles via getattr (set in its __init__).
HISTORY_BUFFER_STATISTICS: Final = frozenset({"min", "max", "current", "mean"})

_NUMERIC_DTYPES: Final = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


def history_buffer_statistic(owner: object, name: str) -> Callable[..., Any]:
    """Stands in for ``builtins.getattr`` while unpickling a checkpoint.

    ``HistoryBuffer`` pickles its statistics methods as
    ``getattr(HistoryBuffer, "mean")``. Allowing ``getattr`` itself would let a
    checkpoint reach any attribute of any object it can build; this resolves only
    those methods.

    Args:
        owner: The object whose attribute the pickle asks for.
        name: The attribute name.

    Returns:
        The ``HistoryBuffer`` statistics method ``name``.

    Raises:
        pickle.UnpicklingError: If ``owner`` is not ``HistoryBuffer`` or ``name``
            is not one of :data:`HISTORY_BUFFER_STATISTICS`.
    """
    if owner is not HistoryBuffer or name not in HISTORY_BUFFER_STATISTICS:
        raise pickle.UnpicklingError(
            f"Refusing builtins.getattr({repr(owner):.100}, {name!r}) in a "
            "weights-only checkpoint: lightly-glare allows getattr only for "
            f"mmengine's HistoryBuffer statistics {sorted(HISTORY_BUFFER_STATISTICS)}."
        )
    method: Callable[..., Any] = getattr(HistoryBuffer, name)
    return method


def _numpy_multiarray() -> ModuleType:
    try:
        return importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")  # numpy 1.x


def _mmengine_resume_globals() -> list[Callable[..., Any] | tuple[Any, str]]:
    multiarray = _numpy_multiarray()
    reconstructors = [
        (getattr(multiarray, function), f"{package}.multiarray.{function}")
        for function in ("_reconstruct", "scalar")
        for package in ("numpy.core", "numpy._core")
    ]
    dtype_classes = [type(np.dtype(name)) for name in _NUMERIC_DTYPES]
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        *reconstructors,
        *dtype_classes,
        (history_buffer_statistic, "builtins.getattr"),
    ]


MMENGINE_RESUME_GLOBALS: Final = _mmengine_resume_globals()


def allow_mmengine_resume_globals() -> None:
    """Registers :data:`MMENGINE_RESUME_GLOBALS` with torch's weights-only loader.

    Idempotent. Plain weight files are unaffected; they load as before.
    """
    torch.serialization.add_safe_globals(MMENGINE_RESUME_GLOBALS)


allow_mmengine_resume_globals()
