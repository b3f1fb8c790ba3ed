"""CUDA kernels of the convolution family: shared, tiled and locally connected.

The same layouts as ``lcnumba.cpu.conv`` (all C-contiguous; the kernels take
them flat and address them with ``int32`` offsets):

==========  ====================  =============================================
name        shape                 meaning
==========  ====================  =============================================
x, dx       (N, C, H, W)          input and its gradient
w, dw       (T, F, Kg)            filter bank per tile, k = (c * KH + a) * KW + b
b, db       (F, T)                bias per filter and tile
y, dy       (N, F, OH, OW)        output and its gradient
==========  ====================  =============================================

``T = TH * TW`` banks: 1 for conv2d, ``OH * OW`` for local. Output
position ``(i, j)`` uses bank ``tile_of(i) * TW + tile_of(j)``; the
positions of one bank form a regular grid (``lcnumba.indexing.tile_span``), so
bank ``t`` of group ``g`` is one GEMM whose columns are ``(n, u, v)``:
sample ``n`` and the ``u``-th row, ``v``-th column of the bank's positions.

Tables (``conv_tables``, one launch before the forward or weight-gradient
GEMM kernel, into this stream's ``int32`` scratch): per tap ``k`` of a group, its offset in ``x``
from the window's corner and its displacement in rows and columns; per
column of every bank (the banks in order, each bank's columns in order),
the offsets of its output ``(n, 0, i, j)`` and of its window's corner in
channel 0, and the corner's row and column (for the padding test). The
GEMM kernels index the im2col matrix through them: no division in any
loop over taps or columns.

Forward (``conv_forward``), an implicit GEMM per bank and group:
``Y = W X`` with ``X`` the im2col matrix of ``x`` (never formed). A block
owns a ``bm x bn`` tile of filters x columns and each of its threads an
``rt x rt`` register tile, the reduction over taps in double-buffered
chunks of ``GK``: the micro-kernel of ``lcnumba.gpu.gemm`` (its tile
sizes, the register tile side per dtype, and ``block_tile``, which
shrinks the block tile until the configured threads per block hold a
register tile each). The block copies its columns' table rows to shared
memory once. Columns are sample-major, so one staged weight chunk serves
every sample of the block: for local and tiled convolution each weight is
read once per block and reused across the batch. Each GEMM kernel is
compiled once per register tile side (``conv_forward``,
``conv_forward_rt2``; the host picks by dtype).

Backward weight (``conv_backward_weight``), the GEMM ``dW = dY X^T`` with
the same tiles: a block owns a ``bm x bk`` tile of ``dW`` (filters x taps)
and reduces over a fixed range of the bank's columns in increasing order,
``GK`` columns a chunk (double-buffered as above), reading the chunk's
offsets from the column table. When a bank has many columns (conv2d) the
columns are cut into ``S`` fixed splits (their number from the shapes
alone) whose partial sums go to a scratch buffer and are summed in split
order by ``kernels.reduce_splits``: no atomics, bitwise-reproducible.

Backward bias (``conv_backward_bias``): a thread per ``(split, f, t)``
sums its columns in order; splits are reduced as for the weight.

Backward input, one bank (shared convolution) at stride 1
(``conv_backward_input_gemm``, ``_rt2``): an implicit GEMM per group,
``dX_g = A_g B_g`` with rows the group's input channels ``c``, columns the
input cells ``(n, h, w)`` of the batch and reduction index
``k = (f * KH + a) * KW + b`` over the group's filters and the taps:
``A_g[c, k] = w[0, g fg + f, (c KH + a) KW + b]`` and
``B_g[k, (n, h, w)] = dy[n, g fg + f, h + PT - a DH, w + PL - b DW]``
(0 outside ``dy``). The tiles, chunks and barriers are the forward's, the
tables (``input_gemm_tables``) hold per reduction index its offsets in
``w`` and ``dy`` and its displacement, per input cell its offsets in ``dx``
and ``dy``, so ``B`` is staged by the forward's im2col staging with the
roles of ``x`` and ``dy`` exchanged. Each weight staged once serves the
block's columns, as in the forward. The GEMM needs both conditions: with
several banks (tiled, local) the bank, so the weight, that meets a fixed
input cell changes with the tap, so ``A`` is not one matrix for a column;
at stride ``s`` only ``1 / s^2`` of the taps read a cell (the others land
between outputs), so the dense ``B`` would be mostly zeros.

Backward input, every other case (``conv_backward_input``), gathers: a
thread owns input cell ``(c, h, w)`` for ``NB`` samples and sums, over
exactly the kernel taps that read it and the group's filters, ``w * dy``.
Which taps read a row ``h`` (the first, how many, and the output row of
the first) is a table made by ``gather_tables`` before the kernel, as is
the bank of every output row and column; the later taps follow by fixed
steps. Each weight is loaded once and applied to the ``NB`` samples from a
register. The launcher (``backward_input``) picks the kernel.

Every sum runs in an order fixed by the shapes alone (not by the grid,
the block size or the device), so results are bitwise reproducible and
independent of ``THREADS_PER_BLOCK``.

Arguments: the arrays, and every integer of the launch (geometry, tiling,
tile sizes, flags) packed in one ``int32`` tuple ``geo``, unpacked at the
top of the kernel in the order its docstring gives. Index divisions are
32-bit (``intmath``) and happen once per element of a table, per block
tile or per output cell, never in the loops over taps and filters.
"""

import math

import numpy as np

from .. import indexing
from .gemm import (G_PAD, GK, GN, LOG_GK, RT_NARROW, RT_WIDE, block_tile, full_tiles, log2, mac_tile, specialise,
                   stage, tile_owner, tile_side, zero_tile)
from .intmath import div32, divmod32
from .jit import cuda, device_function, kernel
from .kernels import reduce_splits
from .launch import block_threads, blockwise, elementwise, scratch

#: Samples per thread in the input-gradient gather.
NB = 8

#: A bank's columns are split for the weight and bias gradients only when it
#: has more than this many (tests patch it down to exercise the split path).
MIN_COLUMNS_PER_SPLIT = 1024
#: Aim for about this many blocks (weight gradient) or threads (bias gradient).
TARGET_BLOCKS = 1024
TARGET_THREADS = 1 << 16

#: The window corner row given to a column past the end of a bank: so far above the input that no tap reaches it.
OUTSIDE = -(1 << 30)


@device_function
def tile_of(index, size, tiles, periodic):
    """``indexing.tile_of`` with a 32-bit division.

    Block mode divides ``index * tiles``: the launchers check ``size * tiles < 2**32`` (``_check_tiles``; unless
    ``tiles == size``, local convolution, where the bank is the index itself).
    """
    if periodic:
        return divmod32(index, tiles)[1]
    if tiles == size:
        return index
    return div32(index * tiles, size)


@device_function
def tile_span(tile, size, tiles, periodic):
    """``indexing.tile_span`` with 32-bit divisions (the launchers check ``size * tiles < 2**32``, see ``tile_of``)."""
    if periodic:
        if tile >= size:
            return 0, 1, 0
        return tile, tiles, div32(size - tile + tiles - 1, tiles)
    if tiles == size:
        return tile, 1, 1
    start = div32(tile * size + tiles - 1, tiles)
    return start, 1, div32((tile + 1) * size + tiles - 1, tiles) - start


@device_function
def _column(col, per_n, nv):
    """Sample, row and column ``(n, u, v)`` of column ``col`` of a bank (``per_n = nu * nv`` columns a sample)."""
    n, r = divmod32(col, per_n)
    u, v = divmod32(r, nv)
    return n, u, v


# ---------------------------------------------------------------- tables


@device_function
def positions_before(tile, size, tiles, periodic):
    """Output indices along an axis that belong to the banks before ``tile``: the sum of their ``tile_span`` counts."""
    if periodic:
        q, r = divmod32(size, tiles)
        return q * tile + min(tile, r)
    if tiles == size:
        return tile
    return div32(tile * size + tiles - 1, tiles)


@device_function
def bank_columns(t, n_total, oh, ow, th, tw, periodic):
    """Bank ``t``'s positions ``(i0, istep, nu, j0, jstep, nv)`` and its first row in the ``conv_tables`` column table.

    The table lists the banks in order, each bank's columns ``(n, u, v)`` in order.
    """
    ti, tj = divmod32(t, tw)
    i0, istep, nu = tile_span(ti, oh, th, periodic)
    j0, jstep, nv = tile_span(tj, ow, tw, periodic)
    first = n_total * (positions_before(ti, oh, th, periodic) * ow + nu * positions_before(tj, ow, tw, periodic))
    return i0, istep, nu, j0, jstep, nv, first


@kernel("void(UniTuple(int32, 19), int32[:, ::1], int32[:, ::1])")
def conv_tables(geo, taps, columns):
    """The tables of the GEMM kernels: im2col offsets per tap and per column of every bank.

    ``taps[:, k]`` for tap ``k = (c * KH + a) * KW + b`` of a group: its offset from the window's corner in
    channel 0 of the group, ``(c H + a DH) W + b DW``, and its displacement from the corner, ``a DH`` rows and
    ``b DW`` columns. ``columns[first + col]`` for column ``col = (n, u, v)`` of bank ``t`` (``first`` from
    ``bank_columns``), output position ``(n, i, j)`` with window corner ``(row, cl) = (i SH - PT, j SW - PL)``:
    ``(n F OH OW + i OW + j, n C H W + row W + cl, row, cl)``, the offsets of output ``(n, 0, i, j)`` and of the
    corner in channel 0. ``geo = (kh, kw, dil_h, dil_w, kg, n, c, height, width, f, oh, ow, th, tw, periodic,
    sh, sw, pt, pl)``.
    """
    kh, kw, dil_h, dil_w, kg, n_total, c_total, height, width, n_filters, oh, ow, th, tw, periodic, sh, sw, pt, pl = geo
    for e in range(cuda.grid(1), kg + n_total * oh * ow, cuda.gridsize(1)):
        if e < kg:
            c, ab = divmod32(e, kh * kw)
            a, bb = divmod32(ab, kw)
            taps[0, e] = (c * height + a * dil_h) * width + bb * dil_w
            taps[1, e] = a * dil_h
            taps[2, e] = bb * dil_w
        else:
            rest, j = divmod32(e - kg, ow)
            n, i = divmod32(rest, oh)
            t = tile_of(i, oh, th, periodic) * tw + tile_of(j, ow, tw, periodic)
            i0, istep, nu, j0, jstep, nv, first = bank_columns(t, n_total, oh, ow, th, tw, periodic)
            r = first + (n * nu + div32(i - i0, istep)) * nv + div32(j - j0, jstep)
            row = i * sh - pt
            cl = j * sw - pl
            columns[r, 0] = (n * n_filters * oh + i) * ow + j
            columns[r, 1] = (n * c_total * height + row) * width + cl
            columns[r, 2] = row
            columns[r, 3] = cl


@device_function
def _taps_reading(pos, pad, kernel_size, stride, dilation, out_size, table, at, size):
    """``table[at + q * size + pos]`` for ``q = 0, 1, 2``: the first tap that reads input cell ``pos``, how many
    do, and the first's window (output index).

    The taps that read a cell form an arithmetic progression (``indexing.tap_range``), so the first
    and the count give them all.
    """
    first = 0
    count = 0
    window = 0
    for a in range(kernel_size):
        t = pos + pad - a * dilation
        if t < 0:
            break  # t falls as a grows
        i, rem = divmod32(t, stride)
        if rem == 0 and i < out_size:
            if count == 0:
                first = a
                window = i
            count += 1
    table[at + pos] = first
    table[at + size + pos] = count
    table[at + 2 * size + pos] = window


@kernel("void(UniTuple(int32, 15), int32[::1])")
def gather_tables(geo, table):
    """The input gradient's tables, one after the other in ``table``: per input row ``h`` the taps that read
    it (``_taps_reading``, ``3 x H``), the same per input column (``3 x W``), and the bank of every output
    row (``OH``) and column (``OW``).

    ``geo = (kh, kw, sh, sw, pt, pl, dil_h, dil_w, th, tw, periodic, height, width, oh, ow)``.
    """
    kh, kw, sh, sw, pt, pl, dil_h, dil_w, th, tw, periodic, height, width, oh, ow = geo
    banks = 3 * (height + width)  # where the banks of the output rows start in ``table``
    for e in range(cuda.grid(1), height + width + oh + ow, cuda.gridsize(1)):
        if e < height:
            _taps_reading(e, pt, kh, sh, dil_h, oh, table, 0, height)
        elif e < height + width:
            _taps_reading(e - height, pl, kw, sw, dil_w, ow, table, 3 * height, width)
        elif e < height + width + oh:
            table[banks + e - height - width] = tile_of(e - height - width, oh, th, periodic)
        else:
            table[banks + e - height - width] = tile_of(e - height - width - oh, ow, tw, periodic)


@kernel("void(UniTuple(int32, 15), int32[:, ::1], int32[:, ::1])")
def input_gemm_tables(geo, taps, columns):
    """The tables of ``conv_backward_input_gemm`` (one bank, stride 1): per reduction index and per input cell.

    ``taps[:, k]`` for reduction index ``k = (f * KH + a) * KW + b`` of a group (filter ``f`` of the group, tap
    ``(a, b)``): the offset of ``dy[n, f, h + PT - a DH, w + PL - b DW]`` from that of ``dy[n, 0, h + PT,
    w + PL]``, ``f OH OW - a DH OW - b DW``; the displacement from that position in rows, ``-a DH``, and in
    columns, ``-b DW``; and the offset of ``w[0, f, (c KH + a) KW + b]`` from that of ``w[0, 0, c KH KW]``,
    ``f Kg + a KW + b``. Rows 0 to 2 are laid out as the taps of ``conv_tables`` (an offset and a displacement
    from a corner), so ``_stage_im2col`` stages ``dy`` through them. ``columns[col]`` for input cell
    ``col = (n, h, w)``: ``(n C H W + h W + w, n F OH OW + (h + PT) OW + w + PL, h + PT, w + PL)``, the offsets
    of ``dx[n, 0, h, w]`` and of ``dy[n, 0, h + PT, w + PL]``, and that position's row and column.
    ``geo = (kh, kw, dil_h, dil_w, kg, fg, n, c, height, width, f, oh, ow, pt, pl)``.
    """
    kh, kw, dil_h, dil_w, kg, fg, n_total, c_total, height, width, n_filters, oh, ow, pt, pl = geo
    n_taps = fg * kh * kw
    for e in range(cuda.grid(1), n_taps + n_total * height * width, cuda.gridsize(1)):
        if e < n_taps:
            f, ab = divmod32(e, kh * kw)
            a, bb = divmod32(ab, kw)
            taps[0, e] = (f * oh - a * dil_h) * ow - bb * dil_w
            taps[1, e] = -a * dil_h
            taps[2, e] = -bb * dil_w
            taps[3, e] = f * kg + a * kw + bb
        else:
            rest, ww = divmod32(e - n_taps, width)
            n, h = divmod32(rest, height)
            columns[e - n_taps, 0] = (n * c_total * height + h) * width + ww
            columns[e - n_taps, 1] = (n * n_filters * oh + h + pt) * ow + ww + pl
            columns[e - n_taps, 2] = h + pt
            columns[e - n_taps, 3] = ww + pl


# ---------------------------------------------------------------- staging


@device_function
def _patch(x, taps, k, kg, corner, row, col, height, width):
    """im2col entry of tap ``k`` for the window whose corner is at offset ``corner``, row ``row``, column ``col``.

    0 in the padding and past the last tap.
    """
    if k < kg:
        h = row + taps[1, k]
        ww = col + taps[2, k]
        if h >= 0 and h < height and ww >= 0 and ww < width:
            return x[corner + taps[0, k]]
    return x.dtype.type(0)


@device_function
def _stage_im2col(x, taps, corner, row, col, bn, log_bn, k0, kg, height, width, b_s, buf, tid, nt):
    """``b_s[buf, kk, cn]``: the im2col chunk of taps ``k0 + kk`` and the block's columns; consecutive threads
    along the columns (consecutive output positions)."""
    e = tid
    while e < (bn << LOG_GK):
        cn = e & (bn - 1)
        kk = e >> log_bn
        b_s[buf, kk, cn] = _patch(x, taps, k0 + kk, kg, corner[cn], row[cn], col[cn], height, width)
        e += nt


@device_function
def _stage_gradients(dy, columns, first, n_valid, row0, ohw, rows, bm, a_s, buf, tid, nt):
    """``a_s[buf, cc, r] = dy[n, row0 + r, i, j]`` for the chunk's columns ``columns[first + cc]`` (0 past ``rows``
    or ``n_valid``); consecutive threads along the columns."""
    e = tid
    while e < (bm << LOG_GK):
        cc = e & (GK - 1)
        r = e >> LOG_GK
        if r < rows and cc < n_valid:
            a_s[buf, cc, r] = dy[columns[first + cc, 0] + (row0 + r) * ohw]
        else:
            a_s[buf, cc, r] = 0
        e += nt


@device_function
def _stage_im2col_t(x, tile_taps, columns, first, n_valid, x_group, bk, height, width, b_s, buf, tid, nt):
    """``b_s[buf, cc, kk]``: the transposed im2col chunk of the chunk's columns ``columns[first + cc]`` and the
    block's taps (``tile_taps``, as ``conv_tables``); consecutive threads along the columns."""
    e = tid
    while e < (bk << LOG_GK):
        cc = e & (GK - 1)
        kk = e >> LOG_GK
        if cc < n_valid:
            b_s[buf, cc, kk] = _patch(x, tile_taps, kk, bk, columns[first + cc, 1] + x_group, columns[first + cc, 2],
                                      columns[first + cc, 3], height, width)
        else:
            b_s[buf, cc, kk] = 0
        e += nt


@device_function
def _stage_weights(w, taps, base, row_stride, rows, row_count, k0, k_count, a_s, buf, tid, nt):
    """``a_s[buf, kk, r] = w[base + r * row_stride + taps[3, k0 + kk]]`` (0 at or past ``row_count`` rows or
    ``k_count`` reduction indices): the weights of a chunk of the input gradient's reduction, through
    ``input_gemm_tables``; consecutive threads along the reduction, whose taps of one filter are contiguous in
    ``w``."""
    e = tid
    while e < (rows << LOG_GK):
        kk = e & (GK - 1)
        r = e >> LOG_GK
        if r < row_count and k0 + kk < k_count:
            a_s[buf, kk, r] = w[base + r * row_stride + taps[3, k0 + kk]]
        else:
            a_s[buf, kk, r] = 0
        e += nt


@device_function
def _load_columns(columns, first, count, shift, bn, out, corner, row, col, tid, nt):
    """The block's ``bn`` columns into shared memory: ``columns[first + e]`` for ``e < count``, its second entry
    (the corner's offset) plus ``shift``; past ``count`` an output offset of -1 and a corner row of ``OUTSIDE``,
    so that no tap reads there and nothing is written."""
    e = tid
    while e < bn:
        if e < count:
            out[e] = columns[first + e, 0]
            corner[e] = columns[first + e, 1] + shift
            row[e] = columns[first + e, 2]
            col[e] = columns[first + e, 3]
        else:
            out[e] = -1
            corner[e] = 0
            row[e] = OUTSIDE
            col[e] = 0
        e += nt


@device_function
def _stage_chunk(w, w_base, w_ld, through_taps, bm, w_rows, x, taps, corner, row, col, bn, log_bn, height, width,
                 k0, k_count, a_s, b_s, buf, tid, nt):
    """Chunk ``k0`` of both operands of ``_multiply_im2col`` into buffer ``buf``."""
    if through_taps:
        _stage_weights(w, taps, w_base, w_ld, bm, w_rows, k0, k_count, a_s, buf, tid, nt)
    else:
        stage(w, w_base, w_ld, True, bm, 0, w_rows, k0, k_count, a_s, buf, tid, nt)
    _stage_im2col(x, taps, corner, row, col, bn, log_bn, k0, k_count, height, width, b_s, buf, tid, nt)


@device_function
def _multiply_im2col(w, w_base, w_ld, through_taps, bm, w_rows, x, taps, corner, row, col, bn, log_bn, height,
                     width, k_count, a_s, b_s, busy, vr, vc, acc, tid, nt, rt):
    """``acc += A B`` over ``k_count`` reduction indices, in double-buffered chunks of ``GK`` (one barrier each).

    ``A`` (``bm`` rows, ``w_rows`` of them real) is row ``r`` at ``w[w_base + r * w_ld + k]``, or at
    ``w[w_base + r * w_ld + taps[3, k]]`` when ``through_taps``; ``B`` is the im2col matrix of ``x`` through
    ``taps`` and the block's columns (``_stage_im2col``). The caller has written the columns and passed a
    barrier since the buffers were last read.
    """
    _stage_chunk(w, w_base, w_ld, through_taps, bm, w_rows, x, taps, corner, row, col, bn, log_bn, height, width, 0,
                 k_count, a_s, b_s, 0, tid, nt)
    cuda.syncthreads()
    buf = 0
    k0 = 0
    while k0 < k_count:
        nxt = k0 + GK
        if nxt < k_count:  # the next chunk into the other buffer while this one is multiplied
            _stage_chunk(w, w_base, w_ld, through_taps, bm, w_rows, x, taps, corner, row, col, bn, log_bn, height,
                         width, nxt, k_count, a_s, b_s, 1 - buf, tid, nt)
        if busy:
            mac_tile(a_s, b_s, buf, vr, vc, acc, rt)
        cuda.syncthreads()
        buf = 1 - buf
        k0 = nxt


# ---------------------------------------------------------------- kernels


def _conv_forward(rt):
    """The forward kernel with ``rt x rt`` register tiles."""
    cells = rt * rt  # a local array's shape must be a constant

    @kernel("void({f}[::1], {f}[::1], {f}[::1], int32[:, ::1], int32[:, ::1], UniTuple(int32, 19), {f}[::1])")
    def conv_forward(x, w, b, taps, columns, geo, y):
        """``y = conv(x, w) + b``; a block per (bank, group, filter tile, column tile), block-stride loop.

        ``x``, ``w``, ``b``, ``y`` flat; ``taps`` and ``columns`` from ``conv_tables``. ``geo = (has_bias, th, tw, periodic,
        groups, cg, fg, n, height, width, oh, ow, kg, bm, bn, log_vcols, log_bn, n_fb, n_cb)``: ``bm x bn`` is the
        block tile (powers of two), ``log_vcols = log2(bn / rt)``, and the block has at least a thread per register
        tile.
        """
        (has_bias, th, tw, periodic, groups, cg, fg, n_total, height, width, oh, ow, kg, bm, bn, log_vcols, log_bn,
         n_fb, n_cb) = geo
        a_s = cuda.shared.array((2, GK, G_PAD), x.dtype)
        b_s = cuda.shared.array((2, GK, G_PAD), x.dtype)
        corner = cuda.shared.array(GN, np.int32)  # per column of the block: window corner's offset in x,
        row = cuda.shared.array(GN, np.int32)  # its row and column,
        col = cuda.shared.array(GN, np.int32)
        out = cuda.shared.array(GN, np.int32)  # and the output's offset in y (filter 0), -1 past the bank's end
        acc = cuda.local.array(cells, x.dtype)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        busy, vr, vc = tile_owner(tid, bm, bn, log_vcols, rt)  # the block has at least one thread per register tile
        hw = height * width
        n_filters = fg * groups
        ohw = oh * ow
        n_tiles = th * tw
        n_items = n_tiles * groups * n_fb * n_cb
        item = cuda.blockIdx.x
        while item < n_items:
            rest, cb = divmod32(item, n_cb)
            rest, fb = divmod32(rest, n_fb)
            t, g = divmod32(rest, groups)
            i0, istep, nu, j0, jstep, nv, first = bank_columns(t, n_total, oh, ow, th, tw, periodic)
            n_cols = n_total * nu * nv
            col0 = cb * bn
            if col0 < n_cols:  # the same for every thread of the block
                f0 = fb * bm
                cuda.syncthreads()  # the previous item's columns are read no more
                _load_columns(columns, first + col0, n_cols - col0, g * cg * hw, bn, out, corner, row, col, tid, nt)
                w_base = (t * n_filters + g * fg + f0) * kg
                zero_tile(acc, rt)
                cuda.syncthreads()  # the columns are written, the last tile's buffers are read
                _multiply_im2col(w, w_base, kg, False, bm, fg - f0, x, taps, corner, row, col, bn, log_bn, height,
                                 width, kg, a_s, b_s, busy, vr, vc, acc, tid, nt, rt)
                if busy:
                    for r in range(rt):
                        f = g * fg + f0 + vr * rt + r
                        if f < g * fg + fg:
                            bias = b[f * n_tiles + t] if has_bias else x.dtype.type(0)
                            for s in range(rt):
                                o = out[vc * rt + s]
                                if o >= 0:
                                    y[o + f * ohw] = acc[r * rt + s] + bias
            item += cuda.gridDim.x

    return conv_forward


def _conv_backward_input_gemm(rt):
    """The input-gradient kernel of one bank at stride 1, with ``rt x rt`` register tiles."""
    cells = rt * rt  # a local array's shape must be a constant

    @kernel("void({f}[::1], {f}[::1], int32[:, ::1], int32[:, ::1], UniTuple(int32, 15), {f}[::1])")
    def conv_backward_input_gemm(dy, w, taps, columns, geo, dx):
        """``dx = conv_backward_input(dy, w)`` for one bank at stride 1: the GEMM ``dX_g = A_g B_g`` per group.

        ``A_g[c, k] = w[0, g fg + f, (c KH + a) KW + b]`` and ``B_g[k, (n, h, w)] = dy[n, g fg + f, h + PT - a DH,
        w + PL - b DW]`` (0 outside ``dy``) for ``k = (f KH + a) KW + b``. A block per (group, channel tile, column
        tile), block-stride loop; each ``dx`` cell is written once. ``dy``, ``w``, ``dx`` flat; ``taps`` and
        ``columns`` from ``input_gemm_tables``. ``geo = (groups, cg, fg, n, height, width, oh, ow, khkw, bm, bn,
        log_vcols, log_bn, n_mb, n_nb)``: ``bm x bn`` is the block tile (channels x columns, powers of two),
        ``log_vcols = log2(bn / rt)``, and the block has at least a thread per register tile.
        """
        (groups, cg, fg, n_total, height, width, oh, ow, khkw, bm, bn, log_vcols, log_bn, n_mb, n_nb) = geo
        a_s = cuda.shared.array((2, GK, G_PAD), dx.dtype)
        b_s = cuda.shared.array((2, GK, G_PAD), dx.dtype)
        corner = cuda.shared.array(GN, np.int32)  # per column of the block: offset of dy[n, g fg, h + PT, w + PL],
        row = cuda.shared.array(GN, np.int32)  # its row and column,
        col = cuda.shared.array(GN, np.int32)
        out = cuda.shared.array(GN, np.int32)  # and the offset of dx[n, 0, h, w], -1 past the last column
        acc = cuda.local.array(cells, dx.dtype)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        busy, vr, vc = tile_owner(tid, bm, bn, log_vcols, rt)  # the block has at least one thread per register tile
        hw = height * width
        ohw = oh * ow
        kg = cg * khkw
        n_cols = n_total * hw
        n_items = groups * n_mb * n_nb
        item = cuda.blockIdx.x
        while item < n_items:
            rest, nb = divmod32(item, n_nb)
            g, mb = divmod32(rest, n_mb)
            col0 = nb * bn
            c0 = mb * bm
            cuda.syncthreads()  # the previous item's columns are read no more
            _load_columns(columns, col0, n_cols - col0, g * fg * ohw, bn, out, corner, row, col, tid, nt)
            zero_tile(acc, rt)
            cuda.syncthreads()  # the columns are written, the last tile's buffers are read
            _multiply_im2col(w, g * fg * kg + c0 * khkw, khkw, True, bm, cg - c0, dy, taps, corner, row, col, bn,
                             log_bn, oh, ow, fg * khkw, a_s, b_s, busy, vr, vc, acc, tid, nt, rt)
            if busy:
                for r in range(rt):
                    c = c0 + vr * rt + r
                    if c < cg:
                        plane = (g * cg + c) * hw
                        for s in range(rt):
                            o = out[vc * rt + s]
                            if o >= 0:
                                dx[o + plane] = acc[r * rt + s]
            item += cuda.gridDim.x

    return conv_backward_input_gemm


def _conv_backward_weight(rt):
    """The weight-gradient kernel with ``rt x rt`` register tiles."""
    cells = rt * rt  # a local array's shape must be a constant

    @kernel("void({f}[::1], {f}[::1], int32[:, ::1], int32[:, ::1], UniTuple(int32, 20), {f}[::1])")
    def conv_backward_weight(dy, x, taps, columns, geo, dst):
        """``dst[s, t] (+)= dY_t X_t^T`` over split ``s`` of bank ``t``'s columns; dst (S, T, F, Kg) flat.

        A block per (split, bank, group, filter tile, tap tile), block-stride
        loop; columns are reduced in increasing order. ``taps`` and ``columns``
        from ``conv_tables``. ``geo = (th, tw, periodic, groups, cg, fg, n,
        height, width, oh, ow, kg, bm, bk, log_vcols, n_fb, n_kb, n_split,
        split_cols, accumulate)``, tiles as for ``conv_forward``.
        """
        (th, tw, periodic, groups, cg, fg, n_total, height, width, oh, ow, kg, bm, bk, log_vcols, n_fb, n_kb, n_split,
         split_cols, accumulate) = geo
        a_s = cuda.shared.array((2, GK, G_PAD), x.dtype)  # dY^T chunk: (columns, filters)
        b_s = cuda.shared.array((2, GK, G_PAD), x.dtype)  # im2col(x)^T chunk: (columns, taps)
        tile_taps = cuda.shared.array((3, GN), np.int32)  # taps[:, k0:k0 + bk], rows OUTSIDE past kg
        acc = cuda.local.array(cells, x.dtype)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        busy, vr, vc = tile_owner(tid, bm, bk, log_vcols, rt)  # the block has at least one thread per register tile
        hw = height * width
        n_filters = fg * groups
        ohw = oh * ow
        n_tiles = th * tw
        n_items = n_split * n_tiles * groups * n_fb * n_kb
        item = cuda.blockIdx.x
        while item < n_items:
            rest, kb = divmod32(item, n_kb)
            rest, fb = divmod32(rest, n_fb)
            rest, g = divmod32(rest, groups)
            split, t = divmod32(rest, n_tiles)
            i0, istep, nu, j0, jstep, nv, first = bank_columns(t, n_total, oh, ow, th, tw, periodic)
            c_lo = split * split_cols
            c_hi = min(n_total * nu * nv, c_lo + split_cols)
            f0 = fb * bm
            k0 = kb * bk
            row0 = g * fg + f0
            x_group = g * cg * hw
            zero_tile(acc, rt)
            if c_lo < c_hi:  # the same for every thread of the block
                cuda.syncthreads()  # the last tile's buffers and taps are read
                e = tid
                while e < bk:
                    if k0 + e < kg:
                        tile_taps[0, e] = taps[0, k0 + e]
                        tile_taps[1, e] = taps[1, k0 + e]
                        tile_taps[2, e] = taps[2, k0 + e]
                    else:
                        tile_taps[0, e] = 0
                        tile_taps[1, e] = OUTSIDE
                        tile_taps[2, e] = 0
                    e += nt
                cuda.syncthreads()
                _stage_gradients(dy, columns, first + c_lo, c_hi - c_lo, row0, ohw, fg - f0, bm, a_s, 0, tid, nt)
                _stage_im2col_t(x, tile_taps, columns, first + c_lo, c_hi - c_lo, x_group, bk, height, width, b_s, 0,
                                tid, nt)
                cuda.syncthreads()
                buf = 0
                col0 = c_lo
                while col0 < c_hi:
                    nxt = col0 + GK
                    if nxt < c_hi:  # the next chunk into the other buffer while this one is multiplied
                        _stage_gradients(dy, columns, first + nxt, c_hi - nxt, row0, ohw, fg - f0, bm, a_s, 1 - buf,
                                         tid, nt)
                        _stage_im2col_t(x, tile_taps, columns, first + nxt, c_hi - nxt, x_group, bk, height, width,
                                        b_s, 1 - buf, tid, nt)
                    if busy:
                        mac_tile(a_s, b_s, buf, vr, vc, acc, rt)
                    cuda.syncthreads()
                    buf = 1 - buf
                    col0 = nxt
            if busy:
                base = ((split * n_tiles + t) * n_filters + g * fg + f0) * kg + k0
                for r in range(rt):
                    fm = vr * rt + r
                    if f0 + fm < fg:
                        for s in range(rt):
                            kk = vc * rt + s
                            if k0 + kk < kg:
                                if accumulate:
                                    dst[base + fm * kg + kk] += acc[r * rt + s]
                                else:
                                    dst[base + fm * kg + kk] = acc[r * rt + s]
            item += cuda.gridDim.x

    return conv_backward_weight


conv_forward = specialise(_conv_forward, RT_WIDE, "conv_forward")
conv_forward_rt2 = specialise(_conv_forward, RT_NARROW, "conv_forward_rt2")
conv_backward_weight = specialise(_conv_backward_weight, RT_WIDE, "conv_backward_weight")
conv_backward_weight_rt2 = specialise(_conv_backward_weight, RT_NARROW, "conv_backward_weight_rt2")
conv_backward_input_gemm = specialise(_conv_backward_input_gemm, RT_WIDE, "conv_backward_input_gemm")
conv_backward_input_gemm_rt2 = specialise(_conv_backward_input_gemm, RT_NARROW, "conv_backward_input_gemm_rt2")
_FORWARD = {RT_WIDE: conv_forward, RT_NARROW: conv_forward_rt2}
_BACKWARD_INPUT_GEMM = {RT_WIDE: conv_backward_input_gemm, RT_NARROW: conv_backward_input_gemm_rt2}
_BACKWARD_WEIGHT = {RT_WIDE: conv_backward_weight, RT_NARROW: conv_backward_weight_rt2}


@kernel("void({f}[:, :, :, ::1], UniTuple(int32, 6), {f}[:, :, ::1])")
def conv_backward_bias(dy, geo, dst):
    """``dst[s, f, t] (+)=`` the sum of ``dy[n, f, i, j]`` over split ``s`` of bank ``t``'s columns; dst (S, F, T).

    A thread per ``(s, f, t)`` with ``t`` fastest (for local convolution,
    neighbouring threads read neighbouring positions); columns in order.
    ``geo = (th, tw, periodic, n_split, split_cols, accumulate)``.
    """
    th, tw, periodic, n_split, split_cols, accumulate = geo
    n_total = dy.shape[0]
    n_filters = dy.shape[1]
    oh = dy.shape[2]
    ow = dy.shape[3]
    n_tiles = th * tw
    size = n_split * n_filters * n_tiles
    e = cuda.grid(1)
    while e < size:  # a grid-stride loop (a range with a step divides to count its trips)
        rest, t = divmod32(e, n_tiles)
        split, f = divmod32(rest, n_filters)
        ti, tj = divmod32(t, tw)
        i0, istep, nu = tile_span(ti, oh, th, periodic)
        j0, jstep, nv = tile_span(tj, ow, tw, periodic)
        per_n = nu * nv
        c_lo = split * split_cols
        c_hi = min(n_total * per_n, c_lo + split_cols)
        total = dy.dtype.type(0)
        if c_lo < c_hi:
            n, u, v = _column(c_lo, per_n, nv)
            for _ in range(c_hi - c_lo):  # the next column by a carry, not a division
                total += dy[n, f, i0 + u * istep, j0 + v * jstep]
                v += 1
                if v == nv:
                    v = 0
                    u += 1
                    if u == nu:
                        u = 0
                        n += 1
        if accumulate:
            dst[split, f, t] += total
        else:
            dst[split, f, t] = total
        e += cuda.gridsize(1)


@kernel("void({f}[::1], {f}[::1], int32[::1], UniTuple(int32, 16), {f}[::1])")
def conv_backward_input(dy, w, table, geo, dx):
    """``dx[n, c, h, w] = sum w[t, f, k] dy[n, f, i, j]`` over the (tap, filter) pairs that read ``(h, w)``.

    ``dy``, ``w``, ``dx`` flat; ``table`` from ``gather_tables``. A thread
    per ``(sample block, c, h, w)``, ``w`` fastest (coalesced writes and, at
    stride 1, coalesced reads of ``dy``); ``NB`` samples per thread share
    each weight load. Taps ascending (rows, then columns), then filters.
    ``geo = (tw, kh, kw, a_step, b_step, i_step, j_step, groups, cg, fg, n, height, width, oh, ow, kg)``:
    consecutive taps that read a cell are ``a_step`` apart and their windows ``i_step`` apart (rows; columns
    likewise).
    """
    tw, kh, kw, a_step, b_step, i_step, j_step, groups, cg, fg, n_total, height, width, oh, ow, kg = geo
    c_total = cg * groups
    hw = height * width
    chw = c_total * hw
    ohw = oh * ow
    n_filters = fg * groups
    fohw = n_filters * ohw
    cols = 3 * height  # where gather_tables put the column taps and the banks
    row_tiles = cols + 3 * width
    col_tiles = row_tiles + oh
    acc = cuda.local.array(NB, dx.dtype)
    n_blocks = (n_total + NB - 1) // NB
    size = n_blocks * chw
    e = cuda.grid(1)
    while e < size:  # a grid-stride loop (a range with a step divides to count its trips)
        rest, ww = divmod32(e, width)
        rest, h = divmod32(rest, height)
        nb, c = divmod32(rest, c_total)
        g, ch = divmod32(c, cg)
        n0 = nb * NB
        nn = min(NB, n_total - n0)
        for q in range(NB):
            acc[q] = 0
        a = table[h]
        i = table[2 * height + h]
        for _ in range(table[height + h]):
            ti = table[row_tiles + i] * tw
            bb = table[cols + ww]
            j = table[cols + 2 * width + ww]
            for _ in range(table[cols + width + ww]):
                wo = ((ti + table[col_tiles + j]) * n_filters + g * fg) * kg + (ch * kh + a) * kw + bb
                yo = (n0 * n_filters + g * fg) * ohw + i * ow + j
                for _ in range(fg):
                    wv = w[wo]
                    for q in range(NB):
                        if q < nn:
                            acc[q] += wv * dy[yo + q * fohw]
                    wo += kg
                    yo += ohw
                bb += b_step
                j -= j_step
            a += a_step
            i -= i_step
        o = n0 * chw + c * hw + h * width + ww
        for q in range(NB):
            if q < nn:
                dx[o + q * chw] = acc[q]
        e += cuda.gridsize(1)


# ---------------------------------------------------------------- launchers
#
# Arguments are trusted (``lcnumba.ops.conv`` checked them); ``th, tw,
# periodic`` is the tiling, ``kargs`` = (KH, KW, SH, SW, PT, PL, DH, DW).


def _ceil_div(a, b):
    return -(-a // b)


def _round_up(a, b):
    return _ceil_div(max(a, 1), b) * b


def _max_columns(n, oh, ow, th, tw):
    return n * indexing.span_count(oh, th) * indexing.span_count(ow, tw)


def _splits(max_cols, outputs, target):
    """``(n_split, split_cols)``: a bank's columns cut so that about ``target`` units of work run at once."""
    n_split = 1
    if max_cols > MIN_COLUMNS_PER_SPLIT:
        n_split = min(_ceil_div(max_cols, MIN_COLUMNS_PER_SPLIT), max(1, _ceil_div(target, max(outputs, 1))))
    split_cols = _round_up(_ceil_div(max_cols, n_split), GK)
    return max(1, _ceil_div(max_cols, split_cols)), split_cols


def _check_tiles(oh, ow, th, tw):
    """The kernels' 32-bit bank arithmetic divides ``index * tiles`` (``tile_of``, ``tile_span``)."""
    for size, tiles in ((oh, th), (ow, tw)):
        if tiles != size and size * tiles >= 2**32:
            raise ValueError(f"tiles: at most 2**32 / {size} tiles along an axis of {size} output positions "
                             f"are supported on CUDA, got {tiles}")


def _tables(x, oh, ow, th, tw, periodic, kargs, n_filters, kg, stream):
    """``(taps, columns)`` of ``conv_tables`` for a convolution of ``x`` (N, C, H, W), in this stream's scratch."""
    n, c, h, wd = x.shape
    kh, kw, sh, sw, pt, pl, dil_h, dil_w = kargs
    taps, columns = scratch([(3, kg), (n * oh * ow, 4)], np.int32, stream)
    elementwise(conv_tables, kg + n * oh * ow, stream,
                (kh, kw, dil_h, dil_w, kg, n, c, h, wd, n_filters, oh, ow, th, tw, periodic, sh, sw, pt, pl),
                taps, columns)
    return taps, columns


def _geometry(x, oh, ow, th, tw, periodic, groups, n_filters, kg):
    """The integers both GEMM kernels' ``geo`` share."""
    n, c, h, wd = x.shape
    return (th, tw, periodic, groups, c // groups, n_filters // groups, n, h, wd, oh, ow, kg)


def forward(x, w, b, th, tw, periodic, kargs, groups, y, stream):
    """``y = conv(x, w) + b``; w (T, F, Kg), b (F, T) or None."""
    n, oh, ow = x.shape[0], y.shape[2], y.shape[3]
    n_filters, kg = w.shape[1], w.shape[2]
    _check_tiles(oh, ow, th, tw)
    max_cols = _max_columns(n, oh, ow, th, tw)
    if max_cols == 0 or n_filters == 0:
        return
    fg = n_filters // groups
    rt = tile_side(x.dtype)
    bm, bn = block_tile(fg, max_cols, rt)
    n_fb, n_cb = _ceil_div(fg, bm), _ceil_div(max_cols, bn)
    taps, columns = _tables(x, oh, ow, th, tw, periodic, kargs, n_filters, kg, stream)
    bias = w.reshape(-1) if b is None else b.reshape(-1)
    geo = (b is not None, *_geometry(x, oh, ow, th, tw, periodic, groups, n_filters, kg), bm, bn,
           log2(bn // rt), log2(bn), n_fb, n_cb)
    blockwise(_FORWARD[rt], th * tw * groups * n_fb * n_cb, block_threads((bm // rt) * (bn // rt)), stream,
              x.reshape(-1), w.reshape(-1), bias, taps, columns, geo, y.reshape(-1))


def backward_weight(dy, x, th, tw, periodic, kargs, groups, accumulate, out, stream):
    """``out (+)= dW``; out (T, F, Kg)."""
    n, oh, ow = x.shape[0], dy.shape[2], dy.shape[3]
    n_tiles, n_filters, kg = out.shape
    _check_tiles(oh, ow, th, tw)
    if out.size == 0:
        return
    fg = n_filters // groups
    rt = tile_side(x.dtype)
    bm, bk = block_tile(fg, kg, rt)
    n_fb, n_kb = _ceil_div(fg, bm), _ceil_div(kg, bk)
    max_cols = _max_columns(n, oh, ow, th, tw)
    # the split (so the order of the sum) from the shapes alone, not from the tile the block size allows
    n_split, split_cols = _splits(max_cols, n_tiles * groups * full_tiles(fg, kg, rt), TARGET_BLOCKS)
    taps, columns = _tables(x, oh, ow, th, tw, periodic, kargs, n_filters, kg, stream)
    threads = block_threads((bm // rt) * (bk // rt))
    items = n_split * n_tiles * groups * n_fb * n_kb
    geo = (*_geometry(x, oh, ow, th, tw, periodic, groups, n_filters, kg), bm, bk,
           log2(bk // rt), n_fb, n_kb, n_split, split_cols)
    if n_split == 1:
        blockwise(_BACKWARD_WEIGHT[rt], items, threads, stream, dy.reshape(-1), x.reshape(-1), taps, columns,
                  (*geo, accumulate), out.reshape(-1))
        return
    (partial,) = scratch([(n_split, n_tiles, n_filters, kg)], out.dtype, stream)
    blockwise(_BACKWARD_WEIGHT[rt], items, threads, stream, dy.reshape(-1), x.reshape(-1), taps, columns,
              (*geo, False), partial.reshape(-1))
    size = n_tiles * n_filters * kg
    elementwise(reduce_splits, size, stream, partial.reshape(n_split, size), accumulate, out.reshape(size))


def backward_bias(dy, th, tw, periodic, accumulate, out, stream):
    """``out (+)= db``; out (F, T)."""
    n, n_filters, oh, ow = dy.shape
    _check_tiles(oh, ow, th, tw)
    max_cols = _max_columns(n, oh, ow, th, tw)
    n_split, split_cols = _splits(max_cols, n_filters * th * tw, TARGET_THREADS)
    if n_split == 1:
        elementwise(conv_backward_bias, n_filters * th * tw, stream, dy, (th, tw, periodic, 1, split_cols, accumulate),
                    out.reshape(1, n_filters, th * tw))
        return
    (partial,) = scratch([(n_split, n_filters, th * tw)], out.dtype, stream)
    elementwise(conv_backward_bias, n_split * n_filters * th * tw, stream, dy,
                (th, tw, periodic, n_split, split_cols, False), partial)
    size = n_filters * th * tw
    elementwise(reduce_splits, size, stream, partial.reshape(n_split, size), accumulate, out.reshape(size))


def backward_input(dy, w, th, tw, periodic, kargs, groups, dx, stream):
    """``dx`` (N, C, H, W) from dy and w (T, F, Kg): an implicit GEMM for one bank at stride 1, else by gathering."""
    n, c, h, wd = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    _check_tiles(oh, ow, th, tw)
    if dx.size == 0:
        return
    kh, kw, sh, sw, pt, pl, dil_h, dil_w = kargs
    n_filters, kg = w.shape[1], w.shape[2]
    if th * tw == 1 and sh == sw == 1:
        _backward_input_gemm(dy, w, kargs, groups, dx, stream)
        return
    (table,) = scratch([(3 * (h + wd) + oh + ow,)], np.int32, stream)
    elementwise(gather_tables, h + wd + oh + ow, stream,
                (kh, kw, sh, sw, pt, pl, dil_h, dil_w, th, tw, periodic, h, wd, oh, ow), table)
    gh, gw = math.gcd(sh, dil_h), math.gcd(sw, dil_w)
    geo = (tw, kh, kw, sh // gh, sw // gw, dil_h // gh, dil_w // gw, groups, c // groups, n_filters // groups, n,
           h, wd, oh, ow, kg)
    elementwise(conv_backward_input, _ceil_div(n, NB) * c * h * wd, stream, dy.reshape(-1), w.reshape(-1), table,
                geo, dx.reshape(-1))


def _backward_input_gemm(dy, w, kargs, groups, dx, stream):
    """``dx`` (N, C, H, W) from dy and w (1, F, Kg) at stride 1, by ``conv_backward_input_gemm``."""
    n, c, h, wd = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    kh, kw, _, _, pt, pl, dil_h, dil_w = kargs
    n_filters, kg = w.shape[1], w.shape[2]
    cg, fg = c // groups, n_filters // groups
    n_cols = n * h * wd
    rt = tile_side(dx.dtype)
    bm, bn = block_tile(cg, n_cols, rt)
    n_mb, n_nb = _ceil_div(cg, bm), _ceil_div(n_cols, bn)
    taps, columns = scratch([(4, fg * kh * kw), (n_cols, 4)], np.int32, stream)
    elementwise(input_gemm_tables, fg * kh * kw + n_cols, stream,
                (kh, kw, dil_h, dil_w, kg, fg, n, c, h, wd, n_filters, oh, ow, pt, pl), taps, columns)
    geo = (groups, cg, fg, n, h, wd, oh, ow, kh * kw, bm, bn, log2(bn // rt), log2(bn), n_mb, n_nb)
    blockwise(_BACKWARD_INPUT_GEMM[rt], groups * n_mb * n_nb, block_threads((bm // rt) * (bn // rt)), stream,
              dy.reshape(-1), w.reshape(-1), taps, columns, geo, dx.reshape(-1))
