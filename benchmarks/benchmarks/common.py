"""Shared pieces of the asv suite: workload parameters, cached inputs, lookups, skips.

The workloads are the named ones of DESIGN.md section 6, defined once in
``benchmarks/workloads.py`` (shared with ``benchmarks/compare.py``); this
module puts that directory on ``sys.path`` and imports it, so both tools time
the same shapes on the same deterministic data.

asv runs every benchmark (and every parameter combination) in a fresh
process and calls ``setup`` again for each round; :func:`inputs` keeps the
inputs of the last few ``(workload, dtype, batch)`` keys so that repeated
``setup`` calls in one process do not rebuild them. The inputs are shared:
a benchmark must never write them (lcnumba never writes its inputs).

Parameters are the readable names themselves (numpy's ``args_map`` idiom):
``workload`` is a key of ``WORKLOADS``, ``dtype`` a NumPy dtype name,
``batch`` the batch size N.
"""

import dataclasses
import functools
import os
import sys

import numpy as np

_BENCHMARKS_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCHMARKS_ROOT not in sys.path:
    sys.path.insert(0, _BENCHMARKS_ROOT)

from workloads import WORKLOADS  # noqa: E402

import lcnumba  # noqa: E402

DTYPES = ("float32", "float64")

# DESIGN section 6: batch 8 unless a parameter says otherwise; the local and
# NetVLAD workloads also sweep the batch size.
DEFAULT_BATCH = 8
BATCHES = (1, 8, 32)

CONV_WORKLOADS = tuple(name for name, wl in WORKLOADS.items() if wl.op in ("conv2d", "tiled_conv2d"))
LOCAL_WORKLOADS = tuple(name for name, wl in WORKLOADS.items() if wl.op == "local_conv2d")
POOL_WORKLOADS = tuple(name for name, wl in WORKLOADS.items() if wl.op == "max_pool2d")
NETVLAD_WORKLOADS = tuple(name for name, wl in WORKLOADS.items() if wl.op == "netvlad")


def workload(name, batch=DEFAULT_BATCH):
    """The workload ``name`` of ``workloads.WORKLOADS`` with batch size ``batch``."""
    wl = WORKLOADS[name]
    return wl if wl.batch == batch else wl.with_batch(batch)


@functools.lru_cache(maxsize=2)
def _cached_inputs(name, dtype, batch):
    return workload(name, batch).make_inputs(np.dtype(dtype))


def inputs(name, dtype, batch=DEFAULT_BATCH):
    """Deterministic inputs of a workload: ``{"x", "w", "b", "dy"}`` (NetVLAD adds ``"centroids"``).

    Built by ``Workload.make_inputs`` (seed 0, as ``compare.py``) and cached
    per ``(name, dtype, batch)``. The returned dict is a fresh copy; the
    arrays are shared and must not be written.
    """
    return dict(_cached_inputs(name, str(dtype), int(batch)))


def check_affordable(dtype, batch):
    """Skip the float64 cases of the batch sweep other than the DESIGN batch.

    The batch sweep (N in 1, 8, 32 for the local and NetVLAD workloads) is
    measured in float32; float64 is measured at N = 8 only. The float64 L4
    weights and their gradient alone are 1 GB, and the float64 N = 32 case
    adds the largest activations and workspace of the suite, doubling its
    memory and run time on the 2-core development machine while telling
    nothing that float32 N = 32 and float64 N = 8 do not.
    """
    if dtype == "float64" and batch != DEFAULT_BATCH:
        raise NotImplementedError(
            f"float64 is benchmarked at batch {DEFAULT_BATCH} only (batch {batch} requested)"
        )


def function(name):
    """``lcnumba.<name>``, or a skip (``NotImplementedError``) for a function this build lacks.

    Lets the suite run against older commits (``asv continuous``) and
    against a tree where an op family is not exported yet.
    """
    fn = getattr(lcnumba, name, None)
    if fn is None:
        raise NotImplementedError(f"lcnumba.{name} does not exist in this build")
    return fn


def tiny(wl):
    """The workload with N = 1 and the smallest spatial size that keeps its geometry.

    Same op, channels, filters, kernel, stride, padding, dilation and tiles,
    so it compiles (or loads from Numba's cache) the same kernels as the full
    workload, with an output of 3 x 3 positions (NetVLAD: 2 x 2
    descriptors). Used to load the kernels before a ``peakmem_`` benchmark
    without allocating the full workload's buffers.
    """
    c = wl.input_shape[1]
    if wl.op == "netvlad":
        return dataclasses.replace(wl, input_shape=(1, c, 2, 2))
    sizes = tuple(
        max(d * (k - 1) + 1 - 2 * p, 1) + 2 * s
        for k, s, d, p in zip(wl.kernel, wl.stride, wl.dilation, wl.padding)
    )
    return dataclasses.replace(wl, input_shape=(1, c) + sizes)


def require_cuda():
    """``numba.cuda`` when Numba finds a real GPU; otherwise a skip (``NotImplementedError``).

    The CUDA simulator is skipped too: its timings measure Python, not a GPU.
    Whether this build of lcnumba has a CUDA backend shows at the first call
    (see ``bench_cuda._Cuda._warm_up``).
    """
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        raise NotImplementedError("the Numba CUDA simulator is enabled; CUDA timings need a real GPU")
    try:
        from numba import cuda
    except ImportError as exc:
        raise NotImplementedError(f"numba.cuda is not importable: {exc}") from None
    if not cuda.is_available():
        raise NotImplementedError("no CUDA GPU is available")
    return cuda
