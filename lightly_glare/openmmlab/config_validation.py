"""Build-time checks of the config arguments of lightly-glare's modules.

mmengine builds a module with ``cls(**cfg)``: a misspelt key fails with
Python's bare ``unexpected keyword argument`` (or, behind ``**kwargs``, much
later), and a value of the wrong type (``adapter_bottleneck='64'``) fails deep
inside the model or not at all. :func:`validate_arguments` makes every
registered lightly-glare class check its keyword arguments against the
signature and type annotations of its ``__init__`` before it runs, and raise
:class:`ConfigArgumentError` naming the module and the key.

Rules:

* Keys must be parameters of ``__init__``. When ``__init__`` takes
  ``**kwargs``, they are taken to be forwarded to the base class's
  ``__init__``, whose parameters are then valid as well (recursively); a base
  without ``__init__`` of its own (``object``) accepts none.
* Values must match the annotation: ``X | None``, ``Literal``, ``int``
  (``bool`` is not accepted as a number) and ``float`` (ints accepted), ``str``,
  ``bool``, ``dict`` / ``Mapping``, ``list`` / ``tuple`` / ``Sequence`` (lists and
  tuples are interchangeable, as config files and ``--cfg-options`` produce
  either), ``Callable`` and plain classes, with their element types.
  Parameters without an annotation, with one that does not resolve, or with
  another kind (``TypeVar``, ...) are not checked.

Example:
    >>> @MODELS.register_module()
    ... @validate_arguments
    ... class MyHead(BaseModule): ...
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from lightly_glare.pretraining.fields import (
    Kind,
    describe_hint,
    read_hint,
    resolved_hints,
)

ClassT = TypeVar("ClassT", bound=type)
FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])

#: Attribute marking an ``__init__`` that already validates its arguments.
_VALIDATING: Final = "__lightly_glare_validates_arguments__"


class ConfigArgumentError(TypeError, ValueError):
    """A config gives a module an unknown argument or a value of the wrong type.

    Both a ``TypeError`` and a ``ValueError``: code that catches the
    ``ValueError`` a class raises for a bad argument value catches this too,
    whether or not the class was registered (and so validated) in this process.
    """


@dataclass(frozen=True)
class ArgumentSpec:
    """The arguments a class accepts.

    Attributes:
        positional: Names of ``__init__``'s positional parameters, in order
            (without ``self``).
        names: Every accepted keyword, including those a ``**kwargs``
            forwards to base classes.
        hints: Resolved annotations by name (unannotated ones absent).
    """

    positional: tuple[str, ...]
    names: tuple[str, ...]
    hints: dict[str, Any]


def argument_spec(cls: type | Callable[..., Any]) -> ArgumentSpec:
    """What ``cls(...)`` accepts, following ``**kwargs`` to the base classes.

    Args:
        cls: The class, or a builder function registered in its place.

    Returns:
        Its positional parameters, accepted keywords and their annotations.
    """
    positional: tuple[str, ...] | None = None
    names: list[str] = []
    hints: dict[str, Any] = {}
    owners = cls.__mro__ if isinstance(cls, type) else (cls,)
    for owner in owners:
        if isinstance(cls, type):
            if "__init__" not in vars(owner):
                continue
            if owner is object:
                break
            init = inspect.unwrap(vars(owner)["__init__"])
            parameters = list(inspect.signature(init).parameters.values())[1:]
        else:  # a function: every parameter counts
            init = inspect.unwrap(owner)
            parameters = list(inspect.signature(init).parameters.values())
        if positional is None:
            positional = tuple(
                p.name
                for p in parameters
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            )
        resolved = resolved_hints(init)
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.name not in names:
                names.append(parameter.name)
                if parameter.name in resolved:
                    hints[parameter.name] = resolved[parameter.name]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return ArgumentSpec(positional or (), tuple(names), hints)


def _sequence_matches(value: Any, origin: type, args: tuple[Any, ...]) -> bool:
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
    elif isinstance(value, str | bytes) or not isinstance(value, origin):
        return False
    if origin is tuple and args and args[-1] is not Ellipsis:
        return len(value) == len(args) and all(
            matches(item, arg) for item, arg in zip(value, args, strict=True)
        )
    return not args or all(matches(item, args[0]) for item in value)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (see the module docstring).

    The hint is read by :func:`~lightly_glare.pretraining.fields.read_hint`,
    the reader the command lines use too.

    Args:
        value: A config value.
        hint: A resolved annotation.

    Returns:
        False only when the annotation is understood and ``value`` violates it.
    """
    read = read_hint(hint)
    kind, args = read.kind, read.args
    if kind is Kind.NONE:
        return value is None
    if kind is Kind.UNION:
        return any(matches(value, arg) for arg in args)
    if kind is Kind.LITERAL:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if kind is Kind.FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is Kind.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Kind.CALLABLE:
        return callable(value)
    if kind is Kind.MAPPING:
        if not isinstance(value, Mapping):
            return False
        return len(args) != 2 or all(
            matches(key, args[0]) and matches(item, args[1])
            for key, item in value.items()
        )
    if kind is Kind.SEQUENCE:
        return _sequence_matches(value, read.origin, args)
    if kind in (Kind.BOOL, Kind.CLASS):
        try:
            return isinstance(value, read.origin)
        except TypeError:  # a generic alias isinstance cannot check
            return True
    return True  # Any, TypeVar, ForwardRef, ...: not checked


def check_arguments(
    module: str, spec: ArgumentSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Checks keyword names and argument types against ``spec``.

    Args:
        module: Name used in error messages, e.g. ``'GlareViT'``.
        spec: What the module accepts (:func:`argument_spec`).
        args: Positional arguments (checked against the positional parameters).
        kwargs: Keyword arguments.

    Raises:
        ConfigArgumentError: A key is not accepted (the message suggests the
            closest valid key and lists them all) or a value does not match its
            annotation (the message names the expected and received types).
    """
    for key in kwargs:
        if key not in spec.names:
            close = difflib.get_close_matches(key, spec.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = ", ".join(sorted(spec.names)) or "none"
            raise ConfigArgumentError(
                f"{module} got an unknown argument {key!r}{hint}. Valid arguments: "
                f"{valid}."
            )
    for key, value in (dict(zip(spec.positional, args, strict=False)) | kwargs).items():
        if key in spec.hints and not matches(value, spec.hints[key]):
            raise ConfigArgumentError(
                f"{module} argument {key!r} expects {describe_hint(spec.hints[key])}, "
                f"got {type(value).__name__} {value!r:.100}."
            )


def validate_function_arguments(function: FunctionT) -> FunctionT:
    """Decorator: a builder function checks its arguments like a class does.

    For builders registered under a class's name (:func:`validate_arguments`
    does the same for classes).

    Args:
        function: The builder.

    Returns:
        The validating builder (same name and signature).
    """
    spec = argument_spec(function)

    @functools.wraps(function)
    def validating(*args: Any, **kwargs: Any) -> Any:
        check_arguments(function.__name__, spec, args, kwargs)
        return function(*args, **kwargs)

    return validating  # type: ignore[return-value]


def validate_arguments(cls: ClassT) -> ClassT:
    """Class decorator: ``cls(...)`` checks its arguments before ``__init__``.

    The check (:func:`check_arguments`) runs however the class is built:
    directly or by an mmengine registry (``MODELS.build(cfg)``, the Runner's
    hooks, datasets and samplers). A subclass of a decorated class is checked
    by the inherited ``__init__`` (under its own name); decorating it too is
    harmless.

    Args:
        cls: The class.

    Returns:
        ``cls``, whose ``__init__`` now validates.
    """
    init = cls.__init__  # type: ignore[misc]
    if getattr(init, _VALIDATING, False):
        return cls
    spec = argument_spec(cls)

    @functools.wraps(init)
    def validating_init(self: Any, *args: Any, **kwargs: Any) -> None:
        check_arguments(type(self).__name__, spec, args, kwargs)
        init(self, *args, **kwargs)

    setattr(validating_init, _VALIDATING, True)
    cls.__init__ = validating_init  # type: ignore[misc]
    return cls
