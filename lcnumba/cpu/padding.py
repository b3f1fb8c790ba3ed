"""CPU kernels of the padding modes: pad a chunk of the batch, and fold a padded gradient back.

A convolution with ``padding_mode`` other than ``"zeros"`` runs as the
zero-padding kernels with padding 0 on a padded copy of a chunk of the
batch (``lcnumba.ops.conv_padded``). These two kernels make that copy and
undo it for the input gradient; the index maps are
``lcnumba.indexing.pad_source`` and its inverse ``fold_runs`` /
``fold_index``.

Array layouts (all C-contiguous):

==========  ========================  ==========================================
name        shape                     meaning
==========  ========================  ==========================================
x, dx       (n, C, H, W)              a chunk of the input, of its gradient
xp, dxp     (n, C, H + PT + PB,       the padded chunk, its gradient
            W + PL + PR)
==========  ========================  ==========================================

A worker owns whole planes ``(sample, channel)``, so writes are disjoint.
The fold is a gather: input cell ``(h, w)`` sums the padded cells that copy
it (the rows of ``fold_runs`` along H times the columns along W), rows
outer, in increasing padded index: an order fixed by the shapes, with no
atomics, so the gradient is bitwise identical for any thread count.
"""

from numba import njit, prange

from .. import cache
from ..config import FASTMATH, FASTMATH_ORDERED
from .indexing import COMPILES_IN as _INDEXING
from .indexing import fold_index, fold_runs, pad_source

COMPILES_IN = cache.sources("config.py", "cpu/padding.py", _INDEXING)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pad(x, pt, pl, mode, xp):
    """``xp[n, c] = F.pad(x[n, c], mode)`` with ``pt`` rows on top and ``pl`` columns on the left.

    ``mode`` indexes ``lcnumba.table.PADDING_MODES`` and is not 0 (zeros pad in the convolution kernels).
    """
    n, c, h, w = x.shape
    hp, wp = xp.shape[2], xp.shape[3]
    for plane in prange(n * c):
        s, ch = plane // c, plane % c
        for ph in range(hp):
            src_row = x[s, ch, pad_source(ph, h, pt, mode)]
            dst_row = xp[s, ch, ph]
            for pw in range(pl):
                dst_row[pw] = src_row[pad_source(pw, w, pl, mode)]
            for q in range(w):  # the input columns: a contiguous copy
                dst_row[pl + q] = src_row[q]
            for pw in range(pl + w, wp):
                dst_row[pw] = src_row[pad_source(pw, w, pl, mode)]


@njit(parallel=True, cache=True, fastmath=FASTMATH_ORDERED)  # the sum's order is the loop's: see config
def fold(dxp, pt, pl, pb, pr, mode, dx):
    """``dx[n, c, h, w] = sum of dxp[n, c, ph, pw]`` over the padded cells that copy ``(h, w)``.

    The adjoint of :func:`pad` with the same mode; ``pb, pr`` are the bottom and right padding.
    """
    n, c, h, w = dx.shape
    for plane in prange(n * c):
        s, ch = plane // c, plane % c
        src = dxp[s, ch]
        for r0 in range(h):
            rlo, rlo_n, rhi, rhi_n = fold_runs(r0, h, pt, pb, mode)
            for q0 in range(w):
                clo, clo_n, chi, chi_n = fold_runs(q0, w, pl, pr, mode)
                total = dx.dtype.type(0)
                for r in range(rlo_n + 1 + rhi_n):
                    row = src[fold_index(r, r0, pt, rlo, rlo_n, rhi)]
                    for q in range(clo_n + 1 + chi_n):
                        total += row[fold_index(q, q0, pl, clo, clo_n, chi)]
                dx[s, ch, r0, q0] = total


cache.key_kernels(globals())
