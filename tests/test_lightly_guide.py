"""docs/lightly.md's diff, applied to the real text of lightly's DINO example.

The guide shows only the lines that change; every other line of lightly's
``examples/pytorch/dino.py`` stays in the user's program. So the diff's removed
and context lines must be lines of the example, in its order, and what the
program keeps must work on GLARE: lightly's example calls
``model.student_head.cancel_last_layer_gradients(current_epoch=epoch)``, which
a guide-following program keeps.

The example's text is a copy (``tests/upstream/``, see its README);
``LIGHTLY_DINO_EXAMPLE=PATH`` checks the guide against another one.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import pytest

from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE, GlareProjectionHead
from tests.conftest import ROOT, make_vit

GUIDE = ROOT / "docs" / "lightly.md"
EXAMPLE = ROOT / "tests" / "upstream" / "lightly_examples_pytorch_dino.py.txt"
#: A removed line of the guide standing for the example's lines up to the next
#: removed or context line.
ELISION = "..."


def guide_diff() -> list[str]:
    """The lines of the guide's ```diff block."""
    blocks = re.findall(r"```diff\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/lightly.md has one diff block"
    return blocks[0].splitlines()


def example_lines() -> list[str]:
    path = Path(os.environ.get("LIGHTLY_DINO_EXAMPLE", EXAMPLE))
    return path.read_text().splitlines()


def apply(diff: list[str], example: list[str]) -> list[str]:
    """The program a user gets by changing the example as ``diff`` says.

    Each removed or context line is matched, by its stripped text, to the next
    such line of the example; the example's lines in between stay (a removed
    ``...`` removes them instead). Added lines go where they stand.

    Raises:
        AssertionError: A removed or context line that the example does not
            have (there, in that order).
    """
    result: list[str] = []
    position = 0
    elide = False
    for line in diff:
        if not line:  # a blank line between the diff's parts
            continue
        sign, text = line[:1], line[1:]
        if sign == "+":
            result.append(text)
            continue
        assert sign in (" ", "-"), f"not a diff line: {line!r}"
        if sign == "-" and text.strip() == ELISION:
            elide = True
            continue
        wanted = text.strip()
        found = next(
            (i for i in range(position, len(example)) if example[i].strip() == wanted),
            None,
        )
        assert found is not None, (
            f"docs/lightly.md: {line!r} is not a line of lightly's example "
            f"(after line {position}); the guide no longer fits its text"
        )
        assert example[found] == text, (
            f"docs/lightly.md: {line!r} has another indentation in the example: "
            f"{example[found]!r}"
        )
        if not elide:
            result.extend(example[position:found])
        elide = False
        if sign == " ":
            result.append(example[found])
        position = found + 1
    result.extend(example[position:])
    return result


def attribute_chains(tree: ast.AST, root: str) -> set[tuple[str, ...]]:
    """Every ``root.a.b...`` the program reads (e.g. ``('student_head',
    'cancel_last_layer_gradients')``)."""
    chains: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        current: Any = node
        while isinstance(current, ast.Attribute):
            names.append(current.attr)
            current = current.value
        if names and isinstance(current, ast.Name) and current.id == root:
            chains.add(tuple(reversed(names)))
    return chains


def test_the_guides_removed_and_context_lines_are_the_examples() -> None:
    program = apply(guide_diff(), example_lines())
    assert any("GlareLoss()" in line for line in program)
    assert not any("DINOLoss(" in line for line in program)
    assert not any(line.startswith("criterion = DINOLoss") for line in program)


def test_the_changed_example_compiles_and_calls_only_what_glare_has() -> None:
    program = "\n".join(apply(guide_diff(), example_lines())) + "\n"
    tree = ast.parse(program)  # indentation of the added lines included
    compile(tree, "dino_glare.py", "exec")
    # The program keeps lightly's freeze of the last layer: a real call.
    assert ("student_head", "cancel_last_layer_gradients") in attribute_chains(
        tree, "model"
    )
    vit = make_vit()
    criterion = GlareLoss(output_dim=64)
    objects: dict[str, object] = {
        "model": GLARE(
            vit,
            head=GlareProjectionHead(vit.embed_dim, output_dim=64, freeze_last_layer=1),
            terms=criterion.active_terms,
        ),
        "criterion": criterion,
    }
    for name, value in objects.items():
        for chain in attribute_chains(tree, name):
            target: object = value
            for attribute in chain:
                assert hasattr(target, attribute), (
                    f"the changed example reads {name}.{'.'.join(chain)}, which "
                    f"{type(target).__name__} lacks"
                )
                target = getattr(target, attribute)


def test_a_guide_line_that_the_example_lacks_is_named() -> None:
    diff = [*guide_diff(), "-criterion = DINOLoss(output_dim=2048)"]
    with pytest.raises(AssertionError, match="is not a line of lightly's example"):
        apply(diff, example_lines())
