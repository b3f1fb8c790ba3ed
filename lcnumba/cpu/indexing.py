"""The index arithmetic of ``lcnumba.indexing``, compiled for the CPU kernels and the C entry points.

Each function is ``numba.njit(inline="always")`` of the plain-Python one:
Numba inlines its code into every caller, so a caller's on-disk cache
follows ``indexing.py`` (listed in ``COMPILES_IN``).
"""

from numba import njit

from .. import indexing

COMPILES_IN = ("indexing.py",)

conv_output_size = njit(inline="always")(indexing.conv_output_size)
conv_transpose_output_size = njit(inline="always")(indexing.conv_transpose_output_size)
pool_output_size = njit(inline="always")(indexing.pool_output_size)
tile_of = njit(inline="always")(indexing.tile_of)
tile_span = njit(inline="always")(indexing.tile_span)
taps_inside = njit(inline="always")(indexing.taps_inside)
pad_source = njit(inline="always")(indexing.pad_source)
fold_runs = njit(inline="always")(indexing.fold_runs)
fold_index = njit(inline="always")(indexing.fold_index)
