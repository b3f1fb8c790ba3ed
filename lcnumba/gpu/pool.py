"""CUDA kernels of max-pooling, with exactly the semantics of ``lcnumba.cpu.pool`` (PyTorch's).

Layouts (1-D pooling runs as 2-D with ``H = KH = 1``), all C-contiguous::

    x        (P, H, W)       P = N * C planes
    y        (P, OH, OW)
    indices  (P, OH, OW)     int64, flat ``h * W + w`` in the unpadded plane, -1 for no cell
    dy       (P, OH * OW)
    dx       (P, H * W)

Forward (``max_pool2d_fwd``): a thread per output, ``j`` fastest, so a
warp writes consecutive outputs and reads the input rows of neighbouring
windows (coalesced up to the stride). The window is scanned row-major from
its first in-image cell; a cell replaces the running maximum when it is
greater or NaN, so ties keep the first cell and NaN wins, and padded
cells (``-inf``) are never read. A window with no in-image cell (only with
dilation) gives ``-inf`` and index ``-1``. The index is computed as the
scan goes and stored only when asked for.

Backward with the geometry (``max_pool2d_bwd_gather``): a thread per input
cell ``(p, h, w)``, ``w`` fastest, visits the windows that contain the
cell, exactly (``windows`` per axis, the windows of ``indexing.tap_range``'s
taps in 32-bit arithmetic: at most ``ceil(KH/SH) * ceil(KW/SW)`` windows
without dilation), in output order, and adds
``dy[p, i, j]`` where ``indices[p, i, j]`` is this cell. Each cell is
written once by its own thread (no zeroing pass, no atomics) and its sum
runs in output order, as the scatter's: the same ``dx``, bitwise, for
indices the forward returned. An index outside its window adds nothing;
one outside ``[-1, H*W)`` of a window the gather visits is also reported
as below. A window made of padding only is visited by no cell, so its
index is never read. Work: ``O(cells x windows per cell)``.

Backward without the geometry (``max_pool2d_bwd``) has only ``dy``,
``indices`` and the input size, as on the CPU, and the indices may be any
flat positions of the plane, so it cannot gather over windows. A block owns a
plane: it stages a chunk of ``(dy, index)`` pairs in shared memory, and
each thread adds the pairs whose index is one of *its* cells (a
contiguous run of ``ceil(H*W / blockDim)`` cells, so ownership is two
compares) to ``dx``, in output order. Every
cell's sum therefore runs in output order, as on the CPU: race-free,
atomic-free and bitwise equal to the CPU result.

Index check without a synchronisation. An index outside ``[-1, H*W)``
is skipped by the scatter, and the thread that staged it writes it, with
the plane size, to a two-slot error buffer in mapped (host) memory
(``error_slot``, one per device, made on first use). The host reads that
buffer without waiting for the stream: right after the launch (the
simulator, and a GPU whose kernel has already finished, see the error of
this very call: the call then copies the indices back, an error path only,
and reports the first bad index exactly as the CPU does) and at the start
of every later max-pooling backward (which reports the stored index of an
earlier call). Either way the error is a ``ValueError`` and the buffer is
cleared; ``dx`` of the faulty call holds the scatter of its valid indices.

Every kernel takes its integers in one ``int32`` tuple ``geo``; index
divisions are 32-bit (``intmath``).
"""

import math

import numpy as np

from .. import checks
from .intmath import div32, divmod32
from .jit import SIMULATOR, cuda, device_function, kernel
from .launch import block_threads, blockwise, elementwise, empty_view

#: (dy, index) pairs staged per step of the backward.
CHUNK = 256


@kernel("void({f}[:, :, ::1], UniTuple(int32, 9), {f}[:, :, ::1], int64[:, :, ::1])")
def max_pool2d_fwd(x, geo, y, indices):
    """``geo = (kh, kw, sh, sw, ph, pw, dil_h, dil_w, with_indices)``."""
    kh, kw, sh, sw, ph, pw, dil_h, dil_w, with_indices = geo
    planes = x.shape[0]
    height = x.shape[1]
    width = x.shape[2]
    oh = y.shape[1]
    ow = y.shape[2]
    size = planes * oh * ow
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        rest, j = divmod32(e, ow)
        p, i = divmod32(rest, oh)
        h0 = i * sh - ph
        w0 = j * sw - pw
        best = -1
        m = x.dtype.type(-math.inf)
        for r in range(kh):
            hh = h0 + r * dil_h
            if hh < 0 or hh >= height:
                continue
            for c in range(kw):
                ww = w0 + c * dil_w
                if ww < 0 or ww >= width:
                    continue
                v = x[p, hh, ww]
                if best < 0 or v > m or v != v:
                    m = v
                    best = hh * width + ww
        y[p, i, j] = m
        if with_indices:
            indices[p, i, j] = best


@kernel("void({f}[:, ::1], int64[:, ::1], {f}[:, ::1], int64[::1])")
def max_pool2d_bwd(dy, indices, dx, error):
    """``dx[p, indices[p, q]] += dy[p, q]`` in order of ``q``; a block per plane, a thread per run of cells.

    An index outside ``[-1, H*W)`` is skipped and written, with ``H*W``, to ``error``.
    """
    planes = dy.shape[0]
    q_count = dy.shape[1]
    size = dx.shape[1]
    dys = cuda.shared.array(CHUNK, dy.dtype)
    ids = cuda.shared.array(CHUNK, indices.dtype)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    zero = dx.dtype.type(0)
    per_thread = (size + nt - 1) // nt
    lo = tid * per_thread  # this thread's cells: [lo, hi)
    hi = min(size, lo + per_thread)
    for p in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        k = tid  # coalesced; finished before any add (the barrier below)
        while k < size:
            dx[p, k] = zero
            k += nt
        q0 = 0
        while q0 < q_count:
            cuda.syncthreads()  # zeroing done, the previous chunk consumed
            qq = tid
            while qq < CHUNK:
                q = q0 + qq
                if q < q_count:
                    k = indices[p, q]
                    if k < -1 or k >= size:
                        error[0] = k  # any bad index will do here; the host finds the first one
                        error[1] = size
                    dys[qq] = dy[p, q]
                    ids[qq] = k
                else:
                    ids[qq] = -1
                qq += nt
            cuda.syncthreads()
            for qq in range(CHUNK):
                k = ids[qq]
                if k >= lo and k < hi:
                    dx[p, k] += dys[qq]
            q0 += CHUNK


@device_function
def windows(pos, pad, kernel, stride, dilation, window_step, out_size):
    """The windows along one axis that contain cell ``pos``, in increasing order: ``(first, count)``.

    The windows of the taps ``indexing.tap_range`` gives, computed in window space with 32-bit
    divisions: window ``i`` reads ``pos`` with tap ``(pos + pad - i * stride) / dilation`` when that
    is an integer in ``[0, kernel)``. Those windows lie in ``[lo, hi]`` (the tap bounds) and are
    ``window_step = dilation / gcd(stride, dilation)`` apart (the host computes it), so after the
    first one, found among at most ``window_step`` candidates, none is visited that reads nothing.
    """
    t = pos + pad
    hi = min(div32(t, stride), out_size - 1)
    reach = t - (kernel - 1) * dilation  # the window whose last tap reads pos, if it starts there
    lo = 0
    if reach > 0:
        lo = div32(reach + stride - 1, stride)
    if dilation > 1:
        first = hi + 1  # none: without a window among the first window_step, no window reads pos
        for i in range(lo, min(hi + 1, lo + window_step)):
            if divmod32(t - i * stride, dilation)[1] == 0:
                first = i
                break
        lo = first
    if lo > hi:
        return 0, 0
    return lo, div32(hi - lo, window_step) + 1


@kernel("void({f}[:, :, ::1], int64[:, :, ::1], UniTuple(int32, 10), {f}[:, :, ::1], int64[::1])")
def max_pool2d_bwd_gather(dy, indices, geo, dx, error):
    """``dx[p, h, w]`` = sum of ``dy[p, i, j]`` over the windows ``(i, j)`` containing ``(h, w)`` whose index is it.

    ``geo = (kh, kw, sh, sw, ph, pw, dil_h, dil_w, step_h, step_w)``, ``step_*`` the windows'
    steps of ``windows``; windows in output order. A visited index outside ``[-1, H*W)`` is
    written, with ``H*W``, to ``error``.
    """
    kh, kw, sh, sw, ph, pw, dil_h, dil_w, step_h, step_w = geo
    planes = dx.shape[0]
    height = dx.shape[1]
    width = dx.shape[2]
    oh = dy.shape[1]
    ow = dy.shape[2]
    size = height * width
    zero = dx.dtype.type(0)
    for e in range(cuda.grid(1), planes * size, cuda.gridsize(1)):
        p, cell = divmod32(e, size)
        h, w = divmod32(cell, width)
        i0, ni = windows(h, ph, kh, sh, dil_h, step_h, oh)
        j0, nj = windows(w, pw, kw, sw, dil_w, step_w, ow)
        acc = zero
        i = i0
        for _u in range(ni):
            j = j0
            for _v in range(nj):
                k = indices[p, i, j]
                if k == cell:
                    acc += dy[p, i, j]
                elif k < -1 or k >= size:
                    error[0] = k  # any bad index will do here; the host finds the first one
                    error[1] = size
                j += step_w
            i += step_h
        dx[p, h, w] = acc


# ---------------------------------------------------------------- error buffer

_ERROR_SLOTS = {}


def error_slot():
    """The (2,) int64 mapped buffer of this device that the backward writes a bad index and the plane size to."""
    key = 0 if SIMULATOR else cuda.get_current_device().id
    slot = _ERROR_SLOTS.get(key)
    if slot is None:
        slot = cuda.mapped_array(2, dtype=np.int64)
        slot[0] = 0  # 0 is a valid index of every nonempty plane: "no error"
        slot[1] = 0
        _ERROR_SLOTS[key] = slot
    return slot


def _take_error(slot):
    """``(bad, plane_size)`` stored in ``slot`` (read now, without waiting), then cleared; None if there is none."""
    bad, size = int(slot[0]), int(slot[1])
    if bad == 0 and size == 0:
        return None
    slot[0] = 0
    slot[1] = 0
    return bad, size


def raise_earlier_error():
    """``ValueError`` if an earlier backward on this device met an index outside its plane."""
    stored = _take_error(error_slot())
    if stored is not None:
        checks.pool_index_valid(*stored)


def _first_bad(indices2, size):
    """The index the CPU reports: the smallest if below -1, else the largest (copies ``indices2`` back)."""
    host = indices2.copy_to_host()
    low, high = int(host.min()), int(host.max())
    if low < -1:
        return low
    return high if high >= size else None


# ---------------------------------------------------------------- launchers


def forward(x3, kargs, y3, indices3, stream):
    """``y3`` (and ``indices3`` unless it is None) from ``x3``; all (P, rows, cols)."""
    size = y3.shape[0] * y3.shape[1] * y3.shape[2]
    with_indices = indices3 is not None
    if not with_indices:
        indices3 = empty_view(y3, np.int64, 3)  # a typed stand-in, never written
    elementwise(max_pool2d_fwd, size, stream, x3, (*kargs, with_indices), y3, indices3)


def backward(dy3, indices3, geo, dx3, stream):
    """``dx3`` (P, H, W) from ``dy3`` and ``indices3`` (P, OH, OW); the first bad index if this call's is known, or None.

    With the geometry ``geo`` (a ``PoolGeometry``; None without) the gather kernel runs, else the
    scatter. Raises for a bad index of an earlier call (see the module docstring).
    """
    raise_earlier_error()
    planes, height, width = dx3.shape
    size = height * width
    slot = error_slot()
    if geo is None:
        blockwise(max_pool2d_bwd, planes, block_threads(size), stream, dy3.reshape(planes, -1),
                  indices3.reshape(planes, -1), dx3.reshape(planes, size), slot)
    else:
        steps = (geo.dilation_h // math.gcd(geo.stride_h, geo.dilation_h),
                 geo.dilation_w // math.gcd(geo.stride_w, geo.dilation_w))
        elementwise(max_pool2d_bwd_gather, planes * size, stream, dy3, indices3, (*geo.kernel_args, *steps), dx3,
                    slot)
    stored = _take_error(slot)
    if stored is None:
        return None
    bad = _first_bad(indices3, size)
    if bad is None:  # the error came from another stream's call: report it as stored
        checks.pool_index_valid(*stored)
    return bad
