"""Copies of contiguous runs, the inner loop of every patch gather and scatter on the CPU.

Each helper takes 1-D views of one length and indexes them from 0. Numba
turns a negative index into one counted from the end, so a copy written as
``row[base + m] = plane[start + m * step]`` pays a test per element and,
with ``step`` unknown, stays scalar; on views indexed by the loop counter
LLVM proves every index non-negative and vectorises (DeepFace C1's im2col:
44 ms of a 103 ms forward before, 8 ms after).

Kernels that call these compile them in: their on-disk cache must follow
this file (their modules list ``COMPILES_IN`` below in theirs, ``lcnumba.cache``).
"""

from numba import njit

from .. import cache
from ..config import FASTMATH

COMPILES_IN = ("config.py", "cpu/runs.py")


@njit(cache=True, fastmath=FASTMATH, inline="always")
def copy_run(src, dst):
    """``dst[:] = src``."""
    for m in range(dst.shape[0]):
        dst[m] = src[m]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def add_run(src, dst):
    """``dst[:] += src``."""
    for m in range(dst.shape[0]):
        dst[m] += src[m]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def add_bias_run(src, bias, dst):
    """``dst[:] = src + bias``."""
    for m in range(dst.shape[0]):
        dst[m] = src[m] + bias


cache.key_kernels(globals())
