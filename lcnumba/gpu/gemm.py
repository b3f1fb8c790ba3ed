"""The register-tiled GEMM micro-kernel of the CUDA kernels, and a batched GEMM kernel built on it.

Both the convolution's implicit GEMMs (``lcnumba.gpu.conv``) and every
matrix product of NetVLAD (``lcnumba.gpu.netvlad``, ``vlad_options``) run
on the pieces here. A block owns a ``bm x bn`` tile of the product
(powers of two, at most ``GM x GN``), each of its threads an ``rt x rt``
register tile of consecutive rows ``vr * rt + r`` and columns
``vc * rt + s`` (so each operand's ``rt`` values sit at constant offsets
from one shared-memory address). The reduction runs in chunks of ``GK``
staged in two shared-memory buffers, ``A`` as ``a_s[buf, k, row]`` and
``B`` as ``b_s[buf, k, col]``: the next chunk is loaded into one while
the other is multiplied (one barrier per chunk). Tile sides are powers of
two, so every index split in the staging loops is a shift or a mask, and
every chunk is ``GK`` deep (zeros past the end), so the multiply-add loop
has constant bounds.

Register tile. The side ``rt`` is a compile-time constant of each kernel
(local arrays and unrolled loops need one), chosen on the host from the
dtype (``tile_side``): 4 for ``float32`` (8 shared-memory loads per 16
FMAs), 2 for ``float64``, whose 4 x 4 tile (16 accumulators in 32
registers) spills at the 64 registers of the launch bounds. A kernel
written once as a factory of ``rt`` is compiled as one ``Kernel`` per
side (``specialise``).

Order. Each output is summed by one thread over the reduction index in
increasing order, whatever the tile, the block size or the grid: results
are bitwise the same for every ``THREADS_PER_BLOCK``.

``bgemm`` is the plain batched product ``c[n] (+)= op(a[n]) op(b[n])``
(``op`` a transpose or not; an operand with one matrix is shared by all
``n``), staged along each operand's contiguous axis so that transposed
operands are read coalesced too.
"""

import numpy as np

from .intmath import divmod32
from .jit import cuda, device_function, kernel
from .launch import block_threads, blockwise, threads_per_block

#: Most rows and columns of a block's tile, and the depth of a reduction chunk.
GM = 64
GN = 64
GK = 8
#: ``log2(GK)``: a chunk element's depth index is ``e & (GK - 1)``, its row ``e >> LOG_GK``.
LOG_GK = 3
#: Shared-memory row length of a staged chunk: the tile plus 4, so that the 8 depths x 4 rows a warp writes
#: when staging along the depth fall in 32 distinct banks.
G_PAD = GM + 4
#: Register tile sides: the widest (float32) and the one of 8-byte floats.
RT_WIDE = 4
RT_NARROW = 2


def tile_side(dtype):
    """The register tile side of kernels of ``dtype``: ``RT_NARROW`` for 8-byte floats, else ``RT_WIDE``."""
    return RT_NARROW if np.dtype(dtype).itemsize == 8 else RT_WIDE


def specialise(factory, rt, name):
    """``factory(rt)`` (a ``Kernel``) under ``name``: the name tools look the kernel up by in its module."""
    kern = factory(rt)
    kern.py_func.__name__ = kern.py_func.__qualname__ = kern.__name__ = name
    return kern


def _pow2(a, most, rt):
    """The least power of two at least ``a`` and ``rt``, at most ``most``."""
    return min(most, 1 << (max(a, rt) - 1).bit_length())


def block_tile(rows, cols, rt):
    """Block tile ``(bm, bn)``: powers of two covering ``rows x cols`` up to ``GM x GN``, shrunk (the longer side
    first) until the configured threads per block hold an ``rt x rt`` register tile each."""
    bm, bn = _pow2(rows, GM, rt), _pow2(cols, GN, rt)
    threads = threads_per_block()
    while (bm // rt) * (bn // rt) > threads:
        if bm >= bn:
            bm //= 2
        else:
            bn //= 2
    return bm, bn


def full_tiles(rows, cols, rt):
    """How many ``GM x GN``-bounded tiles cover ``rows x cols`` at any block size (a shape-only work estimate)."""
    return -(-rows // _pow2(rows, GM, rt)) * -(-cols // _pow2(cols, GN, rt))


def log2(a):
    """``log2`` of a power of two."""
    return a.bit_length() - 1


# ---------------------------------------------------------------- device functions


@device_function
def tile_owner(tid, rows, cols, log_vcols, rt):
    """``(busy, vr, vc)``: whether thread ``tid`` owns an ``rt x rt`` register tile of a ``rows x cols`` block
    tile, and which (``vc`` fastest; ``cols // rt == 2**log_vcols``)."""
    return tid < (rows // rt) * (cols // rt), tid >> log_vcols, tid & ((cols // rt) - 1)


@device_function
def zero_tile(acc, rt):
    """Set the ``rt x rt`` register tile ``acc`` to zero."""
    for e in range(rt * rt):
        acc[e] = 0


@device_function
def mac_tile(a_s, b_s, buf, vr, vc, acc, rt):
    """``acc[r * rt + s] += sum_k a_s[buf, k, vr rt + r] * b_s[buf, k, vc rt + s]``, ``k`` increasing.

    One chunk of ``GK`` terms; the ``rt`` column values are read once and reused across the rows.
    """
    bv = cuda.local.array(RT_WIDE, a_s.dtype)  # registers once unrolled (rt is a constant of the kernel)
    for k in range(GK):
        for s in range(rt):
            bv[s] = b_s[buf, k, vc * rt + s]
        for r in range(rt):
            a = a_s[buf, k, vr * rt + r]
            for s in range(rt):
                acc[r * rt + s] += a * bv[s]


@device_function
def stage(m, base, ld, along_depth, rows, log_rows, row_count, k0, k_count, dst, buf, tid, nt):
    """``dst[buf, kk, r] = op(m)[r, k0 + kk]`` for a chunk of ``GK`` depths and ``rows`` rows (a power of two),
    0 at or past ``row_count`` rows or ``k_count`` depths.

    ``op(m)[r, k]`` is ``m[base + r * ld + k]`` when ``along_depth`` (the depth contiguous: consecutive
    threads take consecutive depths), else ``m[base + k * ld + r]`` (consecutive threads take consecutive
    rows): loads along ``m``'s contiguous axis either way.
    """
    e = tid
    while e < (rows << LOG_GK):
        if along_depth:
            kk = e & (GK - 1)
            r = e >> LOG_GK
        else:
            r = e & (rows - 1)
            kk = e >> log_rows
        if r < row_count and k0 + kk < k_count:
            if along_depth:
                dst[buf, kk, r] = m[base + r * ld + k0 + kk]
            else:
                dst[buf, kk, r] = m[base + (k0 + kk) * ld + r]
        else:
            dst[buf, kk, r] = 0
        e += nt


@device_function
def store_tile(c, base, ld, row_count, col_count, vr, vc, acc, accumulate, rt):
    """``c[base + row * ld + col] (+)=`` the register tile at rows ``vr rt + r``, columns ``vc rt + s`` (those
    below ``row_count`` and ``col_count``)."""
    for r in range(rt):
        row = vr * rt + r
        if row < row_count:
            for s in range(rt):
                col = vc * rt + s
                if col < col_count:
                    o = base + row * ld + col
                    if accumulate:
                        c[o] += acc[r * rt + s]
                    else:
                        c[o] = acc[r * rt + s]


# ---------------------------------------------------------------- the batched GEMM kernel


def _bgemm(rt):
    cells = rt * rt  # a local array's shape must be a constant

    @kernel("void({f}[::1], {f}[::1], UniTuple(int32, 18), {f}[::1])")
    def bgemm(a, b, geo, c):
        """``c[n] (+)= op(a[n]) @ op(b[n])`` over ``r_count`` terms; a block per (sample, row tile, column tile).

        Flat C-contiguous operands: ``c`` (N, P, Q); ``op(a[n])`` (P, R) is row ``p``, column ``k`` at
        ``n a_stride + p lda + k`` (or ``n a_stride + k lda + p`` with ``trans_a``), ``a_stride`` 0 for one
        matrix shared by every sample; ``op(b[n])`` (R, Q) likewise (``trans_b``: ``n b_stride + q ldb + k``).
        ``geo = (trans_a, trans_b, a_stride, b_stride, lda, ldb, n, p, q, r_count, bm, bn, log_bm, log_bn,
        log_vcols, n_pb, n_qb, accumulate)``; ``bm x bn`` the block tile (powers of two, a thread per
        register tile at least).
        """
        (trans_a, trans_b, a_stride, b_stride, lda, ldb, n_total, p_count, q_count, r_count, bm, bn, log_bm, log_bn,
         log_vcols, n_pb, n_qb, accumulate) = geo
        a_s = cuda.shared.array((2, GK, G_PAD), c.dtype)
        b_s = cuda.shared.array((2, GK, G_PAD), c.dtype)
        acc = cuda.local.array(cells, c.dtype)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        busy, vr, vc = tile_owner(tid, bm, bn, log_vcols, rt)
        item = cuda.blockIdx.x
        while item < n_total * n_pb * n_qb:
            rest, qb = divmod32(item, n_qb)
            n, pb = divmod32(rest, n_pb)
            p0 = pb * bm
            q0 = qb * bn
            # op(a)[p0 + i, k] and op(b)[k, q0 + j] as the rows of the staged chunks
            a_base = n * a_stride + (p0 if trans_a else p0 * lda)
            b_base = n * b_stride + (q0 * ldb if trans_b else q0)
            zero_tile(acc, rt)
            cuda.syncthreads()  # the last item's buffers are read
            stage(a, a_base, lda, not trans_a, bm, log_bm, p_count - p0, 0, r_count, a_s, 0, tid, nt)
            stage(b, b_base, ldb, trans_b, bn, log_bn, q_count - q0, 0, r_count, b_s, 0, tid, nt)
            cuda.syncthreads()
            buf = 0
            k0 = 0
            while k0 < r_count:
                nxt = k0 + GK
                if nxt < r_count:  # the next chunk into the other buffer while this one is multiplied
                    stage(a, a_base, lda, not trans_a, bm, log_bm, p_count - p0, nxt, r_count, a_s, 1 - buf, tid, nt)
                    stage(b, b_base, ldb, trans_b, bn, log_bn, q_count - q0, nxt, r_count, b_s, 1 - buf, tid, nt)
                if busy:
                    mac_tile(a_s, b_s, buf, vr, vc, acc, rt)
                cuda.syncthreads()
                buf = 1 - buf
                k0 = nxt
            if busy:
                store_tile(c, (n * p_count + p0) * q_count + q0, q_count, p_count - p0, q_count - q0, vr, vc, acc,
                           accumulate, rt)
            item += cuda.gridDim.x

    return bgemm


bgemm = specialise(_bgemm, RT_WIDE, "bgemm")
bgemm_rt2 = specialise(_bgemm, RT_NARROW, "bgemm_rt2")
_BGEMM = {RT_WIDE: bgemm, RT_NARROW: bgemm_rt2}


def batched(a, trans_a, b, trans_b, r_count, accumulate, c, stream):
    """``c[n] (+)= op(a[n]) @ op(b[n])`` over the first ``r_count`` terms, on ``stream``.

    c (N, P, Q); a (Na, P, Ra) or, with ``trans_a``, (Na, Ra, P); b (Nb, Rb, Q) or, with ``trans_b``,
    (Nb, Q, Rb); ``Ra, Rb >= r_count`` (the sum stops at ``r_count``: NetVLAD's ghost clusters are left
    out so); ``Na``, ``Nb`` either N or 1 (one matrix for every sample). All C-contiguous device arrays
    of one dtype.
    """
    n, p, q = c.shape
    rt = tile_side(c.dtype)
    bm, bn = block_tile(p, q, rt)
    n_pb, n_qb = -(-p // bm), -(-q // bn)
    a_stride = a.shape[1] * a.shape[2] if a.shape[0] > 1 else 0
    b_stride = b.shape[1] * b.shape[2] if b.shape[0] > 1 else 0
    geo = (trans_a, trans_b, a_stride, b_stride, a.shape[2], b.shape[2], n, p, q, r_count, bm, bn, log2(bm),
           log2(bn), log2(bn // rt), n_pb, n_qb, accumulate)
    blockwise(_BGEMM[rt], n * n_pb * n_qb, block_threads((bm // rt) * (bn // rt)), stream, a.reshape(-1),
              b.reshape(-1), geo, c.reshape(-1))
