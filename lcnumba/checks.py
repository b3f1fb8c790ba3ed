"""Argument checks for every public function; all error messages live here.

Every message names the argument, what was expected and what was given, so
a caller can fix the call without reading the source. ``TypeError`` answers a
wrong type, dtype or device mix; ``ValueError`` a wrong shape or parameter.
The checks run in signature order, as reference BLAS does, and always before
any kernel: Numba kernels do not bounds-check.
"""

import numbers
import operator
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The largest stride, padding, dilation or kernel size accepted: far beyond any real layer, and
#: small enough that the kernels' int64 index arithmetic (``i * stride - pad + a * dilation``
#: over arrays that fit in memory) cannot overflow.
MAX_PARAMETER = 2**31 - 1


def _physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: only int64 overflow is refused
        return None


#: Outputs larger than this many bytes are refused before any allocation: the physical memory
#: (an output that cannot fit in it would only be paged out or killed), at most 2**63 - 1.
MAX_OUTPUT_BYTES = min(_physical_memory() or 2**63 - 1, 2**63 - 1)


def describe(value):
    """A short description of ``value`` for error messages."""
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray of shape {value.shape} and dtype {value.dtype}"
    if is_cuda_array(value):
        shape = getattr(value, "shape", "?")
        dtype = getattr(value, "dtype", "?")
        return f"CUDA array {type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def type_error(name, expected, given):
    """A ``TypeError`` naming the argument, what was expected and what was given."""
    return TypeError(f"{name}: expected {expected}, got {given}")


def value_error(name, expected, given):
    """A ``ValueError`` naming the argument, what was expected and what was given."""
    return ValueError(f"{name}: expected {expected}, got {given}")


def is_cuda_array(obj):
    """True for Numba device arrays (real or simulated) and ``__cuda_array_interface__`` objects.

    Attribute probes only, so that this works without numba-cuda installed.
    """
    return hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "__cuda_ndarray__")


# ---------------------------------------------------------------- scalars


def integer(value, name, *, minimum=None):
    """``value`` as a Python int; bool and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise type_error(name, "an int", describe(value))
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise value_error(name, f"an int >= {minimum}", value)
    return value


def int_tuple(value, name, length, *, minimum):
    """An int or a sequence of ``length`` ints, as a tuple of ``length`` ints >= ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != length:
            raise value_error(name, f"an int or {length} ints", tuple(value))
        items = tuple(value)
    else:
        items = (value,) * length
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise type_error(name, f"an int or {length} ints", describe(value))
    items = tuple(operator.index(item) for item in items)
    if any(item < minimum for item in items):
        raise value_error(name, f"ints >= {minimum}", items)
    return items


def flag(value, name):
    """``value`` as a bool; only bools (Python or NumPy) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise type_error(name, "a bool", describe(value))
    return bool(value)


def positive_float(value, name):
    """``value`` as a finite float > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise type_error(name, "a float", describe(value))
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise value_error(name, "a finite float > 0", value)
    return value


def choice(value, name, choices):
    """``value`` if it is one of ``choices`` (strings)."""
    if not isinstance(value, str):
        raise type_error(name, f"one of {choices}", describe(value))
    if value not in choices:
        raise value_error(name, f"one of {choices}", repr(value))
    return value


def shape_tuple(value, name, ndim):
    """A shape argument (like ``input_shape``) as a tuple of ``ndim`` ints >= 0."""
    if not isinstance(value, (tuple, list)):
        raise type_error(name, f"a tuple of {ndim} ints", describe(value))
    if len(value) != ndim:
        raise value_error(name, f"a tuple of {ndim} ints", tuple(value))
    return int_tuple(tuple(value), name, ndim, minimum=0)


# ---------------------------------------------------------------- arrays


def device_of(named_arrays):
    """``"cpu"`` or ``"cuda"`` for the non-None arrays of ``{name: array}``.

    Mixing NumPy and CUDA arrays in one call is a ``TypeError``.
    """
    devices = {}
    for name, value in named_arrays.items():
        if value is None:
            continue
        devices.setdefault("cuda" if is_cuda_array(value) else "cpu", name)
    if len(devices) > 1:
        raise TypeError(
            f"{devices['cuda']}: expected an array on the same device as {devices['cpu']} "
            f"(NumPy arrays run on the CPU, CUDA arrays on the GPU), got a CUDA array "
            f"mixed with a NumPy array"
        )
    return next(iter(devices), "cpu")


def float_array(value, name, ndim, dtype=None):
    """Check a NumPy input array and return it C-contiguous.

    ``ndim`` is an int or a tuple of accepted ranks; ``dtype`` (if given) is the
    dtype every floating array of the call must share. Non-contiguous inputs
    are copied, never modified.
    """
    if not isinstance(value, np.ndarray):
        raise type_error(name, "a numpy.ndarray of float32 or float64", describe(value))
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if value.ndim not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise value_error(name, f"a {expected} array", f"shape {value.shape}")
    if value.dtype not in FLOAT_DTYPES:
        raise type_error(name, "dtype float32 or float64", f"dtype {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise type_error(name, f"dtype {dtype} like the other arrays of this call", f"dtype {value.dtype}")
    return np.ascontiguousarray(value)


def index_array(value, name, shape):
    """Check an int64 index array of exactly ``shape``; return it C-contiguous."""
    if not isinstance(value, np.ndarray):
        raise type_error(name, "a numpy.ndarray of int64", describe(value))
    if value.dtype != np.int64:
        raise type_error(name, "dtype int64", f"dtype {value.dtype}")
    if value.shape != tuple(shape):
        raise value_error(name, f"shape {tuple(shape)}", f"shape {value.shape}")
    return np.ascontiguousarray(value)


def at_most(values, name, maximum=MAX_PARAMETER):
    """``ValueError`` if any of the ints ``values`` (a normalised parameter of ``name``) exceeds ``maximum``."""
    values = tuple(values)
    if max(values) > maximum:
        raise value_error(name, f"ints <= {maximum}", values if len(values) > 1 else values[0])


def output_bytes(shape, dtype):
    """Bytes an array of ``shape`` and ``dtype`` needs, as a Python int (no overflow)."""
    count = 1
    for size in shape:
        count *= int(size)
    return count * np.dtype(dtype).itemsize


def shape_equal(array, name, expected, why=""):
    """A ``ValueError`` unless ``array.shape == expected``."""
    if tuple(array.shape) != tuple(expected):
        suffix = f" ({why})" if why else ""
        raise value_error(name, f"shape {tuple(expected)}{suffix}", f"shape {tuple(array.shape)}")


def output(out, name, shape, dtype, inputs):
    """Check a caller's ``out`` buffer, or allocate one when ``out is None``.

    ``out`` must be a C-contiguous, writeable NumPy array of exactly ``shape``
    and ``dtype`` that shares no memory with any array of ``inputs``. An output
    that would need more than ``MAX_OUTPUT_BYTES`` is refused before anything is
    allocated (``ValueError``), as is one whose size overflows int64.
    """
    shape = tuple(shape)
    if out is None:
        nbytes = output_bytes(shape, dtype)
        if nbytes > MAX_OUTPUT_BYTES:
            raise value_error(name, f"an output of at most {MAX_OUTPUT_BYTES} bytes (the physical memory)",
                              f"shape {shape} of {np.dtype(dtype)}, which would need {nbytes} bytes")
        if output_bytes([size for size in shape if size], dtype) > 2**63 - 1:  # NumPy's limit, even if empty
            raise value_error(name, "an output whose nonzero sizes multiply to at most 2**63 - 1 bytes",
                              f"shape {shape} of {np.dtype(dtype)}")
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise type_error(name, f"a numpy.ndarray of shape {shape} and dtype {np.dtype(dtype)}", describe(out))
    if out.dtype != dtype:
        raise type_error(name, f"dtype {np.dtype(dtype)}", f"dtype {out.dtype}")
    if out.shape != shape:
        raise value_error(name, f"shape {shape}", f"shape {out.shape}")
    if not out.flags.c_contiguous:
        raise value_error(name, "a C-contiguous array", f"strides {out.strides}")
    if not out.flags.writeable:
        raise value_error(name, "a writeable array", "a read-only array")
    for input_name, array in inputs.items():
        if array is not None and np.may_share_memory(out, array) and np.shares_memory(out, array):
            raise value_error(name, f"a buffer that does not overlap {input_name}", "overlapping memory")
    return out
