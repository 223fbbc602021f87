"""The ``lightly-glare`` command: runs the tools shipped with the package.

A wheel of lightly-glare carries the repository's ``mmseg_configs/`` tree as
``lightly_glare/.mim/configs`` and its ``tools/`` tree as
``lightly_glare/.mim/tools`` (mmseg's layout, copied by ``setup.py`` at build
time). In a source checkout (editable install) both are read from the checkout
itself. ``lightly-glare COMMAND ARGS...`` runs ``tools/COMMAND.py`` (or
``tools/*/COMMAND.py``, or ``COMMAND.sh``) with ``ARGS``, exactly as
``python tools/COMMAND.py ARGS`` would; the tool parses its own flags.

Every command that takes a config accepts a path or the name of a shipped
config (:func:`resolve_config`)::

    lightly-glare train glare_ade20k --work-dir work_dirs/ade
    lightly-glare test glare_ade20k work_dirs/ade/iter_160000.pth
    lightly-glare train segmentation/upernet_glare-vit-s16_mln_4xb4-160k_ade20k-512x512
    lightly-glare export work_dirs/pre/iter_300.pth glare_vit.pth
    lightly-glare dist_train glare_ade20k 4 --amp
    lightly-glare get_flops glare_ade20k --shape 512
    lightly-glare configs            # the shipped config names
    lightly-glare pretrain out=run data=img checkpoint=a.pth model=vit_base_patch16_224

A command that fails ends with one line, ``lightly-glare COMMAND: Error: TYPE:
MESSAGE``, and exit status 1 (:func:`report_errors`); ``lightly-glare --debug
COMMAND ...`` or the environment variable ``LIGHTLY_GLARE_DEBUG=1`` shows the
traceback instead. Malformed arguments exit with status 2, as argparse does.

This module imports nothing heavy: ``lightly-glare --help`` is instant.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The package scope of the shipped configs in ``_base_`` (see
#: :mod:`lightly_glare.openmmlab.config_scope`) and on the command line.
SCOPE = "lightly_glare"
#: Short names of tools (``lightly-glare export`` runs export_backbone.py).
ALIASES = {"export": "export_backbone"}
#: Where the trees are in a source checkout, relative to the repository root.
CHECKOUT_TREES = {"configs": "mmseg_configs", "tools": "tools"}
PROG = "lightly-glare"
#: The flag (before the command) and the environment variable that show the
#: traceback of a failed command instead of its one-line message.
DEBUG_FLAG = "--debug"
DEBUG_ENV = "LIGHTLY_GLARE_DEBUG"
#: A Python tool takes a config as its first positional argument when it
#: declares one named ``config`` (itself or through ``add_config_arguments``).
_PY_CONFIG_ARG = re.compile(
    r"add_argument\(\s*[\"']config[\"']|add_config_arguments\(", re.MULTILINE
)
#: A shell tool takes one when it reads ``CONFIG=$1``.
_SH_CONFIG_ARG = re.compile(r"^\s*CONFIG=\$\{?1\b", re.MULTILINE)


def shipped_dir(tree: str) -> Path:
    """The directory of a shipped tree: ``'configs'`` or ``'tools'``.

    Args:
        tree: ``'configs'`` (the repository's ``mmseg_configs/``) or ``'tools'``.

    Returns:
        The tree of the source checkout this package is imported from (an
        editable install: the files being edited, never a stale copy), else
        ``lightly_glare/.mim/<tree>`` of an installed wheel.

    Raises:
        ValueError: ``tree`` is not ``'configs'`` or ``'tools'``.
        FileNotFoundError: Neither exists (a broken installation).
    """
    if tree not in CHECKOUT_TREES:
        raise ValueError(f"tree must be one of {sorted(CHECKOUT_TREES)}, got {tree!r}")
    package = Path(__file__).resolve().parent
    checkout = package.parent
    source = checkout / CHECKOUT_TREES[tree]
    if source.is_dir() and (checkout / "pyproject.toml").is_file():
        return source
    installed = package / ".mim" / tree
    if installed.is_dir():
        return installed
    raise FileNotFoundError(
        f"lightly-glare's shipped {tree} are missing: neither {installed} "
        f"(wheel) nor {source} (source checkout) exists. Reinstall the package "
        "(pip install --force-reinstall lightly-glare, or pip install -e . in "
        "a checkout)."
    )


def shipped_configs(configs_dir: Path | None = None) -> list[str]:
    """Relative paths of the shipped configs, ``_base_`` pieces excluded.

    Args:
        configs_dir: The configs tree. Defaults to :func:`shipped_dir`
            ``('configs')``.

    Returns:
        Sorted POSIX paths relative to the tree, e.g. ``'glare_ade20k.py'``.
    """
    root = shipped_dir("configs") if configs_dir is None else configs_dir
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if "_base_" not in path.relative_to(root).parts
        and "__pycache__" not in path.parts
    )


def resolve_config(
    ref: str | os.PathLike[str], configs_dir: Path | None = None
) -> Path:
    """A config file from a path or from the name of a shipped config.

    Tried in order: an existing file ``ref``; then, inside the shipped configs
    (with an optional ``lightly_glare::`` or ``mmseg_configs/`` prefix removed
    and ``.py`` added when missing), the relative path (``glare_ade20k``,
    ``segmentation/xxx.py``, ``_base_/...``); then a file name found in exactly
    one folder of the tree (``xxx.py`` for ``segmentation/xxx.py``).

    Args:
        ref: A config path or a shipped config name.
        configs_dir: The configs tree. Defaults to :func:`shipped_dir`
            ``('configs')``.

    Returns:
        ``ref`` itself when it is a file, else the absolute shipped path.

    Raises:
        FileNotFoundError: Neither a file nor a shipped config; the message
            lists the closest shipped names.
    """
    path = Path(ref)
    if path.is_file():
        return path
    root = shipped_dir("configs") if configs_dir is None else configs_dir
    name = str(ref).replace(os.sep, "/")
    for prefix in ("./", f"{SCOPE}::", "mmseg_configs/"):
        name = name.removeprefix(prefix)
    if not name.endswith(".py"):
        name += ".py"
    candidate = root / name
    if name and candidate.is_file():
        return candidate.resolve()
    names = shipped_configs(root)
    if "/" not in name:
        found = [n for n in names if n.rsplit("/", 1)[-1] == name]
        if len(found) == 1:
            return (root / found[0]).resolve()
        if found:
            raise FileNotFoundError(
                f"Config {str(ref)!r} names several shipped configs: "
                f"{', '.join(found)}. Pass one of them."
            )
    close = _closest(name, names)
    hint = f" Closest shipped configs: {', '.join(close)}." if close else ""
    raise FileNotFoundError(
        f"Config {str(ref)!r} is neither a file nor a shipped config.{hint} "
        f"Pass a config path, or a name listed by `{PROG} configs`."
    )


def _closest(name: str, names: Sequence[str], count: int = 5) -> list[str]:
    """Shipped names closest to ``name``, by whole path and by file name."""
    by_path = difflib.get_close_matches(name, names, n=count, cutoff=0.5)
    stems = {n.rsplit("/", 1)[-1]: n for n in names}
    by_file = difflib.get_close_matches(
        name.rsplit("/", 1)[-1], list(stems), n=count, cutoff=0.5
    )
    merged = dict.fromkeys([*by_path, *(stems[s] for s in by_file)])
    return list(merged)[:count]


@dataclass(frozen=True)
class Tool:
    """A script of the shipped tools tree.

    Attributes:
        name: The command name (the file name without suffix).
        path: The script.
        summary: The first line of its docstring (or leading comment).
        takes_config: Whether its first positional argument is a config.
    """

    name: str
    path: Path
    summary: str
    takes_config: bool


def find_tools(tools_dir: Path | None = None) -> dict[str, Tool]:
    """The commands: every script under the tools tree, by name.

    A script is a ``*.py`` file with an ``if __name__ == "__main__"`` block, or
    a ``*.sh`` file, in the tree or one of its folders (files and folders
    starting with ``_`` are skipped). A name found in several folders is kept
    for the shallowest one; the others are reachable as ``folder/name``.

    Args:
        tools_dir: The tools tree. Defaults to :func:`shipped_dir`
            ``('tools')``.

    Returns:
        Command name to tool, sorted by name.
    """
    root = shipped_dir("tools") if tools_dir is None else tools_dir
    scripts = [
        p
        for p in sorted(root.rglob("*"), key=lambda p: (len(p.parts), str(p)))
        if p.suffix in (".py", ".sh")
        and p.is_file()
        and not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
    ]
    tools: dict[str, Tool] = {}
    for path in scripts:
        source = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".py":
            if "__main__" not in source:
                continue
            summary = _py_summary(source)
            takes_config = _PY_CONFIG_ARG.search(source) is not None
        else:
            summary = _sh_summary(source)
            takes_config = _SH_CONFIG_ARG.search(source) is not None
        tool = Tool(path.stem, path, summary, takes_config)
        for name in (path.stem, path.relative_to(root).with_suffix("").as_posix()):
            tools.setdefault(name, tool)
    return dict(sorted(tools.items()))


def _py_summary(source: str) -> str:
    try:
        docstring = ast.get_docstring(ast.parse(source)) or ""
    except SyntaxError:
        return ""
    return docstring.strip().split("\n", 1)[0].replace("``", "")


def _sh_summary(source: str) -> str:
    for line in source.splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            return line.lstrip("# ").strip()
    return ""


def usage(tools: dict[str, Tool]) -> str:
    """The text of ``lightly-glare --help``."""
    lines = [
        f"usage: {PROG} COMMAND [ARGS...]",
        "",
        "Runs a tool shipped with lightly-glare; `" + PROG + " COMMAND --help` "
        "shows its flags.",
        "CONFIG arguments take a path or a shipped config name: glare_ade20k, "
        "segmentation/NAME.py,",
        f"{SCOPE}::NAME.py (user configs inherit ours with "
        f"_base_ = ['{SCOPE}::glare_ade20k.py']).",
        f"A failed command prints one line and exits with 1; `{PROG} {DEBUG_FLAG} "
        f"COMMAND ...` (or {DEBUG_ENV}=1)",
        "shows the traceback.",
        "",
        "commands:",
    ]
    entries: dict[str, str] = {
        "configs": "List the shipped config names.",
        "pretrain": "GLARE on an image folder: out=DIR data=DIR checkpoint=FILE "
        "model=NAME [KEY=VALUE ...]",
    }
    for alias, target in ALIASES.items():
        if target in tools:
            entries[alias] = f"{tools[target].summary} (= {target})"
    for name, tool in tools.items():
        if name == tool.path.stem:  # not the folder/name duplicates
            entries[name] = tool.summary
    width = max(len(n) for n in entries) + 2
    lines += [f"  {name:<{width}}{text}".rstrip() for name, text in entries.items()]
    return "\n".join(lines)


def find_tool(command: str, tools: dict[str, Tool]) -> Tool:
    """The tool a command names (aliases and ``-`` for ``_`` accepted).

    Raises:
        SystemExit: Unknown command; the message lists the closest commands.
    """
    name = ALIASES.get(command, command)
    for candidate in (name, name.replace("-", "_")):
        if candidate in tools:
            return tools[candidate]
    names = sorted({*tools, *ALIASES, "configs"})
    close = difflib.get_close_matches(command, names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SystemExit(
        f"{PROG}: unknown command {command!r}.{hint} `{PROG} --help` lists them."
    )


def tool_arguments(tool: Tool, args: Sequence[str]) -> list[str]:
    """``args`` with config names replaced by the shipped config paths.

    Resolved by :func:`resolve_config`: the value of any ``--config`` option,
    and the config of a tool that takes one: its first argument (as in every
    documented command line), or, when options come first, the first later
    argument that names a config file or a shipped config (if none does, the
    arguments go to the tool unchanged and the tool reports the missing file).

    Args:
        tool: The tool the arguments are for.
        args: Its command line, without the command.

    Returns:
        The arguments to run the tool with.

    Raises:
        SystemExit: The first argument, or a ``--config`` value, is neither a
            file nor a shipped config (the message lists the closest names).
    """
    out = list(args)
    try:
        if tool.takes_config and out:
            if not out[0].startswith("-"):
                out[0] = str(resolve_config(out[0]))
            elif not {"-h", "--help"} & set(out):
                for i, arg in enumerate(out):
                    if arg == "--":
                        break
                    if arg.startswith("-"):
                        continue
                    try:
                        out[i] = str(resolve_config(arg))
                        break
                    except FileNotFoundError:
                        continue
        for i, arg in enumerate(out):
            if arg == "--config" and i + 1 < len(out):
                out[i + 1] = str(resolve_config(out[i + 1]))
            elif arg.startswith("--config="):
                out[i] = "--config=" + str(resolve_config(arg.partition("=")[2]))
    except FileNotFoundError as error:
        raise SystemExit(f"{PROG} {tool.name}: {error}") from None
    return out


def run_tool(tool: Tool, args: Sequence[str]) -> int:
    """Runs a tool as ``python TOOL ARGS`` (or ``bash TOOL ARGS``) would.

    A Python tool runs in this process (:func:`exec_main`) with its folder
    first on ``sys.path`` and ``sys.argv`` = ``['lightly-glare NAME', *args]``,
    so that its usage line shows the command; a shell tool runs in ``bash``
    with ``$PYTHON`` defaulting to this interpreter.

    Args:
        tool: The tool.
        args: Its command line, without the command.

    Returns:
        The exit status (a Python tool's ``SystemExit`` propagates).
    """
    if tool.path.suffix == ".sh":
        env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
        return subprocess.call(["bash", str(tool.path), *args], env=env)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [f"{PROG} {tool.name}", *args]
    sys.path.insert(0, str(tool.path.parent))
    try:
        exec_main(tool.path)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def exec_main(path: Path) -> None:
    """Executes a script as the ``__main__`` module, as ``runpy.run_path`` does.

    Unlike ``runpy.run_path``, leaves ``sys.argv[0]`` alone (runpy sets it to
    the script path, and argparse would show ``train.py`` as the program).
    """
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    code = compile(path.read_bytes(), str(path), "exec")
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def debug_requested(flag: bool = False) -> bool:
    """Whether a failed command shows its traceback.

    Args:
        flag: ``--debug`` was given.

    Returns:
        ``flag``, or the environment variable :data:`DEBUG_ENV` is set to a
        value other than ``''``, ``0``, ``false``, ``no`` or ``off``.
    """
    value = os.environ.get(DEBUG_ENV, "").strip().lower()
    return flag or value not in ("", "0", "false", "no", "off")


def report_errors(command: str, call: Callable[[], int], debug: bool = False) -> int:
    """Runs a command; an exception ends it as one line and exit status 1.

    Args:
        command: The command's name, for the message.
        call: Runs the command and returns its exit status.
        debug: Let exceptions propagate (their traceback is printed).

    Returns:
        The command's status; 1 after an exception (the line
        ``lightly-glare COMMAND: Error: TYPE: MESSAGE`` is printed on stderr);
        130 after Ctrl-C.
    """
    try:
        return call()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG} {command}: interrupted.", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(
            f"{PROG} {command}: Error: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightly-glare`` console script.

    ``lightly-glare [--debug] COMMAND ARGS...``: a failed command prints one
    line and exits with 1 (:func:`report_errors`) unless ``--debug`` (or
    :data:`DEBUG_ENV`) asks for the traceback.

    Args:
        argv: ``COMMAND ARGS...``. Defaults to ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    flag = bool(args) and args[0] == DEBUG_FLAG
    if flag:
        args = args[1:]
    if args and args[0] == "pretrain" and DEBUG_FLAG in args:  # key=value args
        args.remove(DEBUG_FLAG)
        flag = True
    debug = debug_requested(flag)
    command = args[0] if args else ""
    return report_errors(command, lambda: _dispatch(args), debug)


def _dispatch(args: list[str]) -> int:
    """Runs ``COMMAND ARGS...``."""
    tools = find_tools()
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(tools))
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "configs":
        print("\n".join(shipped_configs()))
        return 0
    if command == "pretrain":  # the library's one-call run, not a tool script
        from lightly_glare.pretraining.cli import main as pretrain_main

        return pretrain_main(rest)
    tool = find_tool(command, tools)
    return run_tool(tool, tool_arguments(tool, rest))


if __name__ == "__main__":
    sys.exit(main())
