"""``argparse`` types of the options the tools and benchmarks share.

Each refuses a bad value with a message naming it, which argparse prints after
the option's name (``argument --steps: expected a positive integer, got 0``).
"""

from __future__ import annotations

import argparse


def parse_patch_count(value: str) -> int | None:
    """A ``local_patches_per_view`` as typed: a positive integer, or ``all``.

    The one parser of the tools' ``--local-patches-per-view K`` (argparse shows
    the message of a ``ValueError`` re-raised as ``ArgumentTypeError``).

    Args:
        value: E.g. ``"4"`` or ``"all"``.

    Returns:
        The count; None for ``all`` (every valid patch, see :class:`GLARE`).

    Raises:
        ValueError: ``value`` is neither a positive integer nor ``all``; the
            message names it.
    """
    if value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0  # not an integer: refused below with the same message
    if count < 1:
        raise ValueError(f"expected a positive integer or 'all', got {value!r}")
    return count


def positive_int(value: str) -> int:
    """An option that must be a positive integer (e.g. ``--adapter-bottleneck``)."""
    try:
        number = int(value)
    except ValueError:
        number = 0  # not an integer: refused below with the same message
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def drop_rate(value: str) -> float:
    """``--student-drop-path``: a number in [0, 1)."""
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0  # not a number: refused below with the same message
    if not 0.0 <= rate < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return rate


def patch_count(value: str) -> int | None:
    """``--local-patches-per-view``: :func:`parse_patch_count`, its message shown."""
    try:
        return parse_patch_count(value)
    except ValueError as error:  # argparse shows only ArgumentTypeError's text
        raise argparse.ArgumentTypeError(str(error)) from None
