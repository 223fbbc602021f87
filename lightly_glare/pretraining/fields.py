"""The typed fields the front ends set, and the one reader of their type hints.

Three front ends set the fields of a pre-training job: ``lightly-glare pretrain
key=value`` (:mod:`~lightly_glare.pretraining.cli`), the experiment tools'
options (``tools/experiments/pretraining_args.py``) and the mmengine configs
(:mod:`~lightly_glare.openmmlab.config_validation`). They read the same
fields (:func:`dataclass_fields`, :func:`signature_fields`: name, resolved
type hint, default) through one reader of type hints (:func:`read_hint`), and
parse typed text with one function (:func:`parse_field`).

Spellings: a field's name is the Python argument name on both command lines
(``output_dim=`` and ``--output-dim``). Every valid patch is ``all`` on both
command lines and None in Python and configs (``local_patches_per_view``);
``none`` is None for every other optional field (``amp=none``: bf16 where the
device has it natively).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

#: ``collections.abc.Callable`` as the runtime class ``get_origin`` returns.
_CALLABLE: Any = Callable
#: Text a command line takes for True / False.
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")
#: Text a command line takes for None.
NONE = ("none", "null")
#: The command lines' spelling of "every valid patch" (None in Python).
ALL_PATCHES = "all"


class KeyValueError(ValueError):
    """A ``key=value`` argument that is malformed, unknown or of a wrong type."""


class Kind(enum.Enum):
    """What a type hint asks for (:func:`read_hint`)."""

    ANY = "any"
    NONE = "none"
    UNION = "union"
    LITERAL = "literal"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    CALLABLE = "callable"
    MAPPING = "mapping"
    SEQUENCE = "sequence"
    CLASS = "class"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class Hint:
    """A type hint, read.

    Attributes:
        kind: What it asks for.
        origin: The class of ``MAPPING``, ``SEQUENCE`` and ``CLASS`` hints
            (``list`` for ``list[int]``), else None.
        args: The members of a union, the values of a ``Literal``, the
            element hints of a container.
    """

    kind: Kind
    origin: Any = None
    args: tuple[Any, ...] = ()


def read_hint(hint: Any) -> Hint:
    """The one reader of type hints: what ``hint`` asks for.

    Args:
        hint: A resolved annotation (``int``, ``str | None``,
            ``Sequence[int]``, ``Literal['a', 'b']``, ``Mapping[str, float]``,
            ...).

    Returns:
        Its kind, class and arguments; ``UNCHECKED`` for what no front end
        checks (``TypeVar``, ``ForwardRef``, ...).
    """
    if hint is Any:
        return Hint(Kind.ANY)
    if hint is None or hint is type(None):
        return Hint(Kind.NONE)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return Hint(Kind.UNION, args=args)
    if origin is Literal:
        return Hint(Kind.LITERAL, args=args)
    simple = {bool: Kind.BOOL, int: Kind.INT, float: Kind.FLOAT}
    if hint in simple:
        return Hint(simple[hint], origin=hint)
    origin = origin or hint
    if not isinstance(origin, type):
        return Hint(Kind.UNCHECKED)
    if origin is _CALLABLE:
        return Hint(Kind.CALLABLE, origin, args)
    if issubclass(origin, Mapping):
        return Hint(Kind.MAPPING, origin, args)
    if issubclass(origin, Sequence) and origin not in (str, bytes):
        return Hint(Kind.SEQUENCE, origin, args)
    return Hint(Kind.CLASS, origin, args)


def describe_hint(hint: Any) -> str:
    """A readable form of a type hint, e.g. ``int | Sequence[int]``.

    Args:
        hint: A resolved annotation.

    Returns:
        A class's name, or the hint without module prefixes.
    """
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return re.sub(r"\b(typing|collections\.abc|builtins|pathlib)\.", "", str(hint))


def resolved_hints(function: Callable[..., Any] | type) -> dict[str, Any]:
    """The annotations of ``function`` (or a dataclass) that resolve.

    Args:
        function: A function, method or class.

    Returns:
        Parameter (or field) name to resolved annotation; one that does not
        resolve is left out, the others are kept.
    """
    try:
        return typing.get_type_hints(function)
    except Exception:  # one unresolvable annotation: resolve the others alone
        hints: dict[str, Any] = {}
        namespace = getattr(function, "__globals__", {})
        for name, raw in getattr(function, "__annotations__", {}).items():
            try:  # evaluated in the function's module, as get_type_hints does
                hints[name] = eval(raw, namespace) if isinstance(raw, str) else raw
            except Exception:
                continue
        return hints


@dataclass(frozen=True)
class TypedField:
    """A field a front end sets.

    Attributes:
        name: The Python name (the command lines' key).
        hint: Its resolved type annotation.
        default: Its default (``inspect.Parameter.empty``: required).
        choices: The values it takes, when it takes a few strings only.
    """

    name: str
    hint: Any
    default: Any
    choices: tuple[str, ...] | None = None

    @property
    def required(self) -> bool:
        """Whether the field must be given."""
        return self.default is inspect.Parameter.empty

    @property
    def is_switch(self) -> bool:
        """Whether the field is a bool or an optional one (an on/off option)."""
        read = read_hint(self.hint)
        members = read.args if read.kind is Kind.UNION else (self.hint,)
        return any(read_hint(member).kind is Kind.BOOL for member in members)


def dataclass_fields(cls: type, names: Iterable[str]) -> dict[str, TypedField]:
    """The fields ``names`` of the dataclass ``cls``, typed, with their defaults.

    A field's ``metadata`` may name its ``choices``.

    Args:
        cls: The dataclass (e.g.
            :class:`~lightly_glare.pretraining.job.FolderPretraining`).
        names: The fields wanted, in the order wanted.

    Returns:
        Name to :class:`TypedField`.
    """
    hints = resolved_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    typed: dict[str, TypedField] = {}
    for name in names:
        field = by_name[name]
        default: Any = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        elif default is dataclasses.MISSING:
            default = inspect.Parameter.empty
        choices = field.metadata.get("choices")
        typed[name] = TypedField(name, hints[name], default, choices)
    return typed


def signature_fields(
    function: Callable[..., Any], exclude: Iterable[str] = ()
) -> dict[str, TypedField]:
    """The named parameters of ``function`` as fields, in its order.

    Args:
        function: E.g. :func:`lightly_glare.pretrain`.
        exclude: Parameters that are not fields (callbacks, ``**options``).

    Returns:
        Name to :class:`TypedField`.
    """
    hints = resolved_hints(function)
    left_out = set(exclude)
    return {
        name: TypedField(name, hints[name], parameter.default)
        for name, parameter in inspect.signature(function).parameters.items()
        if name not in left_out
    }


def positive_int(text: str) -> int:
    """A positive integer as typed (e.g. ``adapter_bottleneck``).

    Raises:
        ValueError: Naming the text.
    """
    try:
        number = int(text)
    except ValueError:
        number = 0  # not an integer: refused below with the same message
    if number < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return number


def drop_rate(text: str) -> float:
    """A number in [0, 1) as typed (``student_drop_path``).

    Raises:
        ValueError: Naming the text.
    """
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0  # not a number: refused below with the same message
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"expected a number in [0, 1), got {text}")
    return rate


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
    if value == ALL_PATCHES:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0  # not an integer: refused below with the same message
    if count < 1:
        raise ValueError(f"expected a positive integer or 'all', got {value!r}")
    return count


#: Fields whose typed text is checked beyond their type, by the same parser on
#: both command lines (``all`` is every valid patch, :data:`ALL_PATCHES`).
TEXT_PARSERS: dict[str, Callable[[str], Any]] = {
    "adapter_bottleneck": positive_int,
    "student_drop_path": drop_rate,
    "local_patches_per_view": parse_patch_count,
}
#: Optional fields whose None is typed as another word than ``none``.
NONE_SPELLINGS = {"local_patches_per_view": ALL_PATCHES}


def typed_as(field: TypedField) -> str:
    """How ``field`` is typed on a command line, e.g. ``int | all``."""
    text = describe_hint(field.hint)
    spelling = NONE_SPELLINGS.get(field.name)
    return text if spelling is None else text.replace("None", spelling)


def convert(text: str, hint: Any, key: str) -> Any:
    """``text`` as a value of type ``hint``.

    Args:
        text: The value as typed.
        hint: The annotation (``int``, ``bool | None``, ``str | Path``,
            ``Sequence[int] | None``, ...).
        key: The key, for the message.

    Returns:
        The converted value (``none`` is None for an optional hint, ``a,b``
        a list for a sequence).

    Raises:
        KeyValueError: ``text`` is not of the type; the message names the key,
            the value and the type.
    """
    try:
        return convert_text(text, hint)
    except ValueError as error:
        raise KeyValueError(f"{key}={text}: {error}.") from None


def convert_text(text: str, hint: Any) -> Any:
    """:func:`convert` without a key: a ``ValueError`` says what is expected."""
    read = read_hint(hint)
    if read.kind is Kind.UNION:
        if type(None) in read.args and text.lower() in NONE:
            return None
        errors = []
        for option in (a for a in read.args if a is not type(None)):
            try:
                return convert_text(text, option)
            except ValueError as error:
                errors.append(error)
        raise errors[0]
    if read.kind is Kind.BOOL:
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise ValueError("expected true or false")
    if read.kind in (Kind.INT, Kind.FLOAT):
        try:
            return read.origin(text)
        except ValueError:
            raise ValueError(f"expected {read.origin.__name__}") from None
    if read.kind is Kind.SEQUENCE and read.args:
        return [convert_text(item, read.args[0]) for item in text.split(",") if item]
    if read.kind is Kind.CLASS and read.origin in (str, Path, os.PathLike):
        return text
    raise ValueError(f"a {hint} cannot be given on the command line")


def parse_text(field: TypedField, text: str) -> Any:
    """The value of ``field`` typed as ``text``, on either command line.

    Args:
        field: The field.
        text: The value as typed.

    Returns:
        The value: by the field's parser in :data:`TEXT_PARSERS`, else by
        :func:`convert_text` from its type hint.

    Raises:
        ValueError: ``text`` is not a value of the field; the message says
            what is expected (the tools' argparse shows it after the option).
    """
    read = read_hint(field.hint)
    optional = read.kind is Kind.UNION and type(None) in read.args
    if optional and field.name not in NONE_SPELLINGS and text.lower() in NONE:
        return None
    parser = TEXT_PARSERS.get(field.name)
    return convert_text(text, field.hint) if parser is None else parser(text)


def parse_field(field: TypedField, text: str, key: str | None = None) -> Any:
    """:func:`parse_text` for ``key=value``: the message names the key.

    Raises:
        KeyValueError: ``text`` is not a value of the field.
    """
    try:
        return parse_text(field, text)
    except ValueError as error:
        raise KeyValueError(f"{key or field.name}={text}: {error}.") from None
