"""Weight sharing of the convolution family as *segments*, and the row blocks of the input gradient.

A segment is a run of output positions in one output row that use the same
filter bank (tile): ``conv2d`` has one tile, ``local_conv2d`` one per
position, ``tiled_conv2d`` ``TH * TW``. Every CPU kernel of the family walks
segments, so the three are one code path. ``segment_table`` is compiled so
that the drivers of ``lcnumba.cpu.conv`` (which the C entry points call)
build their tables inside compiled code; ``segments`` is the same table for
Python callers, cached.
"""

import functools

import numpy as np
from numba import njit

from .. import cache
from .indexing import COMPILES_IN as _INDEXING
from .indexing import tile_of, tile_span

COMPILES_IN = cache.sources("cpu/segments.py", _INDEXING)


@njit(cache=True)
def segment_table(oh, ow, th, tw, periodic):
    """Runs of output positions that share a filter bank.

    Parameters
    ----------
    oh, ow : int
        Output size.
    th, tw : int
        Number of tiles along each axis (``1, 1`` for conv2d, ``OH, OW`` for local).
    periodic : bool
        True: position (i, j) uses tile (i % TH, j % TW) (Ngiam et al.);
        False ("block"): tile (i * TH // OH, j * TW // OW), contiguous regions
        (``lcnumba.indexing.tile_of``).

    Returns
    -------
    by_tile : int64 array (S, 5)
        Rows ``(tile, i, j0, j_step, count)``: positions ``(i, j0 + m * j_step)``
        for ``m < count`` use tile ``tile = ti * TW + tj``; sorted by tile, then row.
    tile_ptr : int64 array (TH * TW + 1,)
        Segments of tile ``t`` are ``by_tile[tile_ptr[t]:tile_ptr[t+1]]``.
    by_row : int64 array (S, 5)
        The same segments sorted by output row.
    row_ptr : int64 array (OH + 1,)
        Segments of row ``i`` are ``by_row[row_ptr[i]:row_ptr[i+1]]``.
    """
    per_row = min(tw, ow) if periodic else tw
    by_row = np.empty((oh * per_row, 5), dtype=np.int64)
    row_ptr = np.empty(oh + 1, dtype=np.int64)
    s = 0
    for i in range(oh):
        row_ptr[i] = s
        ti = tile_of(i, oh, th, periodic)
        for tj in range(per_row):
            j0, step, count = tile_span(tj, ow, tw, periodic)
            if count > 0:
                by_row[s, 0] = ti * tw + tj
                by_row[s, 1] = i
                by_row[s, 2] = j0
                by_row[s, 3] = step
                by_row[s, 4] = count
                s += 1
    row_ptr[oh] = s
    by_row = by_row[:s].copy()
    # Counting sort by tile keeps each tile's segments in row order.
    n_tiles = th * tw
    tile_ptr = np.zeros(n_tiles + 1, dtype=np.int64)
    for r in range(s):
        tile_ptr[by_row[r, 0] + 1] += 1
    for t in range(n_tiles):
        tile_ptr[t + 1] += tile_ptr[t]
    fill = tile_ptr[:n_tiles].copy()
    by_tile = np.empty_like(by_row)
    for r in range(s):
        t = by_row[r, 0]
        for col in range(5):  # cell by cell: a row assignment compiles NumPy's shape-mismatch message (seconds)
            by_tile[fill[t], col] = by_row[r, col]
        fill[t] += 1
    return by_tile, tile_ptr, by_row, row_ptr


@njit(cache=True)
def rows_per_phase_block(kh, stride_h, dilation_h):
    """Output rows per block so that blocks two apart read disjoint input rows.

    Block ``b`` covers output rows ``[b*R, (b+1)*R)`` and so input rows up to
    ``((b+1)*R - 1)*SH + (KH-1)*DH`` past its start; block ``b + 2`` starts
    ``2*R*SH`` later, which is beyond that whenever ``(KH-1)*DH < (R+1)*SH``.
    """
    return max(1, (dilation_h * (kh - 1)) // stride_h)


@functools.lru_cache(maxsize=256)
def segments(oh, ow, th, tw, mode):
    """``segment_table`` for a ``tile_mode`` name (``"periodic"`` or ``"block"``), cached and read-only."""
    tables = segment_table(oh, ow, th, tw, mode == "periodic")
    for array in tables:
        array.flags.writeable = False
    return tables


cache.key_kernels(globals())
