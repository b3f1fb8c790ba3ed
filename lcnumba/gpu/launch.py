"""Device arrays, argument checks and launch geometry shared by every CUDA kernel.

Importing ``lcnumba.gpu`` is where lcnumba first touches numba-cuda
(``lcnumba.gpu.jit``); ``import lcnumba`` never does, so the package works
without numba-cuda or a driver, and only a call with CUDA arrays raises,
naming the missing package.

Arrays. Numba device arrays (real, or the simulator's) are used as they
are; any object with ``__cuda_array_interface__`` (CuPy, PyTorch CUDA
tensors) is viewed as one with ``cuda.as_cuda_array`` (no copy). Inputs
that are not C-contiguous are copied on the device by a strided copy
kernel; outputs must be C-contiguous.

Index width. The kernels' index math is 32-bit (``lcnumba.gpu.intmath``):
``check_int32`` refuses, before any launch, an array of ``2**31`` elements
or more.

Scratch. Intermediate buffers (split partial sums, NetVLAD's
intermediates) come from ``scratch``: one buffer per (stream, dtype),
grown when a call needs more and otherwise reused, so a steady stream of
calls allocates nothing. Reuse is safe because a call's kernels are
queued on the same stream as the next call's, which run after them; the
pool keys a stream by its handle and keeps a reference to it, so that the
handle is not given to a new stream while its buffer is held. ``release_scratch`` frees the buffers.

Launch geometry. Every kernel is a grid-stride loop (over elements, or
over work items one block at a time), so its result does not depend on
the grid or block size. Threads per block come from
``lcnumba.config.THREADS_PER_BLOCK`` (at most ``jit.MAX_THREADS``, the
kernels' launch bounds), read at every launch: tests patch it
down so that tiny simulator inputs still span many blocks. Grids are
capped at ``MAX_BLOCKS``; the grid-stride loops cover the rest.
"""

import numpy as np

from .. import checks, config
from .jit import INSTALL_HINT, MAX_THREADS, SIMULATOR, cuda, is_cuda_ndarray  # noqa: F401 - INSTALL_HINT, SIMULATOR
from .kernels import copy6, fill1

#: Largest grid launched; grid-stride loops cover any larger amount of work.
MAX_BLOCKS = 65535
#: Most elements of an array the kernels' 32-bit index math addresses.
MAX_ELEMENTS = 2**31 - 1


# ---------------------------------------------------------------- launch geometry


def threads_per_block():
    """``lcnumba.config.THREADS_PER_BLOCK``, read now (tests patch it), at most the launch bounds' ``MAX_THREADS``."""
    return max(1, min(MAX_THREADS, int(config.THREADS_PER_BLOCK)))


def elementwise(kern, work, stream, *args):
    """Launch ``kern`` (a grid-stride loop over ``work`` elements); no launch when there is no work."""
    if work <= 0:
        return
    threads = threads_per_block()
    blocks = max(1, min(MAX_BLOCKS, -(-work // threads)))
    kern[blocks, threads, stream](*args)


def blockwise(kern, items, threads, stream, *args):
    """Launch ``kern`` (a block-stride loop over ``items`` work items) with ``threads`` per block."""
    if items <= 0:
        return
    kern[max(1, min(MAX_BLOCKS, items)), max(1, threads), stream](*args)


def block_threads(useful):
    """Threads per block for a block that has ``useful`` threads' worth of work: at most the configured number."""
    warps = -(-max(1, useful) // 32) * 32
    return max(1, min(threads_per_block(), warps))


# ---------------------------------------------------------------- streams


def _stream_types():
    if SIMULATOR:
        return (cuda.stream,)
    from numba.cuda.cudadrv.driver import Stream

    return (Stream,)


def stream_arg(stream):
    """Check ``stream``: 0 (the default stream) or a Numba CUDA stream."""
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, (bool, np.bool_)) and stream == 0:
        return 0
    if isinstance(stream, _stream_types()):
        return stream
    checks.not_on_device("stream", stream, "0 or a numba.cuda stream (cuda.stream(), cuda.external_stream(ptr))")


# ---------------------------------------------------------------- arrays


def _require_driver():
    if not SIMULATOR and not cuda.is_available():
        raise RuntimeError("lcnumba: a CUDA array was given, but no CUDA driver or GPU is usable "
                           "(numba.cuda.is_available() is False)")


class _HostView:
    """The simulator's stand-in for device memory: a CUDA array interface whose pointer is host memory."""

    def __init__(self, owner, desc):
        self.owner = owner
        self.__array_interface__ = {
            "shape": tuple(desc["shape"]), "typestr": desc["typestr"], "data": tuple(desc["data"]),
            "strides": desc.get("strides"), "version": 3,
        }


def _from_interface(value):
    if not SIMULATOR:
        _require_driver()
        return cuda.as_cuda_array(value)
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    desc = value.__cuda_array_interface__
    if 0 in tuple(desc["shape"]):
        return FakeCUDAArray(np.empty(tuple(desc["shape"]), np.dtype(desc["typestr"])))
    return FakeCUDAArray(np.asarray(_HostView(value, desc)))


def as_device(value, name):
    """``value`` as a Numba device array (a view, never a copy)."""
    if is_cuda_ndarray(value):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return _from_interface(value)
    checks.not_on_device(name, value, "a CUDA array (a Numba device array or an object with "
                         "__cuda_array_interface__)")


def _unit_view(arr, ndim):
    """``arr`` (any strides) viewed with leading unit axes up to rank ``ndim``, sharing its memory."""
    extra = ndim - arr.ndim
    if extra == 0:
        return arr
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.expand_dims(arr._ary, tuple(range(extra))))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    itemsize = np.dtype(arr.dtype).itemsize
    return DeviceNDArray((1,) * extra + tuple(arr.shape), (itemsize,) * extra + tuple(arr.strides),
                         arr.dtype, stream=0, gpu_data=arr.gpu_data)


_SCRATCH = {}


def scratch(shapes, dtype, stream):
    """C-contiguous device arrays of ``shapes`` (disjoint views of this stream's reused scratch buffer)."""
    dtype = np.dtype(dtype)
    sizes = [int(np.prod(shape)) for shape in shapes]
    total = max(1, sum(sizes))
    # a stream by its handle (every ``cuda.default_stream()`` object is the same stream), 0 for the default
    handle = stream if isinstance(stream, int) else id(stream) if SIMULATOR else int(stream)
    key = (0 if SIMULATOR else cuda.get_current_device().id, handle, dtype)
    held = _SCRATCH.get(key)
    if held is None or held[1].shape[0] < total:
        held = (stream, cuda.device_array(total, dtype=dtype, stream=stream))
        _SCRATCH[key] = held
    buf = held[1]
    views, offset = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(buf[offset:offset + size].reshape(shape))
        offset += size
    return views


def release_scratch():
    """Free every scratch buffer (they are made again when next needed)."""
    _SCRATCH.clear()


def check_int32(name, arr):
    """Refuse ``arr`` if it has more elements than the kernels' 32-bit index math addresses."""
    size = int(np.prod(arr.shape))
    if size > MAX_ELEMENTS:
        raise ValueError(f"{name}: CUDA arrays of at most {MAX_ELEMENTS} elements are supported, got {size}")


def empty_view(arr, dtype, ndim):
    """A zero-size device array of ``dtype`` and rank ``ndim`` on ``arr``'s memory: a typed stand-in, no allocation."""
    shape = (0,) * ndim
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.empty(shape, dtype))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    itemsize = np.dtype(dtype).itemsize
    return DeviceNDArray(shape, (itemsize,) * ndim, np.dtype(dtype), stream=0, gpu_data=arr.gpu_data)


def contiguous(arr, stream):
    """``arr`` if it is C-contiguous, else a C-contiguous copy made on the device (on ``stream``)."""
    if arr.is_c_contiguous():
        return arr
    out = cuda.device_array(tuple(arr.shape), dtype=arr.dtype, stream=stream)
    size = int(np.prod(arr.shape))
    if size:
        shape6 = (1,) * (6 - arr.ndim) + tuple(arr.shape)
        elementwise(copy6, size, stream, _unit_view(arr, 6), out.reshape(shape6))
    return out


def fill(arr, value, stream):
    """Set every element of the C-contiguous device array ``arr`` to ``value``."""
    size = int(np.prod(arr.shape))
    if size:
        elementwise(fill1, size, stream, arr.reshape(size), arr.dtype.type(value))


def float_array(value, name, ndim, dtype=None, stream=0):
    """The CUDA twin of ``checks.float_array``: check rank and dtype, return a C-contiguous device array."""
    arr = as_device(value, name)
    checks.array_rank(name, arr.shape, ndim)
    checks.float_dtype(name, arr.dtype, dtype)
    check_int32(name, arr)
    return contiguous(arr, stream)


def index_array(value, name, shape, stream=0):
    """The CUDA twin of ``checks.index_array``: an int64 device array of exactly ``shape``, C-contiguous."""
    arr = as_device(value, name)
    checks.index_dtype_and_shape(name, arr.dtype, arr.shape, shape)
    check_int32(name, arr)
    return contiguous(arr, stream)


def _byte_span(arr):
    desc = arr.__cuda_array_interface__
    ptr = int(desc["data"][0])
    shape = tuple(desc["shape"])
    itemsize = np.dtype(desc["typestr"]).itemsize
    strides = desc.get("strides")
    if strides is None:
        strides, step = [], itemsize
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
    if 0 in shape:
        return ptr, ptr
    lo = ptr + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    hi = ptr + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + itemsize
    return lo, hi


def overlaps(a, b):
    """Whether device arrays ``a`` and ``b`` may share memory (exact in the simulator, by byte span on a GPU)."""
    if SIMULATOR:
        return bool(np.shares_memory(a._ary, b._ary))
    lo_a, hi_a = _byte_span(a)
    lo_b, hi_b = _byte_span(b)
    return lo_a < hi_b and lo_b < hi_a and lo_a < hi_a and lo_b < hi_b


def output(out, name, shape, dtype, inputs, stream=0):
    """The CUDA twin of ``checks.output``: check a caller's ``out`` buffer, or allocate one on ``stream``."""
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    if int(np.prod(shape)) > MAX_ELEMENTS:
        raise ValueError(f"{name}: CUDA arrays of at most {MAX_ELEMENTS} elements are supported, got shape {shape}")
    if out is None:
        return cuda.device_array(shape, dtype=dtype, stream=stream)
    if not checks.is_cuda_array(out):
        checks.not_on_device(name, out, f"a CUDA array of shape {shape} and dtype {dtype}")
    desc = getattr(out, "__cuda_array_interface__", None)
    arr = as_device(out, name)
    checks.output_buffer(name, arr.shape, arr.dtype, shape, dtype, c_contiguous=arr.is_c_contiguous(),
                         strides=arr.strides, writeable=not (desc is not None and desc.get("data", (0, False))[1]))
    checks.no_overlap(name, inputs, lambda input_name, array: overlaps(arr, as_device(array, input_name)))
    return arr
