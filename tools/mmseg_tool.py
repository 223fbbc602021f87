"""Run one of mmseg's own tools on lightly-glare's configs (get_flops, train, ...).

mmseg ships its tools inside its package (``mmseg/.mim/tools``). Run as they
are, two things stop them on our configs:

- a config that inherits ``_base_ = ['lightly_glare::glare_ade20k.py']``:
  mmengine resolves ``PACKAGE::`` bases only for its fixed list of OpenMMLab
  packages, and reads ``_base_`` before a config's ``custom_imports``, so
  mmseg's ``tools/train.py`` fails with ``ValueError: `_get_package_and_cfg_path`
  is used for get external package ...`` (or ``AssertionError: mmengine does
  not support to load lightly_glare config.`` for a name with a folder);
- ``analysis_tools/get_flops.py``, ``browse_dataset.py`` and others import
  ``mmseg.models`` / ``mmseg.utils`` first, which on mmcv-lite (no compiled
  ops) fails with ``ModuleNotFoundError: No module named 'mmcv._ext'``.

This command imports ``lightly_glare.openmmlab`` first (the ``lightly_glare::``
scope, the pure-PyTorch ``mmcv.ops`` fallback, the registered components),
then runs the named mmseg tool unchanged, with its own flags; a config
argument may be a shipped config name, as for every ``lightly-glare`` command::

    lightly-glare mmseg_tool train my_config.py --work-dir work_dirs/mine
    lightly-glare mmseg_tool get_flops glare_ade20k --shape 512
    lightly-glare mmseg_tool misc/print_config glare_ade20k
    lightly-glare mmseg_tool --list
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lightly_glare.cli import PROG, Tool, find_tool, find_tools, tool_arguments

NAME = "mmseg_tool"


def mmseg_tools_dir() -> Path:
    """mmseg's shipped tools tree (``mmseg/.mim/tools``).

    Raises:
        FileNotFoundError: mmseg is installed without it (an editable install
            of mmseg: its tools are then in its checkout's ``tools/``).
    """
    import mmseg

    tools = Path(mmseg.__file__).parent / ".mim" / "tools"
    if not tools.is_dir():
        raise FileNotFoundError(
            f"mmseg's tools are not in {tools} (mmseg installed in editable "
            "mode?). Run the tool from mmseg's checkout after `import "
            "lightly_glare.openmmlab`, or reinstall mmsegmentation with pip."
        )
    return tools


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {NAME}",
        description=(
            "Run one of mmseg's own tools (mmseg/.mim/tools: train, test, "
            "get_flops, browse_dataset, misc/print_config, ...) on lightly-glare's "
            "configs: lightly_glare.openmmlab is imported first (lightly_glare:: "
            "bases, pure-PyTorch mmcv.ops). The arguments after TOOL are the "
            "tool's own."
        ),
    )
    parser.add_argument(
        "tool",
        nargs="?",
        help="mmseg's tool: a file name (get_flops) or folder/name (misc/print_config)",
    )
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="the tool's arguments (its --help)"
    )
    parser.add_argument("--list", action="store_true", help="list mmseg's tools")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import lightly_glare.openmmlab  # noqa: F401  (scope, mmcv.ops fallback, registry)
    from lightly_glare.cli import run_tool

    root = mmseg_tools_dir()
    tools = find_tools(root)
    if args.list or not args.tool:
        paths = sorted({tool.path for tool in tools.values()})
        print(f"mmseg's tools in {root} (a file name alone runs the first found):")
        print("\n".join(f"  {p.relative_to(root).with_suffix('')}" for p in paths))
        return 0 if args.list else 2
    tool: Tool = find_tool(args.tool, tools)
    return run_tool(tool, tool_arguments(tool, args.args))


if __name__ == "__main__":
    sys.exit(main())
