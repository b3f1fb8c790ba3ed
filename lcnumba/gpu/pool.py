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

Backward (``max_pool2d_bwd``) takes no geometry (only ``dy``, ``indices``
and the input size, as on the CPU), and the indices may be any flat
positions of the plane, so it cannot gather over windows. A block owns a
plane: it stages a chunk of ``(dy, index)`` pairs in shared memory, and
each thread adds the pairs whose index is one of *its* cells (a
contiguous run of ``ceil(H*W / blockDim)`` cells, so ownership is two
compares) to ``dx``, in output order. Every
cell's sum therefore runs in output order, as on the CPU: race-free,
atomic-free and bitwise equal to the CPU result.
"""

import math

import numpy as np

from .jit import cuda, kernel
from .launch import block_threads, blockwise, elementwise

#: (dy, index) pairs staged per step of the backward.
CHUNK = 256


@kernel
def max_pool2d_fwd(x, kh, kw, sh, sw, ph, pw, dil_h, dil_w, with_indices, y, indices):
    planes = x.shape[0]
    height = x.shape[1]
    width = x.shape[2]
    oh = y.shape[1]
    ow = y.shape[2]
    size = planes * oh * ow
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        j = e % ow
        rest = e // ow
        i = rest % oh
        p = rest // oh
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


@kernel
def max_pool2d_bwd(dy, indices, dx):
    """``dx[p, indices[p, q]] += dy[p, q]`` in order of ``q``; a block per plane, a thread per run of cells."""
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
        for k in range(tid, size, nt):  # coalesced; finished before any add (the barrier below)
            dx[p, k] = zero
        for q0 in range(0, q_count, CHUNK):
            cuda.syncthreads()  # zeroing done, the previous chunk consumed
            for qq in range(tid, CHUNK, nt):
                q = q0 + qq
                if q < q_count:
                    dys[qq] = dy[p, q]
                    ids[qq] = indices[p, q]
                else:
                    ids[qq] = -1
            cuda.syncthreads()
            for qq in range(CHUNK):
                k = ids[qq]
                if k >= lo and k < hi:
                    dx[p, k] += dys[qq]


#: Most threads of a block that reduces one plane's index range (CUDA's per-block limit).
MAX_REDUCE_THREADS = 1024


@kernel
def index_range(indices, lo, hi):
    """Per-plane minimum and maximum of ``indices`` (P, Q) into ``lo``, ``hi`` (P,); a block per plane.

    The threads stride over the plane's indices (coalesced loads), then halve
    their partial ranges in shared memory. Minimum and maximum are exact, so
    the result does not depend on the order.
    """
    planes = indices.shape[0]
    q_count = indices.shape[1]
    part_lo = cuda.shared.array(MAX_REDUCE_THREADS, np.int64)
    part_hi = cuda.shared.array(MAX_REDUCE_THREADS, np.int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for p in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        a = indices[p, 0]
        b = a
        for q in range(tid, q_count, nt):
            v = indices[p, q]
            a = min(a, v)
            b = max(b, v)
        part_lo[tid] = a
        part_hi[tid] = b
        cuda.syncthreads()
        step = 1
        while step < nt:
            if tid % (2 * step) == 0 and tid + step < nt:
                part_lo[tid] = min(part_lo[tid], part_lo[tid + step])
                part_hi[tid] = max(part_hi[tid], part_hi[tid + step])
            step *= 2
            cuda.syncthreads()
        if tid == 0:
            lo[p] = part_lo[0]
            hi[p] = part_hi[0]
        cuda.syncthreads()  # the next plane overwrites the partials


def index_bounds(indices2, stream):
    """``(min, max)`` of the (P, Q) index array, on the host (this synchronises ``stream``)."""
    planes = indices2.shape[0]
    lo = cuda.device_array(planes, dtype=np.int64, stream=stream)
    hi = cuda.device_array(planes, dtype=np.int64, stream=stream)
    blockwise(index_range, planes, min(MAX_REDUCE_THREADS, block_threads(indices2.shape[1])), stream,
              indices2, lo, hi)
    lo_host = lo.copy_to_host(stream=stream)
    hi_host = hi.copy_to_host(stream=stream)
    if stream != 0:
        stream.synchronize()
    return int(lo_host.min()), int(hi_host.max())


def forward(x3, kargs, y3, indices3, stream):
    """``y3`` (and ``indices3`` unless it is None) from ``x3``; all (P, rows, cols)."""
    size = y3.shape[0] * y3.shape[1] * y3.shape[2]
    with_indices = indices3 is not None
    if not with_indices:
        # a stand-in of the right type, never written
        indices3 = cuda.device_array((1, 1, 1), dtype=np.int64, stream=stream)
    elementwise(max_pool2d_fwd, size, stream, x3, *kargs, with_indices, y3, indices3)


def backward(dy2, indices2, dx2, stream):
    """``dx2`` (P, H*W) from ``dy2`` and ``indices2`` (P, OH*OW)."""
    planes, size = dx2.shape
    blockwise(max_pool2d_bwd, planes, block_threads(size), stream, dy2, indices2, dx2)

