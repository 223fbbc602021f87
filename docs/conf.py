"""Sphinx configuration of the lightly-glare documentation (``make docs``).

Built offline with warnings as errors. The pages are MyST markdown
(``docs/*.md``, also readable on their own in the repository; the README only
points to them). The API reference is generated from the docstrings (Google
style, napoleon).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "lightly-glare"
author = "lightly-glare developers"
copyright = "2026, lightly-glare developers"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
# The pages link to repository files (tools/, mmseg_configs/, ...) that
# are not pages of this site; those links stay plain links.
suppress_warnings = ["myst.xref_missing"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True

html_theme = "furo"
html_title = "lightly-glare"
