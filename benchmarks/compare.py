"""Side-by-side timing of lcnumba against NumPy and PyTorch on the DESIGN section 6 workloads.

Run from the repository root::

    python benchmarks/compare.py                          # every workload, float32, CPU
    python benchmarks/compare.py --workloads deepface_l4,netvlad_vgg --output compare.md
    python benchmarks/compare.py --dtype float64 --threads 1 --budget 2
    python benchmarks/compare.py --memory                 # adds the peak-memory section
    python benchmarks/compare.py --workloads none --plot-batch batch.png
    python benchmarks/compare.py --device cuda            # on a machine with a GPU
    python benchmarks/compare.py --workloads none --overhead   # what lcnumba.torch adds to a call

For every workload and every implementation it

1. runs forward and forward+backward once and checks that the output and
   every gradient agree with lcnumba (with the NumPy baseline where lcnumba
   lacks the op), failing loudly before any timing if they do not;
2. times the forward pass and the forward+backward pass (all gradients),
   with the implementations of one workload interleaved round by round, so
   that load from other processes spreads over all of them alike, until a
   time budget is spent (at least ``--min-repeat`` rounds, at most ``--repeat``);
3. prints a Markdown table of medians and minima and the speedup of lcnumba
   (``peer time / lcnumba time``: above 1 lcnumba is faster).

Implementations: lcnumba allocating its outputs, lcnumba writing into
preallocated ``out=`` buffers, lcnumba's NetVLAD with a ``mask=`` of valid
descriptors (all valid: its cost next to the unmasked row), a NumPy baseline written the way one would
without a kernel library (im2col by ``sliding_window_view`` plus BLAS
``matmul``), and PyTorch on the CPU when it is installed (the usual recipes:
``F.conv2d``, ``F.unfold`` + ``einsum`` for unshared weights, ``F.max_pool2d``,
and NetVLAD both in batched-matmul form and as the per-cluster loop of the
widely used pytorch-NetVlad module), and lcnumba's own PyTorch bridge
(``lcnumba.torch``: the family's nn module, or its functional form), through
autograd as a PyTorch user calls it. The transposed local layer
(``deepface_l4_transpose``) is compared with the passes of ``local_conv2d``
that compute the same thing (its forward is ``local_conv2d_backward_input``
on the same shapes). PyTorch is optional: without it its rows
are skipped with a note. lcnumba functions that do not exist yet are skipped
the same way.

``--device cuda`` times lcnumba on Numba device arrays (synchronising inside
each timed call) and PyTorch on CUDA tensors, with TensorFloat-32 off in
cuBLAS and cuDNN so that both compute in FP32; the NumPy baseline then only
serves as the reference of the checks. ``--memory``, ``--plot-batch`` and
``--overhead`` add sections (``--workloads none`` leaves out the timing table).

Thread counts: Numba, PyTorch and the BLAS under NumPy all get ``--threads``
(default: Numba's thread count). The BLAS reads its setting once when it is
loaded, which is why the environment is fixed before NumPy is imported.

Timings need a quiet machine. When other processes compete for the cores,
the threads of one parallel region wait at its barrier for a descheduled
sibling, and code made of many small parallel regions (PyTorch's autograd
above all) stalls for up to seconds; the report prints the load average
before and after the run so that such a table is recognisable.
"""

import os
import sys


def _fix_blas_threads(argv):
    """Give the BLAS under NumPy the thread count of ``--threads`` before NumPy loads it.

    Without ``--threads`` the BLAS keeps its default (all cores), as Numba does.
    """
    threads = None
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif arg.startswith("--threads="):
            threads = arg.split("=", 1)[1]
    if threads is None or not threads.isdigit():
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    # Numba sizes its pool at import; more threads than cores needs a bigger pool.
    if int(threads) > (os.cpu_count() or 1):
        os.environ["NUMBA_NUM_THREADS"] = threads


def _fix_omp_wait(argv):
    """Let idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless ``--omp-wait active``.

    Numba's threading layer and PyTorch each run an OpenMP runtime in this
    process. With the default policy the idle threads of one spin while the
    other works, so on a 2-core machine whichever implementation runs right
    after another is charged for its neighbour's spinning (lcnumba's local
    layer measured 283 ms median interleaved against 105 ms alone). Passive
    waiting treats every implementation alike.
    """
    policy = "PASSIVE"
    for i, arg in enumerate(argv):
        if arg == "--omp-wait" and i + 1 < len(argv):
            policy = argv[i + 1].upper()
        elif arg.startswith("--omp-wait="):
            policy = arg.split("=", 1)[1].upper()
    os.environ.setdefault("OMP_WAIT_POLICY", policy)


if __name__ == "__main__":
    _fix_blas_threads(sys.argv[1:])
    _fix_omp_wait(sys.argv[1:])

# The imports below come after the thread setup on purpose: NumPy loads the BLAS.
import argparse
import dataclasses
import datetime
import gc
import json
import platform
import resource
import statistics
import subprocess
import time
from typing import Any, Callable, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

try:  # part of the benchmarks package (asv imports it that way)
    from .workloads import CONV_OPS, TRANSPOSE_OP, WORKLOADS, Workload
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from workloads import CONV_OPS, TRANSPOSE_OP, WORKLOADS, Workload

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
# A layer so small that the time of a call is its fixed cost: N = 1, a 4x4 output (--overhead).
TINY_LAYER = Workload("tiny_local", "local_conv2d", (1, 1, 6, 6), filters=1, kernel=3)
BATCH_WORKLOAD = "deepface_l4"
MEMORY_CASES = (
    ("deepface_l4", "lcnumba"),
    ("deepface_l4", "lcnumba out="),
    ("deepface_l4", "numpy"),
    ("deepface_l4", "torch"),
    ("netvlad_vgg", "lcnumba"),
    ("netvlad_vgg", "numpy"),
    ("netvlad_vgg", "torch bmm"),
    ("netvlad_vgg", "torch loop"),
)
# Largest |difference| relative to the largest |reference value|, per dtype.
# float32 sums of ~1e4 products (weight gradients of DeepFace L4) stay well
# below 1e-4 of the scale; a wrong index or a missing term is O(1).
TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-9}
BASE = "lcnumba"


class Skip(Exception):
    """An implementation that cannot run here; the message says why and goes into the notes."""


# ====================================================================== devices


@dataclasses.dataclass
class Device:
    """Where arrays live and how to wait for queued work; CPU or Numba CUDA."""

    name: str

    def __post_init__(self):
        if self.name == "cuda":
            from numba import cuda

            self._cuda = cuda

    def put(self, array):
        return self._cuda.to_device(array) if self.name == "cuda" else array

    def empty(self, shape, dtype):
        if self.name == "cuda":
            return self._cuda.device_array(shape, dtype)
        # Touched now, so that the first timed call does not pay the page faults.
        return np.zeros(shape, dtype)

    def sync(self):
        if self.name == "cuda":
            self._cuda.synchronize()

    def host(self, array):
        if self.name == "cuda" and hasattr(array, "copy_to_host"):
            return array.copy_to_host()
        return np.asarray(array)


# ====================================================================== implementations


@dataclasses.dataclass
class Impl:
    """One implementation of one workload, ready to call.

    ``forward()`` returns the output; ``forward_backward()`` returns a dict
    with ``y`` and every gradient (``dx``, ``dw``, ``db``, ``dcentroids`` as
    the op has them). Both return arrays native to the implementation;
    ``host`` turns one into a NumPy array for the checks.
    """

    label: str
    forward: Callable[[], Any]
    forward_backward: Callable[[], dict]
    host: Callable[[Any], np.ndarray] = np.asarray
    sync: Callable[[], None] = lambda: None
    timed: bool = True
    note: Optional[str] = None
    buffers: Optional[dict] = None  # out= buffers that calls must write and return


# ---------------------------------------------------------------------- lcnumba


def _lcnumba_functions(*names):
    """The named lcnumba functions, or Skip naming the ones that do not exist yet."""
    try:
        import lcnumba
    except ImportError as error:
        raise Skip(f"lcnumba not importable: {error}") from None
    found = [getattr(lcnumba, name, None) for name in names]
    missing = [name for name, fn in zip(names, found) if fn is None]
    if missing:
        raise Skip("lcnumba has no " + ", ".join(missing) + " yet")
    return found


def _lcnumba_conv(wl, inputs, device, prealloc):
    op = wl.op
    forward, backward_input, backward_weight, backward_bias = _lcnumba_functions(
        f"{op}_forward", f"{op}_backward_input", f"{op}_backward_weight", f"{op}_backward_bias"
    )
    kw = wl.conv_kwargs()
    bias_kw = {"tile_mode": wl.tile_mode} if op == "tiled_conv2d" else {}
    x, w, b, dy = (device.put(inputs[k]) for k in ("x", "w", "b", "dy"))
    dtype = inputs["x"].dtype

    if not prealloc:
        import lcnumba

        combined = getattr(lcnumba, f"{op}_backward", None)

        def fwd():
            return forward(x, w, b, **kw)

        def fwd_bwd():
            y = forward(x, w, b, **kw)
            if combined is not None:  # the convenience call a user would make
                dx, dw, db = combined(dy, x, w, b, **kw)
            else:
                dx = backward_input(dy, w, x.shape, **kw)
                dw = backward_weight(dy, x, w.shape, **kw)
                db = backward_bias(dy, b.shape, **bias_kw)
            return {"y": y, "dx": dx, "dw": dw, "db": db}

        return Impl("lcnumba", fwd, fwd_bwd, device.host, device.sync)

    buf = {k: device.empty(s, dtype) for k, s in
           (("y", wl.output_shape), ("dx", x.shape), ("dw", w.shape), ("db", b.shape))}

    def fwd():
        return forward(x, w, b, out=buf["y"], **kw)

    def fwd_bwd():
        return {
            "y": forward(x, w, b, out=buf["y"], **kw),
            "dx": backward_input(dy, w, x.shape, out=buf["dx"], **kw),
            "dw": backward_weight(dy, x, w.shape, out=buf["dw"], **kw),
            "db": backward_bias(dy, b.shape, out=buf["db"], **bias_kw),
        }

    return Impl("lcnumba out=", fwd, fwd_bwd, device.host, device.sync, buffers=buf)


def _lcnumba_pool(wl, inputs, device, prealloc):
    forward, backward = _lcnumba_functions("max_pool2d_forward", "max_pool2d_backward")
    x, dy = device.put(inputs["x"]), device.put(inputs["dy"])
    kw = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation)
    if not prealloc:
        return Impl(
            "lcnumba",
            lambda: forward(x, wl.kernel, **kw),
            lambda: _pool_fwd_bwd(forward, backward, x, dy, wl, kw, {}),
            device.host, device.sync,
        )
    buf = {"y": device.empty(wl.output_shape, x.dtype), "indices": device.empty(wl.output_shape, np.int64),
           "dx": device.empty(x.shape, x.dtype)}
    return Impl(
        "lcnumba out=",
        lambda: forward(x, wl.kernel, out=buf["y"], **kw),
        lambda: _pool_fwd_bwd(forward, backward, x, dy, wl, kw, buf),
        device.host, device.sync, buffers={k: buf[k] for k in ("y", "dx")},
    )


def _pool_fwd_bwd(forward, backward, x, dy, wl, kw, buf):
    y, indices = forward(x, wl.kernel, return_indices=True, out=buf.get("y"), indices_out=buf.get("indices"), **kw)
    return {"y": y, "dx": backward(dy, indices, x.shape, out=buf.get("dx"))}


def _lcnumba_netvlad(wl, inputs, device, prealloc, masked=False):
    forward, backward = _lcnumba_functions("netvlad_forward", "netvlad_backward")
    x, w, b, c, dy = (device.put(inputs[k]) for k in ("x", "w", "b", "centroids", "dy"))
    kw = {"normalize_input": wl.normalize_input}
    if masked:
        # Every descriptor valid, so the output is checked against the other rows; the kernels do
        # the same work whatever the mask holds (a masked column is zeroed, not skipped).
        kw["mask"] = device.put(np.ones((wl.batch, int(np.prod(wl.input_shape[2:]))), bool))
        return Impl("lcnumba mask=", lambda: forward(x, w, b, c, **kw),
                    lambda: dict(zip(("y", "dx", "dw", "db", "dcentroids"),
                                     (forward(x, w, b, c, **kw),) + tuple(backward(dy, x, w, b, c, **kw)))),
                    device.host, device.sync)
    buf = {"y": device.empty(wl.output_shape, x.dtype)} if prealloc else {}

    def fwd():
        return forward(x, w, b, c, out=buf.get("y"), **kw)

    def fwd_bwd():
        y = forward(x, w, b, c, out=buf.get("y"), **kw)
        # netvlad_backward has no out= (DESIGN section 3): both variants allocate the gradients.
        dx, dw, db, dc = backward(dy, x, w, b, c, **kw)
        return {"y": y, "dx": dx, "dw": dw, "db": db, "dcentroids": dc}

    label = "lcnumba out=" if prealloc else "lcnumba"
    return Impl(label, fwd, fwd_bwd, device.host, device.sync, buffers=buf or None,
                note="netvlad_backward allocates its gradients (no out=)" if prealloc else None)


def build_lcnumba(wl, inputs, device, prealloc=False):
    if wl.op in CONV_OPS + (TRANSPOSE_OP,):
        return _lcnumba_conv(wl, inputs, device, prealloc)
    if wl.op == "max_pool2d":
        return _lcnumba_pool(wl, inputs, device, prealloc)
    return _lcnumba_netvlad(wl, inputs, device, prealloc)


def build_lcnumba_masked(wl, inputs, device):
    """NetVLAD with a ``mask`` of valid descriptors (all valid): its cost against the unmasked row."""
    if wl.op != "netvlad":
        raise Skip("mask= is a NetVLAD option")
    return _lcnumba_netvlad(wl, inputs, device, False, masked=True)


# ---------------------------------------------------------------------- NumPy baseline
#
# What a careful NumPy user writes: every product is one BLAS call (or one
# stacked matmul), the data movement is strided views plus one copy, and the
# input gradient is a col2im over kernel offsets (KH*KW vectorised slice
# additions; np.add.at is far slower).


def _pad(x, wl, value=0.0):
    ph, pw = wl.padding
    if not (ph or pw):
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(xp, wl):
    """View ``(N, C, OH, OW, KH, KW)`` of the padded input: window (i, j) of output (oh, ow)."""
    (kh, kw), (dh, dw), (sh, sw), (oh, ow) = wl.kernel, wl.dilation, wl.stride, wl.output_hw
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def _offset_slices(wl):
    """For each kernel offset (i, j): the slices of the padded input read by that offset."""
    (kh, kw), (dh, dw), (sh, sw), (oh, ow) = wl.kernel, wl.dilation, wl.stride, wl.output_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _col2im(dcols, wl, x_shape):
    """Input gradient from column gradients ``(N, C, KH, KW, OH, OW)``: the adjoint of ``_windows``."""
    n, c, h, w = x_shape
    ph, pw = wl.padding
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dcols.dtype)
    for i, j, (rows, cols) in _offset_slices(wl):
        dxp[:, :, rows, cols] += dcols[:, :, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + w] if (ph or pw) else dxp


def _tile_phases(wl):
    """``(t, rows, cols)``: tile ``t = ti * TW + tj`` serves output rows ``ti::TH``, columns ``tj::TW``.

    conv2d is the one-tile case, so both share one code path.
    """
    th, tw = wl.tile if wl.op == "tiled_conv2d" else (1, 1)
    if wl.op == "tiled_conv2d" and wl.tile_mode != "periodic":
        raise Skip("the NumPy baseline implements periodic tiling only")
    for ti in range(th):
        for tj in range(tw):
            yield ti * tw + tj, slice(ti, None, th), slice(tj, None, tw)


def _np_shared_forward(x, w, b, wl):
    """conv2d and tiled_conv2d: one im2col, then one stacked matmul per tile phase."""
    n, c = x.shape[:2]
    (kh, kw), (oh, ow), f = wl.kernel, wl.output_hw, wl.filters
    k = c * kh * kw
    # (N, K, OH, OW), K ordered (c, kh, kw) like the weight: one copy.
    cols = _windows(_pad(x, wl), wl).transpose(0, 1, 4, 5, 2, 3).reshape(n, k, oh, ow)
    wt, bt = w.reshape(-1, f, k), b.reshape(f, -1)
    y = np.empty((n, f, oh, ow), x.dtype)
    for t, rows, cs in _tile_phases(wl):
        ct = cols[:, :, rows, cs]
        yt = np.matmul(wt[t], ct.reshape(n, k, -1))
        y[:, :, rows, cs] = yt.reshape(n, f, *ct.shape[2:]) + bt[:, t, None, None]
    return y, cols


def _np_shared_backward(dy, x_shape, w, cols, wl):
    n, c = x_shape[:2]
    (kh, kw), (oh, ow), f = wl.kernel, wl.output_hw, wl.filters
    k = c * kh * kw
    wt = w.reshape(-1, f, k)
    dw = np.empty_like(wt)
    db = np.empty((f, wt.shape[0]), w.dtype)
    dcols = np.empty((n, k, oh, ow), w.dtype)
    for t, rows, cs in _tile_phases(wl):
        dyt = dy[:, :, rows, cs]
        dy3, c3 = dyt.reshape(n, f, -1), cols[:, :, rows, cs].reshape(n, k, -1)
        # N GEMMs summed: np.tensordot would first copy cols into (K, N*P) order, 3x slower.
        dw[t] = np.matmul(dy3, c3.transpose(0, 2, 1)).sum(axis=0)
        db[:, t] = dy3.sum(axis=(0, 2))
        dcols[:, :, rows, cs] = np.matmul(wt[t].T, dy3).reshape(n, k, *dyt.shape[2:])
    dx = _col2im(dcols.reshape(n, c, kh, kw, oh, ow), wl, x_shape)
    return dx, dw.reshape(w.shape), db.reshape(wl.bias_shape)


def _np_local_forward(x, w, b, wl):
    """local_conv2d as a batched matmul over positions: patches (P, N, K) @ w (P, K, F)."""
    n, c = x.shape[:2]
    (kh, kw), (oh, ow), f = wl.kernel, wl.output_hw, wl.filters
    p, k = oh * ow, c * kh * kw
    patches = _windows(_pad(x, wl), wl).transpose(2, 3, 0, 1, 4, 5).reshape(p, n, k)
    wp = w.reshape(p, f, k)
    y = np.matmul(patches, wp.transpose(0, 2, 1))  # (P, N, F)
    y = y.transpose(1, 2, 0).reshape(n, f, oh, ow) + b
    return y, patches


def _np_local_backward(dy, x_shape, w, patches, wl):
    n, c = x_shape[:2]
    (kh, kw), (oh, ow), f = wl.kernel, wl.output_hw, wl.filters
    p = oh * ow
    dyp = np.ascontiguousarray(dy.reshape(n, f, p).transpose(2, 0, 1))  # (P, N, F)
    dw = np.matmul(dyp.transpose(0, 2, 1), patches).reshape(w.shape)  # (P, F, K)
    dpatches = np.matmul(dyp, w.reshape(p, f, -1))  # (P, N, K)
    dcols = dpatches.reshape(oh, ow, n, c, kh, kw).transpose(2, 3, 4, 5, 0, 1)
    return _col2im(dcols, wl, x_shape), dw, dy.sum(axis=0)


def _np_pool_forward(x, wl):
    return _windows(_pad(x, wl, -np.inf), wl).max(axis=(-2, -1))


def _np_pool_forward_backward(x, dy, wl):
    """Max and first argmax by a loop over window offsets, then the gradient routed back along it."""
    xp = _pad(x, wl, -np.inf)
    best, arg = None, None
    offsets = list(_offset_slices(wl))
    for index, (_, _, (rows, cols)) in enumerate(offsets):
        v = xp[:, :, rows, cols]
        if best is None:
            best, arg = v.copy(), np.zeros(v.shape, np.int16)
        else:
            wins = v > best  # strict: ties keep the first offset, as PyTorch does
            np.copyto(best, v, where=wins)
            arg[wins] = index
    dxp = np.zeros(xp.shape, x.dtype)
    zero = np.zeros((), x.dtype)
    for index, (_, _, (rows, cols)) in enumerate(offsets):
        dxp[:, :, rows, cols] += np.where(arg == index, dy, zero)
    ph, pw = wl.padding
    n, c, h, w = x.shape
    return best, (dxp[:, :, ph:ph + h, pw:pw + w] if (ph or pw) else dxp)


_EPS = 1e-12


def _l2n(v, axis):
    """``v / max(||v||, eps)`` and the norm, for the backward."""
    norm = np.sqrt(np.sum(v * v, axis=axis, keepdims=True))
    return v / np.maximum(norm, _EPS), norm


def _l2n_backward(z, dz, norm, axis):
    """Gradient through ``z = v / max(||v||, eps)``: project out z where the norm exceeds eps."""
    proj = np.where(norm > _EPS, np.sum(z * dz, axis=axis, keepdims=True), 0)
    return (dz - z * proj) / np.maximum(norm, _EPS)


def _np_netvlad_forward(x, w, b, c, wl):
    """The matmul form: ``V = A^T X - (sum A) c``, then intra- and global L2 normalisation."""
    n, d = x.shape[:2]
    k = wl.clusters
    x3 = x.reshape(n, d, -1)
    xn, nx = _l2n(x3, 1) if wl.normalize_input else (x3, None)
    logits = np.matmul(w, xn) + b[:, None]  # (N, K+G, M)
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    ak = a[:, :k]  # ghost clusters take assignment mass but no residuals
    s = ak.sum(axis=2)
    v = np.matmul(ak, xn.transpose(0, 2, 1)) - s[:, :, None] * c
    vn, nv = _l2n(v, 2)
    y, ny = _l2n(vn.reshape(n, -1), 1)
    return y, (xn, nx, a, s, vn, nv, y, ny)


def _np_netvlad_backward(dy, x_shape, w, c, cache, wl):
    """Chain rule in stages: global norm, intra norm, aggregation, soft assignment, input norm."""
    xn, nx, a, s, vn, nv, y, ny = cache
    n = dy.shape[0]
    k = wl.clusters
    dv = _l2n_backward(vn, _l2n_backward(y, dy, ny, 1).reshape(vn.shape), nv, 2)  # (N, K, D)
    ak = a[:, :k]
    # Aggregation: dA_ik = sum_d dV_kd (x_id - c_kd); dX += dV^T A; dc = -sum_n s_nk dV_nk.
    da = np.zeros_like(a)
    da[:, :k] = np.matmul(dv, xn) - np.sum(dv * c, axis=2)[:, :, None]
    dxn = np.matmul(dv.transpose(0, 2, 1), ak)
    dc = -np.einsum("nk,nkd->kd", s, dv)
    # Softmax over clusters, then the assignment logits w . x + b.
    dlogits = a * (da - np.sum(a * da, axis=1, keepdims=True))
    dw = np.tensordot(dlogits, xn, axes=([0, 2], [0, 2]))
    db = dlogits.sum(axis=(0, 2))
    dxn += np.matmul(w.T, dlogits)
    dx = _l2n_backward(xn, dxn, nx, 1) if wl.normalize_input else dxn
    return dx.reshape(x_shape), dw, db, dc


def build_numpy(wl, inputs, device):
    x, dy = inputs["x"], inputs["dy"]
    w, b, c = inputs.get("w"), inputs.get("b"), inputs.get("centroids")
    if wl.op in CONV_OPS:
        if wl.op == "local_conv2d":
            label, fwd_fn, bwd_fn = "numpy batched matmul", _np_local_forward, _np_local_backward
        else:
            label = "numpy im2col" if wl.op == "conv2d" else "numpy im2col, matmul per tile"
            fwd_fn, bwd_fn = _np_shared_forward, _np_shared_backward
            list(_tile_phases(wl))  # raises Skip for block tiling now rather than mid-check

        def fwd_bwd():
            y, cols = fwd_fn(x, w, b, wl)
            dx, dw, db = bwd_fn(dy, x.shape, w, cols, wl)
            return {"y": y, "dx": dx, "dw": dw, "db": db}

        impl = Impl(label, lambda: fwd_fn(x, w, b, wl)[0], fwd_bwd)
    elif wl.op == "max_pool2d":
        def fwd_bwd():
            y, dx = _np_pool_forward_backward(x, dy, wl)
            return {"y": y, "dx": dx}

        impl = Impl("numpy sliding max", lambda: _np_pool_forward(x, wl), fwd_bwd)
    else:
        def fwd_bwd():
            y, cache = _np_netvlad_forward(x, w, b, c, wl)
            dx, dw, db, dc = _np_netvlad_backward(dy, x.shape, w, c, cache, wl)
            return {"y": y, "dx": dx, "dw": dw, "db": db, "dcentroids": dc}

        impl = Impl("numpy matmul", lambda: _np_netvlad_forward(x, w, b, c, wl)[0], fwd_bwd)
    if device.name != "cpu":
        impl.timed = False
        impl.note = "CPU baseline: used as a reference, not timed on --device cuda"
    return impl


# ---------------------------------------------------------------------- PyTorch


def _torch():
    try:
        import torch
    except ImportError:
        raise Skip("PyTorch is not installed (optional peer)") from None
    return torch


def _torch_tensors(inputs, device):
    torch = _torch()
    if device.name == "cuda" and not torch.cuda.is_available():
        raise Skip("this PyTorch build has no CUDA")
    # FP32 against FP32: no TensorFloat-32 in cuBLAS or cuDNN (PyTorch's default lets cuDNN use it)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if device.name == "cuda" else "cpu"
    return {k: torch.from_numpy(v).to(dev) for k, v in inputs.items()}


def _torch_impl(label, model, params, grad_names, t, device):
    """Forward without autograd; forward+backward through autograd, every listed gradient."""
    torch = _torch()
    leaves = [t[k].detach().clone().requires_grad_(True) for k in params]
    dy = t["dy"]

    def fwd():
        with torch.inference_mode():
            return model(*(t[k] for k in params))

    def fwd_bwd():
        y = model(*leaves)
        grads = torch.autograd.grad(y, leaves, dy)
        return {"y": y, **dict(zip(grad_names, grads))}

    def host(tensor):
        return tensor.detach().cpu().numpy()

    sync = torch.cuda.synchronize if device.name == "cuda" else (lambda: None)
    return Impl(label, fwd, fwd_bwd, host, sync)


def _unfold(x, wl):
    torch = _torch()
    return torch.nn.functional.unfold(x, wl.kernel, dilation=wl.dilation, padding=wl.padding, stride=wl.stride)


def _torch_local(x, w, b, wl):
    n = x.shape[0]
    (oh, ow), f = wl.output_hw, wl.filters
    cols = _unfold(x, wl)  # (N, K, P)
    y = _torch().einsum("nkp,pfk->nfp", cols, w.reshape(oh * ow, f, -1))
    return y.reshape(n, f, oh, ow) + b


def _torch_tiled(x, w, b, wl):
    torch = _torch()
    n = x.shape[0]
    (oh, ow), (th, tw), f = wl.output_hw, wl.tile, wl.filters
    if wl.tile_mode == "periodic" and oh % th == 0 and ow % tw == 0:
        # Periodic tiles as a reshape: output (a*TH + i, c*TW + j) uses tile (i, j).
        cols = _unfold(x, wl).reshape(n, -1, oh // th, th, ow // tw, tw)
        y = torch.einsum("nkaibj,ijfk->nfaibj", cols, w.reshape(th, tw, f, -1))
        return (y + b.reshape(1, f, 1, th, 1, tw)).reshape(n, f, oh, ow)
    # Otherwise expand the tiles to a per-position weight: correct, memory-hungry.
    ti = torch.tensor([i % th if wl.tile_mode == "periodic" else i * th // oh for i in range(oh)])
    tj = torch.tensor([j % tw if wl.tile_mode == "periodic" else j * tw // ow for j in range(ow)])
    return _torch_local(x, w[ti][:, tj], b[:, ti][:, :, tj], wl)


def _torch_netvlad_bmm(x, w, b, c, wl):
    F = _torch().nn.functional
    n, d = x.shape[:2]
    x3 = x.reshape(n, d, -1)
    if wl.normalize_input:
        x3 = F.normalize(x3, dim=1)
    a = F.softmax(_torch().matmul(w, x3) + b[:, None], dim=1)[:, : wl.clusters]
    v = _torch().bmm(a, x3.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * c
    return F.normalize(F.normalize(v, dim=2).reshape(n, -1), dim=1)


def _torch_netvlad_loop(x, w, b, c, wl):
    """NetVLAD.forward of pytorch-NetVlad (Nanne/pytorch-NetVlad, netvlad.py) as written.

    Changes: the loop variable is ``k`` (the original reuses ``C``), and
    ghost clusters take part in the softmax but get no residuals.
    """
    torch = _torch()
    F = torch.nn.functional
    N, C = x.shape[:2]
    num_clusters = wl.clusters
    if wl.normalize_input:
        x = F.normalize(x, p=2, dim=1)
    soft_assign = F.conv2d(x, w[:, :, None, None], b).view(N, w.shape[0], -1)
    soft_assign = F.softmax(soft_assign, dim=1)[:, :num_clusters]
    x_flatten = x.view(N, C, -1)
    vlad = torch.zeros([N, num_clusters, C], dtype=x.dtype, layout=x.layout, device=x.device)
    for k in range(num_clusters):
        residual = x_flatten.unsqueeze(0).permute(1, 0, 2, 3) - \
            c[k:k + 1, :].expand(x_flatten.size(-1), -1, -1).permute(1, 2, 0).unsqueeze(0)
        residual *= soft_assign[:, k:k + 1, :].unsqueeze(2)
        vlad[:, k:k + 1, :] = residual.sum(dim=-1)
    vlad = F.normalize(vlad, p=2, dim=2)
    vlad = vlad.view(x.size(0), -1)
    return F.normalize(vlad, p=2, dim=1)


def build_torch(wl, inputs, device, variant=None):
    t = _torch_tensors(inputs, device)
    F = _torch().nn.functional
    conv_grads = ("dx", "dw", "db")
    if wl.op == "conv2d":
        def model(x, w, b):
            return F.conv2d(x, w, b, stride=wl.stride, padding=wl.padding, dilation=wl.dilation)

        return _torch_impl("torch F.conv2d", model, ("x", "w", "b"), conv_grads, t, device)
    if wl.op == "local_conv2d":
        return _torch_impl("torch unfold+einsum", lambda x, w, b: _torch_local(x, w, b, wl),
                           ("x", "w", "b"), conv_grads, t, device)
    if wl.op == "tiled_conv2d":
        return _torch_impl("torch unfold+einsum", lambda x, w, b: _torch_tiled(x, w, b, wl),
                           ("x", "w", "b"), conv_grads, t, device)
    if wl.op == "max_pool2d":
        def model(x):
            return F.max_pool2d(x, wl.kernel, stride=wl.stride, padding=wl.padding, dilation=wl.dilation)

        return _torch_impl("torch F.max_pool2d", model, ("x",), ("dx",), t, device)
    fn, label = ((_torch_netvlad_loop, "torch loop (pytorch-NetVlad)") if variant == "loop"
                 else (_torch_netvlad_bmm, "torch bmm"))
    return _torch_impl(label, lambda x, w, b, c: fn(x, w, b, c, wl), ("x", "w", "b", "centroids"),
                       ("dx", "dw", "db", "dcentroids"), t, device)


# ---------------------------------------------------------------------- lcnumba.torch


def _lcnumba_torch_module(wl, t):
    """The lcnumba.torch layer of ``wl`` holding its weights, or None where the functional form is used."""
    import lcnumba.torch as lt

    c = wl.input_shape[1]
    kwargs = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation)
    if wl.op == "local_conv2d":
        layer = lt.LocallyConnected2d(c, wl.filters, wl.kernel, wl.input_shape[2:], **kwargs, dtype=t["x"].dtype)
    elif wl.op == "tiled_conv2d":
        layer = lt.TiledConv2d(c, wl.filters, wl.kernel, wl.tile, **kwargs, tile_mode=wl.tile_mode,
                               dtype=t["x"].dtype)
    elif wl.op == "netvlad":
        layer = lt.NetVLAD(wl.clusters, c, num_ghost=wl.ghosts, normalize_input=wl.normalize_input,
                           dtype=t["x"].dtype)
        with _torch().no_grad():
            layer.centroids.copy_(t["centroids"])
    else:
        return None
    with _torch().no_grad():
        layer.weight.copy_(t["w"])
        layer.bias.copy_(t["b"])
    return layer


def build_lcnumba_torch(wl, inputs, device):
    """lcnumba's PyTorch bridge: the nn module of the family (its parameters are the leaves), or the functional form.

    Gradients through autograd, as a PyTorch user gets them; the forward under ``torch.inference_mode``.
    """
    torch = _torch()
    try:
        import lcnumba.torch as lt
    except ImportError as error:
        raise Skip(f"lcnumba.torch not importable: {error}") from None
    t = _torch_tensors(inputs, device)
    layer = _lcnumba_torch_module(wl, t)
    if layer is None:
        F = lt.functional
        if wl.op == "conv2d":
            return _torch_impl("lcnumba.torch functional", lambda x, w, b: F.conv2d(
                x, w, b, stride=wl.stride, padding=wl.padding, dilation=wl.dilation),
                ("x", "w", "b"), ("dx", "dw", "db"), t, device)
        return _torch_impl("lcnumba.torch functional", lambda x: F.max_pool2d(
            x, wl.kernel, stride=wl.stride, padding=wl.padding, dilation=wl.dilation), ("x",), ("dx",), t, device)
    layer = layer.to(t["x"].device)
    x_leaf = t["x"].detach().clone().requires_grad_(True)
    params = dict(layer.named_parameters())
    names = ["dx"] + ["d" + ("w" if name == "weight" else "b" if name == "bias" else name) for name in params]

    def fwd():
        with torch.inference_mode():
            return layer(t["x"])

    def fwd_bwd():
        y = layer(x_leaf)
        grads = torch.autograd.grad(y, [x_leaf, *params.values()], t["dy"])
        return {"y": y, **dict(zip(names, grads))}

    sync = torch.cuda.synchronize if device.name == "cuda" else (lambda: None)
    return Impl(f"lcnumba.torch {type(layer).__name__}", fwd, fwd_bwd, lambda v: v.detach().cpu().numpy(), sync)


# Short names (used by --memory) -> builders, in table order.
def build_transpose_by_local_passes(wl, inputs, device):
    """The transposed local layer without the transposed functions: the passes of ``local_conv2d``.

    Its forward is ``local_conv2d_backward_input`` on the same shapes plus the bias (what the transposed
    forward runs, and the time it must stay within 1.2x of); its gradients ``local_conv2d_forward`` and
    ``local_conv2d_backward_weight`` with the arrays exchanged, and a sum over the batch.
    """
    if device.name == "cuda":
        raise Skip("adds the bias with NumPy: host arrays only")
    forward, backward_input, backward_weight = _lcnumba_functions(
        "local_conv2d_forward", "local_conv2d_backward_input", "local_conv2d_backward_weight")
    kw = wl.conv_kwargs()
    x, w, b, dy = (inputs[k] for k in ("x", "w", "b", "dy"))

    def fwd():
        y = backward_input(x, w, wl.output_shape, **kw)
        y += b
        return y

    def fwd_bwd():
        return {"y": fwd(), "dx": forward(dy, w, **kw), "dw": backward_weight(x, dy, w.shape, **kw),
                "db": dy.sum(axis=0)}

    return Impl("local_conv2d_backward_input", fwd, fwd_bwd)


BUILDERS = {
    "lcnumba": lambda wl, inp, dev: build_lcnumba(wl, inp, dev, prealloc=False),
    "lcnumba out=": lambda wl, inp, dev: build_lcnumba(wl, inp, dev, prealloc=True),
    "lcnumba mask=": build_lcnumba_masked,
    "numpy": build_numpy,
    "torch": build_torch,
    "torch bmm": build_torch,
    "torch loop": lambda wl, inp, dev: build_torch(wl, inp, dev, variant="loop"),
    "lcnumba.torch": build_lcnumba_torch,
    "local_conv2d_backward_input": build_transpose_by_local_passes,
}


def builders_for(wl):
    if wl.op == TRANSPOSE_OP:
        return ["lcnumba", "lcnumba out=", "local_conv2d_backward_input"]
    # lcnumba.torch right after lcnumba: the two rows compared for the bridge's cost get alike neighbours.
    names = ["lcnumba", "lcnumba.torch", "lcnumba out=", "numpy"]
    if wl.op == "netvlad":
        return names[:1] + ["lcnumba mask="] + names[1:] + ["torch bmm", "torch loop"]
    return names + ["torch"]


def build_all(wl, inputs, device):
    """Every implementation of ``wl``: a list of Impl, and (name, reason) for those skipped."""
    impls, skipped = [], []
    for name in builders_for(wl):
        try:
            impls.append(BUILDERS[name](wl, inputs, device))
        except Skip as reason:
            skipped.append((name, str(reason)))
    return impls, skipped


# ====================================================================== checks


def _relative_error(value, reference):
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(value.astype(np.float64) - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def check_workload(wl, impls, skipped, dtype):
    """Run each implementation once and compare with the reference; returns (label, message) failures.

    The reference is lcnumba (allocating) when it runs, else the NumPy
    baseline. On a mismatch the error is also measured against the NumPy
    baseline, so the report says which side is off. Implementations raising
    NotImplementedError or ImportError move to ``skipped``; any other
    exception is a failure.
    """
    tol = TOLERANCE[np.dtype(dtype)]
    results, failures = {}, []
    for impl in list(impls):
        try:
            raw = impl.forward_backward()
            # Copies: an out= buffer is rewritten by the next call.
            outputs = {k: np.array(impl.host(v)) for k, v in raw.items()}
            outputs["y (forward only)"] = np.array(impl.host(impl.forward()))
        except (NotImplementedError, ImportError) as error:
            # Not written yet (e.g. lcnumba's CUDA kernels): a note, not a failure.
            impls.remove(impl)
            skipped.append((impl.label, f"{type(error).__name__}: {error}"))
            continue
        except Exception as error:  # a crash is a wrong result too: report it with the mismatches
            impls.remove(impl)
            failures.append((impl.label, f"{wl.name}: {impl.label} raised {type(error).__name__}: {error}"))
            skipped.append((impl.label, f"raised {type(error).__name__} (see mismatches)"))
            continue
        results[impl.label] = outputs
        for k, buffer in (impl.buffers or {}).items():
            if raw[k] is not buffer:
                failures.append((impl.label, f"{wl.name}: {impl.label} did not return its out= buffer for {k}"))
    if not results:
        return failures
    numpy_label = next((label for label in results if label.startswith("numpy")), None)
    reference = BASE if BASE in results else (numpy_label or next(iter(results)))
    ref = results[reference]
    for label, outputs in results.items():
        for key, value in outputs.items():
            expected = ref["y"] if key == "y (forward only)" else ref[key]
            if value.shape != expected.shape:
                failures.append((label, f"{wl.name}: {label} {key} has shape {value.shape}, "
                                        f"{reference} {expected.shape}"))
                continue
            if value.dtype != np.dtype(dtype):
                failures.append((label, f"{wl.name}: {label} {key} has dtype {value.dtype}, expected {dtype}"))
                continue
            if not np.all(np.isfinite(value)):
                failures.append((label, f"{wl.name}: {label} {key} has non-finite values"))
                continue
            error = _relative_error(value, expected.astype(np.float64))
            if error > tol:
                line = f"{wl.name}: {label} {key} differs from {reference}: max rel. error {error:.2e} > {tol:.0e}"
                if numpy_label and label != numpy_label and reference != numpy_label:
                    vs_numpy = _relative_error(value, results[numpy_label][
                        "y" if key == "y (forward only)" else key].astype(np.float64))
                    line += f" ({vs_numpy:.2e} from {numpy_label})"
                failures.append((label, line))
    return failures


# ====================================================================== timing


def time_group(impls, pass_name, budget, min_repeat, max_repeat, warmup):
    """Median and min seconds per implementation, timing them round-robin.

    Interleaving spreads slow drifts in machine load (other processes,
    frequency changes) over every implementation instead of penalising
    whichever ran during the bad spell, which keeps the ratios honest on a
    shared machine. Rounds continue until ``budget`` seconds are spent, at
    least ``min_repeat`` and at most ``max_repeat``.
    """
    calls = {impl.label: getattr(impl, pass_name) for impl in impls}
    for impl in impls:
        for _ in range(warmup):
            calls[impl.label]()
            impl.sync()
    times = {impl.label: [] for impl in impls}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection landing inside one sample would be charged to that implementation
    try:
        start = time.perf_counter()
        rounds = 0
        while rounds < max_repeat and (rounds < min_repeat or time.perf_counter() - start < budget):
            for impl in impls:
                t0 = time.perf_counter()
                calls[impl.label]()
                impl.sync()
                times[impl.label].append(time.perf_counter() - t0)
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return {label: (statistics.median(ts), min(ts), len(ts)) for label, ts in times.items()}


# ====================================================================== report


def environment(threads, dtype, device, load_before):
    import numba

    load_after = os.getloadavg()[0]
    lines = [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- 1-minute load average before / after the run: {load_before:.1f} / {load_after:.1f}"
             + (" (other processes competed for the cores: expect noisy timings)"
                if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1) + 0.5 else ""),
             f"- CPU: {_cpu_model()} ({os.cpu_count()} logical cores); device: {device.name}",
             f"- threads: {threads} (Numba, PyTorch and BLAS); Numba threading layer: {_threading_layer()}; "
             f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'default')}",
             f"- dtype: {np.dtype(dtype).name}",
             f"- Python {platform.python_version()}, NumPy {np.__version__} ({_blas_name()}), Numba {numba.__version__}"]
    try:
        import torch

        lines.append(f"- PyTorch {torch.__version__} (intra-op threads {torch.get_num_threads()})")
    except ImportError:
        lines.append("- PyTorch: not installed (its rows are skipped)")
    try:
        import lcnumba

        where = os.path.dirname(os.path.abspath(lcnumba.__file__))
        lines.append(f"- lcnumba {getattr(lcnumba, '__version__', '?')} from {where} at {_git_commit(where)}")
    except ImportError:
        lines.append("- lcnumba: not importable")
    return lines


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_name():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # the config layout differs across NumPy versions; this is decoration
        return "BLAS unknown"


def _threading_layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        return f"not yet chosen (config: {numba.config.THREADING_LAYER})"


def _git_commit(where):
    """Commit of the checkout holding ``where`` ("-dirty": uncommitted changes were measured)."""
    try:
        out = subprocess.run(["git", "-C", where, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _ms(seconds):
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _cell(timing):
    if timing is None:
        return "—"
    median, best, n = timing
    return f"{_ms(median)} ({_ms(best)}) ×{n}"


def _speedup(timing, base):
    if timing is None or base is None:
        return "—"
    return f"{timing[0] / base[0]:.2f}x"


def has_roofline(args):
    """DESIGN section 6 gives the roofline of float32 on 2 CPU threads only."""
    return np.dtype(args.dtype) == np.float32 and args.device == "cpu" and args.threads == 2


def timing_table(rows, roofline):
    """Markdown table; ``rows`` are (workload, label, fwd, fwd_bwd, note)."""
    header = ["workload", "implementation", "fwd ms: median (min) ×n", "fwd+bwd ms: median (min) ×n",
              "lcnumba speedup fwd", "lcnumba speedup fwd+bwd", "fwd+bwd GFLOP/s"]
    if roofline:
        header.append("fwd+bwd / roofline")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    bases = {}
    for wl, label, fwd, fb, _ in rows:
        if label == BASE and fwd is not None:
            bases[wl.name] = (fwd, fb)
    for wl, label, fwd, fb, note in rows:
        if note is not None:
            lines.append(f"| {wl.name} | {label} | skipped: {note} |" + " |" * (len(header) - 3))
            continue
        base_fwd, base_fb = bases.get(wl.name, (None, None))
        flops = wl.flops()
        gflops = f"{flops / fb[0] / 1e9:.1f}" if (flops and fb) else "—"
        cells = [wl.name, label, _cell(fwd), _cell(fb), _speedup(fwd, base_fwd), _speedup(fb, base_fb), gflops]
        if roofline:
            cells.append(f"{fb[0] * 1e3 / wl.roofline_ms:.1f}" if (fb and wl.roofline_ms) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ====================================================================== the main comparison


def run_comparison(names, args, device, notes):
    """Check every workload, then time every workload; returns the table lines and the failures.

    All checks run before any timing, so a wrong result stops the run in
    seconds rather than after minutes of timing.
    """
    checked, failures = {}, []
    for name in names:
        wl = WORKLOADS[name]
        start = time.perf_counter()
        impls, skipped = build_all(wl, wl.make_inputs(args.dtype, seed=args.seed), device)
        problems = check_workload(wl, impls, skipped, args.dtype)
        print(f"[{name}] checked {len(impls)} implementations in {time.perf_counter() - start:.1f} s"
              + (f": {len(problems)} MISMATCHES" if problems else ": all agree"), file=sys.stderr)
        for _, line in problems:
            print("  MISMATCH " + line, file=sys.stderr)
        remaining = {impl.label for impl in impls}  # those that raised are already in skipped
        # The reference itself may be the wrong one: with --keep-going every implementation that
        # runs is timed, and the notes name the ones that disagree.
        notes.extend(f"- {name}, {label}: DISAGREES with the reference (see mismatches)"
                     for label in dict.fromkeys(label for label, _ in problems if label in remaining))
        checked[name] = skipped
        failures += [line for _, line in problems]
        del impls
        gc.collect()
    if failures and not args.keep_going:
        sys.exit("outputs disagree; nothing was timed (--keep-going times the rest anyway):\n  "
                 + "\n  ".join(failures))

    rows = []
    for name in names:
        wl = WORKLOADS[name]
        start = time.perf_counter()
        impls, _ = build_all(wl, wl.make_inputs(args.dtype, seed=args.seed), device)
        skipped = checked[name]
        gone = {label for label, _ in skipped}
        impls = [impl for impl in impls if impl.label not in gone]
        timed = [impl for impl in impls if impl.timed]
        result = {"forward": {}, "forward_backward": {}}
        for pass_name in result:
            if timed:
                result[pass_name] = time_group(timed, pass_name, args.budget, args.min_repeat, args.repeat,
                                               args.warmup)
        print(f"[{name}] timed in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        for impl in timed:
            rows.append((wl, impl.label, result["forward"][impl.label], result["forward_backward"][impl.label],
                         None))
        skipped += [(impl.label, impl.note) for impl in impls if not impl.timed]
        rows += [(wl, label, None, None, reason) for label, reason in skipped]
        notes.extend(f"- {name}, {impl.label}: {impl.note}" for impl in timed if impl.note)
        del impls, timed
        gc.collect()
    return timing_table(rows, has_roofline(args)), failures


# ====================================================================== batch-size sweep


def run_batch_sweep(args, device):
    """Fwd+bwd time of deepface_l4 against batch size; a Markdown table, and a plot if matplotlib is there."""
    base = WORKLOADS[BATCH_WORKLOAD]
    series, notes = {}, set()
    for n in BATCH_SIZES:
        wl = base.with_batch(n)
        inputs = wl.make_inputs(args.dtype, seed=args.seed)
        impls, skipped = build_all(wl, inputs, device)
        notes.update(f"{label}: {reason}" for label, reason in skipped)
        impls = [impl for impl in impls if impl.timed]
        # At least one warm-up call: the first size compiles lcnumba's kernels.
        timings = time_group(impls, "forward_backward", args.budget, args.min_repeat, args.repeat,
                             max(args.warmup, 1))
        for label, (median, _, _) in timings.items():
            series.setdefault(label, {})[n] = median
        print(f"[batch sweep] N={n} done", file=sys.stderr)
        del impls, inputs
        gc.collect()
    labels = list(series)
    lines = [f"### {BATCH_WORKLOAD} fwd+bwd time (ms, median) against batch size N", "",
             "| N | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for n in BATCH_SIZES:
        lines.append(f"| {n} | " + " | ".join(_ms(series[label][n]) if n in series[label] else "—"
                                              for label in labels) + " |")
    lines += [f"- {note}" for note in sorted(notes)]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        lines.append(f"- no plot written to {args.plot_batch}: matplotlib is not installed "
                     "(pip install matplotlib); the numbers are in the table above")
        return lines
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in labels:
        ns = sorted(series[label])
        ax.plot(ns, [series[label][n] * 1e3 for n in ns], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(BATCH_SIZES, [str(n) for n in BATCH_SIZES])
    ax.set_xlabel("batch size N")
    ax.set_ylabel("fwd+bwd time (ms, median)")
    ax.set_title(f"{BATCH_WORKLOAD} (local_conv2d), {np.dtype(args.dtype).name}, {args.threads} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot_batch, dpi=120)
    lines.append(f"- plot written to {args.plot_batch}")
    return lines


# ====================================================================== per-call overhead of lcnumba.torch


def run_overhead(args, device):
    """Time per call of the NumPy API and of lcnumba.torch's module on a tiny layer, and their difference.

    On ``TINY_LAYER`` the kernels take microseconds, so the difference of the medians is what the bridge
    adds to a call: tensors to arrays and back, shape bookkeeping, the autograd node, ``nn.Module``'s call
    (forward, under ``torch.inference_mode``) and PyTorch's autograd engine (fwd+bwd).
    """
    wl = TINY_LAYER
    inputs = wl.make_inputs(args.dtype, seed=args.seed)
    title = f"### Per-call cost on a tiny layer ({wl.op}, x {wl.input_shape} -> {wl.output_shape})"
    try:
        impls = [BUILDERS["lcnumba"](wl, inputs, device), build_lcnumba_torch(wl, inputs, device)]
    except Skip as reason:
        return [title, "", f"- skipped: {reason}"]
    problems = check_workload(wl, impls, [], args.dtype)
    if problems:
        return [title, ""] + [f"- MISMATCH {line}" for _, line in problems]
    lines = [title, "", "| pass | lcnumba (NumPy API) µs | lcnumba.torch µs | overhead µs (median difference) |",
             "|---|---:|---:|---:|"]
    for pass_name, label in (("forward", "fwd"), ("forward_backward", "fwd+bwd")):
        timings = time_group(impls, pass_name, args.budget, 500, 20000, 50)
        base, bridge = (timings[impl.label] for impl in impls)
        lines.append(f"| {label} | {base[0] * 1e6:.1f} (min {base[1] * 1e6:.1f}) ×{base[2]} "
                     f"| {bridge[0] * 1e6:.1f} (min {bridge[1] * 1e6:.1f}) ×{bridge[2]} "
                     f"| {(bridge[0] - base[0]) * 1e6:.1f} |")
    lines.append("- fwd+bwd: both call local_conv2d_forward and local_conv2d_backward once; the module's calls go "
                 "through an autograd node and PyTorch's autograd engine (torch.autograd.grad)")
    return lines


# ====================================================================== peak memory


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _reset_peak_rss():
    """Lower the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap():
    """Hand freed heap pages back to the OS (glibc), so the baseline RSS holds live data only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_child(spec, args):
    """In a fresh process: peak RSS of one fwd+bwd above the RSS after inputs and a warm-up call.

    The warm-up call compiles (or loads cached) kernels and lets out=
    buffers be touched; the peak mark is then reset, so neither compilation
    nor earlier imports count. Prints one JSON line.
    """
    name, impl_name = spec.split(":", 1)
    wl = WORKLOADS[name]
    inputs = wl.make_inputs(args.dtype, seed=args.seed)
    try:
        impl = BUILDERS[impl_name](wl, inputs, Device("cpu"))
        impl.forward_backward()  # warm-up: compile, touch buffers
    except (Skip, NotImplementedError) as reason:
        print(json.dumps({"skipped": str(reason)}))
        return
    gc.collect()
    _trim_heap()
    reset = _reset_peak_rss()
    before = _rss_kib()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = impl.forward_backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    print(json.dumps({"label": impl.label, "extra_kib": peak - before, "reset": reset,
                      "masked": (not reset) and peak_before >= peak}))


def run_memory(args):
    lines = ["### Peak memory of one fwd+bwd (child process, peak RSS above RSS after inputs)", "",
             "| workload | implementation | extra peak MB | y + gradients MB | x, w, y + gradients MB "
             "| extra ÷ (y + gradients) |",
             "|---|---|---:|---:|---:|---:|"]
    notes = []
    for name, impl_name in MEMORY_CASES:
        wl = WORKLOADS[name]
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", f"{name}:{impl_name}",
               "--dtype", args.dtype, "--threads", str(args.threads), "--seed", str(args.seed)]
        # A fixed mmap threshold: glibc otherwise raises it after the warm-up call frees big
        # blocks, and the measured call then reuses retained heap that the baseline already counted.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            notes.append(f"{name} {impl_name}: child failed: {proc.stderr.strip()[-500:]}")
            continue
        if "skipped" in report:
            lines.append(f"| {name} | {impl_name} | skipped: {report['skipped']} | | | |")
            continue
        # A page or two below the baseline is measurement noise, not negative memory.
        extra = max(report["extra_kib"], 0) * 1024
        everything = wl.nbytes(args.dtype)
        created = everything // 2  # y, dx, dw, db (dcentroids): one of each value-gradient pair
        flag = " (masked by an earlier peak: a lower bound)" if report["masked"] else ""
        lines.append(f"| {name} | {report['label']} | {extra / 1e6:.1f}{flag} | {created / 1e6:.1f} "
                     f"| {everything / 1e6:.1f} | {extra / created:.2f} |")
        if not report["reset"]:
            notes.append("the peak-RSS mark could not be reset (/proc/self/clear_refs): "
                         "import and compile peaks may hide smaller op peaks")
    notes.append("y + gradients is what an allocating fwd+bwd must create at least (ratio 1.0: no "
                 "workspace); with out= buffers, created before the measurement, only workspace counts; "
                 "peers keep their autograd graph or cached activations alive until the backward ends")
    return lines + [f"- {note}" for note in dict.fromkeys(notes)]


# ====================================================================== command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time lcnumba against NumPy and PyTorch on the DESIGN section 6 workloads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workloads", default="all",
                        help="comma-separated names, 'all', or 'none' (only --memory / --plot-batch)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for Numba, PyTorch and BLAS (default: Numba's default)")
    parser.add_argument("--budget", type=float, default=4.0,
                        help="seconds of timing per workload and pass, shared by its implementations")
    parser.add_argument("--repeat", type=int, default=50, help="most timed rounds per workload and pass")
    parser.add_argument("--omp-wait", choices=("passive", "active"), default="passive",
                        help="OMP_WAIT_POLICY for Numba's and PyTorch's OpenMP threads (set before import)")
    parser.add_argument("--min-repeat", type=int, default=3, help="fewest timed rounds, whatever the budget")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per implementation first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the input data")
    parser.add_argument("--output", metavar="FILE.md", help="also write the report to this file")
    parser.add_argument("--memory", action="store_true",
                        help="add peak memory of deepface_l4 and netvlad_vgg fwd+bwd (CPU)")
    parser.add_argument("--plot-batch", metavar="FILE.png",
                        help=f"add time against batch size {BATCH_SIZES} for {BATCH_WORKLOAD} fwd+bwd")
    parser.add_argument("--overhead", action="store_true",
                        help="add the per-call cost of lcnumba.torch against the NumPy API on a tiny layer")
    parser.add_argument("--keep-going", action="store_true",
                        help="on mismatching outputs, report them and time the rest instead of stopping")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workloads in ("all", ""):
        args.names = list(WORKLOADS)
    elif args.workloads == "none":
        args.names = []
    else:
        args.names = [n.strip() for n in args.workloads.split(",") if n.strip()]
        unknown = [n for n in args.names if n not in WORKLOADS]
        if unknown:
            parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    return args


def set_threads(threads):
    """One thread count for Numba and PyTorch (BLAS got it from the environment); returns it."""
    import numba

    if threads is None:
        threads = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    return threads


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for wl in WORKLOADS.values():
            print(f"{wl.name:12s} {wl.op:13s} x {wl.input_shape} -> {wl.output_shape}")
        return 0
    args.threads = set_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return 0
    if args.device == "cuda":
        try:
            from numba import cuda

            available = cuda.is_available()
        except ImportError:
            available = False
        if not available:
            sys.exit("--device cuda: no CUDA GPU is available here (numba.cuda.is_available() is False)")
        if args.memory or args.plot_batch:
            sys.exit("--memory and --plot-batch measure the CPU; run them without --device cuda")
    device = Device(args.device)

    load_before = os.getloadavg()[0]
    sections, notes, failures = [], [], []
    if args.names:
        table, failures = run_comparison(args.names, args, device, notes)
        sections += table + ["", (
            "Times in ms: median (min) over n timed rounds, implementations interleaved round by round. "
            "lcnumba speedup = peer time / lcnumba time (medians): above 1 lcnumba is faster. "
            "fwd+bwd computes the output and every gradient.")]
        if has_roofline(args):
            sections.append("Roofline: the DESIGN section 6 lower bound for fwd+bwd (2 threads, float32); "
                            "1.0 would be at the bound.")
        sections += [""] + notes + [""] * bool(notes)
    if failures:
        sections += ["## Mismatching outputs", ""] + [f"- {line}" for line in failures] + [""]
    if args.memory:
        sections += run_memory(args) + [""]
    if args.plot_batch:
        sections += run_batch_sweep(args, device) + [""]
    if args.overhead:
        sections += run_overhead(args, device) + [""]
    # The environment goes on top but is read last: Numba picks its threading layer at the first parallel call.
    report = ["# lcnumba against NumPy and PyTorch", ""] + environment(args.threads, args.dtype, device, load_before) + [""]
    report += sections
    text = "\n".join(report)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
