"""Max-pooling kernels on the CPU.

Layouts (1-D pooling runs as 2-D with ``H = KH = 1``)::

    x        (P, H, W)     P = N * C planes, C-contiguous
    y        (P, OH, OW)
    indices  (P, OH, OW)   int64, flat ``h * W + w`` into the unpadded plane, -1 for no cell
    dy       (P, OH * OW)
    dx       (P, H * W)

Every kernel runs a ``prange`` over planes: a plane is read and written by
one iteration only, so there are no races, and the order of every
floating-point operation is fixed, so results are bitwise reproducible.

The forward returns exactly what PyTorch's CPU kernel returns. That kernel
visits window cells row-major, and a cell replaces the running maximum
when it is greater or NaN, starting from the window's first in-image cell:
ties keep the first cell and the last NaN wins. Padded cells are never
read: they are ``-inf`` and can only win when the window has no in-image
cell, which needs dilation; such a window yields ``-inf`` and index ``-1``.

Speed: the windows wholly inside the image horizontally (all but a few
border columns) are reduced separably: first down the window rows over the
whole image row, then across the window columns on the stride phases of
that row (``phase[t % sw, t // sw] = row[t]``), so both inner loops are
contiguous, branch-free selects that LLVM vectorises. Random data makes a
branch per comparison mispredict half the time; the selects avoid that.
Border columns take the per-window path.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from .indexing import COMPILES_IN as _INDEXING
from .indexing import taps_inside

COMPILES_IN = cache.sources("config.py", "cpu/pool.py", _INDEXING)


@njit(inline="always")
def _separable_plan(x, y, kw, sw, pw, dil_w):
    """Sizes of a forward call, ``(planes, h, w, oh, ow, j0, j1)``, with ``[j0, j1)`` the separable pass's columns.

    Output columns ``[j0, j1)`` are those whose windows lie wholly inside
    ``[0, w)``. The range is empty when ``sw > w``: there is one window per
    row at most, and the phase split would need ``sw`` rows for ``w`` cells.
    """
    planes, h, w = x.shape
    oh, ow = y.shape[1], y.shape[2]
    if sw > w:
        return planes, h, w, oh, ow, 0, 0
    j0 = min((pw + sw - 1) // sw, ow)
    last = w - 1 + pw - (kw - 1) * dil_w
    j1 = 0
    if last >= 0:
        j1 = min(last // sw + 1, ow)
    if j1 < j0:
        j1 = j0
    return planes, h, w, oh, ow, j0, j1


@njit(inline="always")
def _window(xp, h0, r0, r1, dil_h, w0, kw, dil_w, w):
    """Maximum and flat index of one window, PyTorch's visiting order; ``(-inf, -1)`` if it has no cell."""
    c0, c1 = taps_inside(w0, dil_w, kw, w)
    if c0 >= c1 or r0 >= r1:
        return -np.inf, -1
    hh = h0 + r0 * dil_h
    best = hh * w + w0 + c0 * dil_w
    m = xp[hh, w0 + c0 * dil_w]
    for r in range(r0, r1):
        hh = h0 + r * dil_h
        for c in range(c0, c1):
            ww = w0 + c * dil_w
            v = xp[hh, ww]
            if v > m or v != v:
                m = v
                best = hh * w + ww
    return m, best


@njit(inline="always")
def _phases(row, phased, sw, width):
    """Split ``row`` into ``sw`` phases: ``phased[t % sw, t // sw] = row[t]``."""
    if sw == 2:
        # the common stride: one pass with a constant stride vectorises (15x the generic loop)
        even = phased[0]
        odd = phased[1]
        half = width // 2
        for q in range(half):
            a = row[2 * q]
            b = row[2 * q + 1]
            even[q] = a
            odd[q] = b
        if width % 2:
            even[half] = row[width - 1]
        return
    for ph in range(sw):
        dst = phased[ph]
        for q in range((width - ph + sw - 1) // sw):
            dst[q] = row[q * sw + ph]


@njit(inline="always")
def _phase_space(row, sw):
    """Room for the ``sw`` phases of ``row`` (``_phases``): ``row`` itself, as one phase, when ``sw == 1``."""
    w = row.shape[0]
    if sw == 1:
        return row.reshape((1, w))
    return np.empty((sw, (w + sw - 1) // sw), row.dtype)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def max_pool2d_fwd(x, y, kh, kw, sh, sw, ph, pw, dil_h, dil_w):
    """Max-pooling forward without indices: ``y[p, i, j]`` = max of window ``(i, j)`` of plane ``p``.

    Separable: a column maximum over the window rows (contiguous, vectorised),
    then a row maximum over the window columns on the stride phases of that
    row (contiguous again). The maximum of a set does not depend on the
    order it is visited in, NaN included, so the result equals the
    row-major scan of PyTorch (a tie of -0.0 and 0.0 may keep the other zero).
    """
    planes, h, w, oh, ow, j0, j1 = _separable_plan(x, y, kw, sw, pw, dil_w)
    n_int = j1 - j0
    for p in prange(planes):
        xp = x[p]
        vm = np.empty(w, x.dtype)
        pm = _phase_space(vm, sw)
        for i in range(oh):
            h0 = i * sh - ph
            r0, r1 = taps_inside(h0, dil_h, kh, h)
            yr = y[p, i]
            for j in range(j0):
                yr[j] = _window(xp, h0, r0, r1, dil_h, j * sw - pw, kw, dil_w, w)[0]
            for j in range(j1, ow):
                yr[j] = _window(xp, h0, r0, r1, dil_h, j * sw - pw, kw, dil_w, w)[0]
            if n_int == 0:
                continue
            yi = yr[j0:j1]
            if r0 >= r1:
                yi[:] = -np.inf
                continue
            xr = xp[h0 + r0 * dil_h]
            for t in range(w):
                vm[t] = xr[t]
            for r in range(r0 + 1, r1):
                xr = xp[h0 + r * dil_h]
                for t in range(w):
                    v = xr[t]
                    m = vm[t]
                    vm[t] = v if (v > m) | (v != v) else m
            if sw > 1:
                _phases(vm, pm, sw, w)
            for c in range(kw):
                off = j0 * sw + c * dil_w - pw
                src = pm[off % sw, off // sw:off // sw + n_int]
                if c == 0:
                    for k in range(n_int):
                        yi[k] = src[k]
                else:
                    for k in range(n_int):
                        v = src[k]
                        m = yi[k]
                        yi[k] = v if (v > m) | (v != v) else m


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def max_pool2d_fwd_indices(x, y, indices, kh, kw, sh, sw, ph, pw, dil_h, dil_w):
    """Max-pooling forward with the flat index of every maximum in ``indices``.

    Separable like ``max_pool2d_fwd``, and still exactly PyTorch's choice of
    cell. The row-major scan picks the last NaN of the window if there is
    one, else the first cell (row-major) holding the maximum. The column
    pass keeps, per column, the window row of the last NaN or of the first
    maximum; the row pass then compares candidates by value and breaks
    ties by that row: an equal value wins only from an earlier row, a NaN
    from the same or a later row (columns arrive in increasing order).
    Window rows and columns are tracked as int32 tap numbers, not int64
    positions, so the selects run as many lanes as the float32 values.
    """
    planes, h, w, oh, ow, j0, j1 = _separable_plan(x, y, kw, sw, pw, dil_w)
    n_int = j1 - j0
    for p in prange(planes):
        xp = x[p]
        vm = np.empty(w, x.dtype)
        vr = np.empty(w, np.int32)
        pm = _phase_space(vm, sw)
        pr = _phase_space(vr, sw)
        row = np.empty(max(n_int, 1), np.int32)
        col = np.empty(max(n_int, 1), np.int32)
        for i in range(oh):
            h0 = i * sh - ph
            r0, r1 = taps_inside(h0, dil_h, kh, h)
            yr = y[p, i]
            ir = indices[p, i]
            for j in range(j0):
                yr[j], ir[j] = _window(xp, h0, r0, r1, dil_h, j * sw - pw, kw, dil_w, w)
            for j in range(j1, ow):
                yr[j], ir[j] = _window(xp, h0, r0, r1, dil_h, j * sw - pw, kw, dil_w, w)
            if n_int == 0:
                continue
            yi = yr[j0:j1]
            ii = ir[j0:j1]
            if r0 >= r1:
                yi[:] = -np.inf
                ii[:] = -1
                continue
            xr = xp[h0 + r0 * dil_h]
            first = np.int32(r0)
            for t in range(w):
                vm[t] = xr[t]
                vr[t] = first
            for r in range(r0 + 1, r1):
                xr = xp[h0 + r * dil_h]
                tap = np.int32(r)
                for t in range(w):
                    v = xr[t]
                    m = vm[t]
                    take = (v > m) | (v != v)
                    vm[t] = v if take else m
                    vr[t] = tap if take else vr[t]
            if sw > 1:
                _phases(vm, pm, sw, w)
                _phases(vr, pr, sw, w)
            for c in range(kw):
                off = j0 * sw + c * dil_w - pw
                src = pm[off % sw, off // sw:off // sw + n_int]
                srow = pr[off % sw, off // sw:off // sw + n_int]
                if c == 0:
                    for k in range(n_int):
                        yi[k] = src[k]
                        row[k] = srow[k]
                        col[k] = 0
                else:
                    tap = np.int32(c)
                    for k in range(n_int):
                        v = src[k]
                        m = yi[k]
                        rv = srow[k]
                        rm = row[k]
                        take = (v > m) | ((v == m) & (rv < rm)) | ((v != v) & ((m == m) | (rv >= rm)))
                        yi[k] = v if take else m
                        row[k] = rv if take else rm
                        col[k] = tap if take else col[k]
            base = h0 * w + j0 * sw - pw
            for k in range(n_int):
                ii[k] = base + np.int64(row[k]) * (dil_h * w) + k * sw + np.int64(col[k]) * dil_w


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def max_pool2d_bwd(dy, indices, dx):
    """Max-pooling backward: ``dx[p, indices[p, q]] += dy[p, q]``, in order of ``q``.

    Each plane is owned by one iteration, so the scatter is race-free and
    its summation order (output order) is fixed. Indices were validated
    (``backward`` does); ``-1`` (a window with no cell) adds nothing, and an
    index outside the plane is skipped rather than written, as a last guard.
    """
    planes, q_count = dy.shape
    size = dx.shape[1]
    for p in prange(planes):
        dxp = dx[p]
        for t in range(size):
            dxp[t] = 0
        dyp = dy[p]
        ip = indices[p]
        for q in range(q_count):
            k = ip[q]
            if k >= 0 and k < size:
                dxp[k] += dyp[q]


@njit(parallel=True, cache=True)
def index_range(indices, lo, hi):
    """Per-plane minimum and maximum of ``indices`` (P, Q) into ``lo``, ``hi`` (P,)."""
    planes, q_count = indices.shape
    for p in prange(planes):
        ip = indices[p]
        a = ip[0]
        b = ip[0]
        for q in range(1, q_count):
            v = ip[q]
            a = min(a, v)
            b = max(b, v)
        lo[p] = a
        hi[p] = b


def host_check_indices(indices, plane_size):
    """Whether every index of ``indices`` (P, Q), P, Q >= 1, lies in ``[-1, plane_size)``: ``(valid, bad)``.

    ``bad`` is the smallest index when it is below -1, else the largest when
    it is outside the plane (-1 when ``valid``): the scatter of
    ``max_pool2d_bwd`` trusts its indices, so they are checked first. Python
    runs it as it is (compiled, its array reductions and its call of
    ``index_range`` doubled the first backward's compile time);
    ``check_indices`` is it compiled, for the C entry point's driver.
    """
    lo = np.empty(indices.shape[0], np.int64)
    hi = np.empty(indices.shape[0], np.int64)
    index_range(indices, lo, hi)
    low = lo.min()
    high = hi.max()
    if low < -1:
        return False, low
    if high >= plane_size:
        return False, high
    return True, np.int64(-1)


def host_backward(dy, indices, dx):
    """Max-pooling backward with its index check: ``(valid, bad)`` of ``check_indices``.

    dy (P, OH * OW), indices (P, OH * OW), dx (P, H * W). Every index is
    checked before anything is written: with a bad one, ``dx`` is left as
    it was and ``valid`` is False; else ``dx`` is the scatter of
    ``max_pool2d_bwd``. The Python function and the C entry point both call
    this driver.
    """
    if dy.shape[0] > 0 and dy.shape[1] > 0:
        valid, bad = _check_indices(indices, dx.shape[1])
        if not valid:
            return False, bad
    max_pool2d_bwd(dy, indices, dx)
    return True, np.int64(-1)


check_indices = njit(cache=True)(host_check_indices)

#: What ``host_backward`` checks the indices with: the plain function, run by Python.
_check_indices = host_check_indices

#: ``host_backward`` compiled, calling ``check_indices``, for the C entry points. Python runs the
#: plain function, so a first call compiles each kernel once, on its own (a compiled driver compiles
#: its kernels again into its own machine code).
backward = njit(cache=True)(cache.twin(host_backward, host_backward.__qualname__, _check_indices=check_indices))

cache.key_kernels(globals())
