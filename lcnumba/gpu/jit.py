"""Compilation of the CUDA kernels and device functions, and the import of numba-cuda.

The one module of lcnumba that imports numba-cuda: every other module of
``lcnumba.gpu`` takes ``cuda`` and the decorators from here, so a missing
numba-cuda raises the install hint wherever ``lcnumba.gpu`` is entered.
"""

INSTALL_HINT = "CUDA arrays need numba-cuda: pip install lcnumba[cuda] (or pip install numba-cuda)"

try:
    from numba import cuda
    from numba.cuda import config as _cuda_config
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray  # noqa: F401 - for lcnumba.gpu.launch
except ImportError as exc:  # numba-cuda (or its CUDA bindings) not installed
    raise ImportError(f"lcnumba: {INSTALL_HINT}") from exc

#: True when Numba runs CUDA kernels in its simulator (``NUMBA_ENABLE_CUDASIM=1``).
SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)


def kernel(fn):
    """``fn`` compiled as a CUDA kernel (lazily, once per argument types)."""
    return cuda.jit(fn)


def device_function(fn):
    """``fn`` (plain Python, e.g. of ``lcnumba.indexing``) compiled as a CUDA device function.

    Inlined on a GPU; the simulator runs device functions as Python and takes no ``forceinline``.
    """
    if SIMULATOR:
        return cuda.jit(device=True)(fn)
    return cuda.jit(device=True, forceinline=True)(fn)
