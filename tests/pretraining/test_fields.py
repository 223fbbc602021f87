"""lightly_glare.pretraining.fields: one reader of type hints for every front end."""

import argparse
import ast
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from lightly_glare.openmmlab.config_validation import matches
from lightly_glare.pretraining import cli as pretrain_cli
from lightly_glare.pretraining.fields import (
    KeyValueError,
    Kind,
    dataclass_fields,
    parse_field,
    read_hint,
)
from lightly_glare.pretraining.job import FolderPretraining
from tests.conftest import ROOT, load_tool


@pytest.mark.parametrize(
    ("hint", "kind"),
    [
        (Any, Kind.ANY),
        (None, Kind.NONE),
        (int | None, Kind.UNION),
        (Literal["a", "b"], Kind.LITERAL),
        (bool, Kind.BOOL),
        (int, Kind.INT),
        (float, Kind.FLOAT),
        (Callable[[int], int], Kind.CALLABLE),
        (Mapping[str, float], Kind.MAPPING),
        (Sequence[int], Kind.SEQUENCE),
        (tuple[int, int], Kind.SEQUENCE),
        (str, Kind.CLASS),
        (Path, Kind.CLASS),
        (os.PathLike[str], Kind.CLASS),
    ],
)
def test_read_hint_kinds(hint: Any, kind: Kind) -> None:
    assert read_hint(hint).kind is kind


def test_both_command_lines_parse_a_field_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The key=value command and the tools' argparse read the same fields."""
    keys = pretrain_cli.command_keys()
    tool = load_tool("experiments/pretraining_args")
    parser = argparse.ArgumentParser()
    tool.add_pretraining_arguments(parser)
    for name, text, value in (
        ("local_patches_per_view", "all", None),
        ("local_patches_per_view", "3", 3),
        ("adapter_bottleneck", "16", 16),
        ("student_drop_path", "0.5", 0.5),
        ("base_lr", "1e-3", 1e-3),
        ("num_regions", "none", None),
    ):
        flag = "--" + name.replace("_", "-")
        assert parse_field(keys[name], text) == value, name
        assert getattr(parser.parse_args([flag, text]), name) == value, name
    for name, text, message in (
        ("local_patches_per_view", "none", "expected a positive integer or 'all'"),
        ("adapter_bottleneck", "0", "expected a positive integer, got 0"),
        ("student_drop_path", "1", "expected a number in [0, 1), got 1"),
        ("steps", "x", "expected int"),
    ):
        with pytest.raises(KeyValueError) as caught:
            parse_field(keys[name], text)
        assert str(caught.value).startswith(f"{name}={text}: {message}")
        with pytest.raises(SystemExit):
            parser.parse_args(["--" + name.replace("_", "-"), text])
        assert (
            f"argument --{name.replace('_', '-')}: {message}" in capsys.readouterr().err
        )


def test_the_tools_defaults_are_the_fields_defaults() -> None:
    tool = load_tool("experiments/pretraining_args")
    parser = argparse.ArgumentParser()
    tool.add_pretraining_arguments(parser)
    args = parser.parse_args([])
    fields = dataclass_fields(FolderPretraining, tool.PRETRAINING_OPTIONS)
    for name, field in fields.items():
        expected = tool.SHORT_SCHEDULE.get(name, field.default)
        assert getattr(args, name) == expected, name


def test_configs_and_the_command_line_check_a_field_alike() -> None:
    """A value the key=value command produces passes the config check."""
    keys = pretrain_cli.command_keys()
    for name, text in (("num_regions", "none"), ("indices", "0,2"), ("amp", "on")):
        assert matches(parse_field(keys[name], text), keys[name].hint), name
    assert not matches(True, int) and not matches("3", int | None)


def test_one_type_hint_reader() -> None:
    """Only fields.py reads type hints (get_type_hints / get_origin / get_args)."""
    readers = ("get_type_hints", "get_origin", "get_args")
    found = []
    for path in (ROOT / "lightly_glare").rglob("*.py"):
        if path.name == "fields.py" or path.name == "block_kernels.py":
            continue  # block_kernels: a Literal's values as a constant
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "attr", None) or getattr(node, "id", None)
            if name in readers:
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert not found
