"""docs/troubleshooting.md covers every exception class lightly-glare defines."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import lightly_glare
from tests.conftest import ROOT


def defined_exceptions() -> dict[str, str]:
    """Exception classes defined in lightly_glare's modules: name -> module."""
    found: dict[str, str] = {}
    modules = pkgutil.walk_packages(lightly_glare.__path__, "lightly_glare.")
    for info in modules:
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[name] = module.__name__
    return found


def test_every_exception_class_has_a_row_on_the_troubleshooting_page() -> None:
    found = defined_exceptions()
    assert {"ResumeError", "CheckpointMismatchError", "ConfigArgumentError"} <= set(
        found
    )
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    rows = "\n".join(line for line in page.splitlines() if line.startswith("|"))
    missing = sorted(
        f"{name} ({module})" for name, module in found.items() if name not in rows
    )
    assert not missing, (
        "exception classes without a message row in docs/troubleshooting.md: "
        + ", ".join(missing)
    )
