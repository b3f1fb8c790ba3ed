"""Compile every CPU kernel for float32 and float64 into Numba's on-disk cache.

Kernels are compiled lazily, on first use, because eager signatures would
slow ``import lcnumba``. ``python -m lcnumba warmup`` calls every family of
the op table (``lcnumba.table``) once per dtype on tiny inputs, forward and
backward, so that later processes only load machine code. The 1-D forms run
the 2-D kernels, so the 2-D families cover them.
"""

import numpy as np

import lcnumba
from lcnumba import table


def _conv_call(fam, dtype):
    x = np.ones((1, 2, 5, 5), dtype)
    tiles = {"shared": (), "tiled": (2, 2), "local": (3, 3)}[fam.sharing]
    w = np.ones(tiles + (2, 2, 3, 3), dtype)
    b = np.ones((2,) + tiles, dtype)
    forward = getattr(lcnumba, f"{fam.name}_forward")
    backward = getattr(lcnumba, f"{fam.name}_backward")
    return lambda: backward(forward(x, w, b), x, w, b)


def _pool_call(fam, dtype):
    x = np.ones((1, 2, 6, 6), dtype)

    def pool():
        lcnumba.max_pool2d_forward(x, 2)
        y, indices = lcnumba.max_pool2d_forward(x, 2, return_indices=True)
        lcnumba.max_pool2d_backward(y, indices, x.shape)

    return pool


def _netvlad_call(fam, dtype):
    x = np.linspace(-1, 1, 2 * 4 * 6, dtype=dtype).reshape(2, 4, 6)
    w = np.linspace(-1, 1, 3 * 4, dtype=dtype).reshape(3, 4)
    b = np.zeros(3, dtype)
    c = np.linspace(0, 1, 2 * 4, dtype=dtype).reshape(2, 4)

    def netvlad():
        y = lcnumba.netvlad_forward(x, w, b, c)
        lcnumba.netvlad_backward(np.ones_like(y), x, w, b, c)

    return netvlad


_CALLS = {"conv": _conv_call, "pool": _pool_call, "netvlad": _netvlad_call}


def families():
    """The families whose kernels warmup compiles: every 2-D family of the table (1-D forms share them)."""
    return [fam for fam in table.FAMILIES if not fam.twin]


def compile_all(verbose=False):
    """Run every operation once per dtype; return the names of the operations compiled."""
    names = []
    for dtype in (np.float32, np.float64):
        for fam in families():
            _CALLS[fam.kind](fam, dtype)()
            if verbose:
                print(f"  {fam.name} {np.dtype(dtype).name}")
            if fam.name not in names:
                names.append(fam.name)
    return names
