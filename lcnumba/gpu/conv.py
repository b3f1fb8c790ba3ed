"""CUDA kernels of the convolution family: shared, tiled and locally connected.

The same layouts as ``lcnumba.cpu.conv`` (all C-contiguous):

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
bank ``t`` is one GEMM whose columns are ``(n, u, v)``: sample ``n`` and
the ``u``-th row, ``v``-th column of the bank's positions.

Forward (``conv_forward``), an implicit GEMM per bank: ``Y_t = W_t X_t``.
A block computes a ``bm x bn`` tile of filters x columns (at most
``BM x BN``, smaller when the bank has fewer), walking ``Kg`` in chunks of
``BK``: it stages the weight chunk (coalesced along ``k``) and the
matching im2col chunk of ``x`` (built on the fly, zeros for padding) in
shared memory, and each thread accumulates a ``2 x 2`` register tile.
Columns are sample-major, so one staged weight chunk serves every sample
of the block: for local and tiled convolution each weight is read from
global memory once per block and reused across the batch. The im2col
chunk is loaded along the columns (consecutive output positions,
coalesced) or, for local convolution where a bank has one position,
along ``k`` (consecutive kernel taps, contiguous in ``x``).

Backward weight (``conv_backward_weight``), the GEMM ``dW_t = dY_t X_t^T``
with the same staging: a block owns a ``bm x bk`` tile of ``dW_t`` and
reduces over a fixed range of the bank's columns. When a bank has many
columns (conv2d) the columns are cut into ``S`` fixed splits whose
partial sums go to a scratch buffer and are summed in split order by
``kernels.reduce_splits``: no atomics, bitwise-reproducible.

Backward bias (``conv_backward_bias``): a thread per ``(split, f, t)``
sums its columns in order; splits are reduced as for the weight.

Backward input (``conv_backward_input``) gathers: a thread owns input cell
``(c, h, w)`` for ``NB`` samples and sums, over exactly the kernel taps
that read it (``indexing.tap_range``: output row ``i`` with
``i*SH - PT + a*DH == h``) and the group's filters, ``w * dy``. Each
weight is loaded once and applied to the ``NB`` samples from a register.

Every sum runs in an order fixed by the shapes alone (not by the grid,
the block size or the device), so results are bitwise reproducible and
independent of ``THREADS_PER_BLOCK``.

Arguments: the arrays, and every integer of the launch (geometry, tiling,
tile sizes, flags) packed in one ``int32`` tuple ``geo``, unpacked at the
top of the kernel in the order its docstring gives. Index divisions are
32-bit (``intmath``).
"""

from .. import indexing
from .intmath import div32, divmod32
from .jit import cuda, device_function, kernel
from .kernels import reduce_splits
from .launch import block_threads, blockwise, elementwise, scratch
from .tiles import BK, BK_PAD, BM, BN, BN_PAD, TM, TN, mac_2x2, register, store_2x2, tile_index, virtual_cell

#: Resident blocks per multiprocessor the GEMM-like kernels are compiled for: 3 (80 registers a thread)
#: rather than 4 (64), under which their 64-bit array addressing spills (``benchmarks/gpu_report.py``).
GEMM_BLOCKS = 3

#: Samples per thread in the input-gradient gather.
NB = 8

#: A bank's columns are split for the weight and bias gradients only when it
#: has more than this many (tests patch it down to exercise the split path).
MIN_COLUMNS_PER_SPLIT = 1024
#: Aim for about this many blocks (weight gradient) or threads (bias gradient).
TARGET_BLOCKS = 1024
TARGET_THREADS = 1 << 16

tile_span = device_function(indexing.tile_span)


@device_function
def tile_of(index, size, tiles, periodic):
    """``indexing.tile_of`` with a 32-bit division (it runs in the input gradient's tap loops).

    Block mode divides ``index * tiles``: ``backward_input`` checks ``size * tiles < 2**32`` (unless
    ``tiles == size``, local convolution, where the bank is the index itself).
    """
    if periodic:
        return divmod32(index, tiles)[1]
    if tiles == size:
        return index
    return div32(index * tiles, size)


tap_range = device_function(indexing.tap_range)


@device_function
def _column(col, per_n, nv, i0, istep, j0, jstep):
    """Sample and output position ``(n, i, j)`` of column ``col`` of a bank."""
    n, r = divmod32(col, per_n)
    u, v = divmod32(r, nv)
    return n, i0 + u * istep, j0 + v * jstep


@device_function
def _patch(x, col, k, n_cols, kg, per_n, nv, i0, istep, j0, jstep, ch0, kh, kw, sh, sw, pt, pl, dil_h, dil_w):
    """im2col entry ``(k, col)``: the input value tap ``k`` of column ``col`` reads (0 in the padding)."""
    zero = x.dtype.type(0)
    if col >= n_cols or k >= kg:
        return zero
    n, i, j = _column(col, per_n, nv, i0, istep, j0, jstep)
    c, ab = divmod32(k, kh * kw)
    a, bb = divmod32(ab, kw)
    h = i * sh - pt + a * dil_h
    ww = j * sw - pl + bb * dil_w
    if h < 0 or h >= x.shape[2] or ww < 0 or ww >= x.shape[3]:
        return zero
    return x[n, ch0 + c, h, ww]


@kernel("void({f}[:, :, :, ::1], {f}[:, :, ::1], {f}[:, ::1], UniTuple(int32, 18), {f}[:, :, :, ::1])", min_blocks=GEMM_BLOCKS)
def conv_forward(x, w, b, geo, y):
    """``y = conv(x, w) + b``; a block per (bank, group, filter tile, column tile), block-stride loop.

    ``geo = (has_bias, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, bm, bn, n_fb, n_cb, k_major)``.
    """
    has_bias, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, bm, bn, n_fb, n_cb, k_major = geo
    n_total = x.shape[0]
    cg = x.shape[1] // groups
    oh = y.shape[2]
    ow = y.shape[3]
    fg = w.shape[1] // groups
    kg = w.shape[2]
    ws = cuda.shared.array((BM, BK_PAD), x.dtype)
    xs = cuda.shared.array((BK, BN_PAD), x.dtype)
    zero = x.dtype.type(0)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    vrows = bm // TM
    vcols = bn // TN
    n_virtual = vrows * vcols
    n_items = th * tw * groups * n_fb * n_cb
    for item in range(cuda.blockIdx.x, n_items, cuda.gridDim.x):
        rest, cb = divmod32(item, n_cb)
        rest, fb = divmod32(rest, n_fb)
        t, g = divmod32(rest, groups)
        ti, tj = divmod32(t, tw)
        i0, istep, nu = tile_span(ti, oh, th, periodic)
        j0, jstep, nv = tile_span(tj, ow, tw, periodic)
        per_n = nu * nv
        n_cols = n_total * per_n
        col0 = cb * bn
        if col0 >= n_cols:
            continue  # the same for every thread of the block
        f0 = fb * bm
        vbase = 0
        while vbase < n_virtual:
            v = vbase + tid
            vr, vc = virtual_cell(v, vcols)
            c00 = c01 = c10 = c11 = zero
            k0 = 0
            while k0 < kg:
                kc = min(BK, kg - k0)  # BK except in the last chunk
                e = tid
                while e < bm * kc:
                    fm, kk = tile_index(e, False, bm, kc)
                    val = zero
                    if f0 + fm < fg:
                        val = w[t, g * fg + f0 + fm, k0 + kk]
                    ws[fm, kk] = val
                    e += nt
                e = tid
                while e < kc * bn:
                    kk, cn = tile_index(e, k_major, kc, bn)
                    xs[kk, cn] = _patch(x, col0 + cn, k0 + kk, n_cols, kg, per_n, nv, i0, istep, j0, jstep,
                                        g * cg, kh, kw, sh, sw, pt, pl, dil_h, dil_w)
                    e += nt
                cuda.syncthreads()
                if v < n_virtual:
                    c00, c01, c10, c11 = mac_2x2(ws, xs, kc, vr, vc, vrows, vcols, c00, c01, c10, c11)
                cuda.syncthreads()
                k0 += BK
            if v < n_virtual:
                for r in range(TM):
                    f = f0 + vr + r * vrows
                    if f >= fg:
                        continue
                    bias = zero
                    if has_bias:
                        bias = b[g * fg + f, t]
                    for s in range(TN):
                        col = col0 + vc + s * vcols
                        if col >= n_cols:
                            continue
                        n, i, j = _column(col, per_n, nv, i0, istep, j0, jstep)
                        y[n, g * fg + f, i, j] = register(r, s, c00, c01, c10, c11) + bias
            vbase += nt


@kernel("void({f}[:, :, :, ::1], {f}[:, :, :, ::1], UniTuple(int32, 20), {f}[:, :, :, ::1])", min_blocks=GEMM_BLOCKS)
def conv_backward_weight(dy, x, geo, dst):
    """``dst[s, t] (+)= dY_t X_t^T`` over split ``s`` of bank ``t``'s columns; dst (S, T, F, Kg).

    A block per (split, bank, group, filter tile, k tile), block-stride loop;
    columns are reduced in increasing order. ``geo = (th, tw, periodic, kh,
    kw, sh, sw, pt, pl, dil_h, dil_w, groups, bm, bk, n_fb, n_kb, n_split,
    split_cols, k_major, accumulate)``.
    """
    (th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, bm, bk, n_fb, n_kb, n_split, split_cols, k_major,
     accumulate) = geo
    n_total = x.shape[0]
    cg = x.shape[1] // groups
    oh = dy.shape[2]
    ow = dy.shape[3]
    fg = dst.shape[2] // groups
    kg = dst.shape[3]
    ds = cuda.shared.array((BM, BK_PAD), x.dtype)
    xs = cuda.shared.array((BK, BN_PAD), x.dtype)  # im2col(x)^T: (columns, k)
    zero = x.dtype.type(0)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    vrows = bm // TM
    vcols = bk // TN
    n_virtual = vrows * vcols
    n_items = n_split * th * tw * groups * n_fb * n_kb
    for item in range(cuda.blockIdx.x, n_items, cuda.gridDim.x):
        rest, kb = divmod32(item, n_kb)
        rest, fb = divmod32(rest, n_fb)
        rest, g = divmod32(rest, groups)
        split, t = divmod32(rest, th * tw)
        ti, tj = divmod32(t, tw)
        i0, istep, nu = tile_span(ti, oh, th, periodic)
        j0, jstep, nv = tile_span(tj, ow, tw, periodic)
        per_n = nu * nv
        n_cols = n_total * per_n
        c_lo = split * split_cols
        c_hi = min(n_cols, c_lo + split_cols)
        f0 = fb * bm
        k0 = kb * bk
        vbase = 0
        while vbase < n_virtual:
            v = vbase + tid
            vr, vc = virtual_cell(v, vcols)
            c00 = c01 = c10 = c11 = zero
            col0 = c_lo
            while col0 < c_hi:
                n_cc = min(BK, c_hi - col0)  # BK except in the last chunk
                e = tid
                while e < bm * n_cc:
                    fm, cc = tile_index(e, False, bm, n_cc)
                    val = zero
                    if f0 + fm < fg:
                        n, i, j = _column(col0 + cc, per_n, nv, i0, istep, j0, jstep)
                        val = dy[n, g * fg + f0 + fm, i, j]
                    ds[fm, cc] = val
                    e += nt
                e = tid
                while e < bk * n_cc:
                    kk, cc = tile_index(e, k_major, bk, n_cc)
                    xs[cc, kk] = _patch(x, col0 + cc, k0 + kk, c_hi, kg, per_n, nv, i0, istep, j0, jstep,
                                        g * cg, kh, kw, sh, sw, pt, pl, dil_h, dil_w)
                    e += nt
                cuda.syncthreads()
                if v < n_virtual:
                    c00, c01, c10, c11 = mac_2x2(ds, xs, n_cc, vr, vc, vrows, vcols, c00, c01, c10, c11)
                cuda.syncthreads()
                col0 += BK
            if v < n_virtual:
                store_2x2(dst[split, t, g * fg:(g + 1) * fg], f0, k0, vr, vc, vrows, vcols, fg, kg, accumulate,
                          c00, c01, c10, c11)
            vbase += nt


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
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        rest, t = divmod32(e, n_tiles)
        split, f = divmod32(rest, n_filters)
        ti, tj = divmod32(t, tw)
        i0, istep, nu = tile_span(ti, oh, th, periodic)
        j0, jstep, nv = tile_span(tj, ow, tw, periodic)
        per_n = nu * nv
        c_lo = split * split_cols
        c_hi = min(n_total * per_n, c_lo + split_cols)
        total = dy.dtype.type(0)
        for col in range(c_lo, c_hi):
            n, i, j = _column(col, per_n, nv, i0, istep, j0, jstep)
            total += dy[n, f, i, j]
        if accumulate:
            dst[split, f, t] += total
        else:
            dst[split, f, t] = total


@kernel("void({f}[:, :, :, ::1], {f}[:, :, ::1], UniTuple(int32, 12), {f}[:, :, :, ::1])", min_blocks=GEMM_BLOCKS)
def conv_backward_input(dy, w, geo, dx):
    """``dx[n, c, h, w] = sum w[t, f, k] dy[n, f, i, j]`` over the (tap, filter) pairs that read ``(h, w)``.

    A thread per ``(sample block, c, h, w)``, ``w`` fastest (coalesced
    writes and, at stride 1, coalesced reads of ``dy``); ``NB`` samples per
    thread share each weight load. Taps ascending, then filters.
    ``geo = (th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups)``.
    """
    th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups = geo
    n_total = dx.shape[0]
    c_total = dx.shape[1]
    height = dx.shape[2]
    width = dx.shape[3]
    cg = c_total // groups
    oh = dy.shape[2]
    ow = dy.shape[3]
    fg = w.shape[1] // groups
    acc = cuda.local.array(NB, dx.dtype)
    zero = dx.dtype.type(0)
    n_blocks = (n_total + NB - 1) // NB
    size = n_blocks * c_total * height * width
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        rest, ww = divmod32(e, width)
        rest, h = divmod32(rest, height)
        nb, c = divmod32(rest, c_total)
        n0 = nb * NB
        nn = min(NB, n_total - n0)
        g, ch = divmod32(c, cg)
        for q in range(NB):
            acc[q] = zero
        a_lo, a_hi, a_step = tap_range(h, pt, kh, sh, dil_h, oh)
        b_lo, b_hi, b_step = tap_range(ww, pl, kw, sw, dil_w, ow)
        a = a_lo
        while a < a_hi:
            i = div32(h + pt - a * dil_h, sh)
            ti = tile_of(i, oh, th, periodic)
            bb = b_lo
            while bb < b_hi:
                j = div32(ww + pl - bb * dil_w, sw)
                t = ti * tw + tile_of(j, ow, tw, periodic)
                k = (ch * kh + a) * kw + bb
                for f in range(g * fg, (g + 1) * fg):
                    wv = w[t, f, k]
                    for q in range(NB):
                        if q < nn:
                            acc[q] += wv * dy[n0 + q, f, i, j]
                bb += b_step
            a += a_step
        for q in range(NB):
            if q < nn:
                dx[n0 + q, c, h, ww] = acc[q]


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
    split_cols = _round_up(_ceil_div(max_cols, n_split), BK)
    return max(1, _ceil_div(max_cols, split_cols)), split_cols


def forward(x, w, b, th, tw, periodic, kargs, groups, y, stream):
    """``y = conv(x, w) + b``; w (T, F, Kg), b (F, T) or None."""
    n, oh, ow = x.shape[0], y.shape[2], y.shape[3]
    fg = w.shape[1] // groups
    bm = min(BM, _round_up(fg, TM))
    max_cols = _max_columns(n, oh, ow, th, tw)
    bn = min(BN, _round_up(max_cols, TN))
    n_fb, n_cb = _ceil_div(fg, bm), _ceil_div(max_cols, bn)
    k_major = indexing.span_count(oh, th) * indexing.span_count(ow, tw) == 1
    threads = block_threads((bm // TM) * (bn // TN))
    bias = w[0] if b is None else b
    geo = (b is not None, th, tw, periodic, *kargs, groups, bm, bn, n_fb, n_cb, k_major)
    blockwise(conv_forward, th * tw * groups * n_fb * n_cb, threads, stream, x, w, bias, geo, y)


def backward_weight(dy, x, th, tw, periodic, kargs, groups, accumulate, out, stream):
    """``out (+)= dW``; out (T, F, Kg)."""
    n, oh, ow = x.shape[0], dy.shape[2], dy.shape[3]
    n_tiles, n_filters, kg = out.shape
    fg = n_filters // groups
    bm = min(BM, _round_up(fg, TM))
    bk = min(BN, _round_up(kg, TN))
    n_fb, n_kb = _ceil_div(fg, bm), _ceil_div(kg, bk)
    max_cols = _max_columns(n, oh, ow, th, tw)
    n_split, split_cols = _splits(max_cols, n_tiles * groups * n_fb * n_kb, TARGET_BLOCKS)
    k_major = indexing.span_count(oh, th) * indexing.span_count(ow, tw) == 1
    threads = block_threads((bm // TM) * (bk // TN))
    items = n_split * n_tiles * groups * n_fb * n_kb
    geo = (th, tw, periodic, *kargs, groups, bm, bk, n_fb, n_kb, n_split, split_cols, k_major)
    if n_split == 1:
        blockwise(conv_backward_weight, items, threads, stream, dy, x, (*geo, accumulate),
                  out.reshape(1, n_tiles, n_filters, kg))
        return
    (partial,) = scratch([(n_split, n_tiles, n_filters, kg)], out.dtype, stream)
    blockwise(conv_backward_weight, items, threads, stream, dy, x, (*geo, False), partial)
    size = n_tiles * n_filters * kg
    elementwise(reduce_splits, size, stream, partial.reshape(n_split, size), accumulate, out.reshape(size))


def backward_bias(dy, th, tw, periodic, accumulate, out, stream):
    """``out (+)= db``; out (F, T)."""
    n, n_filters, oh, ow = dy.shape
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
    """``dx`` (N, C, H, W) from dy and w (T, F, Kg), by gathering."""
    n, c, h, wd = dx.shape
    for size, tiles in ((dy.shape[2], th), (dy.shape[3], tw)):
        if tiles != size and size * tiles >= 2**32:
            raise ValueError(f"tiles: at most 2**32 / {size} tiles along an axis of {size} output positions "
                             f"are supported on CUDA, got {tiles}")
    elementwise(conv_backward_input, _ceil_div(n, NB) * c * h * wd, stream, dy, w, (th, tw, periodic, *kargs, groups),
                dx)
