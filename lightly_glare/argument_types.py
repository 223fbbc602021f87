"""``argparse`` types of the options the tools and benchmarks share.

Each parses as ``lightly-glare pretrain key=value`` does (the parsers of
:mod:`lightly_glare.pretraining.fields`) and refuses a bad value with a message
naming it, which argparse prints after the option's name (``argument --steps:
expected a positive integer, got 0``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from lightly_glare.pretraining import fields
from lightly_glare.pretraining.fields import TypedField, parse_text

T = TypeVar("T")


def argparse_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse type: its ``ValueError`` message is shown.

    Args:
        parse: Text to value, raising ``ValueError`` with what is expected.

    Returns:
        The same parser raising ``argparse.ArgumentTypeError`` (argparse shows
        only that exception's message).
    """

    def parsed(value: str) -> T:
        try:
            return parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parsed.__name__ = parse.__name__  # argparse names the type in messages
    return parsed


def field_type(field: TypedField) -> Callable[[str], Any]:
    """The argparse type of a field, parsing as the key=value command does.

    Args:
        field: The field (:func:`~lightly_glare.pretraining.fields.parse_text`
            parses it).

    Returns:
        The argparse type.
    """
    parsed = argparse_type(lambda text: parse_text(field, text))
    parsed.__name__ = field.name
    return parsed


#: ``--adapter-bottleneck``: a positive integer.
positive_int = argparse_type(fields.positive_int)
#: ``--student-drop-path``: a number in [0, 1).
drop_rate = argparse_type(fields.drop_rate)
#: ``--local-patches-per-view``: a positive integer or ``all``.
patch_count = argparse_type(fields.TEXT_PARSERS["local_patches_per_view"])
