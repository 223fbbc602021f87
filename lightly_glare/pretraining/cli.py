"""``lightly-glare pretrain KEY=VALUE ...``: :func:`lightly_glare.pretrain`, a command.

The keys are the Python argument names, the values are converted to the
argument's type by the fields' one reader (:mod:`~lightly_glare.pretraining.fields`):
``true``/``false`` for booleans, ``none`` for an optional value, ``all`` for
every valid patch (``local_patches_per_view=all``), ``0,2,5`` for a list,
``weights.TERM=W`` for one term weight::

    lightly-glare pretrain out=runs/vits data=images
        checkpoint=dino_deitsmall16_pretrain.pth model=vit_small_patch16_224
        steps=300 batch_size=64 weights.regional=0.5
    lightly-glare pretrain out=runs/vits data=images checkpoint=... model=...
        resume=true
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightly_glare.pretraining.fields import (
    KeyValueError,
    Kind,
    TypedField,
    convert,
    dataclass_fields,
    parse_field,
    read_hint,
    signature_fields,
    typed_as,
)
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.run import OPTIONS, pretrain

PROG = "lightly-glare pretrain"
#: Arguments of :func:`~lightly_glare.pretraining.run.pretrain` that are not
#: command keys.
NOT_KEYS = ("log", "callbacks", "options")
__all__ = ["KeyValueError", "command_keys", "main", "parse", "usage"]


def command_keys() -> dict[str, TypedField]:
    """The keys of the command: :func:`pretrain`'s arguments and options.

    Returns:
        Key name to its typed field, in :func:`pretrain`'s order, then the
        :class:`~lightly_glare.pretraining.job.FolderPretraining` options.
    """
    return signature_fields(pretrain, NOT_KEYS) | dataclass_fields(
        FolderPretraining, OPTIONS
    )


def parse(argv: Sequence[str], keys: Mapping[str, TypedField]) -> dict[str, Any]:
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
            read = read_hint(key.hint)
            if read.kind is not Kind.MAPPING or len(read.args) != 2:
                raise KeyValueError(f"{name}: {base} is not a mapping.")
            value_type = read.args[1]
            entries = kwargs.setdefault(base, {})
            if sub in entries:
                raise KeyValueError(f"{name} is given twice.")
            entries[sub] = convert(text, value_type, name)
            continue
        if base in kwargs:
            raise KeyValueError(f"{base} is given twice.")
        kwargs[base] = parse_field(key, text)
    missing = [k.name for k in keys.values() if k.required and k.name not in kwargs]
    if missing:
        raise KeyValueError(
            f"Missing {', '.join(f'{name}=...' for name in missing)}; `{PROG} "
            "--help` lists the keys."
        )
    return kwargs


def usage(keys: Mapping[str, TypedField]) -> str:
    """The text of ``lightly-glare pretrain --help``."""
    lines = [
        f"usage: {PROG} out=DIR data=DIR checkpoint=FILE model=TIMM_NAME "
        "[KEY=VALUE ...]",
        "",
        "GLARE continual pre-training of a checkpoint on a folder of images",
        "(lightly_glare.pretrain; help(lightly_glare.pretrain) and, for the options,",
        "help(lightly_glare.pretraining.FolderPretraining) describe every key).",
        "Writes checkpoint.pth (resume=true continues it), metrics.jsonl,",
        "tensorboard/, losses.png, adapted_backbone.pth, timm_vit.pth, adapters.pth.",
        "A refused input ends with one line and exit status 1; --debug (or",
        "LIGHTLY_GLARE_DEBUG=1) shows the traceback.",
        "",
        "keys:",
    ]
    width = max(len(name) for name in keys) + 2
    for key in keys.values():
        default = "required" if key.required else f"default {key.default!r}"
        lines.append(f"  {key.name:<{width}}{typed_as(key):<30}{default}")
    lines.append(f"  {'weights.TERM':<{width}}{'float':<30}one term's weight")
    return "\n".join(lines)


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
