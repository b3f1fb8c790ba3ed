"""CPU kernels of locally connected convolution on a batch-interleaved copy of the input.

In local convolution every output position ``p = (i, j)`` has its own filter
bank ``w[p]`` (F, Kg), used once per sample, so each pass is ``OH * OW``
small GEMMs whose cost is dominated by building their operands, not by the
arithmetic. These kernels first copy a chunk of the batch into the
*interleaved* layout ``xt[c, h, w, lane]`` (sample innermost, padding
included as zeros). A position's patch matrix ``(Kg, lanes)`` is then
``C * KH`` contiguous runs of ``KW * lanes`` values (``lanes`` runs when
dilated), with no bounds tests, and every pass is one BLAS GEMM per
position with the samples of the chunk as its columns:

* forward:          ``y_p = w[p] @ patch``                (F, lanes)
* backward weight:  ``dw[p] (+)= dy_p @ patch.T``          (F, Kg)
* backward input:   ``dpatch = w[p].T @ dy_p``, added back into ``dxt``

Array layouts (all C-contiguous):

==========  ===================  =============================================
name        shape                meaning
==========  ===================  =============================================
x, dx       (N, C, H, W)         input and its gradient
w, dw       (OH*OW, F, Kg)       filter bank per position, k = (c*KH + a)*KW + b
b           (F, OH*OW) or (0,0)  bias; (0, 0) = no bias
y, dy       (N, F, OH, OW)       output and its gradient
xt, dxt     (C, HP, WP, lanes)   padded, interleaved chunk of the batch
==========  ===================  =============================================

``HP = (OH - 1) * SH + (KH - 1) * DH + 1`` (likewise ``WP``) covers exactly
the cells some window reads. The forward and the weight gradient write each
position's output by one worker, split statically. The input gradient adds
into ``dxt`` by tiles of output positions coloured in four phases
(``plan_input_tiles``), so no two workers ever add to one cell at once, and
every cell receives its terms in an order set by the shapes alone. Results
are bitwise identical across runs and thread counts.

A batch chunk holds up to ``LANES_PER_CHUNK`` samples: the weights (by far
the largest array) are streamed from memory once per chunk.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from . import runs, segments
from .runs import add_run, copy_run
from .segments import rows_per_phase_block

COMPILES_IN = cache.sources("config.py", "cpu/local.py", runs.COMPILES_IN, segments.COMPILES_IN)

#: Samples per chunk: one chunk for the usual batch sizes, so the weights are
#: read once per pass, while a patch matrix (Kg x lanes) stays within L2.
LANES_PER_CHUNK = 32


@njit(cache=True)
def padded_extent(out_size, kernel, stride, dilation):
    """Input cells some window reads along one axis, padding included."""
    return (out_size - 1) * stride + (kernel - 1) * dilation + 1


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
    """``xt[c, h + pt, w + pl, l] = x[n0 + l, c, h, w]``, zero elsewhere; parallel over channels."""
    lanes = xt.shape[3]
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
            for lane in range(lanes):
                src = x[n0 + lane, c, h]
                for col in range(width):
                    dst[col + pl, lane] = src[col]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def deinterleave(dxt, n0, pt, pl, dx):
    """``dx[n0 + l, c, h, w] = dxt[c, h + pt, w + pl, l]``; cells no window reads get 0."""
    lanes = dxt.shape[3]
    height, width = dx.shape[2], dx.shape[3]
    for c in prange(dx.shape[1]):
        for lane in range(lanes):
            for h in range(height):
                dst = dx[n0 + lane, c, h]
                hp = h + pt
                if hp >= dxt.shape[1]:
                    dst[:] = 0
                    continue
                src = dxt[c, hp]
                inside = max(0, min(width, dxt.shape[2] - pl))
                for col in range(inside):
                    dst[col] = src[col + pl, lane]
                for col in range(inside, width):
                    dst[col] = 0


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def interleave_dy(dy, n0, dyt):
    """``dyt[i*OW + j, f, l] = dy[n0 + l, f, i, j]``: each position's output gradient as one (F, lanes) matrix."""
    lanes = dyt.shape[2]
    n_positions = dyt.shape[0]
    for f in prange(dy.shape[1]):
        for lane in range(lanes):
            src = dy[n0 + lane, f].reshape(-1)
            for p in range(n_positions):
                dyt[p, f, lane] = src[p]


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
def _scatter_patch_add(dpatch, c0, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, dxt):
    """``dxt[c0 + c, i*SH + a*DH, j*SW + b*DW, l] += dpatch[k, l]``: the transpose of ``_gather_patch``."""
    hp, wp, lanes = dxt.shape[1], dxt.shape[2], dxt.shape[3]
    flat = dxt.reshape(-1)
    src_all = dpatch.reshape(-1)
    runs_per_row = 1 if dil_w == 1 else kw
    run = kw * lanes if dil_w == 1 else lanes
    r = 0
    for c in range(cg):
        for a in range(kh):
            row_start = (((c0 + c) * hp + i * sh + a * dil_h) * wp + j * sw) * lanes
            for b in range(runs_per_row):
                start = row_start + b * dil_w * lanes
                add_run(src_all[r:r + run], flat[start:start + run])
                r += run


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _gather_dy_position(dy, n0, f0, i, j, dyp):
    """``dyp[f, l] = dy[n0 + l, f0 + f, i, j]``: one position's output gradient, samples as columns."""
    for f in range(dyp.shape[0]):
        for lane in range(dyp.shape[1]):
            dyp[f, lane] = dy[n0 + lane, f0 + f, i, j]


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
    n_workers = max(1, min(n_threads, n_positions))
    for worker in prange(n_workers):
        patch = np.empty((kg, lanes), dtype=xt.dtype)
        res = np.empty((fg, lanes), dtype=xt.dtype)
        for p in range(worker * n_positions // n_workers, (worker + 1) * n_positions // n_workers):
            i = p // ow
            j = p % ow
            for g in range(groups):
                _gather_patch(xt, g * cg, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, patch)
                np.dot(w[p, g * fg:(g + 1) * fg], patch, res)
                for f in range(fg):
                    bias = b[g * fg + f, p] if has_bias else zero
                    for lane in range(lanes):
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
        tmp = np.empty((fg, kg), dtype=xt.dtype)
        for p in range(worker * n_positions // n_workers, (worker + 1) * n_positions // n_workers):
            i = p // ow
            j = p % ow
            for g in range(groups):
                _gather_patch(xt, g * cg, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, patch)
                _gather_dy_position(dy, n0, g * fg, i, j, dyp)
                dst = out[p, g * fg:(g + 1) * fg]
                if accumulate:
                    np.dot(dyp, patch.T, tmp)
                    dst += tmp
                else:
                    np.dot(dyp, patch.T, dst)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def local_backward_input_chunk(dyt, w, oh, ow, kh, kw, sh, sw, dil_h, dil_w, groups, rows, cols, tasks, bounds, dxt):
    """``dxt += w[p].T @ dyt[p]`` for every position, added back along each patch (dxt comes zeroed).

    Output positions come in tiles of ``rows x cols``, ``tasks`` and ``bounds`` from
    ``plan_input_tiles``: phase by phase, worker ``k`` adds the tiles
    ``tasks[bounds[phase, k]:bounds[phase, k + 1]]``, each tile's positions in
    row-major order. No two tiles of a phase add into one cell of ``dxt``.
    """
    lanes = dxt.shape[3]
    cg = dxt.shape[0] // groups
    n_filters, kg = w.shape[1], w.shape[2]
    fg = n_filters // groups
    n_workers = bounds.shape[1] - 1
    for phase in range(4):
        if bounds[phase, 0] == bounds[phase, n_workers]:
            continue  # a single row (column) of tiles: no tile of odd row (column)
        for worker in prange(n_workers):
            dpatch = np.empty((kg, lanes), dtype=dxt.dtype)
            for t in range(bounds[phase, worker], bounds[phase, worker + 1]):
                tile_row, tile_col, g = tasks[t, 0], tasks[t, 1], tasks[t, 2]
                for i in range(tile_row * rows, min(oh, (tile_row + 1) * rows)):
                    for j in range(tile_col * cols, min(ow, (tile_col + 1) * cols)):
                        p = i * ow + j
                        np.dot(w[p, g * fg:(g + 1) * fg].T, dyt[p, g * fg:(g + 1) * fg], dpatch)
                        _scatter_patch_add(dpatch, g * cg, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, dxt)


@njit(cache=True)
def plan_input_tiles(oh, ow, rows, cols, groups, n_threads):
    """The tiles of the input gradient in four phases, shared out between the workers.

    Output positions are cut into tiles of ``rows x cols`` (the fewest that
    keep tiles two apart from reading one input row, or column:
    ``segments.rows_per_phase_block`` along each axis), and the tiles come in
    four phases by the parity of their row and column, so the tiles of one
    phase, times the groups, add into disjoint cells of the input gradient.
    Each cell thus receives its terms in an order set by the tile shape,
    that is by the shapes alone. The thread count only decides who adds
    which tile: each worker takes a run of consecutive tiles of a phase
    (row-major, so it stays in one band of the image, the same in every
    phase), the runs cut so that the most positions any worker adds is as
    small as it can be (``_runs``).

    Returns
    -------
    tasks : int64 array (T, 3)
        ``(tile_row, tile_col, group)``, by phase, then row-major.
    bounds : int64 array (4, W + 1)
        Worker ``k`` of phase ``ph`` adds ``tasks[bounds[ph, k]:bounds[ph, k + 1]]``.
    """
    n_tile_rows = (oh + rows - 1) // rows
    n_tile_cols = (ow + cols - 1) // cols
    n_workers = max(1, min(n_threads, ((n_tile_rows + 1) // 2) * ((n_tile_cols + 1) // 2) * groups))
    tasks = np.empty((n_tile_rows * n_tile_cols * groups, 3), dtype=np.int64)
    bounds = np.empty((4, n_workers + 1), dtype=np.int64)
    t0 = 0
    for phase in range(4):
        n_cols_phase = (n_tile_cols - phase % 2 + 1) // 2
        n_tasks = (n_tile_rows - phase // 2 + 1) // 2 * n_cols_phase * groups
        size = np.empty(n_tasks, dtype=np.int64)
        for q in range(n_tasks):
            r = 2 * (q // (n_cols_phase * groups)) + phase // 2
            c = 2 * (q // groups % n_cols_phase) + phase % 2
            tasks[t0 + q, 0], tasks[t0 + q, 1], tasks[t0 + q, 2] = r, c, q % groups
            size[q] = (min(oh, (r + 1) * rows) - r * rows) * (min(ow, (c + 1) * cols) - c * cols)
        _runs(size, bounds[phase])
        for k in range(n_workers + 1):  # not "bounds[phase] += t0": that compiles NumPy's shape-mismatch message
            bounds[phase, k] += t0
        t0 += n_tasks
    return tasks, bounds


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
        lanes = min(LANES_PER_CHUNK, n_total - n0)
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
        lanes = min(LANES_PER_CHUNK, n_total - n0)
        xt = np.empty((n_channels, hp, wp, lanes), dtype=x.dtype)
        interleave(x, n0, pt, pl, xt)
        local_backward_weight_chunk(dy, xt, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads,
                                    accumulate or n0 > 0, out)


def host_backward_input(dy, w, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, rows, n_threads, dx):
    """``dx``, (N, C, H, W), from dy (N, F, OH, OW) and w (OH*OW, F, Kg).

    ``rows`` is ``segments.rows_per_phase_block(kh, sh, dil_h)``, the rows of a tile
    (the caller's row blocks of the shared path); the columns of a tile are its
    counterpart along the width.
    """
    n_total, n_channels = dx.shape[0], dx.shape[1]
    hp = padded_extent(dy.shape[2], kh, sh, dil_h)
    wp = padded_extent(dy.shape[3], kw, sw, dil_w)
    cols = rows_per_phase_block(kw, sw, dil_w)
    tasks, bounds = plan_input_tiles(dy.shape[2], dy.shape[3], rows, cols, groups, n_threads)
    for n0 in range(0, n_total, LANES_PER_CHUNK):
        lanes = min(LANES_PER_CHUNK, n_total - n0)
        # Zeroed here, not in a parallel loop: one parallel region fewer per chunk.
        dxt = np.zeros((n_channels, hp, wp, lanes), dtype=dx.dtype)
        dyt = np.empty((w.shape[0], dy.shape[1], lanes), dtype=dy.dtype)
        interleave_dy(dy, n0, dyt)
        local_backward_input_chunk(dyt, w, dy.shape[2], dy.shape[3], kh, kw, sh, sw, dil_h, dil_w, groups, rows, cols,
                                   tasks, bounds, dxt)
        deinterleave(dxt, n0, pt, pl, dx)


forward = njit(cache=True)(host_forward)
backward_weight = njit(cache=True)(host_backward_weight)
backward_input = njit(cache=True)(host_backward_input)

cache.key_kernels(globals())
