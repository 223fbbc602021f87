"""Build hook: ships the configs and tools inside the package (mmseg's layout).

The metadata is in pyproject.toml. ``build_py`` copies the repository's
``mmseg_configs/`` tree to ``lightly_glare/.mim/configs`` and its ``tools/``
tree to ``lightly_glare/.mim/tools`` in the wheel, so that an installed
package holds them as real files (read by ``lightly-glare`` and by the
``lightly_glare::`` config scope). An editable install reads them from the
checkout instead (``lightly_glare.cli.shipped_dir``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: ``lightly_glare/.mim/<key>`` <- repository tree ``<value>``.
MIM_TREES = {"configs": "mmseg_configs", "tools": "tools"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".*")


class BuildPyWithMim(build_py):
    """``build_py`` that also copies the shipped trees into the package."""

    def run(self) -> None:
        """Builds the package, then copies the trees (not for editable installs)."""
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the checkout's own trees are used
        for name, source in MIM_TREES.items():
            target = Path(self.build_lib) / "lightly_glare" / ".mim" / name
            if target.exists():
                shutil.rmtree(target)  # no file of a renamed config survives
            shutil.copytree(ROOT / source, target, ignore=IGNORED)


setup(cmdclass={"build_py": BuildPyWithMim})
