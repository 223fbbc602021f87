"""The folder map of docs/ARCHITECTURE.md holds: what may import what.

Every ``import`` of every module of ``lightly_glare/`` is read from its syntax
tree (imports under ``if TYPE_CHECKING:`` included, imports inside functions
too), so a rule broken anywhere in a file fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "lightly_glare"
OPENMMLAB = {"mmengine", "mmcv", "mmseg"}
#: Subpackage (or top-level module) -> the other parts of lightly_glare it may
#: import (docs/ARCHITECTURE.md, "Architecture").
ALLOWED: dict[str, set[str]] = {
    "models": {"loss", "weights"},  # glare_output; weights at call time / typing
    "loss": set(),  # the lowest part: models import its output type
    "transforms": {"models"},
    "weights": {"models", "data_preparation"},
    "data": set(),
    "data_preparation": {"data"},
    "precision": set(),
    "pretraining": {"models", "loss", "transforms", "weights", "data", "precision"},
    "evaluation": {"models", "data"},
    "visualization": {"models"},
    "cli": {"pretraining"},  # pretraining.cli, when `lightly-glare pretrain` runs
    "argument_types": {"pretraining"},  # the fields' parsers
    "openmmlab": {
        "models",
        "loss",
        "transforms",
        "weights",
        "data",
        "pretraining",
        "cli",
    },
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize(
    "path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES]
)
def test_module_imports_follow_the_map(path: Path) -> None:
    part = part_of(path)
    if part == "__init__":
        return
    assert part in ALLOWED, f"{part} is missing from the map (docs/ARCHITECTURE.md)"
    # Command-line code belongs in tools/ (argparse.Namespace may be unpickled).
    assert "ArgumentParser" not in path.read_text(), path
    for name in imported_modules(path):
        top, _, rest = name.partition(".")
        assert top != "tools", f"{path}: the library never imports tools/ ({name})"
        if top in OPENMMLAB:
            assert part == "openmmlab", f"{path} imports {name}"
        if top == "lightly_glare" and rest:
            other = rest.split(".")[0]
            if other != part:
                assert other in ALLOWED[part], f"{path} ({part}) imports {name}"


def test_the_map_names_every_folder() -> None:
    parts = {part_of(p) for p in MODULES} - {"__init__"}
    assert parts == set(ALLOWED)
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for part in parts:
        entry = f"  {part}/" if (PACKAGE / part).is_dir() else f"  {part}.py"
        assert entry in text, entry


def _calls_and_definitions(path: Path) -> tuple[set[str], set[str]]:
    """Names called and module-level functions defined in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    return called, defined


def test_one_public_pretrain_and_one_builder_of_the_model() -> None:
    """lightly_glare.pretrain is the only ``pretrain``; GLARE is built in one place."""
    pretrains, builders = [], []
    for path in MODULES:
        called, defined = _calls_and_definitions(path)
        name = str(path.relative_to(ROOT))
        if "pretrain" in defined or path.stem == "pretrain":
            pretrains.append(name)
        if "GLARE" in called:
            builders.append(name)
    assert pretrains == ["lightly_glare/pretraining/run.py"]
    assert builders == ["lightly_glare/pretraining/job.py"]
