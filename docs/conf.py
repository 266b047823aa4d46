"""Sphinx configuration of d2ext's documentation site: the Markdown pages of docs/ (MyST), the
repository's README.md, MODEL_ZOO.md, configs/README.md and datasets/README.md, and an API
reference generated from the docstrings of the public modules (docs/api/).

The source folder is the repository root, so that every relative link between those Markdown
files resolves in the site as it does on GitHub; this file is read with `-c docs`. Build with
`make docs` (warnings are errors); the site is written to docs/_build/html
(docs/_build/html/docs/index.html is the start page).
"""

import os
import sys

# The checkout's d2ext (and its compiled ops, when built in place) is the one documented.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

project = "d2ext"
author = "d2ext contributors"
copyright = "d2ext contributors"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "docs/index"
# The pages of the site; everything else in the repository is only linked to (a link to a config
# or a source file becomes a download of that file).
include_patterns = [
    "README.md",
    "MODEL_ZOO.md",
    "configs/README.md",
    "datasets/README.md",
    "docs/**.md",
]
exclude_patterns = ["docs/_build", ".venv", "build", "output"]

# MyST: GitHub's heading anchors (`page.md#a-heading`), so links that work on GitHub work here.
myst_heading_anchors = 6
myst_heading_slug_func = "github"
myst_enable_extensions = ["colon_fence"]

# autodoc: the members a module lists in __all__ (with or without a docstring), in source order;
# type hints in the descriptions rather than in the long signatures.
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# An override without a docstring of its own stays without one: the docstrings of Detectron2's
# and torch's base classes are written for their own documentation builds.
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "d2ext"
html_theme_options = {"description": "Dense-detector training recipes for Detectron2"}


# Docstrings cite papers as Detectron2's do, :paper:`ATSS`; the role shows the paper's title.
PAPERS = {
    "ATSS": "Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive "
    "Training Sample Selection (Zhang et al., CVPR 2020)",
    "AP-loss": "Towards Accurate One-Stage Object Detection with AP-Loss (Chen et al., CVPR 2019)",
    "GFL": "Generalized Focal Loss (Li et al., NeurIPS 2020)",
    "GFLv2": "Generalized Focal Loss V2 (Li et al., CVPR 2021)",
    "VFNet": "VarifocalNet: An IoU-aware Dense Object Detector (Zhang et al., CVPR 2021)",
    "Libra R-CNN": "Libra R-CNN: Towards Balanced Learning for Object Detection "
    "(Pang et al., CVPR 2019)",
}


def paper_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    from docutils import nodes

    title = PAPERS.get(text)
    if title is None:
        message = inliner.reporter.error(
            f"unknown paper {text!r} (docs/conf.py PAPERS)", line=lineno
        )
        return [inliner.problematic(rawtext, rawtext, message)], [message]
    return [nodes.emphasis(rawtext, title)], []


def setup(app):
    app.add_role("paper", paper_role)
