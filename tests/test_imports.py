"""The package's layers import one way (DESIGN section 2), with no cycle anywhere.

The imports are read from the source (``ast``), module-level and inside
functions alike, so a lazy import cannot hide a cycle or a forbidden
direction. ``import lcnumba`` itself must not import torch, jax or
numba-cuda: that is checked in a fresh interpreter.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lcnumba"

#: (importing layer, imported layer): directions the layering forbids.
FORBIDDEN = [
    ("cpu", "ops"), ("gpu", "ops"), ("cpu", "gpu"), ("capi", "ops"), ("capi", "gpu"),
    ("testing", "cpu"), ("testing", "gpu"), ("testing", "capi"), ("testing", "ops"),
    ("geometry", "cpu"), ("geometry", "gpu"), ("checks", "cpu"), ("checks", "gpu"),
    ("table", "*"), ("indexing", "*"),
]


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name):
    """The package module ``name`` refers to: itself, or the package holding a name imported from it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module):
    """Package modules that ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            # ``from pkg import sub`` imports the module ``pkg.sub``; ``from pkg import name`` imports ``pkg``
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if target.split(".")[0] == "lcnumba" else None
            if resolved and resolved != module and resolved != "lcnumba":
                found.add(resolved)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer(module):
    """``lcnumba.gpu.conv`` -> ``gpu``; ``lcnumba.geometry`` -> ``geometry``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lcnumba"


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    # A reader that found nothing would pass every test below.
    assert "lcnumba.ops.backend" in GRAPH
    assert "lcnumba.cpu.conv" in GRAPH["lcnumba.ops.backend"]
    assert "lcnumba.checks" in GRAPH["lcnumba.ops.conv"]
    assert layer("lcnumba.gpu.conv") == "gpu"


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("source,target", FORBIDDEN, ids=lambda v: v)
def test_no_forbidden_direction(source, target):
    bad = sorted((module, imported) for module, imported_set in GRAPH.items() if layer(module) == source
                 for imported in imported_set if target in ("*", layer(imported)) and layer(imported) != source)
    assert not bad, bad


def test_import_lcnumba_imports_no_framework():
    code = ("import sys, lcnumba; bad = [m for m in ('torch', 'jax', 'lcnumba.gpu') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent, env={"NUMBA_ENABLE_CUDASIM": "0", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
