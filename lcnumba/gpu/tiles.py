"""Device functions of the register-tiled GEMM that the convolution and NetVLAD kernels share.

A block of those kernels computes a ``bm x bn`` tile of a product by
staging ``BK``-deep slices of both operands in shared memory, ``A`` as
``(rows, depth)`` and ``B`` as ``(depth, columns)``; thread ``v`` owns the
``2 x 2`` register tile of rows ``vr, vr + vrows`` and columns
``vc, vc + vcols`` (``vrows = bm // 2``, ``vcols = bn // 2``), so a warp's
threads, ``vc`` fastest, read distinct shared-memory banks. The kernels
keep their own staging (what they load differs); these functions are the
index and arithmetic steps they have in common, inlined on a GPU.
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
