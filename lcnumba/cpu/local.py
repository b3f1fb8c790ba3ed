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
(``tile_edges``, ``plan_input_tiles``), so no two workers ever add to one
cell at once, and every cell receives its terms in an order set by the
shapes alone. Results are bitwise identical across runs and thread counts.

A batch chunk holds up to ``LANES_PER_CHUNK`` samples: the weights (by far
the largest array) are streamed from memory once per chunk.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from . import lanes, runs, segments
from .lanes import lane_width, matmul_lanes, matmul_lanes_t, matmul_t_lanes
from .runs import add_run, copy_run
from .segments import rows_per_phase_block

COMPILES_IN = cache.sources("config.py", "cpu/local.py", lanes.COMPILES_IN, runs.COMPILES_IN, segments.COMPILES_IN)

#: Samples per chunk: one chunk for the usual batch sizes, so the weights are
#: read once per pass, while a patch matrix (Kg x lanes) stays within L2.
LANES_PER_CHUNK = 32


@njit(cache=True)
def padded_extent(out_size, kernel, stride, dilation):
    """Input cells some window reads along one axis, padding included."""
    return (out_size - 1) * stride + (kernel - 1) * dilation + 1


@njit(cache=True, inline="always")
def padded_lanes(count, a):
    """Lanes for ``count`` samples: rounded up to whole vectors of ``a``'s dtype (``lanes.lane_width``)."""
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


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def deinterleave(dxt, n0, pt, pl, dx):
    """``dx[n0 + l, c, h, w] = dxt[c, h + pt, w + pl, l]``; cells no window reads get 0, lanes past the batch are dropped."""
    lanes = min(dxt.shape[3], dx.shape[0] - n0)
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
def local_backward_input_chunk(dy, w, n0, kh, kw, sh, sw, dil_h, dil_w, groups, row_edges, col_edges, tasks, bounds,
                               dxt):
    """``dxt += w[p].T @ dy_p`` for every position, added back along each patch (dxt comes zeroed).

    Tile ``(r, c)`` holds the output rows ``row_edges[r]:row_edges[r + 1]`` and columns
    ``col_edges[c]:col_edges[c + 1]``; ``tasks`` and ``bounds`` come from
    ``plan_input_tiles``: phase by phase, worker ``k`` adds the tiles
    ``tasks[bounds[phase, k]:bounds[phase, k + 1]]``, each tile's positions in
    row-major order. No two tiles of a phase add into one cell of ``dxt``.
    """
    lanes = dxt.shape[3]
    cg = dxt.shape[0] // groups
    n_filters, kg = w.shape[1], w.shape[2]
    fg = n_filters // groups
    ow = dy.shape[3]
    n_workers = bounds.shape[1] - 1
    for phase in range(4):
        if bounds[phase, 0] == bounds[phase, n_workers]:
            continue  # a single row (column) of tiles: no tile of odd row (column)
        for worker in prange(n_workers):
            dpatch = np.empty((kg, lanes), dtype=dxt.dtype)
            dyp = np.empty((fg, lanes), dtype=dxt.dtype)
            for t in range(bounds[phase, worker], bounds[phase, worker + 1]):
                r, c, g = tasks[t, 0], tasks[t, 1], tasks[t, 2]
                for i in range(row_edges[r], row_edges[r + 1]):
                    for j in range(col_edges[c], col_edges[c + 1]):
                        p = i * ow + j
                        _gather_dy_position(dy, n0, g * fg, i, j, dyp)
                        matmul_t_lanes(w[p, g * fg:(g + 1) * fg], dyp, False, dpatch)
                        _scatter_patch_add(dpatch, g * cg, cg, i, j, kh, kw, sh, sw, dil_h, dil_w, dxt)


#: Tiles of the input gradient along an axis at most: a phase then has up to
#: 8 x 8 tiles to share out, plenty for the usual thread counts, and a large
#: layer keeps tiles of many positions instead of one task per position.
MAX_TILES_PER_AXIS = 16


@njit(cache=True)
def tile_edges(oh, ow, rows, cols):
    """Tile boundaries of the input gradient: ``(row_edges, col_edges)``, shapes alone decide them.

    Each axis is cut into near-equal tiles of at least ``rows`` (``cols``)
    positions, ``segments.rows_per_phase_block`` along that axis, so that tiles
    two apart never read one input row (column); as many tiles as that allows,
    up to ``MAX_TILES_PER_AXIS``. The axis with more tiles takes a multiple
    of four of them where it has four or more: each parity then holds an
    even number, so every phase has an even number of tiles and splits
    evenly on two or four workers.
    """
    n_rows = max(1, min(oh // rows, MAX_TILES_PER_AXIS))
    n_cols = max(1, min(ow // cols, MAX_TILES_PER_AXIS))
    if n_rows >= n_cols and n_rows >= 4:
        n_rows -= n_rows % 4
    elif n_cols > n_rows and n_cols >= 4:
        n_cols -= n_cols % 4
    return _even_edges(oh, n_rows), _even_edges(ow, n_cols)


@njit(cache=True)
def _even_edges(extent, n):
    """``n + 1`` edges cutting ``[0, extent)`` into ``n`` parts whose sizes differ by one at most."""
    edges = np.empty(n + 1, dtype=np.int64)
    for t in range(n + 1):
        edges[t] = t * extent // n
    return edges


@njit(cache=True)
def plan_input_tiles(row_edges, col_edges, groups, n_threads):
    """The tiles of the input gradient in four phases, shared out between the workers.

    The tiles (``tile_edges``) come in four phases by the parity of their row
    and column, so the tiles of one phase, times the groups, add into
    disjoint cells of the input gradient. Each cell thus receives its terms
    in an order set by the tiles, that is by the shapes alone. The thread
    count only decides who adds which tile: each worker takes a run of
    consecutive tiles of a phase (row-major, so it stays in one band of the
    image, the same in every phase), the runs cut so that the most positions
    any worker adds is as small as it can be (``_runs``).

    Returns
    -------
    tasks : int64 array (T, 3)
        ``(tile_row, tile_col, group)``, by phase, then row-major.
    bounds : int64 array (4, W + 1)
        Worker ``k`` of phase ``ph`` adds ``tasks[bounds[ph, k]:bounds[ph, k + 1]]``.
    """
    n_tile_rows = row_edges.shape[0] - 1
    n_tile_cols = col_edges.shape[0] - 1
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
            size[q] = (row_edges[r + 1] - row_edges[r]) * (col_edges[c + 1] - col_edges[c])
        _runs(size, bounds[phase])
        bounds[phase] += t0
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


@njit(cache=True)
def forward(x, w, b, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y):
    """``y = local_conv(x, w) + b``; x (N, C, H, W), w (OH*OW, F, Kg), b (F, OH*OW) or (0, 0)."""
    n_total, n_channels = x.shape[0], x.shape[1]
    hp = padded_extent(y.shape[2], kh, sh, dil_h)
    wp = padded_extent(y.shape[3], kw, sw, dil_w)
    for n0 in range(0, n_total, LANES_PER_CHUNK):
        lanes = padded_lanes(min(LANES_PER_CHUNK, n_total - n0), x)
        xt = np.empty((n_channels, hp, wp, lanes), dtype=x.dtype)
        interleave(x, n0, pt, pl, xt)
        local_forward_chunk(xt, w, b, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads, y)


@njit(cache=True)
def backward_weight(dy, x, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, accumulate, out):
    """``out (+)= dW``, (OH*OW, F, Kg), from dy (N, F, OH, OW) and x (N, C, H, W)."""
    n_total, n_channels = x.shape[0], x.shape[1]
    if n_total == 0 and not accumulate:
        out[:] = 0
    hp = padded_extent(dy.shape[2], kh, sh, dil_h)
    wp = padded_extent(dy.shape[3], kw, sw, dil_w)
    for n0 in range(0, n_total, LANES_PER_CHUNK):
        lanes = padded_lanes(min(LANES_PER_CHUNK, n_total - n0), x)
        xt = np.empty((n_channels, hp, wp, lanes), dtype=x.dtype)
        interleave(x, n0, pt, pl, xt)
        local_backward_weight_chunk(dy, xt, n0, kh, kw, sh, sw, dil_h, dil_w, groups, n_threads,
                                    accumulate or n0 > 0, out)


@njit(cache=True)
def backward_input(dy, w, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, rows, n_threads, dx):
    """``dx``, (N, C, H, W), from dy (N, F, OH, OW) and w (OH*OW, F, Kg).

    ``rows`` is ``segments.rows_per_phase_block(kh, sh, dil_h)`` (the caller's row
    blocks of the shared path), the fewest rows of a tile; the fewest columns
    are its counterpart along the width.
    """
    n_total, n_channels = dx.shape[0], dx.shape[1]
    hp = padded_extent(dy.shape[2], kh, sh, dil_h)
    wp = padded_extent(dy.shape[3], kw, sw, dil_w)
    row_edges, col_edges = tile_edges(dy.shape[2], dy.shape[3], rows, rows_per_phase_block(kw, sw, dil_w))
    tasks, bounds = plan_input_tiles(row_edges, col_edges, groups, n_threads)
    for n0 in range(0, n_total, LANES_PER_CHUNK):
        lanes = padded_lanes(min(LANES_PER_CHUNK, n_total - n0), dx)
        # Zeroed here, not in a parallel loop: one parallel region fewer per chunk.
        dxt = np.zeros((n_channels, hp, wp, lanes), dtype=dx.dtype)
        local_backward_input_chunk(dy, w, n0, kh, kw, sh, sw, dil_h, dil_w, groups, row_edges, col_edges, tasks, bounds,
                                   dxt)
        deinterleave(dxt, n0, pt, pl, dx)


cache.key_kernels(globals())
