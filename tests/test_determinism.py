"""Bitwise reproducibility of every CPU function, and no float atomics in the CUDA kernels.

DESIGN section 4: the CPU kernels split their work so that each worker writes
disjoint memory and partial sums are reduced in a fixed order, so a result
does not depend on the run, the thread count or the process. The calls are
those of ``reliability_cases`` (every public CPU function, float32 and
float64, shapes that split into several tasks): each is run again, under
``numba.set_num_threads(1)`` and ``(2)``, and in a child process with
``NUMBA_NUM_THREADS=3`` (an odd split of the tasks), and must give the same
bits every time. The CUDA kernels reduce in a fixed order too, which needs no
atomics: a scan of their sources checks that none is used.
"""

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest

from reliability_cases import all_calls, run, same_bits

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "lcnumba"


@pytest.fixture(scope="module")
def cases():
    return all_calls()


@pytest.fixture(scope="module")
def reference(cases):
    return [run(thunk) for _, thunk in cases]


def test_repeated_runs_give_the_same_bits(cases, reference):
    for (name, thunk), expected in zip(cases, reference):
        for _ in range(3):
            assert same_bits(run(thunk), expected), name


def test_thread_counts_give_the_same_bits(cases, reference):
    counts = sorted({1, 2, numba.config.NUMBA_NUM_THREADS} & set(range(1, numba.config.NUMBA_NUM_THREADS + 1)))
    before = numba.get_num_threads()
    try:
        for count in counts:
            numba.set_num_threads(count)
            for (name, thunk), expected in zip(cases, reference):
                assert same_bits(run(thunk), expected), f"{name} with {count} threads"
    finally:
        numba.set_num_threads(before)
    print(f"\nthread counts compared: {counts}")
    assert 1 in counts


CHILD = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from reliability_cases import all_calls, run
for name, thunk in all_calls():
    print(hashlib.sha256(b"".join(r.tobytes() for r in run(thunk))).hexdigest(), name)
"""


def test_another_process_with_three_threads_gives_the_same_bits(cases, reference):
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    result = subprocess.run([sys.executable, "-c", CHILD, str(HERE)], capture_output=True, text=True,
                            timeout=600, env=env, cwd=HERE.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(cases)
    for line, (name, _), expected in zip(lines, cases, reference):
        digest = hashlib.sha256(b"".join(r.tobytes() for r in expected)).hexdigest()
        assert line == f"{digest} {name}", f"{name} differs with 3 threads in another process"


def _cuda_sources():
    return sorted(p for d in ("gpu", "cuda") if (PACKAGE / d).is_dir() for p in (PACKAGE / d).rglob("*.py"))


def test_cuda_kernels_use_no_atomics():
    """No ``cuda.atomic.*`` (float or otherwise), however it is imported or spelt."""
    sources = _cuda_sources()
    assert sources, "no CUDA package found"
    offenders = []
    for path in sources:
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr == "atomic":
                offenders.append(f"{path.name}:{node.lineno} .atomic")
            if isinstance(node, ast.ImportFrom) and any(alias.name == "atomic" for alias in node.names):
                offenders.append(f"{path.name}:{node.lineno} imports atomic")
            if isinstance(node, ast.Name) and node.id == "atomic":
                offenders.append(f"{path.name}:{node.lineno} atomic")
        for lineno, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            if "atomic." in code or "atomic_add" in code or "atomicAdd" in code:
                offenders.append(f"{path.name}:{lineno} {line.strip()}")
    assert not offenders, offenders
