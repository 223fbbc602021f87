"""``lightly-glare pretrain KEY=VALUE ...``: :func:`lightly_glare.pretrain`, a command.

The keys are the Python argument names, the values are converted to the
argument's type (``true``/``false`` for booleans, ``none`` for an optional
value, ``0,2,5`` for a list, ``weights.TERM=W`` for one term weight)::

    lightly-glare pretrain out=runs/vits data=images
        checkpoint=dino_deitsmall16_pretrain.pth model=vit_small_patch16_224
        steps=300 batch_size=64 weights.regional=0.5
    lightly-glare pretrain out=runs/vits data=images checkpoint=... model=...
        resume=true
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.run import OPTIONS, pretrain

PROG = "lightly-glare pretrain"
#: Arguments of :func:`~lightly_glare.pretraining.run.pretrain` that are not
#: command keys.
NOT_KEYS = ("log", "callbacks", "options")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class KeyValueError(ValueError):
    """A ``key=value`` argument that is malformed, unknown or of a wrong type."""


@dataclass(frozen=True)
class Key:
    """A command key.

    Attributes:
        name: The Python argument name.
        hint: Its type annotation.
        default: Its default (``inspect.Parameter.empty``: required).
    """

    name: str
    hint: Any
    default: Any

    @property
    def required(self) -> bool:
        """Whether the key must be given."""
        return self.default is inspect.Parameter.empty


def command_keys() -> dict[str, Key]:
    """The keys of the command: :func:`pretrain`'s arguments and options.

    Returns:
        Key name to :class:`Key`, in :func:`pretrain`'s order, then the
        :class:`~lightly_glare.pretraining.job.FolderPretraining` options.
    """
    hints = typing.get_type_hints(pretrain)
    keys = {
        name: Key(name, hints[name], parameter.default)
        for name, parameter in inspect.signature(pretrain).parameters.items()
        if name not in NOT_KEYS
    }
    job_hints = typing.get_type_hints(FolderPretraining)
    for field in fields(FolderPretraining):
        if field.name in OPTIONS:
            default = field.default
            if field.default_factory is not MISSING:
                default = field.default_factory()
            keys[field.name] = Key(field.name, job_hints[field.name], default)
    return keys


def convert(text: str, hint: Any, key: str) -> Any:
    """``text`` as a value of type ``hint``.

    Args:
        text: The value as typed.
        hint: The argument's annotation (``int``, ``bool | None``,
            ``str | Path``, ``Sequence[int] | None``, ...).
        key: The key, for the message.

    Returns:
        The converted value.

    Raises:
        KeyValueError: ``text`` is not of the type; the message names the key,
            the value and the type.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(text, option, key)
            except KeyValueError as error:
                errors.append(str(error))
        raise KeyValueError(errors[0])
    if hint is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise KeyValueError(f"{key}={text}: expected true or false.")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise KeyValueError(f"{key}={text}: expected {hint.__name__}.") from None
    if origin in (Sequence, list, tuple) and args:
        return [convert(item, args[0], key) for item in text.split(",") if item]
    if hint in (str, Path, os.PathLike) or origin is os.PathLike:
        return text
    raise KeyValueError(f"{key}={text}: a {hint} cannot be given on the command line.")


def parse(argv: Sequence[str], keys: Mapping[str, Key]) -> dict[str, Any]:
    """The keyword arguments of :func:`pretrain` from ``key=value`` arguments.

    ``KEY.SUB=V`` sets one entry of a mapping key (``weights.regional=0``).

    Args:
        argv: The arguments after ``pretrain``.
        keys: The command's keys (:func:`command_keys`).

    Returns:
        Keyword arguments, each converted to its key's type.

    Raises:
        KeyValueError: An argument without ``=``, an unknown or repeated key
            (the closest key is named), a value of a wrong type, or a missing
            required key.
    """
    kwargs: dict[str, Any] = {}
    for arg in argv:
        name, sep, text = arg.partition("=")
        if not sep or not name:
            raise KeyValueError(
                f"{arg!r} is not key=value (e.g. steps=300); `{PROG} --help` "
                "lists the keys."
            )
        base, dot, sub = name.partition(".")
        if base not in keys:
            close = difflib.get_close_matches(base, list(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyValueError(f"Unknown key {base!r}{hint}; `{PROG} --help`.")
        key = keys[base]
        if dot:
            if typing.get_origin(key.hint) is not Mapping:
                raise KeyValueError(f"{name}: {base} is not a mapping.")
            value_type = typing.get_args(key.hint)[1]
            entries = kwargs.setdefault(base, {})
            if sub in entries:
                raise KeyValueError(f"{name} is given twice.")
            entries[sub] = convert(text, value_type, name)
            continue
        if base in kwargs:
            raise KeyValueError(f"{base} is given twice.")
        kwargs[base] = convert(text, key.hint, base)
    missing = [k.name for k in keys.values() if k.required and k.name not in kwargs]
    if missing:
        raise KeyValueError(
            f"Missing {', '.join(f'{name}=...' for name in missing)}; `{PROG} "
            "--help` lists the keys."
        )
    return kwargs


def usage(keys: Mapping[str, Key]) -> str:
    """The text of ``lightly-glare pretrain --help``."""
    lines = [
        f"usage: {PROG} out=DIR data=DIR checkpoint=FILE model=TIMM_NAME "
        "[KEY=VALUE ...]",
        "",
        "GLARE continual pre-training of a checkpoint on a folder of images",
        "(lightly_glare.pretrain; help(lightly_glare.pretrain) describes every key).",
        "Writes checkpoint.pth (resume=true continues it), metrics.jsonl,",
        "tensorboard/, losses.png, adapted_backbone.pth, timm_vit.pth, adapters.pth.",
        "A refused input ends with one line and exit status 1; --debug (or",
        "LIGHTLY_GLARE_DEBUG=1) shows the traceback.",
        "",
        "keys:",
    ]
    for key in keys.values():
        default = "required" if key.required else f"default {key.default!r}"
        lines.append(f"  {key.name:<20}{_type_name(key.hint):<30}{default}")
    lines.append(f"  {'weights.TERM':<20}{'float':<30}one term's weight")
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    text = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", hint)
    for module in ("typing.", "collections.abc.", "pathlib."):
        text = str(text).replace(module, "")
    return str(text)


def main(
    argv: Sequence[str] | None = None,
    run: Callable[..., Any] = pretrain,
) -> int:
    """Runs ``lightly-glare pretrain``.

    Args:
        argv: The arguments after ``pretrain``. Defaults to ``sys.argv[2:]``.
        run: The function called with the parsed keywords.

    Returns:
        0 after a finished run; 2 for bad arguments (the message names the
        key).

    Raises:
        Exception: What ``run`` raises (a refused input, a diverged loss, a
            failed write); ``lightly-glare`` prints it as one line and exits
            with 1 (:func:`lightly_glare.cli.report_errors`).
    """
    args = list(sys.argv[2:] if argv is None else argv)
    keys = command_keys()
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(usage(keys))
        return 0
    try:
        kwargs = parse(args, keys)
    except KeyValueError as error:
        print(f"{PROG}: Error: {error}", file=sys.stderr)
        return 2
    run(**kwargs)
    return 0
