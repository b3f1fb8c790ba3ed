"""CUDA kernels of locally connected convolution (one filter bank per output position), streaming the weights.

The same layouts as ``lcnumba.cpu.local`` (all C-contiguous):

==========  ====================  =============================================
name        shape                 meaning
==========  ====================  =============================================
x, dx       (N, C, H, W)          input and its gradient
w, dw       (P, F, Kg)            bank per position p = i * OW + j, k = (c * KH + a) * KW + b
b           (F, P)                bias per filter and position
y, dy       (N, F, OH, OW)        output and its gradient
dpatch      (N, C * KH * KW, P)   scratch of the input gradient: row ``g * Kg + k``
==========  ====================  =============================================

Every weight is used once per sample and nowhere else, so the weights (by
far the largest array) set the pace: each pass reads or writes them once
per ``NB`` samples, consecutive threads at consecutive addresses, with
several loads in flight per thread, while the samples sit in registers.

Forward (``local_forward``), ``y_p = W_p patch_p``: a block owns ``pbn``
consecutive positions x ``fbn`` filters of a group and ``NB`` samples.
It walks ``Kg`` in chunks of ``kcw`` taps. The weight chunk is a run of
``kcw`` contiguous weights per (position, filter) row: consecutive threads
load consecutive taps, each thread issues the loads of ``UNROLL``
positions before it stores any of them to shared memory. The patch chunk
(``kcw`` taps x ``NB`` samples x ``pbn`` positions, zeros in the padding)
is staged beside it, a (sample, position) column per thread, which finds
its chunk's first tap with one division and steps to the next ones
without. Each thread then owns one row and ``NB`` sample accumulators: per
tap one weight and ``NB`` patch values from shared memory (the patch
values are broadcasts across the row's filters), half the samples per
sweep of the chunk so that fewer loads are in flight than registers.

Backward weight (``local_backward_weight``), ``dW_p (+)= dy_p patch_p^T``:
written, not read (unless accumulating), so it is paced by the writes of
``dw``. A block owns ``pbn`` positions x ``fqb * OR`` filters x ``kt``
taps; a thread owns ``OR`` filters of one (position, tap), consecutive
threads consecutive taps (coalesced writes). Per chunk of ``NB`` samples
the patch (``NB x pbn x kt``) and ``dy`` (``NB x pbn x fqb * OR``) are
staged in shared memory, each thread staging one column whose coordinates
it computed once; each patch value then feeds ``OR`` multiply-adds.

Backward input, in two launches. ``local_dpatch``: ``dpatch_p = W_p^T dy_p``
per position, a thread per (position, tap) and ``NB`` samples, the group's
filters in order; consecutive threads read consecutive taps of a weight row
(coalesced), each thread ``UNROLL_F`` filters' weights before it uses any,
``dy`` staged in shared memory ``FC`` filters at a time, and
the results go out through shared memory, positions fastest (coalesced
stores into the scratch, whose rows run along the positions). Then
``local_gather_input``: a thread per input cell, ``w`` fastest, adds the
``dpatch`` entries of the windows that read it: the windows' taps come from
``window_taps`` (32-bit divisions, once per cell) and the windows are
visited by steps, without a division.

Order of every sum, fixed by the shapes alone (not by the grid, the block
size, ``kcw``, ``pbn`` or the device): the forward sums over ``k``
ascending from zero, then adds the bias; the weight gradient over the
samples ascending, from zero or from ``dw``; ``dpatch`` over the group's
filters ascending from zero; ``dx`` over its windows in row-major order of
their positions, from zero. These are the orders of ``lcnumba.cpu.local``.
No atomics. Integers of a launch come in one ``int32`` tuple ``geo``; index
divisions are 32-bit (``intmath``), and none is in a multiply-add loop.
"""

from math import gcd

from .intmath import div32, divmod32
from .jit import cuda, device_function, kernel
from .gemm import specialise
from .launch import block_threads, blockwise, elementwise, scratch

#: Samples per pass over the weights: the register accumulators of the forward and of ``dpatch``, the staged
#: chunk of the weight gradient. The forward sums half of them per sweep of a chunk.
NB = 8
#: The float64 forward's samples per pass (``_local_forward``).
NB_NARROW = 4
#: Independent weight loads per thread issued before any of them is used (forward; input gradient).
UNROLL = 4
UNROLL_F = 8

#: Forward tile: most (position, filter) rows, filters, positions; taps per staged chunk.
ROWS = 128
FB = 16
PMAX = 16
KC = 16
KC_PAD = KC + 1  # shared rows one longer, so a column walk hits distinct banks (shapes must be constants)

#: Weight-gradient tile: filters per thread, most taps, positions and filter quads (of ``OR``).
OR = 4
KT = 32
WP = 8
FQ = 8
FQ_ROWS = FQ * OR

#: Input-gradient tile: most taps and positions per block, filters of ``dy`` staged at once.
IK = 32
IP = 8
FC = 32
IP_PAD = IP + 1

#: Most elements of one ``dpatch`` scratch: larger batches are processed in chunks of samples.
SCRATCH_ELEMENTS = 1 << 26


@device_function
def _sizes(x, bank, groups):
    """``(N, C / groups, H, W, P, F / groups, Kg)`` of the input and a weight-shaped array."""
    return (x.shape[0], div32(x.shape[1], groups), x.shape[2], x.shape[3], bank.shape[0],
            div32(bank.shape[1], groups), bank.shape[2])


@device_function
def _work_item(item, groups, n_mid, n_last):
    """Block work item ``item`` as ``(position block, group, mid, last)``, ``last`` fastest."""
    rest, last = divmod32(item, n_last)
    rest, mid = divmod32(rest, n_mid)
    pb, g = divmod32(rest, groups)
    return pb, g, mid, last


def _local_forward(nb):
    """The forward kernel with ``nb`` samples per pass over the weights (``nb`` register accumulators a thread).

    float64 runs ``NB_NARROW``: with ``NB`` double accumulators the kernel spilled 16 bytes at the 64
    registers of its launch bounds (60 and no spill with 4). Each output's sum over the taps has the same
    order either way: ``nb`` only decides which block computes which samples.
    """
    half_nb = nb // 2
    patch_cols = nb * PMAX  # staged patch: a row per tap, a column per (sample, position)

    @kernel("void({f}[:, :, :, ::1], {f}[:, :, ::1], {f}[:, ::1], UniTuple(int32, 15), {f}[:, :, :, ::1])")
    def local_forward(x, w, b, geo, y):
        """``y = local_conv(x, w) + b``; a block per (positions, group, filters, samples), block-stride loop.

        ``geo = (has_bias, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, pbn, fbn, n_fb, n_nc, kcw)``;
        the launch has at least ``pbn * fbn`` and ``nb * pbn`` threads, ``pbn * fbn <= ROWS``,
        ``pbn <= PMAX``, ``kcw <= KC``.
        """
        has_bias, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, pbn, fbn, n_fb, n_nc, kcw = geo
        n_total, cg, height, width, n_pos, fg, kg = _sizes(x, w, groups)
        ow = y.shape[3]
        ws = cuda.shared.array((ROWS, KC_PAD), x.dtype)
        ps = cuda.shared.array((KC, patch_cols), x.dtype)
        acc = cuda.local.array(nb, x.dtype)
        staged = cuda.local.array(UNROLL, x.dtype)
        zero = x.dtype.type(0)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        rows = pbn * fbn
        # The row this thread accumulates ...
        c_pl, c_fl = divmod32(tid, fbn)
        computing = tid < rows
        # ... the weights it stages: column s_col of the filters s_row0, s_row0 + s_step, ... of every position
        s_step = div32(nt, kcw)
        s_row0, s_col = divmod32(tid, kcw)
        if s_row0 >= s_step:
            s_row0 = fbn  # the threads past the last whole row of columns stage nothing
        # ... and the patch column (sample q_s, position pl_s) it stages.
        q_s, pl_s = divmod32(tid, pbn)
        patching = tid < nb * pbn
        n_items = div32(n_pos + pbn - 1, pbn) * groups * n_fb * n_nc
        item = cuda.blockIdx.x
        while item < n_items:
            pb, g, fb, nc = _work_item(item, groups, n_fb, n_nc)
            p0 = pb * pbn
            f0 = fb * fbn
            n0 = nc * nb
            gf0 = g * fg + f0
            n_here = min(pbn, n_pos - p0)  # positions and filters of the tile that exist
            f_here = min(fbn, fg - f0)
            top = 0
            left = 0
            if pl_s < n_here:
                si, sj = divmod32(p0 + pl_s, ow)
                top = si * sh - pt
                left = sj * sw - pl
            n_s = n0 + q_s
            live = patching and pl_s < n_here and n_s < n_total
            gc0 = g * cg
            row_ok = computing and c_pl < n_here and c_fl < f_here  # rows past them are neither staged nor summed
            for q in range(nb):
                acc[q] = zero
            k0 = 0
            while k0 < kg:
                kc = min(kcw, kg - k0)
                # Weights: for each position, this thread's column of the filter rows s_row0, s_row0 + s_step, ...;
                # UNROLL positions' loads are issued before any is stored.
                pw = 0
                while pw < n_here:
                    fl = s_row0
                    while fl < f_here:
                        for u in range(UNROLL):
                            val = zero
                            if pw + u < n_here and s_col < kc:
                                val = w[p0 + pw + u, gf0 + fl, k0 + s_col]
                            staged[u] = val
                        for u in range(UNROLL):
                            if pw + u < n_here:
                                ws[(pw + u) * fbn + fl, s_col] = staged[u]
                        fl += s_step
                    pw += UNROLL
                if patching:
                    # the chunk's first tap (ch, a, bb), then the next ones without a division
                    c, ab = divmod32(k0, kh * kw)
                    a, bb = divmod32(ab, kw)
                    ch = gc0 + c
                    for kk in range(kc):
                        val = zero
                        h = top + a * dil_h
                        ww = left + bb * dil_w
                        if live and h >= 0 and h < height and ww >= 0 and ww < width:
                            val = x[n_s, ch, h, ww]
                        ps[kk, q_s * PMAX + pl_s] = val
                        bb += 1
                        if bb == kw:
                            bb = 0
                            a += 1
                            if a == kh:
                                a = 0
                                ch += 1
                cuda.syncthreads()
                if row_ok:
                    # half the samples per sweep of the chunk: fewer patch values in flight at once
                    for half in range(2):
                        for kk in range(kc):
                            wt = ws[tid, kk]
                            for q in range(half * half_nb, (half + 1) * half_nb):
                                acc[q] += wt * ps[kk, q * PMAX + c_pl]
                cuda.syncthreads()
                k0 += kcw
            if row_ok:
                p = p0 + c_pl
                i, j = divmod32(p, ow)
                bias = zero
                if has_bias:
                    bias = b[gf0 + c_fl, p]
                for q in range(nb):
                    if n0 + q < n_total:
                        y[n0 + q, gf0 + c_fl, i, j] = acc[q] + bias
            item += cuda.gridDim.x

    return local_forward


local_forward = specialise(_local_forward, NB, "local_forward")
local_forward_nb4 = specialise(_local_forward, NB_NARROW, "local_forward_nb4")
#: The forward kernel per element size, and its samples per pass.
_FORWARD = {4: (local_forward, NB), 8: (local_forward_nb4, NB_NARROW)}


@kernel("void({f}[:, :, :, ::1], {f}[:, :, :, ::1], UniTuple(int32, 15), {f}[:, :, ::1])")
def local_backward_weight(dy, x, geo, dw):
    """``dw[p, f, k] (+)= sum_n dy[n, f, p] patch[n, p, k]``; a block per (positions, group, filters, taps).

    ``geo = (kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, pbn, fqb, kt, n_fqb, n_kb, accumulate)``;
    the launch has at least ``kt * fqb * pbn`` threads, ``OR <= kt <= KT``, ``pbn <= WP``, ``fqb <= FQ``.
    """
    kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, pbn, fqb, kt, n_fqb, n_kb, accumulate = geo
    n_total, cg, height, width, n_pos, fg, kg = _sizes(x, dw, groups)
    ow = dy.shape[3]
    ps = cuda.shared.array((NB, WP, KT), x.dtype)
    ds = cuda.shared.array((NB, WP, FQ_ROWS), x.dtype)
    acc = cuda.local.array(OR, x.dtype)
    zero = x.dtype.type(0)
    tid = cuda.threadIdx.x
    # Outputs: tap kk, filters fq * OR + u of position pl; this thread also stages
    # the patch column (position s_pl, tap kk) and, when kk < OR, the dy row of filter fq * OR + kk.
    s_pl, kk = divmod32(tid, kt)
    pl_c, fq = divmod32(s_pl, fqb)
    computing = pl_c < pbn
    patching = s_pl < pbn
    fl = fq * OR
    n_items = div32(n_pos + pbn - 1, pbn) * groups * n_fqb * n_kb
    item = cuda.blockIdx.x
    while item < n_items:
        pb, g, fqbk, kb = _work_item(item, groups, n_fqb, n_kb)
        p0 = pb * pbn
        f0 = fqbk * fqb * OR
        k = kb * kt + kk
        fbase = g * fg + f0 + fl
        p = p0 + pl_c
        p_ok = computing and p < n_pos
        live = p_ok and k < kg
        i = 0
        j = 0
        if p_ok:
            i, j = divmod32(p, ow)
        staging_dy = p_ok and kk < OR
        dy_ok = f0 + fl + kk < fg  # rows past the group's filters are staged as zeros
        for u in range(OR):
            acc[u] = zero
            if accumulate and live and f0 + fl + u < fg:
                acc[u] = dw[p, fbase + u, k]
        # The patch column's input cell, once per item.
        h = -1
        ww = -1
        ch = 0
        if patching and p0 + s_pl < n_pos and k < kg:
            si, sj = divmod32(p0 + s_pl, ow)
            c, ab = divmod32(k, kh * kw)
            a, bb = divmod32(ab, kw)
            h = si * sh - pt + a * dil_h
            ww = sj * sw - pl + bb * dil_w
            ch = g * cg + c
        inside = h >= 0 and h < height and ww >= 0 and ww < width
        n0 = 0
        while n0 < n_total:
            nn = min(NB, n_total - n0)
            if patching:
                for q in range(NB):
                    val = zero
                    if inside and q < nn:
                        val = x[n0 + q, ch, h, ww]
                    ps[q, s_pl, kk] = val
            if staging_dy:
                for q in range(NB):
                    val = zero
                    if dy_ok and q < nn:
                        val = dy[n0 + q, fbase + kk, i, j]
                    ds[q, pl_c, fl + kk] = val
            cuda.syncthreads()
            if live:
                for q in range(NB):
                    if q < nn:
                        xv = ps[q, pl_c, kk]
                        for u in range(OR):
                            acc[u] += ds[q, pl_c, fl + u] * xv
            cuda.syncthreads()
            n0 += NB
        if live:
            for u in range(OR):
                if f0 + fl + u < fg:
                    dw[p, fbase + u, k] = acc[u]
        item += cuda.gridDim.x


@kernel("void({f}[:, :, :, ::1], {f}[:, :, ::1], UniTuple(int32, 5), {f}[:, :, ::1])")
def local_dpatch(dy, w, geo, dpatch):
    """``dpatch[n, g * Kg + k, p] = sum_f w[p, g * fg + f, k] dy[n, g * fg + f, p]``, filters ascending.

    A block per (positions, group, taps, samples), block-stride loop. ``geo = (groups, pbn, kt, n_kb,
    n_nc)``; the launch has at least ``kt * pbn`` threads, ``kt <= IK``, ``pbn <= IP``.
    """
    groups, pbn, kt, n_kb, n_nc = geo
    n_total = dy.shape[0]
    ow = dy.shape[3]
    n_pos = w.shape[0]
    fg = div32(w.shape[1], groups)
    kg = w.shape[2]
    ds = cuda.shared.array((NB, FC, IP_PAD), w.dtype)
    res = cuda.shared.array((NB, IK, IP_PAD), w.dtype)
    acc = cuda.local.array(NB, w.dtype)
    staged = cuda.local.array(UNROLL_F, w.dtype)
    zero = w.dtype.type(0)
    tid = cuda.threadIdx.x
    pl, kk = divmod32(tid, kt)  # sums: taps fastest, coalesced weight reads
    o_kk, o_pl = divmod32(tid, pbn)  # stores: positions fastest, coalesced scratch writes
    computing = pl < pbn
    storing = o_kk < kt
    n_items = div32(n_pos + pbn - 1, pbn) * groups * n_kb * n_nc
    item = cuda.blockIdx.x
    while item < n_items:
        pb, g, kb, nc = _work_item(item, groups, n_kb, n_nc)
        p0 = pb * pbn
        k0 = kb * kt
        n0 = nc * NB
        p = p0 + pl
        p_ok = computing and p < n_pos
        live = p_ok and k0 + kk < kg
        i = 0
        j = 0
        if p_ok:
            i, j = divmod32(p, ow)
        for q in range(NB):
            acc[q] = zero
        f0 = g * fg
        f_end = f0 + fg
        while f0 < f_end:
            fcn = min(FC, f_end - f0)
            if computing:
                fc = kk
                while fc < fcn:
                    for q in range(NB):
                        val = zero
                        if p_ok and n0 + q < n_total:
                            val = dy[n0 + q, f0 + fc, i, j]
                        ds[q, fc, pl] = val
                    fc += kt
            cuda.syncthreads()
            if live:
                fc = 0
                while fc < fcn:
                    for u in range(UNROLL_F):
                        val = zero
                        if fc + u < fcn:
                            val = w[p, f0 + fc + u, k0 + kk]
                        staged[u] = val
                    for u in range(UNROLL_F):
                        if fc + u < fcn:
                            for q in range(NB):
                                acc[q] += staged[u] * ds[q, fc + u, pl]
                    fc += UNROLL_F
            cuda.syncthreads()
            f0 += FC
        if computing:
            for q in range(NB):
                res[q, kk, pl] = acc[q]
        cuda.syncthreads()
        if storing and k0 + o_kk < kg and p0 + o_pl < n_pos:
            for q in range(NB):
                if n0 + q < n_total:
                    dpatch[n0 + q, g * kg + k0 + o_kk, p0 + o_pl] = res[q, o_kk, o_pl]
        cuda.syncthreads()
        item += cuda.gridDim.x


@device_function
def window_taps(t, kernel, stride, dilation, step, out_size):
    """The taps that read padded input coordinate ``t``: ``(lo, top, window of top)``, ``top < lo`` if none.

    The taps ``a`` with ``t - a * dilation = i * stride``, ``0 <= i < out_size``, are
    ``lo, lo + step, ..., top`` (``step = stride / gcd(stride, dilation)``): ``lcnumba.indexing.tap_range``
    in 32-bit divisions, ``top`` being its last tap. Tap ``top - m * step`` belongs to window
    ``i + m * (dilation / gcd)``: the caller walks the windows upwards without dividing.
    """
    if t < 0:
        return 0, -1, 0
    first = -1
    a = 0
    while a < step:
        r = t - a * dilation
        if r < 0:
            break
        if divmod32(r, stride)[1] == 0:
            first = a
            break
        a += 1
    if first < 0:
        return 0, -1, 0
    hi = min(kernel, div32(t, dilation) + 1)
    lo = first
    low = t - (out_size - 1) * stride
    if low > 0:
        lo_bound = div32(low + dilation - 1, dilation)
        if lo_bound > first:
            lo = first + div32(lo_bound - first + step - 1, step) * step
    if lo >= hi:
        return 0, -1, 0
    top = lo + div32(hi - 1 - lo, step) * step
    return lo, top, div32(t - top * dilation, stride)


@kernel("void({f}[:, :, ::1], UniTuple(int32, 14), {f}[:, :, :, ::1])")
def local_gather_input(dpatch, geo, dx):
    """``dx[n, c, h, w]`` = the sum of ``dpatch[n, (c*KH + a)*KW + b, i*OW + j]`` over the windows that read it.

    A thread per input cell, ``w`` fastest; windows in row-major order of ``(i, j)``.
    ``geo = (kh, kw, sh, sw, pt, pl, dil_h, dil_w, step_h, step_w, di, dj, oh, ow)``: ``step``, the tap
    step of ``window_taps``, and ``di``, ``dj``, the window step (``dilation / gcd(stride, dilation)``).
    """
    kh, kw, sh, sw, pt, pl, dil_h, dil_w, step_h, step_w, di, dj, oh, ow = geo
    c_total = dx.shape[1]
    height = dx.shape[2]
    width = dx.shape[3]
    size = dx.shape[0] * c_total * height * width
    zero = dx.dtype.type(0)
    e = cuda.grid(1)
    while e < size:
        rest, ww = divmod32(e, width)
        rest, h = divmod32(rest, height)
        n, c = divmod32(rest, c_total)
        a_lo, a, i = window_taps(h + pt, kh, sh, dil_h, step_h, oh)
        b_lo, b_top, j_top = window_taps(ww + pl, kw, sw, dil_w, step_w, ow)
        total = zero
        while a >= a_lo:
            row = (c * kh + a) * kw
            col = i * ow
            bb = b_top
            j = j_top
            while bb >= b_lo:
                total += dpatch[n, row + bb, col + j]
                bb -= step_w
                j += dj
            a -= step_h
            i += di
        dx[n, c, h, ww] = total
        e += cuda.gridsize(1)


# ---------------------------------------------------------------- launchers
#
# Arguments are trusted (``lcnumba.ops.conv`` checked them); ``kargs`` =
# (KH, KW, SH, SW, PT, PL, DH, DW); the weight is (P, F, Kg) with P = OH * OW.


def _ceil_div(a, b):
    return -(-a // b)


def forward(x, w, b, kargs, groups, y, stream):
    """``y = local_conv(x, w) + b``; w (P, F, Kg), b (F, P) or None."""
    n = x.shape[0]
    n_pos, n_filters, kg = w.shape
    fg = n_filters // groups
    kern, nb = _FORWARD[x.dtype.itemsize]
    threads = max(nb, block_threads(ROWS))
    fbn = min(fg, FB, threads)
    pbn = max(1, min(PMAX, threads // fbn, threads // nb, ROWS // fbn))
    kcw = min(KC, threads)
    n_fb, n_nc = _ceil_div(fg, fbn), _ceil_div(n, nb)
    bias = w[0] if b is None else b  # a typed stand-in, never read
    geo = (b is not None, *kargs, groups, pbn, fbn, n_fb, n_nc, kcw)
    blockwise(kern, _ceil_div(n_pos, pbn) * groups * n_fb * n_nc, threads, stream, x, w, bias, geo, y)


def backward_weight(dy, x, kargs, groups, accumulate, dw, stream):
    """``dw (+)= dW``; dw (P, F, Kg)."""
    n_pos, n_filters, kg = dw.shape
    fg = n_filters // groups
    threads = max(OR, block_threads(KT * FQ))
    kt = max(OR, min(KT, threads, _ceil_div(kg, OR) * OR))
    threads = max(threads, kt)
    slots = threads // kt
    fqb = max(1, min(_ceil_div(fg, OR), slots, FQ))
    pbn = max(1, min(WP, slots // fqb))
    n_fqb, n_kb = _ceil_div(fg, fqb * OR), _ceil_div(kg, kt)
    geo = (*kargs, groups, pbn, fqb, kt, n_fqb, n_kb, accumulate)
    blockwise(local_backward_weight, _ceil_div(n_pos, pbn) * groups * n_fqb * n_kb, threads, stream, dy, x, geo,
              dw)


def backward_input(dy, w, kargs, groups, dx, stream):
    """``dx`` (N, C, H, W) from dy and w (P, F, Kg): ``dpatch = W_p^T dy_p`` into scratch, then a gather.

    Batches whose ``dpatch`` would pass ``SCRATCH_ELEMENTS`` run in chunks of samples (two launches each).
    """
    n, c, oh, ow = dx.shape[0], dx.shape[1], dy.shape[2], dy.shape[3]
    n_pos, _, kg = w.shape
    kh, kw, sh, sw, pt, pl, dil_h, dil_w = kargs
    threads = block_threads(IK * IP)
    kt = min(IK, threads, kg)
    pbn = max(1, min(IP, threads // kt))
    n_kb = _ceil_div(kg, kt)
    g_h, g_w = gcd(sh, dil_h), gcd(sw, dil_w)
    gather = (*kargs, sh // g_h, sw // g_w, dil_h // g_h, dil_w // g_w, oh, ow)
    per_sample = groups * kg * n_pos
    chunk = max(1, min(n, SCRATCH_ELEMENTS // per_sample))
    for n0 in range(0, n, chunk):
        count = min(chunk, n - n0)
        (dpatch,) = scratch([(count, groups * kg, n_pos)], dx.dtype, stream)
        geo = (groups, pbn, kt, n_kb, _ceil_div(count, NB))
        blockwise(local_dpatch, _ceil_div(n_pos, pbn) * groups * n_kb * geo[4], threads, stream, dy[n0:n0 + count],
                  w, geo, dpatch)
        elementwise(local_gather_input, count * c * dx.shape[2] * dx.shape[3], stream, dpatch, gather,
                    dx[n0:n0 + count])
