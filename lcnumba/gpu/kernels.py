"""Small generic CUDA kernels: strided copy, fill, and the fixed-order reduction of partial sums.

All are grid-stride loops over a flat index with the fastest axis last,
so consecutive threads touch consecutive addresses (coalesced).
"""

from .intmath import divmod32
from .jit import cuda, kernel


@kernel("void({f}[:, :, :, :, :, :], {f}[:, :, :, :, :, ::1])")
def copy6(src, dst):
    """``dst[...] = src[...]`` for rank-6 arrays; ``src`` of any strides, ``dst`` C-contiguous."""
    s0, s1, s2, s3, s4, s5 = dst.shape
    size = s0 * s1 * s2 * s3 * s4 * s5
    for e in range(cuda.grid(1), size, cuda.gridsize(1)):
        r, i5 = divmod32(e, s5)
        r, i4 = divmod32(r, s4)
        r, i3 = divmod32(r, s3)
        r, i2 = divmod32(r, s2)
        i0, i1 = divmod32(r, s1)
        dst[i0, i1, i2, i3, i4, i5] = src[i0, i1, i2, i3, i4, i5]


@kernel("void({f}[::1], {f})")
def fill1(dst, value):
    """``dst[:] = value``."""
    for e in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[e] = value


@kernel("void({f}[:, ::1], boolean, {f}[::1])")
def reduce_splits(partial, accumulate, out):
    """``out[j] (+)= partial[0, j] + partial[1, j] + ...``, summed in split order.

    ``partial`` (S, J) holds the sums of S disjoint, fixed pieces of a
    reduction (a weight or bias gradient split over batch and positions);
    summing them in the order of ``s`` makes the result bitwise
    reproducible, with no atomics. One thread per output, coalesced on ``j``.
    """
    splits, size = partial.shape
    for j in range(cuda.grid(1), size, cuda.gridsize(1)):
        total = partial[0, j]
        for s in range(1, splits):
            total += partial[s, j]
        if accumulate:
            out[j] += total
        else:
            out[j] = total
