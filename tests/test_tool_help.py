"""``--help`` of every command-line entry point prints its usage and exits 0.

The entry points are discovered, not listed: every script under ``tools/`` with
a ``__main__`` block, every example that uses argparse and every console script
of ``pyproject.toml``. An argparse help string with a bare ``%`` (argparse needs
``%%``) only fails when the help is formatted, i.e. on ``--help``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT

MAIN_BLOCK = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)
#: The ``[project.scripts]`` table and its ``name = "module:function"`` entries
#: (read without tomllib, which Python 3.10 lacks).
SCRIPTS_TABLE = re.compile(r"^\[project\.scripts\]$(.*?)(?=^\[|\Z)", re.M | re.S)
SCRIPT_ENTRY = re.compile(r"""^([\w.-]+)\s*=\s*["']([\w.]+):(\w+)["']""", re.M)
TIMEOUT_S = 300


def console_scripts() -> dict[str, tuple[str, str]]:
    """``[project.scripts]`` of pyproject.toml: name -> (module, function)."""
    table = SCRIPTS_TABLE.search((ROOT / "pyproject.toml").read_text())
    if table is None:
        return {}
    entries = SCRIPT_ENTRY.findall(table[1])
    assert entries, "[project.scripts] has no `name = 'module:function'` entry"
    return {name: (module, function) for name, module, function in entries}


def help_commands() -> dict[str, list[str]]:
    """The ``--help`` command line of every entry point, by name."""
    commands: dict[str, list[str]] = {}
    scripts = [
        path
        for path in sorted((ROOT / "tools").rglob("*.py"))
        if MAIN_BLOCK.search(path.read_text())
    ] + [
        path
        for path in sorted((ROOT / "examples").rglob("*.py"))
        if "argparse" in path.read_text()
    ]
    for path in scripts:
        name = path.relative_to(ROOT).as_posix()
        commands[name] = [sys.executable, name, "--help"]
    for name, (module, function) in console_scripts().items():
        # What the installed console script runs, without needing it installed.
        code = (
            f"import sys; from {module} import {function}; "
            f"sys.argv[0] = {name!r}; sys.exit({function}())"
        )
        commands[name] = [sys.executable, "-c", code, "--help"]
    return commands


def run_help(command: list[str]) -> subprocess.CompletedProcess[str]:
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.mark.slow
def test_every_entry_point_prints_its_help() -> None:
    commands = help_commands()
    # Discovery works: a tool and an example are found.
    assert {
        "tools/experiments/segmentation_ablation.py",
        "examples/pytorch/glare.py",
    } <= set(commands)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        outcomes = pool.map(run_help, commands.values())
        results = dict(zip(commands, outcomes, strict=True))
    failures = [
        f"{name}: exit {result.returncode}\n{result.stderr[-1500:]}"
        for name, result in results.items()
        if result.returncode != 0 or "usage:" not in result.stdout
    ]
    assert not failures, "\n\n".join(failures)
