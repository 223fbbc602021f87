"""Files with one job each: small modules, short functions, no private imports.

Every module of ``lightly_glare/`` has at most :data:`MAX_MODULE_LINES` lines and
every function (methods and nested functions included) at most
:data:`MAX_FUNCTION_LINES`, docstring included. No file of the repository's
Python folders imports a private name (``_name``) of a ``lightly_glare``
module, or reads one from a ``lightly_glare`` module it imported: what another
module needs is public.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "lightly_glare"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: Folders whose Python files must not import private names of the library.
CHECKED_FOLDERS = ("lightly_glare", "benchmarks", "tools", "tests", "examples")

MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def is_library_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of ``lightly_glare``."""
    path = ROOT.joinpath(*dotted.split("."))
    return dotted.split(".")[0] == "lightly_glare" and (
        path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    )


def private_imports(path: Path) -> list[str]:
    """``module.name`` of every private library name ``path`` imports or reads."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    modules: set[str] = set()  # local names bound to library modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if not node.module.startswith("lightly_glare"):
                    continue
                if is_private(alias.name):
                    found.append(f"{node.module}.{alias.name}")
                elif is_library_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lightly_glare") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and is_private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=[relative(p) for p in MODULES])
def test_modules_and_functions_are_small(path: Path) -> None:
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{relative(path)}: {lines} lines"
    long = [
        f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1}"
        for node in functions(ast.parse(text))
        if node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{relative(path)}: functions over {MAX_FUNCTION_LINES} lines"


PYTHON_FILES = sorted(
    p
    for folder in CHECKED_FOLDERS
    for p in (ROOT / folder).rglob("*.py")
    if "__pycache__" not in p.parts
)


@pytest.mark.parametrize("path", PYTHON_FILES, ids=[relative(p) for p in PYTHON_FILES])
def test_no_private_names_of_other_modules(path: Path) -> None:
    assert not private_imports(path), relative(path)
