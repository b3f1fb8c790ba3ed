"""What a fresh install pays before the first result: import time and cold compile time.

lcnumba compiles its kernels lazily on first use and caches the machine code
on disk (``cache=True``). ``Compile.track_compile_seconds`` measures that
first use with an empty cache: for each op family a fresh interpreter, with
``NUMBA_CACHE_DIR`` pointing at a new temporary directory, imports lcnumba
and times the first call of the forward, then of the backward functions, on
tiny float32 inputs (so the time is compilation, not arithmetic). The
families run in separate interpreters and caches because they share kernels.
The measurements are made once per ``asv run`` in ``setup_cache`` (each
family's forward and backward come from one interpreter) and reported per
``(op, pass)``:

- ``forward``: the first ``*_forward`` call (``max_pool2d``: with and
  without indices, two kernels);
- ``backward``: after that, the first calls of the backward functions
  (convolutions: ``*_backward_input``, ``*_backward_weight``,
  ``*_backward_bias``).

``Warmup.track_seconds("warmup")`` is the wall time of ``python -m lcnumba
warmup`` (every op, float32 and float64, one process per core) into an empty
cache, and ``Warmup.track_seconds`` for an op then what a new
process on that warm cache pays for ``import lcnumba`` plus its first
forward and backward: the three first-use figures of
``benchmarks/scaling.py --cold-cache``.

``Import.timeraw_import`` times ``import lcnumba`` in a fresh interpreter,
which must stay cheap (no eager signatures, no CUDA initialisation).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

OPS = ("conv2d", "tiled_conv2d", "local_conv2d", "max_pool2d", "netvlad")
PASSES = ("forward", "backward")

# Run as ``python -c _PROBE <op>``; prints one JSON object on its last line.
_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import lcnumba
imported = time.perf_counter() - t0

op = sys.argv[1]
f32 = np.float32
x = np.linspace(-1, 1, 2 * 5 * 5, dtype=f32).reshape(1, 2, 5, 5)


def call(name):
    fn = getattr(lcnumba, name, None)
    if fn is None:
        print(json.dumps({"missing": "lcnumba." + name}))
        sys.exit(0)
    return fn


if op in ("conv2d", "tiled_conv2d", "local_conv2d"):
    w_shape, b_shape = {
        "conv2d": ((2, 2, 3, 3), (2,)),
        "tiled_conv2d": ((2, 2, 2, 2, 3, 3), (2, 2, 2)),
        "local_conv2d": ((3, 3, 2, 2, 3, 3), (2, 3, 3)),
    }[op]
    w = np.full(w_shape, 0.1, f32)
    b = np.full(b_shape, 0.1, f32)
    forward, bwd_input, bwd_weight, bwd_bias = (call(op + s) for s in (
        "_forward", "_backward_input", "_backward_weight", "_backward_bias"))
    def run_forward():
        return forward(x, w, b)
    def run_backward(y):
        bwd_input(y, w, x.shape)
        bwd_weight(y, x, w.shape)
        bwd_bias(y, b.shape)
elif op == "max_pool2d":
    forward, backward = call("max_pool2d_forward"), call("max_pool2d_backward")
    def run_forward():
        forward(x, 2)
        return forward(x, 2, return_indices=True)
    def run_backward(y):
        backward(y[0], y[1], x.shape)
elif op == "netvlad":
    forward, backward = call("netvlad_forward"), call("netvlad_backward")
    xv = np.linspace(-1, 1, 2 * 4 * 6, dtype=f32).reshape(2, 4, 6)
    w = np.linspace(-1, 1, 3 * 4, dtype=f32).reshape(3, 4)
    b = np.zeros(3, f32)
    c = np.linspace(0, 1, 2 * 4, dtype=f32).reshape(2, 4)
    def run_forward():
        return forward(xv, w, b, c)
    def run_backward(y):
        backward(np.ones_like(y), xv, w, b, c)
else:
    raise SystemExit("unknown op " + op)

start = time.perf_counter()
y = run_forward()
middle = time.perf_counter()
run_backward(y)
end = time.perf_counter()
print(json.dumps({"forward": middle - start, "backward": end - middle, "import": imported}))
"""


def _probe(op, env):
    proc = subprocess.run([sys.executable, "-c", _PROBE, op], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": f"unreadable probe output: {proc.stdout[-2000:]!r}"}


def cold_compile(op):
    """Seconds of the first forward and backward calls of ``op`` with an empty Numba cache.

    Returns ``{"forward": s, "backward": s, "import": s}``, ``{"missing": name}``
    when this build lacks a function, or ``{"error": text}`` when the probe failed.
    """
    with tempfile.TemporaryDirectory(prefix="lcnumba-cold-cache-") as cache_dir:
        return _probe(op, dict(os.environ, NUMBA_CACHE_DIR=cache_dir))


def warmup_then_first_calls():
    """``{"warmup": s or error text, op: probe result}``: the warmup into an empty cache, then each op on it."""
    with tempfile.TemporaryDirectory(prefix="lcnumba-warmup-cache-") as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lcnumba", "warmup", "--quiet"], env=env, capture_output=True,
                              text=True, timeout=1200)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            return {"warmup": f"exit status {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
        results = {"warmup": wall}
        results.update({op: _probe(op, env) for op in OPS})
    return results


class Compile:
    params = [list(OPS), list(PASSES)]
    param_names = ["op", "pass"]
    unit = "seconds"
    timeout = 900

    def setup_cache(self):
        return {op: cold_compile(op) for op in OPS}

    setup_cache.timeout = 1800

    def setup(self, results, op, step):
        if "missing" in results[op]:
            raise NotImplementedError(f"{results[op]['missing']} does not exist in this build")

    def track_compile_seconds(self, results, op, step):
        result = results[op]
        if "error" in result:
            raise RuntimeError(f"cold compile of {op} failed: {result['error']}")
        return result[step]


class Warmup:
    """``what``: "warmup" (its wall time), or an op (import plus first fwd+bwd in a new process after it)."""

    params = [["warmup"] + list(OPS)]
    param_names = ["what"]
    unit = "seconds"
    timeout = 900

    def setup_cache(self):
        return warmup_then_first_calls()

    setup_cache.timeout = 1800

    def setup(self, results, what):
        if isinstance(results["warmup"], str):
            raise RuntimeError(f"python -m lcnumba warmup failed: {results['warmup']}")
        if what != "warmup" and "missing" in results[what]:
            raise NotImplementedError(f"{results[what]['missing']} does not exist in this build")

    def track_seconds(self, results, what):
        if what == "warmup":
            return results["warmup"]
        result = results[what]
        if "error" in result:
            raise RuntimeError(f"warm first call of {what} failed: {result['error']}")
        return result["import"] + result["forward"] + result["backward"]


class Import:
    timeout = 120

    def timeraw_import(self):
        return "import lcnumba"
