"""The documentation: it builds with warnings as errors, and it covers the API and the examples.

The examples shown in the pages are the test functions of ``tests/doc_examples/``
(between ``# magictoken.<name>.begin`` and ``.end`` markers), which pytest runs
like any other test; ``sphinx-build -W`` fails when a page includes a marker
that no longer exists.
"""

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lcnumba

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = Path(__file__).resolve().parent / "doc_examples"


def _missing_doc_tools():
    return [name for name in ("sphinx", "numpydoc", "myst_parser") if importlib.util.find_spec(name) is None]


def test_sphinx_build_without_warnings(tmp_path):
    missing = _missing_doc_tools()
    if missing:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)}): pip install -e '.[docs]'")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    html = tmp_path / "html"
    for page in ("index", "getting_started", "concepts", "demo", "dask", "api", "families/local_conv2d",
                 "derivations/conv", "derivations/max_pool", "derivations/netvlad"):
        assert (html / f"{page}.html").is_file(), page
    api = (html / "api.html").read_text(encoding="utf-8")
    for name in _public_functions():
        assert f'id="lcnumba.{name}"' in api, f"lcnumba.{name} has no entry in the built API reference"
    assert 'id="lcnumba.testing.gradcheck"' in api


def _public_functions():
    return sorted(name for name in dir(lcnumba)
                  if not name.startswith("_") and callable(getattr(lcnumba, name))
                  and not inspect.ismodule(getattr(lcnumba, name)))


def test_api_reference_lists_every_public_function():
    listed = set(re.findall(r"^\.\. autofunction:: lcnumba\.(\w+)$", (DOCS / "api.rst").read_text(), re.M))
    missing = sorted(set(_public_functions()) - listed)
    assert not missing, f"add these to docs/api.rst: {missing}"
    assert not listed - set(_public_functions()), "docs/api.rst lists names that lcnumba does not export"


def test_every_public_function_has_a_docstring():
    undocumented = [name for name in _public_functions() if not (inspect.getdoc(getattr(lcnumba, name)) or "").strip()]
    assert not undocumented, f"public functions without a docstring: {undocumented}"


def _tokens_in_examples():
    tokens = {}
    for path in EXAMPLES.glob("*.py"):
        for token in re.findall(r"# magictoken\.([\w.]+)\.begin", path.read_text()):
            tokens[token] = path.name
    return tokens


def test_every_doc_example_is_shown_in_a_page():
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*") if p.suffix in (".rst", ".md"))
    tokens = _tokens_in_examples()
    assert tokens
    orphans = [f"{token} ({name})" for token, name in tokens.items()
               if f":start-after: magictoken.{token}.begin" not in pages]
    assert not orphans, f"examples that no page shows: {orphans}"


_INCLUDE = re.compile(r"(?:^\.\. literalinclude:: |^```\{literalinclude\} )(\S+)\n((?:[ ]*:[\w-]+:.*\n)*)", re.M)


def test_every_included_example_exists_and_is_closed():
    """Each ``literalinclude`` of a page names a file that holds both of its markers.

    (``sphinx-build -W`` checks this too; this test also runs without Sphinx.) The included
    files are tests, or the Dask example that ``tests/test_dask.py`` runs, or the demo."""
    count = 0
    for page in DOCS.rglob("*"):
        if page.suffix not in (".rst", ".md") or "_build" in page.parts:
            continue
        for path, options in _INCLUDE.findall(page.read_text()):
            source = (page.parent / path).resolve()
            assert source.is_file(), f"{page.relative_to(ROOT)} includes {path}, which does not exist"
            text = source.read_text()
            for option in ("start-after", "end-before"):
                marker = re.search(rf":{option}: (.+)", options)
                if marker:
                    assert marker.group(1).strip() in text, f"{page.relative_to(ROOT)}: {marker.group(1)} not in {path}"
                    count += 1
            assert source.is_relative_to(ROOT / "tests") or source in (
                ROOT / "docs" / "examples" / "dask_netvlad.py", ROOT / "lcnumba" / "demo.py"), path
    assert count


def test_derivations_end_with_formula_kernel_and_test():
    for name in ("conv", "max_pool", "netvlad"):
        text = (DOCS / "derivations" / f"{name}.md").read_text()
        last = text.rsplit("\n## ", 1)[1]
        assert last.startswith("In short: the formula, the kernel, the test"), name
        assert "lcnumba.cpu." in last and "tests/test_" in last, name


def _bash_blocks(text):
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_ci_runs_exactly_the_readme_commands():
    readme = [line for line in _bash_blocks((ROOT / "README.md").read_text()) if line.startswith("python3 -m venv")]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m venv")]
    assert len(readme) == 2
    assert ci == readme
