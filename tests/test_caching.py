"""Numba's on-disk kernel cache: shared between processes, and never a reason to fail.

- Two processes with different thread counts (``NUMBA_NUM_THREADS`` 1 and 2)
  compile into one empty ``NUMBA_CACHE_DIR`` at the same time; both work and
  agree bit for bit, and a third process then loads the kernels instead of
  compiling them (the thread count is a kernel argument, not part of the
  compiled code).
- An unwritable ``NUMBA_CACHE_DIR`` still works: Numba falls back to the
  package's ``__pycache__``.
- With no writable cache directory at all (a read-only installation, no
  writable home), ``import lcnumba`` still works, with one warning: the
  kernels are cached in a temporary directory for the process
  (``lcnumba.cache.ensure_kernel_cache``). Without that, Numba raises
  ``RuntimeError`` when the first kernel is defined.

Every case runs in child processes; root can write anywhere, so "unwritable"
is a path under a regular file, which no one can create.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One kernel each (they compile in a few seconds); the child prints a digest of the results.
CHILD = """
import hashlib, warnings
import numpy as np
warnings.simplefilter("always")
import lcnumba, numba
x = np.random.default_rng(0).standard_normal((3, 4, 9, 9))
w = np.random.default_rng(1).standard_normal((6, 2, 3, 3))
y = {call}
digest = hashlib.sha256(y.tobytes()).hexdigest()
print("digest", digest, "threads", numba.get_num_threads())
"""
CONV = CHILD.format(call="lcnumba.conv2d_forward(x, w, stride=2, padding=1, groups=2)")
POOL = CHILD.format(call="lcnumba.max_pool2d_forward(x, 3, stride=2, padding=1)")


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") or k == "NUMBA_ENABLE_CUDASIM"}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def _digest(result):
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("digest")][-1]
    return line.split()[1], int(line.split()[3])


def test_two_processes_share_one_cache_dir_with_different_thread_counts(tmp_path):
    cache = tmp_path / "numba-cache"
    procs = [subprocess.Popen([sys.executable, "-c", CONV], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=_env(NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=n))
             for n in (1, 2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    (d1, t1), (d2, t2) = (_digest(r) for r in results)
    assert (t1, t2) == (1, 2)
    assert d1 == d2, "the results depend on the thread count"
    namespace = {}
    exec(compile(CONV, "child", "exec"), namespace)  # noqa: S102 - this process computes the same
    assert namespace["digest"] == d1, "the results differ between processes"
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc")), "nothing was cached"
    # a third process loads every kernel from the shared cache: nothing is compiled or saved again
    third = subprocess.run([sys.executable, "-c", CONV], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=_env(NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=2, NUMBA_DEBUG_CACHE=1))
    assert _digest(third)[0] == d1
    assert "data loaded from" in third.stdout
    assert "data saved to" not in third.stdout, "a kernel was compiled again despite the shared cache"


def test_unwritable_numba_cache_dir_still_works(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-c", CONV], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=_env(NUMBA_CACHE_DIR=blocker / "cache"))
    _digest(result)
    assert "Warning" not in result.stderr, result.stderr


def test_no_writable_cache_anywhere_still_imports(tmp_path):
    """A copy of the package whose ``__pycache__`` directories cannot be created, no user cache either."""
    copy = tmp_path / "site"
    shutil.copytree(ROOT / "lcnumba", copy / "lcnumba", ignore=shutil.ignore_patterns("__pycache__"))
    for directory in [p for p in (copy / "lcnumba").rglob("*") if p.is_dir()] + [copy / "lcnumba"]:
        (directory / "__pycache__").write_text("")  # a file where Python and Numba want a directory
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    child = "import lcnumba, sys; assert lcnumba.__file__.startswith(sys.argv[1]), lcnumba.__file__\n"
    child += POOL.replace('warnings.simplefilter("always")', "")  # -W always instead, from the start
    env = _env(NUMBA_CACHE_DIR=blocker / "numba", XDG_CACHE_HOME=blocker / "cache", HOME=blocker / "home",
               PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE=1)
    result = subprocess.run([sys.executable, "-W", "always", "-c", child, str(copy)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=env)
    assert "no locator available" not in result.stderr
    _digest(result)
    warnings = [line for line in result.stderr.splitlines() if "Warning:" in line]
    assert len(warnings) == 1 and "no writable Numba cache directory" in warnings[0], result.stderr
    temporary = Path(warnings[0].split("cached in ")[1].split()[0])
    assert not temporary.exists(), "the temporary kernel cache was not removed at exit"


STALE_CHILD = """
import sys
import numpy as np
import lcnumba
from lcnumba.cpu import conv, segments
assert lcnumba.__file__.startswith(sys.argv[1]), lcnumba.__file__
db = lcnumba.conv2d_backward_bias(np.ones((2, 3, 4, 5)), (3,))
compiled = np.zeros((3, 1))
conv.backward_bias(np.ones((2, 3, 4, 5)), 1, 1, True, False, compiled)  # the C driver compiles segment_table in
table = segments.segment_table(4, 5, 1, 1, True)  # and segment_table on its own
assert np.array_equal(db, np.full(3, 40.0)) and np.array_equal(compiled, np.full((3, 1), 40.0))
assert table[0].shape == (4, 5)
print("ok")
"""


def test_cache_follows_a_change_to_a_compiled_in_function(tmp_path):
    """The convolution drivers compile ``cpu/segments.py``'s ``segment_table`` in: after that file changes they are
    compiled again, not loaded stale from the cache (Numba alone keys them on cpu/conv.py). A stale driver runs
    the old code, and once clashed with the new segment_table in the same process:
    "RuntimeError: In 'NRT_adapt_ndarray_to_python', 'descr' is NULL"."""
    copy = tmp_path / "site"
    shutil.copytree(ROOT / "lcnumba", copy / "lcnumba", ignore=shutil.ignore_patterns("__pycache__"))
    env = _env(NUMBA_CACHE_DIR=tmp_path / "cache", PYTHONPATH=copy, NUMBA_DEBUG_CACHE=1)
    driver = []
    for step in ("cold", "segments.py changed", "warm"):
        result = subprocess.run([sys.executable, "-c", STALE_CHILD, str(copy)], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600, env=env)
        assert result.returncode == 0 and result.stdout.strip().endswith("ok"), f"{step}:\n{result.stderr[-3000:]}"
        driver.append({kind for kind in ("loaded", "saved")
                       for line in result.stdout.splitlines() if f"data {kind}" in line and "conv.host_backward_bias" in line})
        if step == "cold":
            source = copy / "lcnumba" / "cpu" / "segments.py"
            source.write_text("# an edit above segment_table moves it\n\n" + source.read_text())
    assert driver == [{"saved"}, {"saved"}, {"loaded"}], driver


EDITED_CHILD = """
import sys
import numpy as np
import lcnumba
from lcnumba import capi, testing
assert lcnumba.__file__.startswith(sys.argv[1]), lcnumba.__file__
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 6, 7))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
want = testing.conv2d_forward(x, w, b)  # plain NumPy: no kernel, no cache
c = np.empty(want.shape)
status = capi.ctypes_function("lcn_conv2d_forward_f64")(x, w, b, c, 2, 3, 6, 7, 4, 3, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1)
assert status == 0, capi.status_message(status)
python = lcnumba.conv2d_forward(x, w, b)
print("offsets", float(np.mean(python - want)), float(np.mean(c - want)))
"""


def test_python_and_c_follow_an_edit_of_a_compiled_in_helper(tmp_path):
    """After an edit of ``cpu/runs.py`` (compiled into the convolution kernels and drivers, and through them into
    the C core of ``lcn_conv2d_forward_f64``), a new process on the same cache runs the edited code in both the
    Python function and its C entry point. The C cores once keyed their cache on a list of sources of their own
    that lacked ``cpu/runs.py`` and ``cpu/local.py``: the C entry point then ran the old machine code. The child
    calls C first: a core loaded after the Python function has compiled the new kernels may link against those
    and hide a stale cache entry."""
    copy = tmp_path / "site"
    shutil.copytree(ROOT / "lcnumba", copy / "lcnumba", ignore=shutil.ignore_patterns("__pycache__"))
    env = _env(NUMBA_CACHE_DIR=tmp_path / "cache", PYTHONPATH=copy)
    runs = copy / "lcnumba" / "cpu" / "runs.py"
    offsets = []
    for step in ("cold", "runs.py edited"):
        result = subprocess.run([sys.executable, "-c", EDITED_CHILD, str(copy)], cwd=tmp_path, capture_output=True,
                                text=True, timeout=900, env=env)
        assert result.returncode == 0, f"{step}:\n{result.stderr[-3000:]}"
        line = [ln for ln in result.stdout.splitlines() if ln.startswith("offsets")][-1]
        offsets.append(tuple(round(float(v), 6) for v in line.split()[1:]))
        if step == "cold":
            text = runs.read_text()
            # the bias add of the convolution forward: every output of conv2d with a bias goes through it
            assert text.count("dst[m] = src[m] + bias\n") == 1
            runs.write_text(text.replace("dst[m] = src[m] + bias\n", "dst[m] = src[m] + bias + 1000.0\n"))
    assert offsets[0] == (0.0, 0.0), offsets
    assert offsets[1] == (1000.0, 1000.0), f"(Python, C) outputs minus the reference after the edit: {offsets[1]}"


def test_compiled_modules_declare_what_they_compile_in():
    """Every ``lcnumba.cpu`` module with a ``COMPILES_IN`` lists the sources of each compiled module it imports
    (those with a ``COMPILES_IN`` of their own): an edit of a callee then invalidates the caller's cached
    kernels. Read from the imports (``ast``), so a new module that calls another's kernels cannot forget it."""
    import importlib

    from test_imports import GRAPH

    missing = {}
    for name in sorted(GRAPH):
        declared = getattr(importlib.import_module(name), "COMPILES_IN", None) if name.startswith("lcnumba.cpu.") else None
        for callee in sorted(GRAPH[name]) if declared is not None else ():
            theirs = getattr(importlib.import_module(callee), "COMPILES_IN", ())
            if not set(theirs) <= set(declared):
                missing[name, callee] = sorted(set(theirs) - set(declared))
    assert not missing, missing
