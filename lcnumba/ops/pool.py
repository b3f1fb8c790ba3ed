"""Public functions of max-pooling: ``max_pool2d_*`` and ``max_pool1d_*``.

The semantics are PyTorch's ``F.max_pool2d`` / ``F.max_pool1d``, exactly:

- ``stride`` defaults to ``kernel_size``; padding is at most half the
  kernel (``padding <= kernel_size // 2``) and padded cells are ``-inf``;
- ``OH = floor((H + 2*PH - DH*(KH-1) - 1) / SH) + 1``, or with ``ceil_mode``
  rounded up, dropping a last window that would start in the right padding;
- indices are int64 flat positions ``h * W + w`` in the unpadded input plane;
- NaN wins the maximum (the last NaN of a window, as PyTorch's CPU kernel);
  among equal values the first cell (row-major) wins.

One case PyTorch leaves undefined is defined here: with dilation a window
can cover padding only, no input cell. Its output is ``-inf`` and its index
``-1`` (PyTorch reports an index outside that window, possibly outside the
plane); the backward skips index ``-1``, as PyTorch's backward does.

Each function normalises its parameters, checks its arguments in signature
order (``checks``), allocates or checks its outputs and calls one kernel of
``lcnumba.cpu.pool``. 1-D pooling is 2-D pooling of height 1 on views.
"""

from typing import NamedTuple

import numpy as np

from .. import checks
from ..cpu import pool as kernels
from ..cpu.guard import kernel_guard


class PoolGeometry(NamedTuple):
    """Normalised geometry of one 2-D max-pooling (1-D forms use ``H = KH = 1``)."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    oh: int
    ow: int

    @property
    def output_shape(self):
        return (self.n, self.c, self.oh, self.ow)

    @property
    def kernel_args(self):
        return (self.kh, self.kw, self.stride_h, self.stride_w, self.pad_h, self.pad_w,
                self.dilation_h, self.dilation_w)


def _output_size(size, kernel, stride, pad, dilation, ceil_mode):
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = (span + stride - 1) // stride + 1
    if (out - 1) * stride >= size + pad:  # would start in the right padding: PyTorch drops it
        out -= 1
    return out


def pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode, *, input_name="x"):
    """Normalise the parameters of a 2-D max-pooling and compute its output size.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        ``(N, C, H, W)``.
    kernel_size, stride, padding, dilation, ceil_mode
        As accepted by :func:`max_pool2d_forward`.
    input_name : str
        Name of the argument ``x_shape`` came from, for messages.

    Returns
    -------
    PoolGeometry

    Raises
    ------
    TypeError, ValueError
        Naming the offending parameter.
    """
    n, c, h, w = x_shape
    kh, kw = checks.int_tuple(kernel_size, "kernel_size", 2, minimum=1)
    if stride is None:
        sh, sw = kh, kw
    else:
        sh, sw = checks.int_tuple(stride, "stride", 2, minimum=1)
    ph, pw = checks.int_tuple(padding, "padding", 2, minimum=0)
    dh, dw = checks.int_tuple(dilation, "dilation", 2, minimum=1)
    ceil_mode = checks.flag(ceil_mode, "ceil_mode")
    checks.at_most((kh, kw), "kernel_size")
    checks.at_most((sh, sw), "stride")
    checks.at_most((dh, dw), "dilation")
    if ph > kh // 2 or pw > kw // 2:
        raise checks.value_error("padding", f"at most half the kernel size, ({kh // 2}, {kw // 2}) "
                                 f"for kernel_size ({kh}, {kw})", (ph, pw))
    if h < 1 or w < 1:
        raise checks.value_error(input_name, "an input plane of at least one cell", f"shape {tuple(x_shape)}")
    oh = _output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = _output_size(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise checks.value_error(
            "kernel_size",
            f"a dilated kernel no larger than the padded input ({h + 2 * ph}x{w + 2 * pw})",
            f"a dilated kernel of {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}",
        )
    return PoolGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def max_pool2d_output_shape(input_shape, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output shape of :func:`max_pool2d_forward`, without running it.

    Parameters
    ----------
    input_shape : tuple of 4 ints
        ``(N, C, H, W)``.
    kernel_size, stride, padding, dilation, ceil_mode
        As accepted by :func:`max_pool2d_forward`.

    Returns
    -------
    tuple of 4 ints
        ``(N, C, OH, OW)``, the shape of ``y`` and of the indices.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d_forward` for the same parameters.
    """
    x_shape = checks.shape_tuple(input_shape, "input_shape", 4)
    return pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                         input_name="input_shape").output_shape


def max_pool1d_output_shape(input_shape, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output shape of :func:`max_pool1d_forward`, without running it.

    Parameters
    ----------
    input_shape : tuple of 3 ints
        ``(N, C, L)``.
    kernel_size, stride, padding, dilation, ceil_mode
        As accepted by :func:`max_pool1d_forward`.

    Returns
    -------
    tuple of 3 ints
        ``(N, C, OL)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool1d_forward` for the same parameters.
    """
    n, c, length = checks.shape_tuple(input_shape, "input_shape", 3)
    k, s, p, d = _params_1d(kernel_size, stride, padding, dilation)
    geo = pool_geometry((n, c, 1, length), k, s, p, d, ceil_mode, input_name="input_shape")
    return (n, c, geo.ow)


# ---------------------------------------------------------------- 2-D cores


def _forward(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out, indices_out,
             input_name="x"):
    x_in = x
    x = checks.float_array(x, input_name, 4)
    geo = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, input_name=input_name)
    return_indices = checks.flag(return_indices, "return_indices")
    y = checks.output(out, "out", geo.output_shape, x.dtype, {input_name: x_in})
    if not return_indices:
        if indices_out is not None:
            raise checks.value_error("indices_out", "None when return_indices is False", checks.describe(indices_out))
        if y.size:
            with kernel_guard():
                kernels.max_pool2d_fwd(_planes(x, geo.h, geo.w), _planes(y, geo.oh, geo.ow), *geo.kernel_args)
        return y
    indices = checks.output(indices_out, "indices_out", geo.output_shape, np.dtype(np.int64),
                            {input_name: x_in, "out": y})
    if y.size:
        with kernel_guard():
            kernels.max_pool2d_fwd_indices(_planes(x, geo.h, geo.w), _planes(y, geo.oh, geo.ow),
                                           _planes(indices, geo.oh, geo.ow), *geo.kernel_args)
    return y, indices


def _backward(dy, indices, input_shape, out):
    dy_in, indices_in = dy, indices
    dy = checks.float_array(dy, "dy", 4)
    indices = checks.index_array(indices, "indices", dy.shape)
    input_shape = checks.shape_tuple(input_shape, "input_shape", 4)
    n, c, h, w = input_shape
    if (n, c) != dy.shape[:2]:
        raise checks.value_error("input_shape", f"the batch and channels of dy, ({dy.shape[0]}, {dy.shape[1]}, H, W)",
                                 input_shape)
    dx = checks.output(out, "out", input_shape, dy.dtype, {"dy": dy_in, "indices": indices_in})
    planes = n * c
    per_plane = dy.shape[2] * dy.shape[3]
    if planes and per_plane:
        _check_index_range(indices.reshape(planes, per_plane), h * w)
    if dx.size:
        with kernel_guard():
            kernels.max_pool2d_bwd(dy.reshape(planes, per_plane), indices.reshape(planes, per_plane),
                                   dx.reshape(planes, h * w))
    return dx


def _check_index_range(flat_indices, plane_size):
    """``ValueError`` unless every index is in ``[-1, plane_size)``: the scatter trusts them."""
    lo = np.empty(flat_indices.shape[0], dtype=np.int64)
    hi = np.empty(flat_indices.shape[0], dtype=np.int64)
    with kernel_guard():
        kernels.index_range(flat_indices, lo, hi)
    low, high = int(lo.min()), int(hi.max())
    if low < -1 or high >= plane_size:
        bad = low if low < -1 else high
        raise checks.value_error(
            "indices", f"flat positions in [0, {plane_size}) of the input plane (or -1 for none)", f"index {bad}")


def _planes(array, rows, cols):
    """``array`` (N, C, rows, cols), C-contiguous, as a (N*C, rows, cols) view."""
    return array.reshape(-1, rows, cols)


# ---------------------------------------------------------------- 1-D forms as 2-D views


def _one_int(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise checks.value_error(name, "an int or a 1-tuple", tuple(value))
        value = value[0]
    return checks.integer(value, name)


def _params_1d(kernel_size, stride, padding, dilation):
    """1-D parameters as the 2-D ones of a height-1 pooling; range checks happen in ``pool_geometry``."""
    k = _one_int(kernel_size, "kernel_size")
    s = None if stride is None else (1, _one_int(stride, "stride"))
    p = _one_int(padding, "padding")
    d = _one_int(dilation, "dilation")
    return (1, k), s, (0, p), (1, d)


def _unit_height(array, name):
    """The (N, C, 1, L) view of a 3-D ``out`` buffer; other types are passed on for the 2-D checks to report."""
    if isinstance(array, np.ndarray):
        if array.ndim != 3:
            raise checks.value_error(name, "a 3-D array", f"shape {array.shape}")
        return array[:, :, None, :]
    return array


# ---------------------------------------------------------------- public functions


def max_pool2d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False, out=None, indices_out=None, stream=0):
    """2-D max-pooling forward, as PyTorch's ``F.max_pool2d``.

    ``y[n, c, i, j] = max_{a, b} x[n, c, i*SH - PH + a*DH, j*SW - PW + b*DW]`` over the window cells
    inside the input (padding is ``-inf``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input, float32 or float64. Never written.
    kernel_size : int or (KH, KW)
        Window size.
    stride : int or (SH, SW), optional
        Step between windows; defaults to ``kernel_size``.
    padding : int or (PH, PW)
        Implicit ``-inf`` cells on both sides, at most ``kernel_size // 2``.
    dilation : int or (DH, DW)
        Step between the cells of a window.
    ceil_mode : bool
        Round the output size up (a last window may run into the right padding,
        but never starts there).
    return_indices : bool
        Also return where each maximum came from. Without it no index is
        computed or stored (a separate, faster kernel runs).
    out : ndarray, shape (N, C, OH, OW), optional
        C-contiguous buffer of the input dtype for ``y``; returned.
    indices_out : ndarray, shape (N, C, OH, OW), optional
        C-contiguous int64 buffer for the indices; only with ``return_indices``.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        ``OH = floor((H + 2*PH - DH*(KH-1) - 1) / SH) + 1`` (rounded up with ``ceil_mode``,
        less a window starting in the right padding), likewise OW.
    indices : ndarray of int64, shape (N, C, OH, OW)
        Only with ``return_indices``: flat position ``h * W + w`` of the maximum in the unpadded
        plane ``x[n, c]``; -1 for a window that covers padding only (possible with dilation).
        NaN wins (the last NaN of the window); among equal values the first cell, row-major.

    Raises
    ------
    TypeError
        ``x`` not a float32/float64 ndarray; a parameter of the wrong type; ``out`` or
        ``indices_out`` of the wrong dtype.
    ValueError
        ``x`` not 4-D or with an empty plane; padding larger than half the kernel; a kernel
        larger than the padded input; ``out``/``indices_out`` of the wrong shape, not contiguous,
        read-only or overlapping an input; ``indices_out`` without ``return_indices``.
    """
    if checks.device_of({"x": x, "out": out, "indices_out": indices_out}) == "cuda":
        return _cuda().max_pool2d_forward(x, kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices, out=out, indices_out=indices_out, stream=stream)
    return _forward(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out, indices_out)


def max_pool2d_backward(dy, indices, input_shape, *, out=None, stream=0):
    """Gradient of :func:`max_pool2d_forward` with respect to ``x``.

    ``dx[n, c].flat[k] = sum of dy[n, c, i, j] over the windows (i, j) with indices[n, c, i, j] == k``.
    Each (n, c) plane is owned by one thread and its sum runs in output order, so the result is
    deterministic and race-free even when windows overlap. See ``docs/derivations/max_pool.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
        Gradient of the output, float32 or float64.
    indices : ndarray of int64, shape (N, C, OH, OW)
        The indices returned by the forward. Any flat position of the plane is accepted
        (validated before the kernel runs); -1 contributes nothing.
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.
    out : ndarray, shape input_shape, optional
        C-contiguous buffer of the dtype of ``dy``; overwritten and returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape input_shape

    Raises
    ------
    TypeError
        ``dy`` not float32/float64, ``indices`` not int64, ``out`` of the wrong dtype.
    ValueError
        Wrong shapes; ``input_shape`` whose N, C differ from ``dy``; an index outside
        ``[-1, H*W)``; ``out`` of the wrong shape, not contiguous, read-only or overlapping an input.
    """
    if checks.device_of({"dy": dy, "indices": indices, "out": out}) == "cuda":
        return _cuda().max_pool2d_backward(dy, indices, input_shape, out=out, stream=stream)
    return _backward(dy, indices, input_shape, out)


def max_pool1d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False, out=None, indices_out=None, stream=0):
    """1-D max-pooling forward, as PyTorch's ``F.max_pool1d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L)
        Input, float32 or float64. Never written.
    kernel_size, stride, padding, dilation : int (or a 1-tuple)
        As in :func:`max_pool2d_forward`, along L; ``stride`` defaults to ``kernel_size``.
    ceil_mode, return_indices : bool
        As in :func:`max_pool2d_forward`.
    out : ndarray, shape (N, C, OL), optional
        C-contiguous buffer of the input dtype for ``y``; returned.
    indices_out : ndarray, shape (N, C, OL), optional
        C-contiguous int64 buffer for the indices; only with ``return_indices``.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, C, OL)
        ``OL = floor((L + 2*P - D*(K-1) - 1) / S) + 1`` (rounded up with ``ceil_mode``).
    indices : ndarray of int64, shape (N, C, OL)
        Only with ``return_indices``: the position in L of each maximum (-1 for none).

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d_forward`.
    """
    if checks.device_of({"x": x, "out": out, "indices_out": indices_out}) == "cuda":
        return _cuda().max_pool1d_forward(x, kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices, out=out, indices_out=indices_out, stream=stream)
    if not isinstance(x, np.ndarray):
        raise checks.type_error("x", "a numpy.ndarray of float32 or float64", checks.describe(x))
    if x.ndim != 3:
        raise checks.value_error("x", "a 3-D array", f"shape {x.shape}")
    k, s, p, d = _params_1d(kernel_size, stride, padding, dilation)
    result = _forward(x[:, :, None, :], k, s, p, d, ceil_mode, return_indices,
                      _unit_height(out, "out"), _unit_height(indices_out, "indices_out"))
    if isinstance(result, tuple):
        return (result[0][:, :, 0, :] if out is None else out,
                result[1][:, :, 0, :] if indices_out is None else indices_out)
    return result[:, :, 0, :] if out is None else out


def max_pool1d_backward(dy, indices, input_shape, *, out=None, stream=0):
    """Gradient of :func:`max_pool1d_forward` with respect to ``x``.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OL)
        Gradient of the output, float32 or float64.
    indices : ndarray of int64, shape (N, C, OL)
        The indices returned by the forward (positions in L, -1 for none).
    input_shape : tuple of 3 ints
        ``(N, C, L)`` of the forward input.
    out : ndarray, shape input_shape, optional
        C-contiguous buffer of the dtype of ``dy``; overwritten and returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d_backward`.
    """
    if checks.device_of({"dy": dy, "indices": indices, "out": out}) == "cuda":
        return _cuda().max_pool1d_backward(dy, indices, input_shape, out=out, stream=stream)
    if not isinstance(dy, np.ndarray):
        raise checks.type_error("dy", "a numpy.ndarray of float32 or float64", checks.describe(dy))
    if dy.ndim != 3:
        raise checks.value_error("dy", "a 3-D array", f"shape {dy.shape}")
    if not isinstance(indices, np.ndarray):
        raise checks.type_error("indices", "a numpy.ndarray of int64", checks.describe(indices))
    if indices.ndim != 3:
        raise checks.value_error("indices", f"shape {dy.shape}", f"shape {indices.shape}")
    n, c, length = checks.shape_tuple(input_shape, "input_shape", 3)
    dx = _backward(dy[:, :, None, :], indices[:, :, None, :], (n, c, 1, length), _unit_height(out, "out"))
    return dx[:, :, 0, :] if out is None else out


def _cuda():
    """The CUDA implementations, imported on first use so that ``import lcnumba`` needs no CUDA."""
    from ..gpu import ops as cuda_ops

    return cuda_ops
