"""CPU kernels of locally connected convolution on a batch-interleaved copy of the input.

In local convolution every output position ``p = (i, j)`` has its own filter
bank ``w[p]`` (F, Kg), used once per sample, so each pass is ``OH * OW``
small GEMMs whose cost is dominated by building their operands, not by the
arithmetic. These kernels first copy a chunk of the batch into the
*interleaved* layout ``xt[c, h, w, lane]`` (sample innermost, padding
included as zeros, lanes padded to whole vectors but for a lone sample). A position's patch matrix
``(Kg, lanes)`` is then ``C * KH`` contiguous runs of ``KW * lanes`` values
(``lanes`` runs when dilated), with no bounds tests, and every pass is one
product per position with the samples of the chunk in vector lanes
(``lcnumba.cpu.lanes``, which streams each filter row instead of packing it
as BLAS would):

* forward:          ``y_p = w[p] @ patch``                (F, lanes)
* backward weight:  ``dw[p] (+)= dy_p @ patch.T``          (F, Kg)
* backward input:   ``dpatch = w[p].T @ dy_p``, added back into a band of ``dxt``

Array layouts (all C-contiguous):

==========  ===================  =============================================
name        shape                meaning
==========  ===================  =============================================
x, dx       (N, C, H, W)         input and its gradient
w, dw       (OH*OW, F, Kg)       filter bank per position, k = (c*KH + a)*KW + b
b           (F, OH*OW) or (0,0)  bias; (0, 0) = no bias
y, dy       (N, F, OH, OW)       output and its gradient
xt, dxt     (C, HP, WP, lanes)   interleaved chunk, padded; dxt a band of rows
==========  ===================  =============================================

``HP = (OH - 1) * SH + (KH - 1) * DH + 1`` (likewise ``WP``) covers exactly
the cells some window reads. The forward and the weight gradient write each
position's output by one worker, split statically. The input gradient is
split by bands of input rows (``plan_input_rows``): each worker adds into its
own band every window row that reads it, positions in row-major order
whatever the bands, so every cell receives its terms in an order set by the
shapes alone. Results are bitwise identical across runs and thread counts.

A batch chunk holds up to ``LANES_PER_CHUNK`` samples: the weights (by far
the largest array) are streamed from memory once per chunk. A chunk of one
sample has one lane, not a padded vector (``chunk_lanes``): its products
run along the taps, and its forward sums each output in ``lane_width``
partial sums (``lanes.matmul_lanes``), so a lone sample's outputs may differ
in the last bits from the same sample's in a larger chunk; its gradients
are the same bits either way.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from . import lanes, runs, segments
from .lanes import lane_width, matmul_lanes, matmul_lanes_t, matmul_t_lanes
from .runs import add_run, copy_run

COMPILES_IN = cache.sources("config.py", "cpu/local.py", lanes.COMPILES_IN, runs.COMPILES_IN, segments.COMPILES_IN)

#: Samples per chunk: one chunk for the usual batch sizes, so the weights are
#: read once per pass, while a patch matrix (Kg x lanes) stays within L2.
LANES_PER_CHUNK = 32


@njit(cache=True)
def padded_extent(out_size, kernel, stride, dilation):
    """Input cells some window reads along one axis, padding included."""
    return (out_size - 1) * stride + (kernel - 1) * dilation + 1


@njit(cache=True, inline="always")
def chunk_lanes(count, a):
    """Lanes of a chunk of ``count`` samples: one for a lone sample, else whole vectors of ``a``'s dtype.

    Padding a lone sample to a vector (``lanes.lane_width``) multiplies zeros
    in every other lane: a batch of one cost as much as a batch of eight.
    With one lane the products of ``lcnumba.cpu.lanes`` vectorise along the
    taps instead. Set by the shapes alone, like every order that follows.
    """
    if count == 1:
        return 1
    width = lane_width(a)
    return (count + width - 1) // width * width


@njit(cache=True)
def fits(oh, ow, kh, kw, sh, sw, dil_h, dil_w, height, width):
    """Whether the padded, interleaved copy stays within twice the input plus a kernel's margin.

    It always does but for paddings far larger than the input, which read
    almost only zeros; those take the generic path of ``lcnumba.cpu.conv``.
    """
    return (padded_extent(oh, kh, sh, dil_h) <= 2 * (height + kh * dil_h)
            and padded_extent(ow, kw, sw, dil_w) <= 2 * (width + kw * dil_w))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def interleave(x, n0, pt, pl, xt):
    """``xt[c, h + pt, w + pl, l] = x[n0 + l, c, h, w]``, zero elsewhere (lanes past the batch too); parallel over channels."""
    lanes = xt.shape[3]
    filled = min(lanes, x.shape[0] - n0)
    height = max(0, min(x.shape[2], xt.shape[1] - pt))
    width = max(0, min(x.shape[3], xt.shape[2] - pl))
    top = min(pt, xt.shape[1])
    left = min(pl, xt.shape[2])
    for c in prange(x.shape[1]):
        # Only the padding is zeroed: every other cell is written below.
        xt[c, :top] = 0
        xt[c, top + height:] = 0
        for h in range(height):
            dst = xt[c, h + pt]
            dst[:left] = 0
            dst[left + width:] = 0
            for lane in range(filled):
                src = x[n0 + lane, c, h]
                for col in range(width):
                    dst[col + pl, lane] = src[col]
            for lane in range(filled, lanes):
                for col in range(width):
                    dst[col + pl, lane] = 0


@njit(cache=True, fastmath=FASTMATH)
def _deinterleave_rows(band, n0, h0, pt, pl, last, dx):
    """``dx[n0 + l, c, h, w] = band[c, h + pt - h0, w + pl, l]`` for the rows the band holds; 0 where no window reads.

    ``band`` holds the padded rows ``h0:h0 + band.shape[1]``; lanes past the batch
    are dropped. The ``last`` band also zeroes the rows of dx below every window.
    """
    lanes = min(band.shape[3], dx.shape[0] - n0)
    height, width = dx.shape[2], dx.shape[3]
    inside = max(0, min(width, band.shape[2] - pl))
    for c in range(dx.shape[1]):
        for lane in range(lanes):
            for h in range(max(0, h0 - pt), min(height, h0 + band.shape[1] - pt)):
                dst = dx[n0 + lane, c, h]
                src = band[c, h + pt - h0]
                for col in range(inside):
                    dst[col] = src[col + pl, lane]
                for col in range(inside, width):
                    dst[col] = 0
            if last:
                for h in range(max(0, h0 + band.shape[1] - pt), height):
                    dx[n0 + lane, c, h] = 0


@njit(cache=True, fastmath=FASTMATH)
def _gather_patch(xt, c0, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, patch):
    """``patch[k, l] = xt[c0 + c, i*SH + a*DH, j*SW + b*DW, l]`` with ``k = (c*KH + a)*KW + b``."""
    hp, wp, lanes = xt.shape[1], xt.shape[2], xt.shape[3]
    flat = xt.reshape(-1)
    out = patch.reshape(-1)
    runs_per_row = 1 if dil_w == 1 else kw
    run = kw * lanes if dil_w == 1 else lanes
    r = 0
    for c in range(cg):
        for a in range(kh):
            row_start = (((c0 + c) * hp + i * sh + a * dil_h) * wp + j * sw) * lanes
            for b in range(runs_per_row):
                start = row_start + b * dil_w * lanes
                copy_run(flat[start:start + run], out[r:r + run])
                r += run


@njit(cache=True, fastmath=FASTMATH)
def _scatter_patch_add(dpatch, c0, cg, top, left, a_lo, a_hi, kh, kw, dil_h, dil_w, dxt):
    """``dxt[c0 + c, top + a*DH, left + b*DW, l] += dpatch[k, l]`` for the taps ``a_lo <= a < a_hi``.

    The transpose of ``_gather_patch`` on those rows of the window (``top``, ``left``: its corner in dxt).
    """
    hp, wp, lanes = dxt.shape[1], dxt.shape[2], dxt.shape[3]
    flat = dxt.reshape(-1)
    src_all = dpatch.reshape(-1)
    runs_per_row = 1 if dil_w == 1 else kw
    run = kw * lanes if dil_w == 1 else lanes
    for c in range(cg):
        for a in range(a_lo, a_hi):
            r = (c * kh + a) * kw * lanes
            row_start = (((c0 + c) * hp + top + a * dil_h) * wp + left) * lanes
            for b in range(runs_per_row):
                start = row_start + b * dil_w * lanes
                add_run(src_all[r:r + run], flat[start:start + run])
                r += run


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _gather_dy_position(dy, n0, f0, i, j, dyp):
    """``dyp[f, l] = dy[n0 + l, f0 + f, i, j]``: one position's output gradient, samples as columns (0 past the batch)."""
    filled = min(dyp.shape[1], dy.shape[0] - n0)
    for f in range(dyp.shape[0]):
        for lane in range(filled):
            dyp[f, lane] = dy[n0 + lane, f0 + f, i, j]
        for lane in range(filled, dyp.shape[1]):
            dyp[f, lane] = 0


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def local_forward_chunk(xt, w, b, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads, y):
    """``y[n0:n0 + lanes] = local_conv(x, w) + b`` from the interleaved chunk ``xt``; parallel over positions."""
    lanes = xt.shape[3]
    cg = xt.shape[0] // groups
    n_filters, kg = w.shape[1], w.shape[2]
    fg = n_filters // groups
    ow = y.shape[3]
    n_positions = w.shape[0]
    has_bias = b.shape[0] > 0
    zero = np.zeros(1, dtype=y.dtype)[0]  # in y's precision: a float64 0.0 would widen every sum
    filled = min(lanes, y.shape[0] - n0)
    n_workers = max(1, min(n_threads, n_positions))
    for worker in prange(n_workers):
        patch = np.empty((kg, lanes), dtype=xt.dtype)
        res = np.empty((fg, lanes), dtype=xt.dtype)
        for p in range(worker * n_positions // n_workers, (worker + 1) * n_positions // n_workers):
            i = p // ow
            j = p % ow
            for g in range(groups):
                _gather_patch(xt, g * cg, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, patch)
                matmul_lanes(w[p, g * fg:(g + 1) * fg], patch, res)
                for f in range(fg):
                    bias = b[g * fg + f, p] if has_bias else zero
                    for lane in range(filled):
                        y[n0 + lane, g * fg + f, i, j] = res[f, lane] + bias


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def local_backward_weight_chunk(dy, xt, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads, accumulate, out):
    """``out[p] (+)= dy_p @ patch_p.T`` over the chunk's samples; parallel over positions."""
    lanes = xt.shape[3]
    cg = xt.shape[0] // groups
    n_filters, kg = out.shape[1], out.shape[2]
    fg = n_filters // groups
    ow = dy.shape[3]
    n_positions = out.shape[0]
    n_workers = max(1, min(n_threads, n_positions))
    for worker in prange(n_workers):
        patch = np.empty((kg, lanes), dtype=xt.dtype)
        dyp = np.empty((fg, lanes), dtype=xt.dtype)
        for p in range(worker * n_positions // n_workers, (worker + 1) * n_positions // n_workers):
            i = p // ow
            j = p % ow
            for g in range(groups):
                _gather_patch(xt, g * cg, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, patch)
                _gather_dy_position(dy, n0, g * fg, i, j, dyp)
                matmul_lanes_t(dyp, patch, accumulate, out[p, g * fg:(g + 1) * fg])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def local_backward_input_chunk(dy, w, n0, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, wp, row_bounds, dx):
    """``dx[n0:n0 + lanes]``: the chunk's input gradient; parallel over bands of padded input rows.

    Worker ``k`` owns the padded input rows ``row_bounds[k]:row_bounds[k + 1]``
    (``plan_input_rows``). It adds ``w[p].T @ dy_p`` of every position whose
    window reads its rows, those rows of the window only, into a zeroed
    interleaved band of its own, then copies the band out to dx: one parallel
    region, no worker writes where another does. Every band takes the
    positions in row-major order and each product's entries do not depend on
    which of its rows are wanted (``lanes.matmul_t_lanes`` sums each one alone),
    so every cell of dx sums its terms in the same order whatever the bands:
    the thread count changes no bit. A window that straddles two bands is
    multiplied in parts, each part once.
    """
    lanes = chunk_lanes(min(LANES_PER_CHUNK, dy.shape[0] - n0), dx)
    n_channels = dx.shape[1]
    cg = n_channels // groups
    n_filters, kg = w.shape[1], w.shape[2]
    fg = n_filters // groups
    oh, ow = dy.shape[2], dy.shape[3]
    n_workers = row_bounds.shape[0] - 1
    for worker in prange(n_workers):
        h0, h1 = row_bounds[worker], row_bounds[worker + 1]
        band = np.zeros((n_channels, h1 - h0, wp, lanes), dtype=dx.dtype)
        dpatch = np.empty((kg, lanes), dtype=dx.dtype)
        dyp = np.empty((fg, lanes), dtype=dx.dtype)
        # Output rows whose windows reach into [h0, h1), and for each the taps that do (ceilings as -(-x // d)).
        for i in range(max(0, -(((kh - 1) * dil_h - h0) // sh)), min(oh, (h1 - 1) // sh + 1)):
            a_lo = max(0, -((i * sh - h0) // dil_h))
            a_hi = min(kh, (h1 - 1 - i * sh) // dil_h + 1)
            if a_lo >= a_hi:
                continue  # dilation steps over the band
            for j in range(ow):
                p = i * ow + j
                for g in range(groups):
                    _gather_dy_position(dy, n0, g * fg, i, j, dyp)
                    bank = w[p, g * fg:(g + 1) * fg]
                    if a_lo == 0 and a_hi == kh:
                        matmul_t_lanes(bank, dyp, False, dpatch)
                    else:
                        for c in range(cg):
                            k_lo, k_hi = (c * kh + a_lo) * kw, (c * kh + a_hi) * kw
                            matmul_t_lanes(bank[:, k_lo:k_hi], dyp, False, dpatch[k_lo:k_hi])
                    _scatter_patch_add(dpatch, g * cg, cg, i * sh - h0, j * sw, a_lo, a_hi, kh, kw, dil_h, dil_w, band)
        _deinterleave_rows(band, n0, h0, pt, pl, worker == n_workers - 1, dx)


@njit(cache=True)
def plan_input_rows(oh, kh, sh, dil_h, n_threads):
    """Bands of padded input rows for the input gradient's workers, cut for an even load.

    Row ``h`` costs the number of window rows that read it (one per output row
    ``i`` and tap ``a`` with ``i*SH + a*DH == h``); the bands are runs of
    consecutive rows whose largest cost is smallest (``_runs``). Only the
    speed depends on them, never the result.

    Returns
    -------
    row_bounds : int64 array (W + 1,)
        Worker ``k`` owns the padded rows ``row_bounds[k]:row_bounds[k + 1]``.
    """
    hp = padded_extent(oh, kh, sh, dil_h)
    cost = np.zeros(hp, dtype=np.int64)
    for i in range(oh):
        for a in range(kh):
            cost[i * sh + a * dil_h] += 1
    row_bounds = np.empty(max(1, min(n_threads, hp)) + 1, dtype=np.int64)
    _runs(cost, row_bounds)
    return row_bounds


@njit(cache=True)
def _runs(size, bounds):
    """Cut ``size`` into ``len(bounds) - 1`` runs of consecutive items whose largest sum is smallest.

    Run ``k`` is ``size[bounds[k]:bounds[k + 1]]``. The smallest feasible largest sum is
    found by bisection, each candidate checked by filling runs greedily; runs at the end
    may be empty.
    """
    n_runs = bounds.shape[0] - 1
    total = 0
    most = 0
    for q in range(size.shape[0]):
        total += size[q]
        most = max(most, size[q])
    lo, hi = max(most, (total + n_runs - 1) // n_runs), total
    while lo < hi:
        limit = (lo + hi) // 2
        used, run = 1, 0
        for q in range(size.shape[0]):
            if run + size[q] > limit:
                used, run = used + 1, 0
            run += size[q]
        if used <= n_runs:
            hi = limit
        else:
            lo = limit + 1
    bounds[0] = 0
    k, run = 0, 0
    for q in range(size.shape[0]):
        if run + size[q] > lo and k < n_runs - 1:
            k, run = k + 1, 0
            bounds[k] = q
        run += size[q]
    bounds[k + 1:] = size.shape[0]


# ---------------------------------------------------------------- drivers
#
# Plain functions that allocate the chunk buffers and call the kernels.
# Python runs them as they are (``host_forward``, ...), so a first call
# compiles each kernel once, on its own; the C entry points call them
# compiled (``forward``, ...), with the kernels compiled in.


def host_forward(x, w, b, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y):
    """``y = local_conv(x, w) + b``; x (N, C, H, W), w (OH*OW, F, Kg), b (F, OH*OW) or (0, 0)."""
    n_total, n_channels = x.shape[0], x.shape[1]
    hp = padded_extent(y.shape[2], kh, sh, dil_h)
    wp = padded_extent(y.shape[3], kw, sw, dil_w)
    for n0 in range(0, n_total, LANES_PER_CHUNK):
        lanes = chunk_lanes(min(LANES_PER_CHUNK, n_total - n0), x)
        xt = np.empty((n_channels, hp, wp, lanes), dtype=x.dtype)
        interleave(x, n0, pt, pl, xt)
        local_forward_chunk(xt, w, b, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads, y)


def host_backward_weight(dy, x, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, accumulate, out):
    """``out (+)= dW``, (OH*OW, F, Kg), from dy (N, F, OH, OW) and x (N, C, H, W)."""
    n_total, n_channels = x.shape[0], x.shape[1]
    if n_total == 0 and not accumulate:
        out[:] = 0
    hp = padded_extent(dy.shape[2], kh, sh, dil_h)
    wp = padded_extent(dy.shape[3], kw, sw, dil_w)
    for n0 in range(0, n_total, LANES_PER_CHUNK):
        lanes = chunk_lanes(min(LANES_PER_CHUNK, n_total - n0), x)
        xt = np.empty((n_channels, hp, wp, lanes), dtype=x.dtype)
        interleave(x, n0, pt, pl, xt)
        local_backward_weight_chunk(dy, xt, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads,
                                    accumulate or n0 > 0, out)


def host_backward_input(dy, w, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx):
    """``dx``, (N, C, H, W), from dy (N, F, OH, OW) and w (OH*OW, F, Kg)."""
    wp = padded_extent(dy.shape[3], kw, sw, dil_w)
    row_bounds = plan_input_rows(dy.shape[2], kh, sh, dil_h, n_threads)
    for n0 in range(0, dx.shape[0], LANES_PER_CHUNK):
        local_backward_input_chunk(dy, w, n0, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, wp, row_bounds, dx)


forward = njit(cache=True)(host_forward)
backward_weight = njit(cache=True)(host_backward_weight)
backward_input = njit(cache=True)(host_backward_input)

cache.key_kernels(globals())
