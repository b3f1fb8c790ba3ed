"""Device functions of the register-tiled GEMMs of the NetVLAD and convolution kernels.

Two tilings, each inlined on a GPU. NetVLAD's (``netvlad.bgemm``): a block
computes a ``bm x bn`` tile of a product by staging ``BK``-deep slices of
both operands in shared memory, ``A`` as ``(rows, depth)`` and ``B`` as
``(depth, columns)``; thread ``v`` owns the ``2 x 2`` register tile of rows
``vr, vr + vrows`` and columns ``vc, vc + vcols`` (``vrows = bm // 2``,
``vcols = bn // 2``), so a warp's threads, ``vc`` fastest, read distinct
shared-memory banks. The convolution's implicit GEMM (``conv``) has larger
tiles, double-buffered chunks and ``RT x RT`` register tiles (the second
part of this module). The kernels keep their own staging (what they load
differs); these functions are the index and arithmetic steps they have
in common.
"""

from .intmath import divmod32
from .jit import device_function

#: GEMM tile: rows, columns and the reduction chunk (a block's tile is at most ``BM x BN``).
BM = 32
BN = 32
BK = 32
#: Shared-memory row lengths, one longer than the tile so column walks hit distinct banks
#: (a compile-time constant each: shared array shapes must be).
BK_PAD = BK + 1
BN_PAD = BN + 1
#: Register tile per thread (rows x columns); the functions below are unrolled for 2 x 2.
TM = 2
TN = 2


@device_function
def tile_index(e, column_major, rows, cols):
    """``(row, col)`` of element ``e`` of a ``rows x cols`` tile walked row-major (or column-major).

    Consecutive threads take consecutive ``e``: walk the tile along the
    source's contiguous axis so that their loads are coalesced.
    """
    if column_major:
        col, row = divmod32(e, rows)
        return row, col
    return divmod32(e, cols)


@device_function
def virtual_cell(v, vcols):
    """Row and column ``(vr, vc)`` of thread ``v``'s register tile, ``vc`` fastest."""
    return divmod32(v, vcols)


@device_function
def mac_2x2(a_tile, b_tile, depth, vr, vc, vrows, vcols, c00, c01, c10, c11):
    """The register tile plus ``a_tile[rows, :depth] @ b_tile[:depth, cols]``, terms in increasing order.

    Returns the four sums ``(c00, c01, c10, c11)``: rows ``vr``, ``vr + vrows``
    times columns ``vc``, ``vc + vcols``.
    """
    for t in range(depth):
        a0 = a_tile[vr, t]
        a1 = a_tile[vr + vrows, t]
        b0 = b_tile[t, vc]
        b1 = b_tile[t, vc + vcols]
        c00 += a0 * b0
        c01 += a0 * b1
        c10 += a1 * b0
        c11 += a1 * b1
    return c00, c01, c10, c11


@device_function
def register(r, s, c00, c01, c10, c11):
    """Entry ``(r, s)`` of the ``2 x 2`` register tile."""
    if r == 0:
        return c00 if s == 0 else c01
    return c10 if s == 0 else c11


@device_function
def store_2x2(out, row0, col0, vr, vc, vrows, vcols, rows, cols, accumulate, c00, c01, c10, c11):
    """``out[row, col] (+)=`` the register tile at rows ``row0 + vr (+ vrows)``, columns ``col0 + vc (+ vcols)``.

    ``out`` is 2-D; cells at or past ``rows`` or ``cols`` are skipped.
    """
    for r in range(TM):
        row = row0 + vr + r * vrows
        if row >= rows:
            continue
        for s in range(TN):
            col = col0 + vc + s * vcols
            if col >= cols:
                continue
            val = register(r, s, c00, c01, c10, c11)
            if accumulate:
                out[row, col] += val
            else:
                out[row, col] = val


# ---------------------------------------------------------------- the convolution's implicit GEMM
#
# The convolution kernels (``lcnumba.gpu.conv``) use larger tiles: a block owns at most ``GM x GN``
# outputs, each thread an ``RT x RT`` register tile of consecutive rows ``vr * RT + r`` and columns
# ``vc * RT + s`` (so each operand's ``RT`` values sit at constant offsets from one shared-memory address),
# and the reduction runs in chunks of ``GK`` staged in two shared-memory buffers (one is filled while the
# other is read). The tile sides are powers of two, so every index split in the staging loops is a shift
# or a mask, and every chunk is ``GK`` deep (zeros past the end), so the multiply-add loop has constant
# bounds.

#: Most rows and columns of a block's tile, depth of a reduction chunk, side of a thread's register tile.
GM = 64
GN = 64
GK = 8
RT = 4
#: Entries of a register tile (a constant: local array shapes must be).
RT_CELLS = RT * RT
#: ``log2(GK)``: a chunk element's depth index is ``e & (GK - 1)``, its row ``e >> LOG_GK``.
LOG_GK = 3
#: Shared-memory row length of a staged chunk: the tile plus 4, so that the 8 depths x 4 rows a warp writes
#: when staging along the depth fall in 32 distinct banks.
G_PAD = GM + 4


@device_function
def tile_owner(tid, rows, cols, log_vcols):
    """``(busy, vr, vc)``: whether thread ``tid`` owns a register tile of a ``rows x cols`` block tile, and which
    (``vc`` fastest; ``cols // RT == 2**log_vcols``)."""
    return tid < (rows // RT) * (cols // RT), tid >> log_vcols, tid & ((cols // RT) - 1)


@device_function
def zero_tile(acc):
    """Set the ``RT * RT`` register tile ``acc`` to zero."""
    for e in range(RT_CELLS):
        acc[e] = 0


@device_function
def mac_tile(a_s, b_s, buf, vr, vc, acc):
    """``acc[r * RT + s] += sum_k a_s[buf, k, vr RT + r] * b_s[buf, k, vc RT + s]``, ``k`` increasing.

    One chunk of ``GK`` terms; the ``RT`` column values are read once and reused across the rows.
    """
    for k in range(GK):
        b0 = b_s[buf, k, vc * RT]
        b1 = b_s[buf, k, vc * RT + 1]
        b2 = b_s[buf, k, vc * RT + 2]
        b3 = b_s[buf, k, vc * RT + 3]
        for r in range(RT):
            a = a_s[buf, k, vr * RT + r]
            acc[r * RT] += a * b0
            acc[r * RT + 1] += a * b1
            acc[r * RT + 2] += a * b2
            acc[r * RT + 3] += a * b3
