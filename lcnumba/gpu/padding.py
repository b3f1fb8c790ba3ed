"""CUDA kernels of the padding modes: pad a chunk of the batch, and fold a padded gradient back.

The twins of ``lcnumba.cpu.padding``, with its layouts: a chunk ``x``/``dx``
(n, C, H, W) and its padded ``xp``/``dxp`` (n, C, H + PT + PB, W + PL + PR).

Both are grid-stride loops with a thread per destination element, the
fastest axis last (coalesced writes). The fold is a gather: the thread of
input cell ``(h, w)`` sums the padded cells that copy it
(``indexing.fold_runs`` along each axis), rows outer, in increasing padded
index: an order fixed by the shapes, with no atomics, so the gradient is
bitwise reproducible. ``geo`` is ``(pt, pl, pb, pr, mode)``, ``mode`` an
index into ``lcnumba.table.PADDING_MODES``.
"""

from .. import indexing
from .intmath import divmod32
from .jit import cuda, device_function, kernel
from .launch import elementwise

pad_source = device_function(indexing.pad_source)
fold_runs = device_function(indexing.fold_runs)
fold_index = device_function(indexing.fold_index)


@device_function
def cell_of(e, shape):
    """``(n, c, h, w)`` of flat index ``e`` of a C-contiguous array of rank-4 ``shape``."""
    r, w = divmod32(e, shape[3])
    r, h = divmod32(r, shape[2])
    n, c = divmod32(r, shape[1])
    return n, c, h, w


@kernel("void({f}[:, :, :, ::1], UniTuple(int32, 5), {f}[:, :, :, ::1])")
def pad_kernel(x, geo, xp):
    """``xp[n, c] = F.pad(x[n, c], mode)``; a thread per element of ``xp``."""
    pt, pl, _, _, mode = geo
    h, w = x.shape[2], x.shape[3]
    for e in range(cuda.grid(1), xp.size, cuda.gridsize(1)):
        s, ch, ph, pw = cell_of(e, xp.shape)
        xp[s, ch, ph, pw] = x[s, ch, pad_source(ph, h, pt, mode), pad_source(pw, w, pl, mode)]


@kernel("void({f}[:, :, :, ::1], UniTuple(int32, 5), {f}[:, :, :, ::1])")
def fold_kernel(dxp, geo, dx):
    """``dx[n, c, h, w] = sum of dxp[n, c, ph, pw]`` over the padded cells that copy ``(h, w)``."""
    pt, pl, pb, pr, mode = geo
    h, w = dx.shape[2], dx.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        s, ch, r0, q0 = cell_of(e, dx.shape)
        rlo, rlo_n, rhi, rhi_n = fold_runs(r0, h, pt, pb, mode)
        clo, clo_n, chi, chi_n = fold_runs(q0, w, pl, pr, mode)
        # the first term starts the sum (a zero of the array's type is not to be had in a kernel)
        total = dxp[s, ch, fold_index(0, r0, pt, rlo, rlo_n, rhi), fold_index(0, q0, pl, clo, clo_n, chi)]
        for a in range(rlo_n + 1 + rhi_n):
            ph = fold_index(a, r0, pt, rlo, rlo_n, rhi)
            for b in range(clo_n + 1 + chi_n):
                if a > 0 or b > 0:
                    total += dxp[s, ch, ph, fold_index(b, q0, pl, clo, clo_n, chi)]
        dx[s, ch, r0, q0] = total


def pad(x, pads, mode, xp, stream):
    """``xp = F.pad(x, mode)``; pads (top, left, bottom, right)."""
    pt, pl, pb, pr = pads
    elementwise(pad_kernel, xp.size, stream, x, (pt, pl, pb, pr, mode), xp)


def fold(dxp, pads, mode, dx, stream):
    """``dx`` = the padded gradient ``dxp`` folded onto the cells it copies (the adjoint of :func:`pad`)."""
    pt, pl, pb, pr = pads
    elementwise(fold_kernel, dx.size, stream, dxp, (pt, pl, pb, pr, mode), dx)
