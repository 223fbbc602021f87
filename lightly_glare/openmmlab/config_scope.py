"""The ``lightly_glare::`` config scope: inherit the shipped configs from anywhere.

After ``import lightly_glare.openmmlab`` (which imports this module), a config
in any folder inherits a config shipped with lightly-glare by its name in the
shipped tree, as mmseg's own ``mmseg::`` configs::

    _base_ = ['lightly_glare::glare_ade20k.py']
    model = dict(backbone=dict(checkpoint='glare_vitb16.pth'))

``lightly_glare::segmentation/NAME.py`` and ``lightly_glare::_base_/...``
name the files of the subfolders. The names are those of
:func:`lightly_glare.cli.resolve_config` (``.py`` may be left out), resolved in
``lightly_glare/.mim/configs`` of an installed wheel or in ``mmseg_configs/``
of a source checkout. The inherited settings keep no registry scope, exactly
as when the file is inherited by a relative path.

Why a patch: mmengine 0.10.7 resolves ``pkg::path`` only for the packages of
its ``MODULE2PACKAGE`` table, only when ``path`` holds a ``/``
(``glare_ade20k.py`` would be refused), and finds the package through
``pkg_resources``, which points outside the checkout for an editable install.
This module wraps ``Config._get_cfg_path`` (the one place ``_base_`` entries
are resolved) for the ``lightly_glare::`` prefix only; every other entry goes
to mmengine unchanged.

mmengine reads ``_base_`` before it runs a config's ``custom_imports``, so the
scope must be registered before ``Config.fromfile``: ``lightly-glare`` and
``tools/*.py`` import ``lightly_glare.openmmlab`` first; a script of your own
does the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from mmengine.config import Config

from lightly_glare.cli import SCOPE, resolve_config

__all__ = ["SCOPE", "register_config_scope", "resolve_base"]

_PREFIX = f"{SCOPE}::"
_MARK = "_lightly_glare_config_scope"
_GetCfgPath = Callable[[str, str], tuple[str, str | None]]


def resolve_base(base: str, filename: str = "") -> str:
    """The shipped config file a ``lightly_glare::NAME`` base entry names.

    Args:
        base: The ``_base_`` entry, e.g. ``'lightly_glare::glare_ade20k.py'``.
        filename: The config that holds the entry (for the error message).

    Returns:
        The absolute path of the shipped config.

    Raises:
        FileNotFoundError: No such shipped config; the message names the
            config holding the entry and the closest shipped names.
    """
    name = base.removeprefix(_PREFIX)
    try:
        return str(resolve_config(_PREFIX + name))
    except FileNotFoundError as error:
        where = f"{filename}: " if filename else ""
        raise FileNotFoundError(f"{where}_base_ entry {base!r}: {error}") from None


def register_config_scope() -> None:
    """Makes ``Config.fromfile`` resolve ``lightly_glare::`` bases (idempotent)."""
    original = cast(_GetCfgPath, Config._get_cfg_path)
    if getattr(original, _MARK, False):
        return

    def _get_cfg_path(cfg_path: str, filename: str) -> tuple[str, str | None]:
        if cfg_path.startswith(_PREFIX):
            return resolve_base(cfg_path, filename), None
        return original(cfg_path, filename)

    setattr(_get_cfg_path, _MARK, True)
    _get_cfg_path.__doc__ = original.__doc__
    setattr(Config, "_get_cfg_path", staticmethod(_get_cfg_path))  # noqa: B010


register_config_scope()
