"""Compile every CPU kernel for float32 and float64 into Numba's on-disk cache.

Kernels are compiled lazily, on first use, because eager signatures would
slow ``import lcnumba``. ``python -m lcnumba warmup`` calls each operation
once on tiny inputs so that later processes only load machine code.
"""

import numpy as np

import lcnumba


def _conv_calls(dtype):
    x = np.ones((1, 2, 5, 5), dtype)
    conv_w = np.ones((2, 2, 3, 3), dtype)
    tiled_w = np.ones((2, 2, 2, 2, 3, 3), dtype)
    local_w = np.ones((3, 3, 2, 2, 3, 3), dtype)
    for name, w, b in (("conv2d", conv_w, np.ones(2, dtype)),
                       ("tiled_conv2d", tiled_w, np.ones((2, 2, 2), dtype)),
                       ("local_conv2d", local_w, np.ones((2, 3, 3), dtype))):
        forward = getattr(lcnumba, f"{name}_forward")
        backward = getattr(lcnumba, f"{name}_backward")
        yield name, lambda forward=forward, backward=backward, w=w, b=b: backward(forward(x, w, b), x, w, b)


def _pool_calls(dtype):
    if not hasattr(lcnumba, "max_pool2d_forward"):
        return
    x = np.ones((1, 2, 6, 6), dtype)

    def pool():
        lcnumba.max_pool2d_forward(x, 2)
        y, indices = lcnumba.max_pool2d_forward(x, 2, return_indices=True)
        lcnumba.max_pool2d_backward(y, indices, x.shape)

    yield "max_pool2d", pool


def _netvlad_calls(dtype):
    if not hasattr(lcnumba, "netvlad_forward"):
        return
    x = np.linspace(-1, 1, 2 * 4 * 6, dtype=dtype).reshape(2, 4, 6)
    w = np.linspace(-1, 1, 3 * 4, dtype=dtype).reshape(3, 4)
    b = np.zeros(3, dtype)
    c = np.linspace(0, 1, 2 * 4, dtype=dtype).reshape(2, 4)

    def netvlad():
        y = lcnumba.netvlad_forward(x, w, b, c)
        lcnumba.netvlad_backward(np.ones_like(y), x, w, b, c)

    yield "netvlad", netvlad


def compile_all(verbose=False):
    """Run every operation once per dtype; return the names of the operations compiled."""
    names = []
    for dtype in (np.float32, np.float64):
        for source in (_conv_calls, _pool_calls, _netvlad_calls):
            for name, call in source(dtype):
                call()
                if verbose:
                    print(f"  {name} {np.dtype(dtype).name}")
                if name not in names:
                    names.append(name)
    return names
