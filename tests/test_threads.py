"""Several Python threads calling lcnumba at once get the bits of a serial run.

Four threads call the forward and every backward function of every family
(``reliability_cases.calls``, float32 and float64), each starting at a
different place in the list so that different kernels overlap, for a bounded
time; every result is compared bit for bit with a serial run. The threading
layer in use must allow concurrent parallel regions (``tbb``, ``omp``), or
be ``workqueue`` with the calls serialised by ``lcnumba.cpu.guard``, which a
child process checks with ``NUMBA_THREADING_LAYER=workqueue`` (unguarded,
that layer aborts the process).
"""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np

import lcnumba
from lcnumba.cpu import guard

from reliability_cases import all_calls, hammer

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("LCNUMBA_THREAD_SECONDS", "3"))


def test_threading_layer_runs_concurrent_calls_or_is_serialised():
    lcnumba.max_pool2d_forward(np.zeros((1, 1, 2, 2)), 2)  # a parallel kernel has run: the layer is chosen
    layer = guard.threading_layer()
    print(f"\nthreading layer: {layer}")
    assert layer in ("tbb", "omp", "workqueue")
    assert guard.serialised() == (layer == "workqueue")


def test_four_threads_get_the_serial_bits():
    cases = all_calls()
    counts, mismatches = hammer(cases, n_threads=4, seconds=SECONDS)
    print(f"\n4 threads x {SECONDS:.0f} s over {len(cases)} calls: {counts} calls per thread, "
          f"{len(mismatches)} mismatches")
    assert not mismatches, mismatches[:20]
    assert min(counts) >= 2 * len(cases)


def test_workqueue_layer_is_serialised_instead_of_aborting():
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    result = subprocess.run([sys.executable, str(HERE / "reliability_cases.py"), "1"], capture_output=True,
                            text=True, timeout=600, env=env, cwd=HERE.parent)
    assert "Concurrent access has been detected" not in result.stderr, "workqueue was entered concurrently"
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    print(f"\n{result.stdout.strip()}")
    assert result.stdout.startswith("layer workqueue") and "mismatches 0" in result.stdout


def test_guard_locks_only_where_needed(monkeypatch):
    monkeypatch.setattr(guard, "_layer", "omp")
    assert not guard.serialised()
    with guard.kernel_guard():
        assert not guard._lock._is_owned()
    monkeypatch.setattr(guard, "_layer", "workqueue")
    assert guard.serialised()
    with guard.kernel_guard():
        assert guard._lock._is_owned()
        with guard.kernel_guard():  # re-entrant: a kernel call inside a kernel call does not deadlock
            assert guard._lock._is_owned()
    assert not guard._lock._is_owned()


def test_tiny_calls_run_on_the_calling_thread_with_the_same_bits(monkeypatch):
    """A call below ``ONE_THREAD_WORK`` multiply-adds runs on one thread, and gives the bits of a split run."""
    from lcnumba.ops import backend

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((5, 4, 4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 5, 4))
    seen = []
    real = backend.conv_kernels.host_backward_input

    def spy(*args):
        seen.append((args[-2], numba.get_num_threads()))  # the drivers' thread count, Numba's
        return real(*args)

    monkeypatch.setattr(backend.conv_kernels, "host_backward_input", spy)
    tiny = lcnumba.local_conv2d_backward_input(dy, w, x.shape)
    assert seen[-1] == (1, 1) and numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    monkeypatch.setattr(backend, "ONE_THREAD_WORK", 0)
    split = lcnumba.local_conv2d_backward_input(dy, w, x.shape)
    assert seen[-1] == (numba.get_num_threads(), numba.get_num_threads())
    assert tiny.tobytes() == split.tobytes()
