"""CPU kernels of the convolution family: shared, tiled and locally connected.

One code path serves the three families. Weights are laid out
``(T, F, Kg)`` with ``Kg = C/groups * KH * KW``: ``T = 1`` tile for conv2d,
``TH * TW`` for tiled, ``OH * OW`` for local, so one tile's filter bank is one
contiguous ``(F, Kg)`` matrix. Output positions that share a tile come as
*segments* (``lcnumba.cpu.segments``): rows ``(tile, i, j0, j_step,
count)``. Every pass turns a segment (times a chunk of the batch) into one
GEMM done by BLAS through ``np.dot``:

* forward:          ``Y[:, cols] = W_t @ im2col(x)[:, cols]``
* backward weight:  ``dW_t += dY[:, cols] @ im2col(x)[:, cols].T``
* backward input:   ``col2im(W_t.T @ dY[:, cols])``

Array layouts (all C-contiguous):

==========  ===================  =============================================
name        shape                meaning
==========  ===================  =============================================
x, dx       (N, C, H, W)         input and its gradient
w, dw       (T, F, Kg)           filter bank per tile, k = (c * KH + a) * KW + b
b, db       (F, T) or (0, 0)     bias per filter and tile; (0, 0) = no bias
y, dy       (N, F, OH, OW)       output and its gradient
segs        (S, 5) int64         (tile, i, j0, j_step, count)
==========  ===================  =============================================

Parallel work is split so that each worker writes disjoint memory, with a
static assignment of equal-sized tasks; partial sums are reduced in a fixed
order, so results are bitwise identical from run to run and across thread
counts. The input gradient of a task scatters only into input rows no task
of the same phase touches (rows are coloured in two phases), so it needs
neither atomics nor a full-batch column buffer.

``n_threads`` (``numba.get_num_threads()`` of the caller) sets how many
workers split the tasks; it is an argument because calling
``get_num_threads`` inside a kernel defeats on-disk caching. Results do not
depend on it.

Workspaces (column buffers) are sized by one segment and one batch chunk, a
few hundred KiB per worker, never the whole batch.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH, FASTMATH_ORDERED
from . import local, runs, segments
from .indexing import COMPILES_IN as _INDEXING
from .indexing import taps_inside
from .runs import add_bias_run, add_run, copy_run
from .segments import rows_per_phase_block, segment_table

COMPILES_IN = cache.sources("config.py", "cpu/conv.py", local.COMPILES_IN, runs.COMPILES_IN, segments.COMPILES_IN,
                            _INDEXING)

#: Columns (batch samples x positions) per GEMM: big enough for BLAS to run
#: near peak, small enough that the column buffer stays in L2.
COLUMNS_PER_GEMM = 512

#: Weight-gradient partial sums per tile are at most about this many, so the
#: reduction stays cheap while a single shared filter bank still splits into
#: enough tasks to keep every core busy.
CHUNKS_PER_TILE = 16


@njit(cache=True)
def batch_chunk(n, max_count):
    """Batch samples per GEMM so that ``samples * max_count <= COLUMNS_PER_GEMM``."""
    return max(1, min(n, COLUMNS_PER_GEMM // max(1, max_count)))


@njit(cache=True)
def plan_weight_chunks(tile_ptr):
    """Split each tile's segments into chunks whose partial weight gradients are reduced in order.

    Parameters
    ----------
    tile_ptr : int64 array (T + 1,)
        Segment ranges per tile, from ``segments.segment_table``.

    Returns
    -------
    chunks : int64 array (Q, 4)
        ``(tile, seg_lo, seg_hi, slot)``; ``slot == -1`` writes ``dw[tile]``
        directly (the tile's only chunk; an empty range zeroes it), otherwise
        the chunk's partial sum goes to ``partial[slot]``.
    reductions : int64 array (R, 3)
        ``(tile, slot_lo, slot_hi)``: ``dw[tile]`` is the sum of those slots.
    n_slots : int
    """
    n_tiles = tile_ptr.shape[0] - 1
    total = tile_ptr[n_tiles]
    per_chunk = max(1, (total + CHUNKS_PER_TILE - 1) // CHUNKS_PER_TILE)
    n_chunks = 0
    n_reductions = 0
    for t in range(n_tiles):
        pieces = max(1, (tile_ptr[t + 1] - tile_ptr[t] + per_chunk - 1) // per_chunk)
        n_chunks += pieces
        if pieces > 1:
            n_reductions += 1
    chunks = np.empty((n_chunks, 4), dtype=np.int64)
    reductions = np.empty((n_reductions, 3), dtype=np.int64)
    q = 0
    r = 0
    slot = 0
    for t in range(n_tiles):
        lo, hi = tile_ptr[t], tile_ptr[t + 1]
        pieces = max(1, (hi - lo + per_chunk - 1) // per_chunk)
        if pieces == 1:
            chunks[q, 0], chunks[q, 1], chunks[q, 2], chunks[q, 3] = t, lo, hi, -1
            q += 1
            continue
        reductions[r, 0], reductions[r, 1], reductions[r, 2] = t, slot, slot + pieces
        r += 1
        for p in range(pieces):
            chunks[q, 0] = t
            chunks[q, 1] = lo + p * per_chunk
            chunks[q, 2] = min(hi, lo + (p + 1) * per_chunk)
            chunks[q, 3] = slot
            q += 1
            slot += 1
    return chunks, reductions, slot


# ---------------------------------------------------------------- column helpers


@njit(cache=True, fastmath=FASTMATH)
def _im2col(x, n0, n1, c0, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, cols):
    """Columns ``cols[k, (n - n0) * count + m]`` of positions ``(i, j0 + m*j_step)``."""
    height, width = x.shape[2], x.shape[3]
    for c in range(cg):
        for a in range(kh):
            h = i * sh - pt + a * dil_h
            for bb in range(kw):
                row = cols[(c * kh + a) * kw + bb]
                if h < 0 or h >= height:
                    row[:] = 0
                    continue
                step = j_step * sw
                start = j0 * sw + bb * dil_w - pl
                lo, hi = taps_inside(start, step, count, width)
                for n in range(n0, n1):
                    base = (n - n0) * count
                    plane = x[n, c0 + c, h]
                    for m in range(lo):
                        row[base + m] = 0
                    if step == 1:
                        copy_run(plane[start + lo:start + hi], row[base + lo:base + hi])
                    else:
                        for m in range(lo, hi):
                            row[base + m] = plane[start + m * step]
                    for m in range(hi, count):
                        row[base + m] = 0


@njit(cache=True, fastmath=FASTMATH)
def _col2im_add(dcols, n0, n1, c0, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, dx):
    """``dx[n, c0 + c, h, w] += dcols[k, col]``: the transpose of ``_im2col``."""
    height, width = dx.shape[2], dx.shape[3]
    for c in range(cg):
        for a in range(kh):
            h = i * sh - pt + a * dil_h
            if h < 0 or h >= height:
                continue
            for bb in range(kw):
                row = dcols[(c * kh + a) * kw + bb]
                step = j_step * sw
                start = j0 * sw + bb * dil_w - pl
                lo, hi = taps_inside(start, step, count, width)
                for n in range(n0, n1):
                    base = (n - n0) * count
                    plane = dx[n, c0 + c, h]
                    if step == 1:
                        add_run(row[base + lo:base + hi], plane[start + lo:start + hi])
                    else:
                        for m in range(lo, hi):
                            plane[start + m * step] += row[base + m]


@njit(cache=True, inline="always")
def _rows_layout(count, j_step, sw, kw, dil_w):
    """Whether a segment's columns are built as rows (one per sample and position).

    Columns ``cols[k, col]`` copy runs of ``count`` contiguous input cells
    when ``j_step * sw == 1``; rows ``patches[col, k]`` copy runs of ``KW``
    when ``dil_w == 1``. Local convolution (``count == 1``) and strided tiles
    want rows.
    """
    return count < kw or (j_step * sw != 1 and dil_w == 1)


#: The layouts a segment kernel compiles. This module's kernels choose per segment (``_rows_layout``);
#: their twins (``_layout_twin``) compile one layout alone, Numba pruning the other branch before
#: typing it, so that a call whose segments all take one layout compiles only that layout's code.
_ROWS_ONLY = False
_PER_SEGMENT = True

#: What ``segment_layout`` returns: every segment in rows, every one in columns, or some of each.
ROWS, COLUMNS, MIXED = 0, 1, 2


@njit(cache=True)
def segment_layout(segs, sw, kw, dil_w):
    """``ROWS``, ``COLUMNS`` or ``MIXED``: the layouts ``_rows_layout`` gives the segments ``segs`` (S, 5)."""
    rows = 0
    for s in range(segs.shape[0]):
        if _rows_layout(segs[s, 4], segs[s, 3], sw, kw, dil_w):
            rows += 1
    if rows == segs.shape[0]:
        return ROWS
    return COLUMNS if rows == 0 else MIXED


@njit(cache=True, fastmath=FASTMATH)
def _im2row(x, n0, n1, c0, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, patches):
    """Rows ``patches[(n - n0) * count + m, k]``: the transpose of ``_im2col``, built row by row."""
    height, width = x.shape[2], x.shape[3]
    for n in range(n0, n1):
        for m in range(count):
            row = patches[(n - n0) * count + m]
            w0 = (j0 + m * j_step) * sw - pl
            lo, hi = taps_inside(w0, dil_w, kw, width)
            h0 = i * sh - pt
            if lo == 0 and hi == kw and h0 >= 0 and h0 + (kh - 1) * dil_h < height:
                # Interior window: no bounds to test, a plain strided copy.
                k = 0
                for c in range(cg):
                    for a in range(kh):
                        src = x[n, c0 + c, h0 + a * dil_h]
                        if dil_w == 1:
                            copy_run(src[w0:w0 + kw], row[k:k + kw])
                        else:
                            for bb in range(kw):
                                row[k + bb] = src[w0 + bb * dil_w]
                        k += kw
                continue
            for c in range(cg):
                plane = x[n, c0 + c]
                for a in range(kh):
                    h = i * sh - pt + a * dil_h
                    k0 = (c * kh + a) * kw
                    if h < 0 or h >= height:
                        row[k0:k0 + kw] = 0
                        continue
                    src = plane[h]
                    for bb in range(lo):
                        row[k0 + bb] = 0
                    for bb in range(lo, hi):
                        row[k0 + bb] = src[w0 + bb * dil_w]
                    for bb in range(hi, kw):
                        row[k0 + bb] = 0


@njit(cache=True, fastmath=FASTMATH)
def _row2im_add(patches, n0, n1, c0, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, dx):
    """``dx[n, c0 + c, h, w] += patches[row, k]``: the transpose of ``_im2row``."""
    height, width = dx.shape[2], dx.shape[3]
    for n in range(n0, n1):
        for m in range(count):
            row = patches[(n - n0) * count + m]
            w0 = (j0 + m * j_step) * sw - pl
            lo, hi = taps_inside(w0, dil_w, kw, width)
            h0 = i * sh - pt
            if lo == 0 and hi == kw and h0 >= 0 and h0 + (kh - 1) * dil_h < height:
                k = 0
                for c in range(cg):
                    for a in range(kh):
                        dst = dx[n, c0 + c, h0 + a * dil_h]
                        if dil_w == 1:
                            add_run(row[k:k + kw], dst[w0:w0 + kw])
                        else:
                            for bb in range(kw):
                                dst[w0 + bb * dil_w] += row[k + bb]
                        k += kw
                continue
            for c in range(cg):
                plane = dx[n, c0 + c]
                for a in range(kh):
                    h = i * sh - pt + a * dil_h
                    if h < 0 or h >= height:
                        continue
                    k0 = (c * kh + a) * kw
                    dst = plane[h]
                    for bb in range(lo, hi):
                        dst[w0 + bb * dil_w] += row[k0 + bb]


@njit(cache=True, fastmath=FASTMATH)
def _gather_dy(dy, n0, n1, f0, fg, i, j0, j_step, count, out):
    """``out[f, (n - n0) * count + m] = dy[n, f0 + f, i, j0 + m*j_step]``."""
    for f in range(fg):
        for n in range(n0, n1):
            base = (n - n0) * count
            src = dy[n, f0 + f, i]
            if j_step == 1:
                copy_run(src[j0:j0 + count], out[f, base:base + count])
            else:
                for m in range(count):
                    out[f, base + m] = src[j0 + m * j_step]


# ---------------------------------------------------------------- forward


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_forward(x, w, b, segs, n_chunk, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y):
    """``y = conv(x, w) + b`` over every segment.

    x (N, C, H, W), w (T, F, Kg), b (F, T) or (0, 0), segs (S, 5), y (N, F, OH, OW).
    Tasks are (segment, batch chunk, group); each writes its own block of y.
    """
    n_total = x.shape[0]
    cg = x.shape[1] // groups
    n_filters = w.shape[1]
    fg = n_filters // groups
    kg = w.shape[2]
    has_bias = b.shape[0] > 0
    zero = np.zeros(1, dtype=y.dtype)[0]  # in y's precision: a float64 0.0 would widen every sum
    max_count = _max_count(segs)
    n_chunks = (n_total + n_chunk - 1) // n_chunk
    n_tasks = segs.shape[0] * n_chunks * groups
    n_workers = min(n_threads, n_tasks)
    for worker in prange(n_workers):
        col_space = np.empty(kg * n_chunk * max_count, dtype=x.dtype)
        out_space = np.empty(fg * n_chunk * max_count, dtype=x.dtype)
        for task in range(worker, n_tasks, n_workers):
            s = task // (n_chunks * groups)
            rest = task % (n_chunks * groups)
            n0 = (rest // groups) * n_chunk
            n1 = min(n_total, n0 + n_chunk)
            g = rest % groups
            t, i, j0, j_step, count = segs[s, 0], segs[s, 1], segs[s, 2], segs[s, 3], segs[s, 4]
            n_cols = (n1 - n0) * count
            res = out_space[: fg * n_cols].reshape((fg, n_cols))
            if _ROWS_ONLY or (_PER_SEGMENT and _rows_layout(count, j_step, sw, kw, dil_w)):
                patches = col_space[: kg * n_cols].reshape((n_cols, kg))
                _im2row(x, n0, n1, g * cg, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, patches)
                np.dot(w[t, g * fg:(g + 1) * fg], patches.T, res)
            else:
                cols = col_space[: kg * n_cols].reshape((kg, n_cols))
                _im2col(x, n0, n1, g * cg, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, cols)
                np.dot(w[t, g * fg:(g + 1) * fg], cols, res)
            for f in range(fg):
                bias = b[g * fg + f, t] if has_bias else zero
                for n in range(n0, n1):
                    base = (n - n0) * count
                    dst = y[n, g * fg + f, i]
                    if j_step == 1:
                        add_bias_run(res[f, base:base + count], bias, dst[j0:j0 + count])
                    else:
                        for m in range(count):
                            dst[j0 + m * j_step] = res[f, base + m] + bias


# ---------------------------------------------------------------- backward: weight


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_backward_weight(dy, x, segs, chunks, n_chunk, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads,
                         accumulate, partial, out):
    """``out (+)= dW`` with ``dW_t = sum over the tile's columns of dY @ im2col(x).T``.

    dy (N, F, OH, OW), x (N, C, H, W), segs (S, 5) sorted by tile, chunks (Q, 4)
    from ``plan_weight_chunks``, partial (slots, F, Kg) scratch, out (T, F, Kg).
    Tasks are (chunk, group); a chunk's segments are summed in order.
    """
    n_total = x.shape[0]
    cg = x.shape[1] // groups
    n_filters = out.shape[1]
    fg = n_filters // groups
    kg = out.shape[2]
    max_count = _max_count(segs)
    n_tasks = chunks.shape[0] * groups
    n_workers = min(n_threads, n_tasks)
    for worker in prange(n_workers):
        col_space = np.empty(kg * n_chunk * max_count, dtype=x.dtype)
        dy_space = np.empty(fg * n_chunk * max_count, dtype=x.dtype)
        tmp = np.empty((fg, kg), dtype=x.dtype)
        for task in range(worker, n_tasks, n_workers):
            q = task // groups
            g = task % groups
            t, seg_lo, seg_hi, slot = chunks[q, 0], chunks[q, 1], chunks[q, 2], chunks[q, 3]
            if slot < 0:
                acc = out[t, g * fg:(g + 1) * fg]
                add_to_acc = accumulate
            else:
                acc = partial[slot, g * fg:(g + 1) * fg]
                add_to_acc = False
            if seg_lo == seg_hi and not add_to_acc:
                acc[:] = 0
            for s in range(seg_lo, seg_hi):
                i, j0, j_step, count = segs[s, 1], segs[s, 2], segs[s, 3], segs[s, 4]
                for n0 in range(0, n_total, n_chunk):
                    n1 = min(n_total, n0 + n_chunk)
                    n_cols = (n1 - n0) * count
                    dys = dy_space[: fg * n_cols].reshape((fg, n_cols))
                    _gather_dy(dy, n0, n1, g * fg, fg, i, j0, j_step, count, dys)
                    dst = tmp if add_to_acc else acc
                    if _ROWS_ONLY or (_PER_SEGMENT and _rows_layout(count, j_step, sw, kw, dil_w)):
                        patches = col_space[: kg * n_cols].reshape((n_cols, kg))
                        _im2row(x, n0, n1, g * cg, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w,
                                patches)
                        np.dot(dys, patches, dst)
                    else:
                        cols = col_space[: kg * n_cols].reshape((kg, n_cols))
                        _im2col(x, n0, n1, g * cg, cg, i, j0, j_step, count, kh, kw, sh, sw, pt, pl, dil_h, dil_w, cols)
                        np.dot(dys, cols.T, dst)
                    if add_to_acc:
                        for f in range(fg):
                            add_run(tmp[f], acc[f])
                    add_to_acc = True


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def reduce_weight_partials(partial, reductions, accumulate, out):
    """``out[t] (+)= sum(partial[lo:hi])`` in slot order, parallel over (tile, filter) rows."""
    n_filters = out.shape[1]
    for r in prange(reductions.shape[0] * n_filters):
        q = r // n_filters
        f = r % n_filters
        t, lo, hi = reductions[q, 0], reductions[q, 1], reductions[q, 2]
        dst = out[t, f]
        if not accumulate:
            copy_run(partial[lo, f], dst)
            lo += 1
        for slot in range(lo, hi):
            add_run(partial[slot, f], dst)


# ---------------------------------------------------------------- backward: bias


@njit(parallel=True, cache=True, fastmath=FASTMATH_ORDERED)  # the sum's order is the loop's: see config
def conv_backward_bias(dy, segs, tile_ptr, accumulate, out):
    """``out[f, t] (+)= sum of dy[n, f, i, j]`` over the positions of tile t; parallel over filters.

    dy (N, F, OH, OW), segs (S, 5) sorted by tile, tile_ptr (T + 1,), out (F, T). The m-th cells of
    the tile's runs are summed into column sum m first (in segment, then sample order), and the
    column sums are then added in column order: an order fixed by the shapes, as the ordered flags
    require, whose first stage adds whole rows elementwise, which LLVM vectorises as it stands.
    """
    n_total = dy.shape[0]
    n_tiles = out.shape[1]
    for f in prange(out.shape[0]):
        columns = np.empty(dy.shape[3], dtype=np.float64)
        for t in range(n_tiles):
            width = 0
            for s in range(tile_ptr[t], tile_ptr[t + 1]):
                width = max(width, segs[s, 4])
            columns[:width] = 0.0
            for s in range(tile_ptr[t], tile_ptr[t + 1]):
                i, j0, j_step, count = segs[s, 1], segs[s, 2], segs[s, 3], segs[s, 4]
                for n in range(n_total):
                    row = dy[n, f, i]
                    if j_step == 1:
                        run = row[j0:j0 + count]
                        for m in range(count):
                            columns[m] += run[m]
                    else:
                        for m in range(count):
                            columns[m] += row[j0 + m * j_step]
            total = 0.0
            for m in range(width):
                total += columns[m]
            if accumulate:
                out[f, t] += total
            else:
                out[f, t] = total


# ---------------------------------------------------------------- backward: input


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_backward_input(dy, w, segs, row_ptr, rows_per_block, n_chunk, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
                        n_threads, dx):
    """``dx = col2im(W_t.T @ dY)`` summed over every segment.

    dy (N, F, OH, OW), w (T, F, Kg), segs (S, 5) sorted by row, row_ptr (OH + 1,),
    dx (N, C, H, W). Output rows come in blocks of ``rows_per_block``; blocks of
    one parity read disjoint input rows (``rows_per_phase_block``), so the
    even blocks run in parallel, then the odd ones, each scattering into its own
    rows of dx in a fixed order: no races and bitwise-reproducible sums. Each
    tile's weights are read once per batch chunk, which for local convolution
    (weights far larger than activations) is what bounds the time.
    The even blocks also zero dx, each from where its windows start to where
    those of the next even block start, so the pass is two parallel regions.
    """
    n_total = dx.shape[0]
    cg = dx.shape[1] // groups
    n_filters = w.shape[1]
    fg = n_filters // groups
    kg = w.shape[2]
    oh = row_ptr.shape[0] - 1
    max_count = _max_count(segs)

    height = dx.shape[2]
    n_blocks = (oh + rows_per_block - 1) // rows_per_block
    for phase in range(2):
        n_phase_blocks = (n_blocks - phase + 1) // 2
        n_tasks = n_phase_blocks * groups
        if n_tasks == 0:
            continue
        n_workers = min(n_threads, n_tasks)
        for worker in prange(n_workers):
            dcol_space = np.empty(kg * n_chunk * max_count, dtype=dx.dtype)
            dy_space = np.empty(fg * n_chunk * max_count, dtype=dx.dtype)
            for task in range(worker, n_tasks, n_workers):
                block = 2 * (task // groups) + phase
                g = task % groups
                i_lo = block * rows_per_block
                i_hi = min(oh, i_lo + rows_per_block)
                if phase == 0:
                    # Zero the input rows from where this block's windows start to where
                    # those of block + 2 start (to the bottom for the last even block):
                    # no other even block writes there, and odd blocks write only later.
                    z_lo = 0 if block == 0 else min(height, max(0, i_lo * sh - pt))
                    z_hi = height
                    if block + 2 < n_blocks:
                        z_hi = min(height, max(0, (block + 2) * rows_per_block * sh - pt))
                    for n in range(n_total):
                        for c in range(g * cg, (g + 1) * cg):
                            for h in range(z_lo, z_hi):
                                dx[n, c, h, :] = 0
                for s in range(row_ptr[i_lo], row_ptr[i_hi]):
                    t, i, j0, j_step, count = segs[s, 0], segs[s, 1], segs[s, 2], segs[s, 3], segs[s, 4]
                    w_t = w[t, g * fg:(g + 1) * fg]
                    for n0 in range(0, n_total, n_chunk):
                        n1 = min(n_total, n0 + n_chunk)
                        n_cols = (n1 - n0) * count
                        dys = dy_space[: fg * n_cols].reshape((fg, n_cols))
                        _gather_dy(dy, n0, n1, g * fg, fg, i, j0, j_step, count, dys)
                        if _ROWS_ONLY or (_PER_SEGMENT and _rows_layout(count, j_step, sw, kw, dil_w)):
                            dpatches = dcol_space[: kg * n_cols].reshape((n_cols, kg))
                            np.dot(dys.T, w_t, dpatches)
                            _row2im_add(dpatches, n0, n1, g * cg, cg, i, j0, j_step, count,
                                        kh, kw, sh, sw, pt, pl, dil_h, dil_w, dx)
                        else:
                            dcols = dcol_space[: kg * n_cols].reshape((kg, n_cols))
                            np.dot(w_t.T, dys, dcols)
                            _col2im_add(dcols, n0, n1, g * cg, cg, i, j0, j_step, count,
                                        kh, kw, sh, sw, pt, pl, dil_h, dil_w, dx)


# ---------------------------------------------------------------- drivers
#
# One call per public operation. ``th, tw`` are the tiles per axis (1, 1 for
# conv2d; OH, OW for local) and ``periodic`` the tile mode. Arguments are
# trusted: the callers check them.
#
# Each driver chooses the local kernels of ``lcnumba.cpu.local`` or the
# segment kernels of this module (``uses_local``). The C entry points
# (``lcnumba.capi``) call the compiled drivers (``forward``, ...), both paths
# compiled in. Python calls plain ones (``host_forward``, ...) that make the
# same choice and call the same kernels from Python: a first call compiles
# only the kernels of its own path, each once, on its own (a compiled driver
# would compile them again into its own machine code).


@njit(cache=True)
def uses_local(th, tw, oh, ow, kh, kw, sh, sw, dil_h, dil_w, height, width):
    """One tile per output position and a sane padding of the input: ``lcnumba.cpu.local`` applies.

    ``oh, ow`` is the output (y or dy), ``height, width`` the input (x or dx).
    """
    return th == oh and tw == ow and local.fits(oh, ow, kh, kw, sh, sw, dil_h, dil_w, height, width)


def host_shared_forward(x, w, b, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y):
    """``forward`` by segments (every family)."""
    by_tile, _, _, _ = segment_table(y.shape[2], y.shape[3], th, tw, periodic)
    n_chunk = batch_chunk(x.shape[0], _max_count(by_tile))
    args = (x, w, b, by_tile, n_chunk, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y)
    layout = segment_layout(by_tile, sw, kw, dil_w)
    if layout == ROWS:
        conv_forward_rows(*args)
    elif layout == COLUMNS:
        conv_forward_columns(*args)
    else:
        conv_forward(*args)


def host_shared_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx):
    """``backward_input`` by segments (every family)."""
    _, _, by_row, row_ptr = segment_table(dy.shape[2], dy.shape[3], th, tw, periodic)
    n_chunk = batch_chunk(dy.shape[0], _max_count(by_row))
    rows = rows_per_phase_block(kh, sh, dil_h)
    args = (dy, w, by_row, row_ptr, rows, n_chunk, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx)
    layout = segment_layout(by_row, sw, kw, dil_w)
    if layout == ROWS:
        conv_backward_input_rows(*args)
    elif layout == COLUMNS:
        conv_backward_input_columns(*args)
    else:
        conv_backward_input(*args)


def host_shared_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads,
                                accumulate, out):
    """``backward_weight`` by segments (every family)."""
    by_tile, tile_ptr, _, _ = segment_table(dy.shape[2], dy.shape[3], th, tw, periodic)
    chunks, reductions, n_slots = plan_weight_chunks(tile_ptr)
    partial = np.empty((n_slots, out.shape[1], out.shape[2]), dtype=out.dtype)
    n_chunk = batch_chunk(x.shape[0], _max_count(by_tile))
    args = (dy, x, by_tile, chunks, n_chunk, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, accumulate,
            partial, out)
    layout = segment_layout(by_tile, sw, kw, dil_w)
    if layout == ROWS:
        conv_backward_weight_rows(*args)
    elif layout == COLUMNS:
        conv_backward_weight_columns(*args)
    else:
        conv_backward_weight(*args)
    if n_slots > 0:
        reduce_weight_partials(partial, reductions, accumulate, out)


def host_forward(x, w, b, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y):
    """``y = conv(x, w) + b``; w (T, F, Kg), b (F, T) or (0, 0), y (N, F, OH, OW)."""
    if uses_local(th, tw, y.shape[2], y.shape[3], kh, kw, sh, sw, dil_h, dil_w, x.shape[2], x.shape[3]):
        _local_forward(x, w, b, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y)
    else:
        _shared_forward(x, w, b, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y)


def host_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx):
    """``dx``, (N, C, H, W), from dy (N, F, OH, OW) and w (T, F, Kg)."""
    if uses_local(th, tw, dy.shape[2], dy.shape[3], kh, kw, sh, sw, dil_h, dil_w, dx.shape[2], dx.shape[3]):
        _local_backward_input(dy, w, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx)
    else:
        _shared_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx)


def host_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads,
                         accumulate, out):
    """``out (+)= dW``, (T, F, Kg), from dy (N, F, OH, OW) and x (N, C, H, W)."""
    if uses_local(th, tw, dy.shape[2], dy.shape[3], kh, kw, sh, sw, dil_h, dil_w, x.shape[2], x.shape[3]):
        _local_backward_weight(dy, x, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, accumulate, out)
    else:
        _shared_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads,
                                accumulate, out)


#: The paths of the plain drivers: plain drivers too, run by Python.
_local_forward = local.host_forward
_local_backward_input = local.host_backward_input
_local_backward_weight = local.host_backward_weight
_shared_forward = host_shared_forward
_shared_backward_input = host_shared_backward_input
_shared_backward_weight = host_shared_backward_weight

def _compiled(driver):
    """``njit(cache=True)`` of the plain ``driver`` with its paths compiled too.

    The compiled function runs the driver's own code (Numba compiles it from
    the code object) in a copy of this module's namespace where the path
    names (``_local_forward``, ...) are the compiled drivers. Its on-disk
    cache is the driver's: same file, name and line.
    """
    return njit(cache=True)(cache.twin(driver, driver.__qualname__, _local_forward=local.forward,
                                       _local_backward_input=local.backward_input,
                                       _local_backward_weight=local.backward_weight, _shared_forward=shared_forward,
                                       _shared_backward_input=shared_backward_input,
                                       _shared_backward_weight=shared_backward_weight))


def _layout_twin(kernel, rows):
    """The segment kernel ``kernel`` compiled for one layout: rows (``rows``) or columns, for every segment.

    Its results are the kernel's for a table whose segments all take that
    layout (``segment_layout``); a call compiles the other layout's code only
    when its segments mix them.
    """
    suffix = "_rows" if rows else "_columns"
    twin = cache.twin(kernel.py_func, kernel.py_func.__qualname__ + suffix, _ROWS_ONLY=rows, _PER_SEGMENT=False)
    options = kernel.targetoptions
    return njit(parallel=options["parallel"], fastmath=options["fastmath"], cache=True)(twin)


@njit(parallel=True, cache=True, fastmath=FASTMATH_ORDERED)  # the sum's order is the loop's: see config
def position_backward_bias(dy, accumulate, out):
    """``out[f, p] (+)= sum over n of dy[n, f, p]`` when every position has its own bias (a local layer).

    dy (N, F, P), out (F, P). Each cell is summed in sample order, as
    :func:`conv_backward_bias` sums a one-position tile, but the loop runs
    along the positions so that it vectorises without reordering any sum.
    """
    n_total, n_pos = dy.shape[0], dy.shape[2]
    for f in prange(out.shape[0]):
        total = np.zeros(n_pos, dtype=out.dtype)
        for n in range(n_total):
            row = dy[n, f]
            for p in range(n_pos):
                total[p] += row[p]
        dst = out[f]
        if accumulate:
            add_run(total, dst)
        else:
            copy_run(total, dst)


def host_backward_bias(dy, th, tw, periodic, accumulate, out):
    """``out (+)= db``, (F, T), from dy (N, F, OH, OW).

    Python runs it as it is, so that a first call compiles only its own
    path's kernel (about 2 s of compile each); ``backward_bias`` is it
    compiled, both paths in, for the C entry points.
    """
    n, f, oh, ow = dy.shape
    if th == oh and tw == ow:  # one bank per position in either tile mode: tile t is position t
        position_backward_bias(dy.reshape(n, f, oh * ow), accumulate, out)
        return
    by_tile, tile_ptr, _, _ = segment_table(oh, ow, th, tw, periodic)
    conv_backward_bias(dy, by_tile, tile_ptr, accumulate, out)


@njit(cache=True, inline="always")
def _max_count(segs):
    """The longest segment's position count (at least 1): what a segment's workspaces are sized by."""
    most = 1
    for s in range(segs.shape[0]):
        most = max(most, segs[s, 4])
    return most


conv_forward_rows = _layout_twin(conv_forward, True)
conv_forward_columns = _layout_twin(conv_forward, False)
conv_backward_input_rows = _layout_twin(conv_backward_input, True)
conv_backward_input_columns = _layout_twin(conv_backward_input, False)
conv_backward_weight_rows = _layout_twin(conv_backward_weight, True)
conv_backward_weight_columns = _layout_twin(conv_backward_weight, False)


def _shared_compiled(driver):
    """``njit(cache=True)`` of the plain shared ``driver`` with every layout's call going to the per-segment kernel.

    A compiled driver compiles each kernel it may call into its own machine
    code: with the layout twins too it would compile each segment kernel three
    times. The per-segment kernel gives the twins' results for any table.
    """
    per_segment = {name + suffix: kernel for name, kernel in (("conv_forward", conv_forward),
                                                               ("conv_backward_input", conv_backward_input),
                                                               ("conv_backward_weight", conv_backward_weight))
                   for suffix in ("_rows", "_columns")}
    return njit(cache=True)(cache.twin(driver, driver.__qualname__, **per_segment))


shared_forward = _shared_compiled(host_shared_forward)
shared_backward_input = _shared_compiled(host_shared_backward_input)
shared_backward_weight = _shared_compiled(host_shared_backward_weight)

#: The drivers compiled, both paths compiled in: for the C entry points.
backward_bias = njit(cache=True)(host_backward_bias)
forward = _compiled(host_forward)
backward_input = _compiled(host_backward_input)
backward_weight = _compiled(host_backward_weight)

cache.key_kernels(globals())
