"""Compilation of the CUDA kernels and device functions, and the import of numba-cuda.

The one module of lcnumba that imports numba-cuda: every other module of
``lcnumba.gpu`` takes ``cuda`` and the decorators from here, so a missing
numba-cuda raises the install hint wherever ``lcnumba.gpu`` is entered.

Kernels are compiled for explicit signatures: a kernel declares its
argument types once, as a Numba signature string in which ``{f}`` stands
for the floating-point type, and is compiled for ``float32`` or ``float64``
on its first launch with that dtype (then kept). A kernel compiled for one
signature is a *specialised* dispatcher: its launches pack the arguments
without typing them (``typeof`` of every argument is most of a lazy
dispatcher's launch cost), and a launch with arrays of another layout
cannot silently compile a second version. Integer scalars are ``int32``:
the index math of every kernel is 32-bit (the cores refuse arrays past
``2**31 - 1`` elements before a kernel is reached, ``launch.check_int32``).

Every kernel is compiled with launch bounds of ``MAX_THREADS`` threads and
``min_blocks`` resident blocks per multiprocessor (``MIN_BLOCKS`` unless it
says otherwise), which caps it at ``65536 / (MAX_THREADS * min_blocks)``
registers per thread: 64 for ``MIN_BLOCKS``. A kernel that would spill
under that cap declares fewer blocks (``benchmarks/gpu_report.py`` shows
registers and spills per kernel).
"""

INSTALL_HINT = "CUDA arrays need numba-cuda: pip install lcnumba[cuda] (or pip install numba-cuda)"

try:
    from numba import cuda
    from numba.cuda import config as _cuda_config
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray  # noqa: F401 - for lcnumba.gpu.launch
except ImportError as exc:  # numba-cuda (or its CUDA bindings) not installed
    raise ImportError(f"lcnumba: {INSTALL_HINT}") from exc

import numpy as np
from numba.np.numpy_support import from_dtype

#: True when Numba runs CUDA kernels in its simulator (``NUMBA_ENABLE_CUDASIM=1``).
SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)

#: Most threads per block of any launch, and the blocks per multiprocessor the register budget is sized for.
MAX_THREADS = 256
MIN_BLOCKS = 4



class Kernel:
    """A CUDA kernel compiled once per element dtype for its declared signature.

    ``kernel[blocks, threads, stream](*args)`` launches it as a Numba
    dispatcher is launched; the dtype that fills ``{f}`` is that of the
    first array among ``args`` (the kernels put a data array first).
    """

    def __init__(self, fn, signature, min_blocks):
        self.py_func = fn
        self.signature = signature
        self.launch_bounds = (MAX_THREADS, min_blocks)
        self._compiled = {}
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def signature_for(self, dtype):
        """The Numba signature string of the launches with element type ``dtype``."""
        return self.signature.format(f=str(from_dtype(np.dtype(dtype))))

    def compiled(self, dtype):
        """The dispatcher of ``dtype``, compiled now if this is the first launch with it."""
        dtype = np.dtype(dtype)
        disp = self._compiled.get(dtype)
        if disp is None:
            options = {} if SIMULATOR else {"launch_bounds": self.launch_bounds}  # the simulator takes none
            disp = cuda.jit(self.signature_for(dtype), **options)(self.py_func)
            self._compiled[dtype] = disp
        return disp

    def __getitem__(self, config):
        def launch(*args):
            dtype = next(a.dtype for a in args if hasattr(a, "dtype"))
            if SIMULATOR:  # a GPU takes the arguments as declared, unchecked: check them where there is time
                check_arguments(self.__name__, self.signature_for(dtype), args)
            self.compiled(dtype)[config](*args)

        return launch


def check_arguments(name, signature, args):
    """``TypeError`` unless ``args`` are what ``signature`` declares: a specialised dispatcher on a GPU packs
    them by the signature without looking (a tuple one short would shift every later argument)."""
    from numba.core import sigutils, types

    argtypes, _ = sigutils.normalize_signature(signature)
    problem = None
    if len(argtypes) != len(args):
        problem = f"{len(args)} arguments for {len(argtypes)}"
    for i, (ty, arg) in enumerate(zip(argtypes, args)):
        if problem:
            break
        if isinstance(ty, types.Array):
            if (getattr(arg, "ndim", None) != ty.ndim or np.dtype(arg.dtype) != np.dtype(str(ty.dtype))
                    or (ty.layout == "C" and not arg.is_c_contiguous())):
                problem = f"argument {i}: {getattr(arg, 'dtype', type(arg).__name__)} array of shape " \
                          f"{getattr(arg, 'shape', None)} for {ty}"
        elif isinstance(ty, types.BaseTuple):
            if not isinstance(arg, tuple) or len(arg) != len(ty) or \
                    not all(isinstance(v, (bool, int, np.integer, np.bool_)) for v in arg):
                problem = f"argument {i}: {arg!r} for {ty}"
        elif isinstance(arg, (tuple, list)) or hasattr(arg, "shape") and np.ndim(arg):
            problem = f"argument {i}: {type(arg).__name__} for {ty}"
    if problem:
        raise TypeError(f"lcnumba: kernel {name} launched with {problem} ({signature})")


def kernel(signature, min_blocks=MIN_BLOCKS):
    """Decorator: ``fn`` as a ``Kernel`` of ``signature`` (``"void(...)"``, ``{f}`` for the float type).

    Used bare (``@kernel`` on a function), it compiles the function lazily for whatever argument types
    it is launched with, as ``numba.cuda.jit`` does: for a kernel whose signature is not declared yet.
    """
    if callable(signature):
        return cuda.jit(signature)
    return lambda fn: Kernel(fn, signature, min_blocks)


def device_function(fn):
    """``fn`` (plain Python, e.g. of ``lcnumba.indexing``) compiled as a CUDA device function.

    Inlined on a GPU; the simulator runs device functions as Python and takes no ``forceinline``.
    """
    if SIMULATOR:
        return cuda.jit(device=True)(fn)
    return cuda.jit(device=True, forceinline=True)(fn)
