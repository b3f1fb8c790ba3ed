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


def array_rank(name, shape, ndim):
    """``ValueError`` unless ``len(shape)`` is ``ndim`` (an int, or a tuple of accepted ranks)."""
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise value_error(name, f"a {expected} array", f"shape {tuple(shape)}")


def float_dtype(name, dtype, like=None):
    """``TypeError`` unless ``dtype`` is float32 or float64 (and ``like``, when given)."""
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise type_error(name, "dtype float32 or float64", f"dtype {dtype}")
    if like is not None and np.dtype(dtype) != like:
        raise type_error(name, f"dtype {like} like the other arrays of this call", f"dtype {dtype}")


def index_dtype_and_shape(name, dtype, shape, expected):
    """An index array: int64 of exactly ``expected`` shape."""
    if np.dtype(dtype) != np.int64:
        raise type_error(name, "dtype int64", f"dtype {dtype}")
    if tuple(shape) != tuple(expected):
        raise value_error(name, f"shape {tuple(expected)}", f"shape {tuple(shape)}")


def output_buffer(name, shape, dtype, expected_shape, expected_dtype, *, c_contiguous, strides, writeable):
    """A caller's ``out``: exactly ``expected_shape`` and ``expected_dtype``, C-contiguous and writeable."""
    if np.dtype(dtype) != expected_dtype:
        raise type_error(name, f"dtype {np.dtype(expected_dtype)}", f"dtype {dtype}")
    if tuple(shape) != tuple(expected_shape):
        raise value_error(name, f"shape {tuple(expected_shape)}", f"shape {tuple(shape)}")
    if not c_contiguous:
        raise value_error(name, "a C-contiguous array", f"strides {tuple(strides)}")
    if not writeable:
        raise value_error(name, "a writeable array", "a read-only array")


def no_overlap(name, inputs, overlaps):
    """``out`` shares no memory with any input: ``overlaps(input_name, array)`` says whether one does."""
    for input_name, array in inputs.items():
        if array is not None and overlaps(input_name, array):
            raise value_error(name, f"a buffer that does not overlap {input_name}", "overlapping memory")


def not_on_device(name, value, device_kind):
    """``TypeError`` for an argument that is not an array of the call's device."""
    raise type_error(name, device_kind, describe(value))


def host_array(value):
    """``value`` as a NumPy array when it is a CPU array of another library (``__dlpack__``), without a copy.

    PyTorch CPU tensors, JAX CPU arrays and anything else with ``__dlpack__``
    are viewed through DLPack (``np.from_dlpack``); everything else is returned
    as it is, for the checks to accept or refuse. CUDA arrays never come here
    (``device_of`` sends them to the device backend).
    """
    if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack__") or is_cuda_array(value):
        return value
    try:
        return np.from_dlpack(value)
    except (TypeError, ValueError, RuntimeError, BufferError):  # not a CPU array, or not exportable (e.g. requires grad)
        return value


def float_array(value, name, ndim, dtype=None):
    """Check a NumPy (or DLPack CPU) input array and return it C-contiguous.

    ``ndim`` is an int or a tuple of accepted ranks; ``dtype`` (if given) is the
    dtype every floating array of the call must share. Non-contiguous inputs
    are copied, never modified.
    """
    value = host_array(value)
    if not isinstance(value, np.ndarray):
        not_on_device(name, value, "a numpy.ndarray of float32 or float64")
    array_rank(name, value.shape, ndim)
    float_dtype(name, value.dtype, dtype)
    return np.ascontiguousarray(value)


def index_array(value, name, shape):
    """Check an int64 index array of exactly ``shape``; return it C-contiguous."""
    value = host_array(value)
    if not isinstance(value, np.ndarray):
        not_on_device(name, value, "a numpy.ndarray of int64")
    index_dtype_and_shape(name, value.dtype, value.shape, shape)
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
        allocatable(name, shape, dtype)
        return np.empty(shape, dtype=dtype)
    out = host_array(out)
    if not isinstance(out, np.ndarray):
        not_on_device(name, out, f"a numpy.ndarray of shape {shape} and dtype {np.dtype(dtype)}")
    output_buffer(name, out.shape, out.dtype, shape, dtype, c_contiguous=out.flags.c_contiguous,
                  strides=out.strides, writeable=out.flags.writeable)
    no_overlap(name, inputs, lambda _, array: np.may_share_memory(out, host_array(array))
               and np.shares_memory(out, host_array(array)))
    return out


def allocatable(name, shape, dtype):
    """An output lcnumba allocates must fit in memory and in NumPy's size limit."""
    fits_in_memory(name, shape, dtype, "an output")
    if output_bytes([size for size in shape if size], dtype) > 2**63 - 1:  # NumPy's limit, even if empty
        raise value_error(name, "an output whose nonzero sizes multiply to at most 2**63 - 1 bytes",
                          f"shape {shape} of {np.dtype(dtype)}")


def common_dtype(named_arrays):
    """The one dtype of the checked float arrays ``{name: array or None}``; a mix is a ``TypeError``.

    The message names the array that differs from the others: the odd one out when one dtype
    is held by more than half of the arrays; with no majority, the first array whose dtype differs
    from the first array's, followed by every array and its dtype.
    """
    dtypes = {name: np.dtype(array.dtype) for name, array in named_arrays.items() if array is not None}
    kinds = set(dtypes.values())
    if len(kinds) <= 1:
        return next(iter(kinds), None)
    counts = {dtype: sum(1 for d in dtypes.values() if d == dtype) for dtype in kinds}
    majority = max(counts, key=counts.get)
    if 2 * counts[majority] > len(dtypes):
        agree = [name for name, d in dtypes.items() if d == majority]
        odd = next(name for name, d in dtypes.items() if d != majority)
        raise type_error(odd, f"dtype {majority} like {_listed(agree)}", f"dtype {dtypes[odd]}")
    first = next(iter(dtypes.values()))
    odd = next(name for name, d in dtypes.items() if d != first)
    every = ", ".join(f"{name} {d}" for name, d in dtypes.items())
    raise type_error(odd, "one dtype (float32 or float64) for every array of the call", f"dtypes {every}")


def _listed(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ---------------------------------------------------------------- shapes of the convolution family


def positive_dims(shape, name):
    """A weight (or ``weight_shape``) needs every dimension >= 1."""
    if any(d < 1 for d in shape):
        raise value_error(name, "a shape with every dimension >= 1", f"shape {tuple(shape)}")


def channels_per_group(name, w_shape, axis, c, groups):
    """The weight's C/groups axis (``axis``) must match the input's channels split into ``groups``."""
    if w_shape[axis] * groups != c:
        raise value_error(name, f"C/groups = {c}//{groups} = {c // groups} input channels per filter "
                          f"(dimension {axis})", f"shape {tuple(w_shape)}")


def bank_per_position(name, w_shape, expected, positions, where="output"):
    """A local weight holds one filter bank per output (transposed: input) position: ``expected`` for ``positions``."""
    if tuple(w_shape) != tuple(expected):
        size = "x".join(str(p) for p in positions)
        raise value_error(name, f"a filter bank per {where} position, shape {tuple(expected)} for the {size} {where}",
                          f"shape {tuple(w_shape)}")


def input_channels(name, w_shape, axis, c):
    """A transposed op's weight holds one bank row per input channel: its axis ``axis`` must be ``c``."""
    if w_shape[axis] != c:
        raise value_error(name, f"C = {c} input channels (dimension {axis})", f"shape {tuple(w_shape)}")


def output_padding_below(output_padding, stride, dilation):
    """PyTorch's rule: each ``output_padding`` is smaller than the stride or the dilation of its axis."""
    if any(p >= max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
        limit = tuple(max(s, d) for s, d in zip(stride, dilation))
        raise value_error("output_padding", f"each smaller than the stride or the dilation (< {_one_or_tuple(limit)})",
                          _one_or_tuple(tuple(output_padding)))


def transpose_output_positive(size, input_shape):
    """A transposed op whose padding exceeds what its kernel adds has no output position."""
    raise value_error("padding", f"at most what the dilated kernel and output_padding add to the {tuple(input_shape)} "
                      "input", f"an output size of {'x'.join(map(str, size))}")


def accumulate_needs_out(accumulate, out):
    if accumulate and out is None:
        raise value_error("out", "an array to accumulate into when accumulate=True", None)


def bias_per_filter(bias_shape, filters):
    if bias_shape[0] != filters:
        raise value_error("bias_shape", f"{filters} biases (one per filter of dy) first", bias_shape)


def bias_tiles(bias_shape, th, tw):
    if th < 1 or tw < 1:
        raise value_error("bias_shape", "at least one tile per axis", bias_shape)


def bias_per_position(bias_shape, expected):
    if tuple(bias_shape) != tuple(expected):
        raise value_error("bias_shape", f"a bias per output position, {tuple(expected)}", bias_shape)


def nonempty_positions(dy, oh, ow):
    if oh == 0 or ow == 0:
        raise value_error("dy", "an output gradient with at least one output position", f"shape {tuple(dy.shape)}")


def kernel_too_large(name, padded, extent):
    """The dilated kernel (``extent`` per axis) must fit the padded input (``padded`` per axis)."""
    raise value_error(name, f"a dilated kernel no larger than the padded input ({'x'.join(map(str, padded))})",
                      f"a dilated kernel of {'x'.join(map(str, extent))}")


def padding_fits_mode(padding_mode, pads, size, spatial):
    """PyTorch's bounds on the padding of a mode: reflect ``< size``, circular ``<= size``, replicate a cell to copy.

    ``pads`` is ``(top, bottom, left, right)`` and ``size`` ``(H, W)`` of the 2-D form; a 1-D call
    (``spatial`` 1) is reported along L only. A side without padding copies nothing and is always fine.
    """
    sides = ((pads[0], size[0]), (pads[1], size[0]), (pads[2], size[1]), (pads[3], size[1]))
    fits = {"reflect": lambda p, n: p < n, "circular": lambda p, n: p <= n, "replicate": lambda p, n: n >= 1}
    if padding_mode not in fits or all(p == 0 or fits[padding_mode](p, n) for p, n in sides):
        return
    expected = {"reflect": "padding smaller than the input size on each side",
                "circular": "padding at most the input size on each side",
                "replicate": "an input cell to copy on each padded side"}[padding_mode]
    given = ((pads[0], pads[1]), (pads[2], pads[3]))[2 - spatial:]
    where = f"input size {size[0]}x{size[1]}" if spatial == 2 else f"input length {size[1]}"
    raise value_error("padding", f"{expected} with padding_mode={padding_mode!r}",
                      f"padding {given[0] if spatial == 1 else given} for the {where}")


def same_needs_stride_1(name, stride):
    raise value_error(name, '"same" only with stride 1', f"stride {_one_or_tuple(stride)}")


# ---------------------------------------------------------------- max-pooling


def pool_padding(padding, kernel):
    """PyTorch's rule: padding at most half the kernel, per axis."""
    half = tuple(k // 2 for k in kernel)
    if any(p > h for p, h in zip(padding, half)):
        raise value_error("padding", f"at most half the kernel size, {_one_or_tuple(half)} for kernel_size "
                          f"{_one_or_tuple(kernel)}", _one_or_tuple(padding))


def _one_or_tuple(values):
    """A parameter as the caller of a 1-D function (one int) or a 2-D one (a pair) spells it."""
    values = tuple(values)
    return values if len(values) > 1 else values[0]


def nonempty_plane(name, cells, shape):
    if cells < 1:
        raise value_error(name, "an input plane of at least one cell", f"shape {tuple(shape)}")


def pool_index_valid(bad, plane_size):
    """``ValueError`` for the index ``bad`` (not None) outside ``[-1, plane_size)``: the scatter refused it."""
    if bad is not None:
        raise value_error("indices", f"flat positions in [0, {plane_size}) of the input plane (or -1 for none)",
                          f"index {bad}")


def none_without_kernel_size(name, value):
    """The backward's geometry is given by ``kernel_size``: its other parameters need it."""
    if value is not None:
        raise value_error(name, "None when kernel_size is None (the backward's geometry starts with kernel_size)",
                          describe(value))


def pool_gradient_shape(dy_shape, expected, input_shape):
    """``dy`` (and ``indices``, of ``dy``'s shape) must be the forward's output for this geometry."""
    if tuple(dy_shape) != tuple(expected):
        raise value_error("dy", f"shape {tuple(expected)}, the output of the forward on input_shape "
                          f"{tuple(input_shape)} with this kernel_size, stride, padding, dilation and ceil_mode "
                          f"(indices has the shape of dy)", f"shape {tuple(dy_shape)}")


def input_batch_and_channels(input_shape, dy_shape):
    if tuple(input_shape[:2]) != tuple(dy_shape[:2]):
        rest = "H, W" if len(dy_shape) == 4 else "L"
        raise value_error("input_shape", f"the batch and channels of dy, ({dy_shape[0]}, {dy_shape[1]}, {rest})",
                          tuple(input_shape))


def indices_none_without_return(indices_out):
    if indices_out is not None:
        raise value_error("indices_out", "None when return_indices is False", describe(indices_out))


# ---------------------------------------------------------------- NetVLAD


def netvlad_shapes(x_shape, w_shape, b_shape, centroids_shape):
    """x (N, D, ...), w (K + G, D), b (K + G,), centroids (K, D) with 1 <= K <= K + G, D >= 1."""
    d = x_shape[1]
    if d < 1:
        raise value_error("x", "descriptors of size D >= 1, (N, D, H, W) or (N, D, M)", f"shape {x_shape}")
    if w_shape[1] != d:
        raise value_error("w", f"shape (K + G, {d}): D = {d} weights per cluster, the descriptor size of x "
                          f"(shape {x_shape})", f"shape {w_shape} (D = {w_shape[1]})")
    if b_shape != (w_shape[0],):
        raise value_error("b", f"shape {(w_shape[0],)} (one bias per row of w)", f"shape {b_shape}")
    k = centroids_shape[0]
    if k < 1 or centroids_shape[1] != d or k > w_shape[0]:
        raise value_error("centroids", f"shape (K, {d}) with 1 <= K <= {w_shape[0]} (the rows of w)",
                          f"shape {centroids_shape}")


def mask_dtype_and_shape(name, dtype, shape, x_shape):
    """A mask of valid descriptors: bool or integer, (N, M) or (N, H, W) for x of shape (N, D, ...)."""
    if np.dtype(dtype).kind not in "biu":
        raise type_error(name, "an array of bool or integers (0: masked descriptor, nonzero: valid)",
                         f"dtype {np.dtype(dtype)}")
    n, m = x_shape[0], int(np.prod(x_shape[2:]))
    accepted = {(n, m), (n,) + tuple(x_shape[2:])}
    if tuple(shape) not in accepted:
        spatial = f" or {(n,) + tuple(x_shape[2:])}" if len(x_shape) == 4 else ""
        raise value_error(name, f"shape {(n, m)}{spatial}: one entry per descriptor of x (shape {tuple(x_shape)})",
                          f"shape {tuple(shape)}")


def mask_array(value, name, x_shape):
    """Check a mask of valid descriptors for x; return it as C-contiguous uint8 (N, M), 1 where valid."""
    value = host_array(value)
    if not isinstance(value, np.ndarray):
        not_on_device(name, value, "a numpy.ndarray of bool or integers")
    mask_dtype_and_shape(name, value.dtype, value.shape, x_shape)
    return np.ascontiguousarray(value != 0).view(np.uint8).reshape(x_shape[0], int(np.prod(x_shape[2:])))


def assignment_shape(shape, x_shape, centroids_shape):
    """The soft-assignment of vlad_aggregate: (N, K, M) or (N, K, H, W) for x (N, D, ...) and K centroids."""
    expected = (x_shape[0], centroids_shape[0]) + tuple(x_shape[2:])
    if tuple(shape) != expected:
        raise value_error("assignment", f"shape {expected}: (N, K) + the descriptor axes of x (shape "
                          f"{tuple(x_shape)}), K the rows of centroids", f"shape {tuple(shape)}")


def centroids_per_descriptor(centroids_shape, x_shape):
    """Centroids (K, D) with K >= 1 and D >= 1 the descriptor size of x."""
    if x_shape[1] < 1:
        raise value_error("x", "descriptors of size D >= 1, (N, D, H, W) or (N, D, M)", f"shape {tuple(x_shape)}")
    if centroids_shape[0] < 1 or centroids_shape[1] != x_shape[1]:
        raise value_error("centroids", f"shape (K, {x_shape[1]}) with K >= 1 (D = {x_shape[1]}, the descriptor "
                          f"size of x)", f"shape {tuple(centroids_shape)}")


def pca_shapes(v_shape, projection_shape, bias_shape):
    """PCA layer: v (N, P), projection (Q, P), bias (Q,) with Q >= 1."""
    if projection_shape[0] < 1 or projection_shape[1] != v_shape[1]:
        raise value_error("projection", f"shape (dim, {v_shape[1]}) with dim >= 1 (one row per output, one column "
                          f"per entry of v, shape {tuple(v_shape)})", f"shape {tuple(projection_shape)}")
    if tuple(bias_shape) != (projection_shape[0],):
        raise value_error("bias", f"shape {(projection_shape[0],)} (one per row of projection)",
                          f"shape {tuple(bias_shape)}")


def pca_dim(dim, vectors_shape):
    """``dim`` of a PCA fit: 1 <= dim <= min(vectors - 1, their size), the rank the centred vectors can have."""
    dim = integer(dim, "dim", minimum=1)
    limit = min(vectors_shape[0] - 1, vectors_shape[1])
    if dim > limit:
        raise value_error("dim", f"an int in [1, {limit}]: at most the number of vectors - 1 and their size, "
                          f"for vectors of shape {tuple(vectors_shape)}", dim)
    return dim


def groups_divide(groups, channels, input_name, filters, weight_name):
    """``groups`` divides both the input channels and the filters (PyTorch's rule)."""
    if channels % groups:
        raise value_error("groups", f"a divisor of the {channels} input channels of {input_name}", groups)
    if filters % groups:
        raise value_error("groups", f"a divisor of the {filters} filters of {weight_name}", groups)


def one_int(value, name, *, minimum=None):
    """A parameter of a 1-D function: an int or a 1-tuple, as a Python int."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise value_error(name, "an int or a 1-tuple", tuple(value))
        value = value[0]
    return integer(value, name, minimum=minimum)


# ---------------------------------------------------------------- initialisers


def descriptors_present(matrix_shape, given_shape):
    """At least one descriptor, of size D >= 1."""
    if matrix_shape[0] < 1 or matrix_shape[1] < 1:
        raise value_error("descriptors", "at least one descriptor of size D >= 1", f"shape {tuple(given_shape)}")


def finite(name, array):
    if not np.all(np.isfinite(array)):
        raise value_error(name, "finite values", "NaN or infinity")


def at_most_count(name, value, limit, what):
    if value > limit:
        raise value_error(name, f"at most the {limit} {what}", value)


def alpha_derivable(num_clusters):
    """``alpha=None`` derives the softness from the margin between two clusters: one is not enough."""
    if num_clusters < 2:
        raise value_error("alpha", "a float when num_clusters is 1 (the assignment ratio needs two clusters)", None)


def descriptors_separable(margin):
    if not margin > 0:
        raise value_error("descriptors", "descriptors closer to some centroids than to others",
                          "descriptors with the same cosine to every centroid")


def float_dtype_argument(given, resolved):
    """A ``dtype=`` argument: float32 or float64 (``resolved`` is ``np.dtype(given)``, or None if it has none)."""
    if resolved is None or resolved not in FLOAT_DTYPES:
        raise type_error("dtype", "float32 or float64", describe(given))


def fits_in_memory(name, shape, dtype, what="an array"):
    """An array lcnumba makes of ``shape`` and ``dtype`` must fit in the physical memory."""
    nbytes = output_bytes(shape, dtype)
    if nbytes > MAX_OUTPUT_BYTES:
        raise value_error(name, f"{what} of at most {MAX_OUTPUT_BYTES} bytes (the physical memory)",
                          f"shape {tuple(shape)} of {np.dtype(dtype)}, which would need {nbytes} bytes")
