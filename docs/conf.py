"""Sphinx configuration of the lcnumba documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (warnings are
errors; ``tests/test_docs.py`` runs exactly that). Pages are reStructuredText
or Markdown (MyST); the API reference comes from the numpydoc docstrings;
every code example is included from ``tests/doc_examples/``, where pytest runs it.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's lcnumba, also when it is not installed

import lcnumba  # noqa: E402

project = "lcnumba"
author = "the lcnumba developers"
copyright = "the lcnumba developers"
version = release = lcnumba.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "README.md"]
templates_path = []

# autodoc + numpydoc: signatures from the code, parameters from the docstrings
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"lcnumba {release}"
html_static_path = []
html_theme_options = {"description": "Numba kernels for shared, tiled and locally connected layers"}

# Pages written alongside the code may be there or not: the C API page (capi.md) and the
# performance page (performance.md). The index names them as "capi" and "performance";
# without capi.md the short page capi_header.rst points at the header instead, and without
# performance.md its entry is dropped.
_OPTIONAL = {"capi": "capi_header", "performance": None}


def _present(name):
    return any((HERE / f"{name}{suffix}").exists() for suffix in (".md", ".rst"))


def _resolve_optional_pages(app, docname, source):
    if docname != "index":
        return
    text = source[0]
    for name, fallback in _OPTIONAL.items():
        if not _present(name):
            text = text.replace(f"   {name}\n", f"   {fallback}\n" if fallback else "")
    source[0] = text


if _present("capi"):
    exclude_patterns.append("capi_header.rst")


def _reread_index(app, env, added, changed, removed):
    return ["index"]  # an incremental build must see an optional page appear or go


def setup(app):
    app.connect("source-read", _resolve_optional_pages)
    app.connect("env-get-outdated", _reread_index)
