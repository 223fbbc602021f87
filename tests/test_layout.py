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
    "training": {"models", "loss", "transforms", "weights", "data", "precision"},
    "monitoring": {"loss", "training"},
    "run": {"data", "loss", "models", "monitoring", "precision", "training", "weights"},
    "evaluation": {"models", "data"},
    "visualization": {"models"},
    "cli": {"pretrain_cli"},  # imported when `lightly-glare pretrain` runs
    "pretrain_cli": {"run", "training", "models"},
    "argument_types": {"models"},
    "openmmlab": {
        "precision",
        "models",
        "loss",
        "transforms",
        "weights",
        "data",
        "training",
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
