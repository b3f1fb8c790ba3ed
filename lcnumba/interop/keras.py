"""Keras weights in lcnumba's layouts, and back, without TensorFlow.

Keras 3 dropped ``LocallyConnected1D``/``LocallyConnected2D``, so models
trained with them under Keras 2 (DeepFace's L4-L6, for one) no longer load.
Their weights are plain arrays, and this module maps them, exactly, to the
weights of :func:`lcnumba.local_conv2d_forward` / :func:`lcnumba.local_conv1d_forward`
and back; ``Conv2D`` and ``Conv1D`` kernels map to :func:`lcnumba.conv2d_forward`
/ :func:`lcnumba.conv1d_forward`. The layouts are read from the Keras 2 source
(``tf_keras/layers/locally_connected/``, ``locally_connected_utils.py``,
``utils/conv_utils.py``, ``backend.local_conv``, ``backend.bias_add``):

========================  ======================================================================
Keras                     kernel
========================  ======================================================================
implementation=1          ``(prod(out), prod(kernel_size) * C, F)``: row ``p`` is output position
                          ``p`` (row-major), its column the patch cell in the input's order,
                          ``(kh, kw, c)`` for ``channels_last``, ``(c, kh, kw)`` for ``channels_first``
implementation=2          dense ``(H, W, C, OH, OW, F)`` (``channels_last``) or ``(C, H, W, F, OH, OW)``
                          (``channels_first``), multiplied by a 0/1 connectivity mask before use:
                          the entries outside the mask are never read
implementation=3          the values ``(nnz,)`` of a sparse ``(OH * OW * F, H * W * C)`` matrix whose
                          index list Keras rebuilds from the geometry (:func:`sparse_indices`),
                          sorted by output then input index, both flattened in the data format's order
bias                      ``(OH, OW, F)`` for every implementation and data format
``Conv2D``, ``Conv1D``    ``(KH, KW, C / groups, F)``, ``(K, C / groups, F)``; bias ``(F,)``
========================  ======================================================================

lcnumba's are ``(OH, OW, F, C, KH, KW)`` with bias ``(F, OH, OW)`` (local),
``(F, C / groups, KH, KW)`` with ``(F,)`` (shared), the 1-D forms without the
height axes, and inputs are ``(N, C, H, W)``: a ``channels_last`` input is
passed as ``np.moveaxis(x, -1, 1)`` and the output read back with
``np.moveaxis(y, 1, -1)``.

Two Keras details decide exactness:

* ``backend.bias_add`` with ``channels_first`` *reshapes* the ``(OH, OW, F)``
  bias to ``(1, F, OH, OW)``; it does not transpose it. So bias element
  ``(i, j, f)`` of a ``channels_first`` layer is added wherever its flat
  position lands in ``(F, OH, OW)``; the converters reproduce that.
* ``padding="same"`` means two different things. ``Conv1D``/``Conv2D``
  follow TensorFlow: ``out = ceil(size / stride)`` and a total padding of
  ``max((out - 1) * stride + (K - 1) * dilation + 1 - size, 0)`` split with
  the extra cell *after* (bottom/right). The locally connected layers
  (implementations 2 and 3 only) centre each window with ``K // 2`` cells
  *before* it, whatever the stride, so an even kernel's extra cell goes
  *before* (top/left), and the windows at the far edge are cut by the input
  border. The converters return the ``padding`` lcnumba needs, as explicit
  ``((top, bottom), (left, right))`` (or ``(left, right)`` in 1-D), which
  lcnumba's kernels take at no extra cost; the weights of taps that fall in
  that padding are zero in lcnumba's layout (Keras has no weight there), and
  are dropped on the way back.
"""

import math
from typing import NamedTuple

import numpy as np

from .. import checks

DATA_FORMATS = ("channels_last", "channels_first")
IMPLEMENTATIONS = (1, 2, 3)


class Converted(NamedTuple):
    """lcnumba weights and the call parameters that reproduce a Keras layer.

    ``kwargs`` holds ``stride``, ``padding``, ``dilation`` and ``groups`` for the
    lcnumba forward (and backward) call: ``lcnumba.local_conv2d_forward(x, r.w, r.b, **r.kwargs)``.
    """

    w: np.ndarray
    b: object
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int

    @property
    def kwargs(self):
        """``{"stride", "padding", "dilation", "groups"}`` for the lcnumba call."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}


class _Geometry(NamedTuple):
    """One locally connected or convolution layer, per spatial axis: sizes, windows and padding."""

    sizes: tuple
    channels: int
    kernel: tuple
    strides: tuple
    before: tuple
    after: tuple
    out: tuple
    data_format: str

    @property
    def rank(self):
        return len(self.sizes)

    @property
    def lcnumba_padding(self):
        """``((top, bottom), (left, right))`` in 2-D, ``(left, right)`` in 1-D."""
        pairs = tuple(zip(self.before, self.after))
        return pairs[0] if self.rank == 1 else pairs


# ---------------------------------------------------------------- arguments


def _mode(padding, modes):
    """Keras's padding string, case-insensitive as ``conv_utils.normalize_padding``."""
    if not isinstance(padding, str):
        raise checks.type_error("padding", f"one of {modes}", checks.describe(padding))
    return checks.choice(padding.lower(), "padding", modes)


def _implementation(implementation):
    value = checks.integer(implementation, "implementation")
    if value not in IMPLEMENTATIONS:
        raise checks.value_error("implementation", f"one of {IMPLEMENTATIONS}", value)
    return value


def _spatial(input_shape, rank, data_format):
    """Spatial sizes and channels of a Keras input shape without the batch axis."""
    shape = checks.shape_tuple(input_shape, "input_shape", rank + 1)
    if min(shape) < 1:
        raise checks.value_error("input_shape", f"{rank + 1} sizes >= 1 (spatial and channels, no batch axis)", shape)
    if data_format == "channels_last":
        return shape[:-1], shape[-1]
    return shape[1:], shape[0]


def _layer(input_shape, kernel_size, strides, padding, data_format, rank):
    """The geometry of a Keras ``LocallyConnected{rank}D`` (``conv_utils.conv_connected_inputs``)."""
    data_format = checks.choice(data_format, "data_format", DATA_FORMATS)
    sizes, channels = _spatial(input_shape, rank, data_format)
    kernel = checks.int_tuple(kernel_size, "kernel_size", rank, minimum=1)
    strides = checks.int_tuple(strides, "strides", rank, minimum=1)
    mode = _mode(padding, ("valid", "same"))
    if mode == "valid":
        out = tuple((n - k) // s + 1 for n, k, s in zip(sizes, kernel, strides))
        before = (0,) * rank
        after = (0,) * rank
    else:
        # the window of output o is cells [o*s - k//2, o*s - k//2 + k), cut at the border
        out = tuple(-(-n // s) for n, s in zip(sizes, strides))
        before = tuple(k // 2 for k in kernel)
        after = tuple(max(0, (o - 1) * s + k - p - n) for o, s, k, p, n in zip(out, strides, kernel, before, sizes))
    if min(out) < 1:
        raise checks.value_error("input_shape", f"spatial sizes that fit kernel_size {kernel} ('valid' padding)",
                                 sizes)
    return _Geometry(sizes, channels, kernel, strides, before, after, out, data_format)


# ---------------------------------------------------------------- index maps


def _axis(rank, axis, size):
    """``np.arange(size)`` shaped to broadcast along ``axis`` of a rank-``rank`` array."""
    shape = [1] * rank
    shape[axis] = size
    return np.arange(size, dtype=np.int64).reshape(shape)


def _taps(g, filters):
    """Indices over lcnumba's weight ``(*out, F, C, *kernel)``: output, filter, channel and input cell of each tap.

    Returns ``(outs, f, c, cells, inside)``: broadcastable index arrays and the mask of taps
    whose input cell lies inside the input (the others read padding and have no Keras weight).
    """
    r = g.rank
    full = g.out + (filters, g.channels) + g.kernel
    total = len(full)
    outs = [_axis(total, d, g.out[d]) for d in range(r)]
    cells, inside = [], np.ones((1,) * total, dtype=bool)
    for d in range(r):
        cell = outs[d] * g.strides[d] - g.before[d] + _axis(total, r + 2 + d, g.kernel[d])
        inside = inside & (cell >= 0) & (cell < g.sizes[d])
        cells.append(np.clip(cell, 0, g.sizes[d] - 1))
    f = _axis(total, r, filters)
    c = _axis(total, r + 1, g.channels)
    return outs, f, c, cells, np.broadcast_to(inside, full)


def _dense_order(g):
    """Axes that take Keras's dense kernel to ``(*in, C, *out, F)`` (its ``channels_last`` order)."""
    r = g.rank
    if g.data_format == "channels_last":
        return tuple(range(2 * r + 2))
    # (C, *in, F, *out)
    return tuple(range(1, r + 1)) + (0,) + tuple(range(r + 2, 2 * r + 2)) + (r + 1,)


def _dense_shape(g, filters):
    if g.data_format == "channels_last":
        return g.sizes + (g.channels,) + g.out + (filters,)
    return (g.channels,) + g.sizes + (filters,) + g.out


def _sparse_keys(g, filters):
    """Keras's flat ``(output, input)`` index of every tap inside the input, as one int64 key, and the mask.

    ``key = output_index * input_length + input_index``: sorting the keys sorts the pairs
    as Python's ``sorted`` sorts Keras's tuples.
    """
    outs, f, c, cells, inside = _taps(g, filters)
    full = inside.shape
    if g.data_format == "channels_last":
        out_index = np.ravel_multi_index(tuple(outs) + (f,), g.out + (filters,))
        in_index = np.ravel_multi_index(tuple(cells) + (c,), g.sizes + (g.channels,))
    else:
        out_index = np.ravel_multi_index((f,) + tuple(outs), (filters,) + g.out)
        in_index = np.ravel_multi_index((c,) + tuple(cells), (g.channels,) + g.sizes)
    n_in = g.channels * math.prod(g.sizes)
    keys = np.broadcast_to(out_index * n_in + in_index, full)[inside]
    return keys, inside, n_in


def _sparse_ranks(g, filters):
    """Position in Keras's sorted index list of every tap inside the input (C order), and the mask."""
    keys, inside, _ = _sparse_keys(g, filters)
    ranks = np.empty(keys.size, dtype=np.int64)
    ranks[np.argsort(keys, kind="stable")] = np.arange(keys.size)
    return ranks, inside


def _taps_per_filter_pair(g):
    """Number of ``(output position, input cell)`` connections: nnz of implementation 3 over ``C * F``."""
    count = 1
    for n, k, s, p, o in zip(g.sizes, g.kernel, g.strides, g.before, g.out):
        starts = np.arange(o) * s - p
        count *= int(np.sum(np.minimum(starts + k, n) - np.maximum(starts, 0)))
    return count


# ---------------------------------------------------------------- kernels


def _impl1_order(g):
    """Axes that take implementation 1's kernel, split to ``(*out, *patch, F)``, to ``(*out, F, C, *kernel)``."""
    r = g.rank
    out = tuple(range(r))
    if g.data_format == "channels_last":  # patch (*kernel, C)
        return out + (2 * r + 1, 2 * r) + tuple(range(r, 2 * r))
    return out + (2 * r + 1, r) + tuple(range(r + 1, 2 * r + 1))  # patch (C, *kernel)


def _impl1_split(g, filters):
    if g.data_format == "channels_last":
        return g.out + g.kernel + (g.channels, filters)
    return g.out + (g.channels,) + g.kernel + (filters,)


def _infer_filters(kernel, g, implementation):
    """F from the shape of a Keras kernel; raises when the kernel cannot belong to the layer."""
    r = g.rank
    if implementation == 1:
        expected = (math.prod(g.out), math.prod(g.kernel) * g.channels)
        if kernel.ndim != 3 or kernel.shape[:2] != expected:
            raise checks.value_error("kernel", f"shape {expected + ('F',)} (implementation 1: positions, patch, "
                                               "filters)", f"shape {kernel.shape}")
        return kernel.shape[2]
    if implementation == 2:
        f = kernel.shape[2 * r + 1] if g.data_format == "channels_last" else kernel.shape[r + 1]
        checks.shape_equal(kernel, "kernel", _dense_shape(g, f), f"implementation 2, {g.data_format}")
        return f
    per_filter_pair = _taps_per_filter_pair(g) * g.channels
    if kernel.size == 0 or kernel.size % per_filter_pair:
        raise checks.value_error("kernel", f"a multiple of {per_filter_pair} values (implementation 3: the "
                                           "connections of one filter)", f"shape {kernel.shape}")
    return kernel.size // per_filter_pair


def _bias_from_keras(bias, g, filters, dtype):
    if bias is None:
        return None
    bias = checks.float_array(bias, "bias", g.rank + 1, dtype)
    checks.shape_equal(bias, "bias", g.out + (filters,), "Keras's (*out, F)")
    if g.data_format == "channels_first":
        # backend.bias_add reshapes (*out, F) to (1, F, *out): a reshape, not a transpose
        return np.ascontiguousarray(bias.reshape((filters,) + g.out))
    return np.ascontiguousarray(np.moveaxis(bias, -1, 0))


def _bias_to_keras(b, g, filters, dtype):
    if b is None:
        return None
    b = checks.float_array(b, "b", g.rank + 1, dtype)
    checks.shape_equal(b, "b", (filters,) + g.out, "lcnumba's (F, *out)")
    if g.data_format == "channels_first":
        return np.ascontiguousarray(b.reshape(g.out + (filters,)))
    return np.ascontiguousarray(np.moveaxis(b, 0, -1))


def _from_locally_connected(kernel, bias, input_shape, kernel_size, strides, padding, data_format, implementation,
                            rank):
    implementation = _implementation(implementation)
    kernel = checks.float_array(kernel, "kernel", {1: 3, 2: 2 * rank + 2, 3: 1}[implementation])
    g = _layer(input_shape, kernel_size, strides, padding, data_format, rank)
    if implementation == 1 and g.before + g.after != (0,) * (2 * rank):
        raise checks.value_error("padding", "'valid' (Keras's implementation 1 has no other)", repr(padding))
    filters = _infer_filters(kernel, g, implementation)
    b = _bias_from_keras(bias, g, filters, kernel.dtype)
    full = g.out + (filters, g.channels) + g.kernel
    if implementation == 1:
        w = kernel.reshape(_impl1_split(g, filters)).transpose(_impl1_order(g))
    elif implementation == 2:
        outs, f, c, cells, inside = _taps(g, filters)
        dense = kernel.transpose(_dense_order(g))
        # Keras multiplies by the mask, so entries outside it are never read, whatever they hold
        w = np.where(inside, dense[tuple(cells) + (c,) + tuple(outs) + (f,)], 0)
    else:
        ranks, inside = _sparse_ranks(g, filters)
        w = np.zeros(full, kernel.dtype)
        w[inside] = kernel[ranks]
    w = np.ascontiguousarray(w, dtype=kernel.dtype)
    return Converted(w, b, g.strides, g.lcnumba_padding, (1,) * rank, 1)


def _to_locally_connected(w, b, input_shape, strides, padding, data_format, implementation, rank):
    implementation = _implementation(implementation)
    w = checks.float_array(w, "w", 2 * rank + 2)
    g = _layer(input_shape, w.shape[rank + 2:], strides, padding, data_format, rank)
    if implementation == 1 and g.before + g.after != (0,) * (2 * rank):
        raise checks.value_error("padding", "'valid' (Keras's implementation 1 has no other)", repr(padding))
    filters = w.shape[rank]
    checks.shape_equal(w, "w", g.out + (filters, g.channels) + g.kernel,
                       f"(*out, F, C, *kernel) for input_shape {tuple(input_shape)}")
    bias = _bias_to_keras(b, g, filters, w.dtype)
    if implementation == 1:
        order = _impl1_order(g)
        patch = math.prod(g.kernel) * g.channels
        kernel = w.transpose(np.argsort(order)).reshape(math.prod(g.out), patch, filters)
    elif implementation == 2:
        outs, f, c, cells, inside = _taps(g, filters)
        canonical = np.zeros(g.sizes + (g.channels,) + g.out + (filters,), w.dtype)
        index = tuple(np.broadcast_to(a, inside.shape)[inside] for a in tuple(cells) + (c,) + tuple(outs) + (f,))
        canonical[index] = w[inside]
        kernel = canonical.transpose(np.argsort(_dense_order(g)))
    else:
        ranks, inside = _sparse_ranks(g, filters)
        kernel = np.empty(ranks.size, w.dtype)
        kernel[ranks] = w[inside]
    return np.ascontiguousarray(kernel), bias


_LC_PARAMETERS = """
    input_shape : tuple of int
        The layer's input shape without the batch axis, in its data format: ``({dims}, C)`` for
        ``channels_last``, ``(C, {dims})`` for ``channels_first``.
    strides : int or tuple of int
        Keras's ``strides``.
    padding : {{"valid", "same"}}
        Keras's ``padding`` (case-insensitive); ``"same"`` only with implementations 2 and 3, as
        in Keras.
    data_format : {{"channels_last", "channels_first"}}
        Keras's ``data_format`` (the layer's, or ``keras.backend.image_data_format()`` if it was
        left unset).
    implementation : {{1, 2, 3}}
        Keras's ``implementation``: which kernel layout (see the module's table)."""


def _named(function, name, rank, doc):
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc.replace("%(lc)s", _LC_PARAMETERS.format(dims="H, W" if rank == 2 else "L"))
    return function


def _from_function(rank, doc):
    """``from_locally_connected{rank}d``: Keras's keyword names, lcnumba's rank."""
    def convert(kernel, bias=None, *, input_shape, kernel_size, strides=1, padding="valid",
                data_format="channels_last", implementation=1):
        return _from_locally_connected(kernel, bias, input_shape, kernel_size, strides, padding, data_format,
                                       implementation, rank)
    return _named(convert, f"from_locally_connected{rank}d", rank, doc)


def _to_function(rank, doc):
    """``to_locally_connected{rank}d``: the kernel size comes from ``w``."""
    def convert(w, b=None, *, input_shape, strides=1, padding="valid", data_format="channels_last",
                implementation=1):
        return _to_locally_connected(w, b, input_shape, strides, padding, data_format, implementation, rank)
    return _named(convert, f"to_locally_connected{rank}d", rank, doc)


from_locally_connected2d = _from_function(2, """Keras ``LocallyConnected2D`` weights as ``local_conv2d`` weights.

    Parameters
    ----------
    kernel : ndarray
        Keras's ``kernel``, float32 or float64: ``(OH * OW, KH * KW * C, F)`` (implementation 1),
        ``(H, W, C, OH, OW, F)`` or ``(C, H, W, F, OH, OW)`` (implementation 2; entries outside
        Keras's connectivity mask are ignored, as Keras ignores them), or ``(nnz,)``
        (implementation 3, in the order of :func:`sparse_indices`). Never written.
    bias : ndarray, shape (OH, OW, F), optional
        Keras's ``bias``, of the kernel's dtype.
    kernel_size : int or tuple of 2 int
        Keras's ``kernel_size``, ``(KH, KW)``.%(lc)s

    Returns
    -------
    Converted
        ``w`` of shape ``(OH, OW, F, C, KH, KW)`` (zero for taps in the padding of ``"same"``),
        ``b`` of shape ``(F, OH, OW)`` or None, and ``stride``, ``padding`` (as
        ``((top, bottom), (left, right))``), ``dilation``, ``groups`` for
        :func:`lcnumba.local_conv2d_forward`, collected in ``kwargs``. ``w`` and ``b`` are new
        C-contiguous arrays of the kernel's dtype.

    Raises
    ------
    TypeError
        A kernel or bias that is not a float32/float64 array (or not of one dtype); a non-int
        size; a padding or data format that is not a string.
    ValueError
        An unknown padding, data format or implementation; ``"same"`` with implementation 1; an
        input too small for the kernel; a kernel or bias whose shape does not fit the layer.

    Examples
    --------
    >>> import numpy as np
    >>> from lcnumba.interop import keras
    >>> kernel = np.zeros((4 * 2, 3 * 2 * 3, 5), np.float32)   # implementation 1
    >>> r = keras.from_locally_connected2d(kernel, input_shape=(6, 5, 3), kernel_size=(3, 2), strides=(1, 2))
    >>> r.w.shape, r.kwargs["padding"]
    ((4, 2, 5, 3, 3, 2), ((0, 0), (0, 0)))
    """)


to_locally_connected2d = _to_function(2, """lcnumba ``local_conv2d`` weights as Keras ``LocallyConnected2D`` weights.

    The inverse of :func:`from_locally_connected2d`: ``layer.set_weights([kernel, bias])`` on a
    Keras layer built with the same parameters reproduces lcnumba's forward.

    Parameters
    ----------
    w : ndarray, shape (OH, OW, F, C, KH, KW)
        lcnumba's weight (``groups=1``), float32 or float64; ``(OH, OW)`` must be Keras's output
        size. Weights of taps that fall in the padding of ``"same"`` have no Keras counterpart
        and are dropped. Never written.
    b : ndarray, shape (F, OH, OW), optional
        lcnumba's bias, of ``w``'s dtype.%(lc)s

    Returns
    -------
    kernel : ndarray
        Keras's kernel for ``implementation`` (see :func:`from_locally_connected2d`); for
        implementation 2 zero outside the connectivity mask.
    bias : ndarray, shape (OH, OW, F), or None
        Keras's bias; None when ``b`` is None.

    Raises
    ------
    TypeError
        As :func:`from_locally_connected2d`, for ``w`` and ``b``.
    ValueError
        As :func:`from_locally_connected2d`; a ``w`` whose output size or channels do not match
        ``input_shape``.
    """)


from_locally_connected1d = _from_function(1, """Keras ``LocallyConnected1D`` weights as ``local_conv1d`` weights.

    Parameters
    ----------
    kernel : ndarray
        Keras's ``kernel``, float32 or float64: ``(OL, K * C, F)`` (implementation 1),
        ``(L, C, OL, F)`` or ``(C, L, F, OL)`` (implementation 2; entries outside the mask are
        ignored), or ``(nnz,)`` (implementation 3). Never written.
    bias : ndarray, shape (OL, F), optional
        Keras's ``bias``, of the kernel's dtype.
    kernel_size : int or tuple of 1 int
        Keras's ``kernel_size``, ``K``.%(lc)s

    Returns
    -------
    Converted
        ``w`` of shape ``(OL, F, C, K)``, ``b`` of shape ``(F, OL)`` or None, and the parameters
        of :func:`lcnumba.local_conv1d_forward` in ``kwargs`` (``padding`` as ``(left, right)``).

    Raises
    ------
    TypeError, ValueError
        As :func:`from_locally_connected2d`.
    """)


to_locally_connected1d = _to_function(1, """lcnumba ``local_conv1d`` weights as Keras ``LocallyConnected1D`` weights.

    Parameters
    ----------
    w : ndarray, shape (OL, F, C, K)
        lcnumba's weight (``groups=1``); taps in the padding of ``"same"`` are dropped. Never
        written.
    b : ndarray, shape (F, OL), optional
        lcnumba's bias.%(lc)s

    Returns
    -------
    kernel : ndarray
        Keras's kernel for ``implementation`` (see :func:`from_locally_connected1d`).
    bias : ndarray, shape (OL, F), or None
        Keras's bias.

    Raises
    ------
    TypeError, ValueError
        As :func:`to_locally_connected2d`.
    """)


def sparse_indices(input_shape, kernel_size, filters, *, strides=1, padding="valid", data_format="channels_last"):
    """The index list of a Keras locally connected layer with implementation 3.

    Keras does not save it: the layer rebuilds it from its geometry
    (``sorted(conv_utils.conv_kernel_idxs(...))``) and the saved kernel holds the values in
    its order. This is the same list, computed without Python loops.

    Parameters
    ----------
    input_shape : tuple of int
        The layer's input shape without the batch axis: ``(H, W, C)`` / ``(C, H, W)`` for a 2-D
        layer, ``(L, C)`` / ``(C, L)`` for a 1-D one, in ``data_format``'s order.
    kernel_size : int or tuple of int
        Keras's ``kernel_size`` (one int per spatial axis of ``input_shape``).
    filters : int
        Keras's ``filters``, F.
    strides, padding, data_format
        As the layer's.

    Returns
    -------
    ndarray of int64, shape (nnz, 2)
        Rows ``(output_index, input_index)`` in increasing order; each index flattens
        ``(*out, F)`` / ``(*in, C)`` (``channels_last``) or ``(F, *out)`` / ``(C, *in)``
        (``channels_first``) row-major. Row ``i`` is the connection of ``kernel[i]``.

    Raises
    ------
    TypeError
        A non-int size or count; a padding or data format that is not a string.
    ValueError
        An input shape that is not 3 or 4 sizes >= 1 or is too small for the kernel; ``filters``
        < 1; an unknown padding or data format.
    """
    if not isinstance(input_shape, (tuple, list)):
        raise checks.type_error("input_shape", "a tuple of 2 or 3 ints", checks.describe(input_shape))
    if len(input_shape) not in (2, 3):
        raise checks.value_error("input_shape", "a tuple of 2 or 3 ints (no batch axis)", tuple(input_shape))
    filters = checks.integer(filters, "filters", minimum=1)
    g = _layer(input_shape, kernel_size, strides, padding, data_format, len(input_shape) - 1)
    keys, _, n_in = _sparse_keys(g, filters)
    keys = np.sort(keys)
    return np.stack([keys // n_in, keys % n_in], axis=1)


# ---------------------------------------------------------------- shared convolution


def _conv_padding(mode, sizes, kernel, strides, dilation, rank):
    """Cells before and after each axis for Keras's ``Conv{rank}D`` padding (TensorFlow's rule)."""
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    if mode == "valid":
        return (0,) * rank, (0,) * rank
    if mode == "causal":
        return tuple(e - 1 for e in extent), (0,) * rank
    if sizes is None:
        if strides != (1,) * rank:
            raise checks.value_error("input_shape", "the input shape (Keras's 'same' padding with strides > 1 "
                                                    "depends on the input size)", None)
        totals = tuple(e - 1 for e in extent)
    else:
        out = tuple(-(-n // s) for n, s in zip(sizes, strides))
        totals = tuple(max((o - 1) * s + e - n, 0) for o, s, e, n in zip(out, strides, extent, sizes))
    # TensorFlow's SAME: the extra cell of an odd total goes after (bottom/right)
    return tuple(t // 2 for t in totals), tuple(t - t // 2 for t in totals)


def _from_conv(kernel, bias, input_shape, strides, padding, dilation_rate, groups, data_format, rank, modes):
    kernel = checks.float_array(kernel, "kernel", rank + 2)
    strides = checks.int_tuple(strides, "strides", rank, minimum=1)
    mode = _mode(padding, modes)
    dilation = checks.int_tuple(dilation_rate, "dilation_rate", rank, minimum=1)
    groups = checks.integer(groups, "groups", minimum=1)
    data_format = checks.choice(data_format, "data_format", DATA_FORMATS)
    filters = kernel.shape[-1]
    if filters % groups:
        raise checks.value_error("kernel", f"a number of filters (last axis) divisible by groups={groups}",
                                 f"shape {kernel.shape}")
    sizes = None
    if input_shape is not None:
        sizes, channels = _spatial(input_shape, rank, data_format)
        if channels != kernel.shape[rank] * groups:
            raise checks.value_error("kernel", f"C / groups = {channels} / {groups} channels on axis {rank} "
                                               f"(input_shape {tuple(input_shape)})", f"shape {kernel.shape}")
    before, after = _conv_padding(mode, sizes, kernel.shape[:rank], strides, dilation, rank)
    b = None
    if bias is not None:
        b = checks.float_array(bias, "bias", 1, kernel.dtype)
        checks.shape_equal(b, "bias", (filters,), "one per filter")
        b = b.copy()
    w = np.ascontiguousarray(kernel.transpose((rank + 1, rank) + tuple(range(rank))))
    pairs = tuple(zip(before, after))
    return Converted(w, b, strides, pairs[0] if rank == 1 else pairs, dilation, groups)


def _to_conv(w, b, rank):
    w = checks.float_array(w, "w", rank + 2)
    bias = None
    if b is not None:
        bias = checks.float_array(b, "b", 1, w.dtype)
        checks.shape_equal(bias, "b", (w.shape[0],), "one per filter")
        bias = bias.copy()
    return np.ascontiguousarray(w.transpose(tuple(range(2, rank + 2)) + (1, 0))), bias


def from_conv2d(kernel, bias=None, *, input_shape=None, strides=1, padding="valid", dilation_rate=1, groups=1,
                data_format="channels_last"):
    """Keras ``Conv2D`` weights as lcnumba ``conv2d`` weights, with the padding of Keras's output.

    Parameters
    ----------
    kernel : ndarray, shape (KH, KW, C / groups, F)
        Keras's ``kernel`` (the same for both data formats), float32 or float64. Never written.
    bias : ndarray, shape (F,), optional
        Keras's ``bias``.
    input_shape : tuple of int, optional
        The input shape without the batch axis, ``(H, W, C)`` or ``(C, H, W)`` as
        ``data_format``; needed for ``"same"`` with a stride > 1, where TensorFlow's padding
        depends on the input size, and checked against the kernel's channels when given.
    strides, dilation_rate : int or tuple of 2 int
        Keras's ``strides`` and ``dilation_rate``.
    padding : {"valid", "same"}
        Keras's ``padding`` (case-insensitive).
    groups : int
        Keras's ``groups``.
    data_format : {"channels_last", "channels_first"}
        Where ``input_shape`` has its channels.

    Returns
    -------
    Converted
        ``w`` of shape ``(F, C / groups, KH, KW)``, ``b`` of shape ``(F,)`` or None, and
        ``kwargs`` for :func:`lcnumba.conv2d_forward`: ``padding`` is
        ``((top, bottom), (left, right))``, TensorFlow's split (the extra cell of an odd total
        at the bottom/right).

    Raises
    ------
    TypeError
        A kernel or bias that is not a float32/float64 array of one dtype; a non-int parameter.
    ValueError
        A bad parameter; ``"same"`` with strides > 1 and no ``input_shape``; filters not
        divisible by ``groups``; a bias or input shape that does not fit the kernel.
    """
    return _from_conv(kernel, bias, input_shape, strides, padding, dilation_rate, groups, data_format, 2,
                      ("valid", "same"))


def to_conv2d(w, b=None):
    """lcnumba ``conv2d`` weights as Keras ``Conv2D`` weights.

    Parameters
    ----------
    w : ndarray, shape (F, C / groups, KH, KW)
        lcnumba's weight, float32 or float64. Never written.
    b : ndarray, shape (F,), optional
        lcnumba's bias.

    Returns
    -------
    kernel : ndarray, shape (KH, KW, C / groups, F)
        Keras's kernel.
    bias : ndarray, shape (F,), or None
        A copy of ``b``.

    Raises
    ------
    TypeError
        ``w`` or ``b`` not a float32/float64 array of one dtype.
    ValueError
        ``w`` not 4-D, ``b`` not ``(F,)``.
    """
    return _to_conv(w, b, 2)


def from_conv1d(kernel, bias=None, *, input_shape=None, strides=1, padding="valid", dilation_rate=1, groups=1,
                data_format="channels_last"):
    """Keras ``Conv1D`` weights as lcnumba ``conv1d`` weights, with the padding of Keras's output.

    Parameters
    ----------
    kernel : ndarray, shape (K, C / groups, F)
        Keras's ``kernel``, float32 or float64. Never written.
    bias : ndarray, shape (F,), optional
        Keras's ``bias``.
    input_shape : tuple of int, optional
        ``(L, C)`` or ``(C, L)`` as ``data_format``; needed for ``"same"`` with a stride > 1.
    strides, dilation_rate : int or tuple of 1 int
        Keras's ``strides`` and ``dilation_rate``.
    padding : {"valid", "same", "causal"}
        Keras's ``padding``; ``"causal"`` pads ``(K - 1) * dilation`` cells on the left.
    groups, data_format
        As :func:`from_conv2d`.

    Returns
    -------
    Converted
        ``w`` of shape ``(F, C / groups, K)``, ``b`` of shape ``(F,)`` or None, and ``kwargs``
        for :func:`lcnumba.conv1d_forward` (``padding`` as ``(left, right)``).

    Raises
    ------
    TypeError, ValueError
        As :func:`from_conv2d`.
    """
    return _from_conv(kernel, bias, input_shape, strides, padding, dilation_rate, groups, data_format, 1,
                      ("valid", "same", "causal"))


def to_conv1d(w, b=None):
    """lcnumba ``conv1d`` weights as Keras ``Conv1D`` weights.

    Parameters
    ----------
    w : ndarray, shape (F, C / groups, K)
        lcnumba's weight, float32 or float64. Never written.
    b : ndarray, shape (F,), optional
        lcnumba's bias.

    Returns
    -------
    (kernel, bias) : tuple
        Keras's kernel ``(K, C / groups, F)`` and a copy of ``b`` (or None).

    Raises
    ------
    TypeError, ValueError
        As :func:`to_conv2d`, with ``w`` 3-D.
    """
    return _to_conv(w, b, 1)
