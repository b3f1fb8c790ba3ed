"""Bitwise reproducibility of every public CPU function across runs, thread counts and processes.

DESIGN section 4: the CPU kernels split their work so that each worker writes
disjoint memory and every floating-point sum runs in an order fixed by the
shapes alone, so a result does not depend on the run, the thread count or the
process. The calls are ``reliability_cases.all_wide_calls()``: every public
CPU function, through ``lcnumba.<name>``, in float32 and float64, on many
geometries (strides, asymmetric padding, dilation, groups, odd sizes, a batch
beyond one sample chunk, both tile modes, the DESIGN section 6 workloads at
batch 2). The reference runs on one thread; each call must give its bits
again on one thread, on two threads (twice), and on three threads in a child
process started with ``NUMBA_NUM_THREADS=3`` (Numba fixes the largest thread
count at startup; three splits the tasks unevenly). Every differing call is
reported, with the largest difference. The CUDA kernels reduce in a fixed
order too, which needs no atomics: a scan of their sources checks that none is
used.
"""

import ast
import contextlib
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import lcnumba
from lcnumba.ops import backend
from reliability_cases import all_wide_calls, run, same_bits

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "lcnumba"

#: Public CPU functions: the forward and backward functions of every family.
PUBLIC_FUNCTION = re.compile(r"[a-z0-9_]+_(forward|backward|backward_input|backward_weight|backward_bias)")


@contextlib.contextmanager
def _threads(count):
    """``numba.set_num_threads(count)`` for the duration of a ``with`` block."""
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def every_call_on_every_thread():
    """Tiny calls run on the calling thread alone (``ONE_THREAD_WORK``): here every call splits its work."""
    before, backend.ONE_THREAD_WORK = backend.ONE_THREAD_WORK, 0
    yield
    backend.ONE_THREAD_WORK = before


@pytest.fixture(scope="module")
def cases():
    return all_wide_calls()


@pytest.fixture(scope="module")
def reference(cases):
    with _threads(1):
        return [run(thunk) for _, thunk in cases]


def _largest_difference(got, expected):
    """The largest absolute difference between two results, for the report (inf where shapes differ)."""
    if len(got) != len(expected) or any(a.shape != b.shape for a, b in zip(got, expected)):
        return np.inf
    return max((float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
                for a, b in zip(got, expected)), default=0.0)


def _mismatches(cases, reference, label):
    """Names of the calls whose result now differs from the reference, with the largest difference."""
    out = []
    for (name, thunk), expected in zip(cases, reference):
        got = run(thunk)
        if not same_bits(got, expected):
            out.append(f"{name} {label}: differs by up to {_largest_difference(got, expected):.3g}")
    return out


def test_every_public_cpu_function_is_called(cases):
    public = {name for name in dir(lcnumba) if PUBLIC_FUNCTION.fullmatch(name) and callable(getattr(lcnumba, name))}
    called = {name.split("[")[0] for name, _ in cases}
    assert len(public) >= 36  # 6 convolution families x 5 functions, 2 pooling x 2, NetVLAD 2
    assert public <= called, sorted(public - called)


def test_repeated_runs_give_the_same_bits(cases, reference):
    with _threads(1):
        mismatches = _mismatches(cases, reference, "run again on 1 thread")
    assert not mismatches, "\n".join(mismatches)


def test_two_threads_give_the_same_bits(cases, reference):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("NUMBA_NUM_THREADS=1: no second thread in this process")
    with _threads(2):
        mismatches = _mismatches(cases, reference, "on 2 threads")
        mismatches += _mismatches(cases, reference, "on 2 threads, run again")
    assert not mismatches, "\n".join(mismatches)


CHILD = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
import numba
from lcnumba.ops import backend
from reliability_cases import all_wide_calls, run
assert numba.get_num_threads() == 3, numba.get_num_threads()
backend.ONE_THREAD_WORK = 0
for name, thunk in all_wide_calls():
    print(hashlib.sha256(b"".join(r.tobytes() for r in run(thunk))).hexdigest(), name)
"""


def test_another_process_with_three_threads_gives_the_same_bits(cases, reference):
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    result = subprocess.run([sys.executable, "-c", CHILD, str(HERE)], capture_output=True, text=True,
                            timeout=600, env=env, cwd=HERE.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(cases)
    mismatches = []
    for line, (name, _), expected in zip(lines, cases, reference):
        digest = hashlib.sha256(b"".join(r.tobytes() for r in expected)).hexdigest()
        if line != f"{digest} {name}":
            mismatches.append(f"{name} on 3 threads in another process")
    assert not mismatches, "\n".join(mismatches)


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
