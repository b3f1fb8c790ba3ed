"""Memory stays flat over many forward and backward calls.

1,000 forward + backward iterations (every backward function, with and
without ``out=`` buffers) of a small locally connected convolution and of
NetVLAD, after a warm-up, must not grow the resident set by 5% or more
(``/proc/self/statm``), nor by 4 MiB (a leak of one small array per call). The kernels allocate their workspaces per call (NRT
arrays inside the parallel regions), so a leak there, in the parallel
runtime or in the argument checks would show here. Python objects are
counted too: the number tracked by the garbage collector must not grow.
"""

import gc
import os
import sys

import numpy as np
import pytest

import lcnumba

ITERATIONS = 1000
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


def rss_bytes():
    """Resident set size of this process, from ``/proc/self/statm`` (pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _local_conv_step(dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((6, 6, 4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal((4, 6, 6)).astype(dtype)
    y = np.empty((2, 4, 6, 6), dtype)
    dx = np.empty_like(x)
    dw = np.zeros_like(w)
    db = np.zeros_like(b)

    def step(i):
        out = lcnumba.local_conv2d_forward(x, w, b, out=y if i % 2 else None)
        dy = out * 0.5
        lcnumba.local_conv2d_backward_input(dy, w, x.shape, out=dx if i % 2 else None)
        lcnumba.local_conv2d_backward_weight(dy, x, w.shape, out=dw, accumulate=bool(i % 2))
        lcnumba.local_conv2d_backward_bias(dy, b.shape, out=db if i % 2 else None)
        lcnumba.local_conv2d_backward(dy, x, w, b)

    return step


def _netvlad_step(dtype=np.float32):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 16, 5, 5)).astype(dtype)
    w = rng.standard_normal((6, 16)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    c = rng.standard_normal((4, 16)).astype(dtype)
    y = np.empty((3, 64), dtype)

    def step(i):
        out = lcnumba.netvlad_forward(x, w, b, c, out=y if i % 2 else None, normalize_input=bool(i % 3))
        lcnumba.netvlad_backward(out, x, w, b, c, normalize_input=bool(i % 3))

    return step


@pytest.mark.parametrize("make_step", [_local_conv_step, _netvlad_step], ids=["local_conv2d", "netvlad"])
def test_memory_is_flat_over_1000_iterations(make_step):
    step = make_step()
    for i in range(100):  # warm-up: kernels loaded, allocator pools and thread stacks at their working size
        step(i)
    gc.collect()
    objects_before = len(gc.get_objects())
    before = rss_bytes()
    for i in range(ITERATIONS):
        step(i)
    gc.collect()
    after = rss_bytes()
    objects_after = len(gc.get_objects())
    growth = (after - before) / before
    print(f"\nRSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({100 * growth:+.2f}%) over {ITERATIONS} "
          f"iterations; gc objects {objects_before} -> {objects_after}")
    assert growth < 0.05, f"resident memory grew by {100 * growth:.1f}%"
    # and in absolute terms: under 4 KiB per iteration, less than one leaked weight gradient
    assert after - before < 4 * 2**20, f"resident memory grew by {(after - before) / 2**20:.1f} MiB"
    assert objects_after - objects_before < 100, "Python objects accumulate"
