"""Public functions of the convolution family: conv2d, tiled_conv2d, local_conv2d and their 1-D forms.

Each function normalises its parameters (``geometry``), checks its
arguments in signature order (``checks``), allocates or checks its outputs
and calls one kernel of ``lcnumba.cpu.conv``. The three families differ only
in how many filter banks (tiles) there are and which output positions use
which; see ``geometry.segments``.

Weight layouts (``Cg = C / groups``):

=============  =============================  ==================
family         w                              b
=============  =============================  ==================
conv2d         (F, Cg, KH, KW)                (F,)
tiled_conv2d   (TH, TW, F, Cg, KH, KW)        (F, TH, TW)
local_conv2d   (OH, OW, F, Cg, KH, KW)        (F, OH, OW)
conv1d         (F, Cg, K)                     (F,)
tiled_conv1d   (T, F, Cg, K)                  (F, T)
local_conv1d   (OL, F, Cg, K)                 (F, OL)
=============  =============================  ==================
"""

from typing import NamedTuple

import numba
import numpy as np

from .. import checks, geometry
from ..cpu import conv as kernels
from ..cpu.blas import serial_blas
from ..cpu.guard import kernel_guard

CONV, TILED, LOCAL = "conv2d", "tiled_conv2d", "local_conv2d"


class _Plan(NamedTuple):
    """Everything a kernel call needs besides the arrays."""

    family: str
    geo: geometry.ConvGeometry
    th: int
    tw: int
    mode: str

    @property
    def kernel_args(self):
        g = self.geo
        return (g.kh, g.kw, g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.dilation_h, g.dilation_w)

    @property
    def tiling(self):
        return (self.th, self.tw, self.mode == "periodic")

    @property
    def weight_shape(self):
        g = self.geo
        cg = g.c // g.groups
        if self.family == CONV:
            return (g.f, cg, g.kh, g.kw)
        return (self.th, self.tw, g.f, cg, g.kh, g.kw)

    @property
    def bias_shape(self):
        return (self.geo.f,) if self.family == CONV else (self.geo.f, self.th, self.tw)

    @property
    def n_tiles(self):
        return self.th * self.tw

    def flat_weight(self, w):
        return w.reshape(self.n_tiles, self.geo.f, -1)

    def flat_bias(self, b):
        return b.reshape(self.geo.f, self.n_tiles)


def _weight_ndim(family):
    return 4 if family == CONV else 6


def _plan(family, x_shape, w_shape, stride, padding, dilation, groups, tile_mode, *, x_name, w_name):
    """Normalise the geometry of a call and check the weight shape against the input."""
    if family == CONV:
        f, cg, kh, kw = w_shape
    else:
        _, _, f, cg, kh, kw = w_shape
    geo = geometry.conv_geometry(x_shape, f, (kh, kw), stride, padding, dilation, groups,
                                 input_name=x_name, weight_name=w_name)
    if cg * geo.groups != geo.c:
        raise checks.value_error(
            w_name, f"C/groups = {geo.c}//{geo.groups} = {geo.c // geo.groups} input channels per filter "
            f"(dimension {1 if family == CONV else 3})", f"shape {tuple(w_shape)}")
    if family == CONV:
        return _Plan(family, geo, 1, 1, "periodic")
    if family == LOCAL:
        if tuple(w_shape[:2]) != (geo.oh, geo.ow):
            raise checks.value_error(
                w_name, f"a filter bank per output position, shape {(geo.oh, geo.ow) + tuple(w_shape[2:])} "
                f"for the {geo.oh}x{geo.ow} output", f"shape {tuple(w_shape)}")
        return _Plan(family, geo, geo.oh, geo.ow, "periodic")
    mode = checks.choice(tile_mode, "tile_mode", geometry.TILE_MODES)
    return _Plan(family, geo, w_shape[0], w_shape[1], mode)


def _check_weight_dims(w_shape, family, name):
    if any(d < 1 for d in w_shape):
        raise checks.value_error(name, "a shape with every dimension >= 1", f"shape {tuple(w_shape)}")


class _HostArrays:
    """How the shared normalise-and-check code below meets NumPy arrays and the CPU kernels.

    The cores take an ``arrays`` object with this interface, so the CUDA
    functions (``lcnumba.gpu.ops``) run the very same parameter
    normalisation and argument checks, in the same order with the same
    messages, and differ only in how arrays are checked, allocated, viewed
    and handed to kernels.
    """

    float_array = staticmethod(checks.float_array)
    output = staticmethod(checks.output)

    @staticmethod
    def unit_axes(array, axes, name, ndim):
        return _unit_axes(array, axes, name, ndim)

    @staticmethod
    def squeeze(array, axes):
        return np.squeeze(array, axes) if axes else array

    @staticmethod
    def zero(array):
        array[...] = 0

    @staticmethod
    def forward(plan, x, w, b, y):
        bias = plan.flat_bias(b) if b is not None else np.zeros((0, 0), dtype=x.dtype)
        with kernel_guard(), serial_blas():
            kernels.forward(x, plan.flat_weight(w), bias, *plan.tiling, *plan.kernel_args, plan.geo.groups,
                            numba.get_num_threads(), y)

    @staticmethod
    def backward_input(plan, dy, w, dx):
        with kernel_guard(), serial_blas():
            kernels.backward_input(dy, plan.flat_weight(w), *plan.tiling, *plan.kernel_args, plan.geo.groups,
                                   numba.get_num_threads(), dx)

    @staticmethod
    def backward_weight(plan, dy, x, accumulate, dw):
        with kernel_guard(), serial_blas():
            kernels.backward_weight(dy, x, *plan.tiling, *plan.kernel_args, plan.geo.groups,
                                    numba.get_num_threads(), accumulate, plan.flat_weight(dw))

    @staticmethod
    def backward_bias(dy, th, tw, periodic, accumulate, db):
        with kernel_guard():
            kernels.backward_bias(dy, th, tw, periodic, accumulate, db.reshape(db.shape[0], th * tw))


_HOST = _HostArrays()


# ---------------------------------------------------------------- 2-D cores


def _forward(family, x, w, b, stride, padding, dilation, groups, tile_mode, out, arrays=_HOST):
    x_in, w_in, b_in = x, w, b
    x = arrays.float_array(x, "x", 4)
    w = arrays.float_array(w, "w", _weight_ndim(family), dtype=x.dtype)
    _check_weight_dims(w.shape, family, "w")
    if b is not None:
        b = arrays.float_array(b, "b", 1 if family == CONV else 3, dtype=x.dtype)
    plan = _plan(family, x.shape, w.shape, stride, padding, dilation, groups, tile_mode, x_name="x", w_name="w")
    if b is not None:
        checks.shape_equal(b, "b", plan.bias_shape, "one bias per filter" + ("" if family == CONV else " and tile"))
    geo = plan.geo
    y = arrays.output(out, "out", geo.output_shape, x.dtype, {"x": x_in, "w": w_in, "b": b_in})
    if geo.n == 0:
        return y
    arrays.forward(plan, x, w, b, y)
    return y


def _backward_input(family, dy, w, input_shape, stride, padding, dilation, groups, tile_mode, out, arrays=_HOST):
    dy_in, w_in = dy, w
    dy = arrays.float_array(dy, "dy", 4)
    w = arrays.float_array(w, "w", _weight_ndim(family), dtype=dy.dtype)
    _check_weight_dims(w.shape, family, "w")
    input_shape = checks.shape_tuple(input_shape, "input_shape", 4)
    plan = _plan(family, input_shape, w.shape, stride, padding, dilation, groups, tile_mode,
                 x_name="input_shape", w_name="w")
    geo = plan.geo
    checks.shape_equal(dy, "dy", geo.output_shape, "the forward output for input_shape and w")
    dx = arrays.output(out, "out", input_shape, dy.dtype, {"dy": dy_in, "w": w_in})
    if geo.n == 0:
        return dx
    arrays.backward_input(plan, dy, w, dx)
    return dx


def _backward_weight(family, dy, x, weight_shape, stride, padding, dilation, groups, tile_mode, out, accumulate,
                     arrays=_HOST):
    dy_in, x_in = dy, x
    dy = arrays.float_array(dy, "dy", 4)
    x = arrays.float_array(x, "x", 4, dtype=dy.dtype)
    weight_shape = checks.shape_tuple(weight_shape, "weight_shape", _weight_ndim(family))
    _check_weight_dims(weight_shape, family, "weight_shape")
    plan = _plan(family, x.shape, weight_shape, stride, padding, dilation, groups, tile_mode,
                 x_name="x", w_name="weight_shape")
    geo = plan.geo
    checks.shape_equal(dy, "dy", geo.output_shape, "the forward output for x and weight_shape")
    accumulate = checks.flag(accumulate, "accumulate")
    if accumulate and out is None:
        raise checks.value_error("out", "an array to accumulate into when accumulate=True", None)
    dw = arrays.output(out, "out", weight_shape, dy.dtype, {"dy": dy_in, "x": x_in})
    if geo.n == 0:
        if not accumulate:
            arrays.zero(dw)
        return dw
    arrays.backward_weight(plan, dy, x, accumulate, dw)
    return dw


def _backward_bias(family, dy, bias_shape, tile_mode, out, accumulate, arrays=_HOST):
    dy_in = dy
    dy = arrays.float_array(dy, "dy", 4)
    bias_shape = checks.shape_tuple(bias_shape, "bias_shape", 1 if family == CONV else 3)
    n, f, oh, ow = dy.shape
    if bias_shape[0] != f:
        raise checks.value_error("bias_shape", f"{f} biases (one per filter of dy) first", bias_shape)
    if family == CONV:
        th = tw = 1
        mode = "periodic"
    else:
        th, tw = bias_shape[1:]
        if th < 1 or tw < 1:
            raise checks.value_error("bias_shape", "at least one tile per axis", bias_shape)
        if family == LOCAL and (th, tw) != (oh, ow):
            raise checks.value_error("bias_shape", f"a bias per output position, ({f}, {oh}, {ow})", bias_shape)
        mode = "periodic" if family == LOCAL else checks.choice(tile_mode, "tile_mode", geometry.TILE_MODES)
    accumulate = checks.flag(accumulate, "accumulate")
    if accumulate and out is None:
        raise checks.value_error("out", "an array to accumulate into when accumulate=True", None)
    db = arrays.output(out, "out", bias_shape, dy.dtype, {"dy": dy_in})
    if oh == 0 or ow == 0:
        raise checks.value_error("dy", "an output gradient with OH, OW >= 1", f"shape {dy.shape}")
    arrays.backward_bias(dy, th, tw, mode == "periodic", accumulate, db)
    return db


def _backward(family, dy, x, w, b, stride, padding, dilation, groups, tile_mode, arrays=_HOST):
    dy = arrays.float_array(dy, "dy", 4)
    x = arrays.float_array(x, "x", 4, dtype=dy.dtype)
    w = arrays.float_array(w, "w", _weight_ndim(family), dtype=dy.dtype)
    if b is not None:
        b = arrays.float_array(b, "b", 1 if family == CONV else 3, dtype=dy.dtype)
        _check_weight_dims(w.shape, family, "w")
        plan = _plan(family, x.shape, w.shape, stride, padding, dilation, groups, tile_mode, x_name="x", w_name="w")
        checks.shape_equal(b, "b", plan.bias_shape, "one bias per filter" + ("" if family == CONV else " and tile"))
    dx = _backward_input(family, dy, w, tuple(x.shape), stride, padding, dilation, groups, tile_mode, None, arrays)
    dw = _backward_weight(family, dy, x, tuple(w.shape), stride, padding, dilation, groups, tile_mode, None, False,
                          arrays)
    db = None if b is None else _backward_bias(family, dy, tuple(b.shape), tile_mode, None, False, arrays)
    return dx, dw, db


# ---------------------------------------------------------------- 1-D forms as 2-D views
#
# A 1-D call is the 2-D call of height 1: x (N, C, L) is viewed as
# (N, C, 1, L), weights and biases get unit axes where the 2-D layouts have
# their height. ``np.expand_dims`` makes views, so ``out`` buffers are
# written in place and nothing is copied.

_X_AXES = (2,)
_WEIGHT_AXES = {CONV: (2,), TILED: (0, 4), LOCAL: (0, 4)}
_BIAS_AXES = {CONV: (), TILED: (1,), LOCAL: (1,)}


def _weight_ndim_1d(family):
    return 3 if family == CONV else 4


def _bias_ndim_1d(family):
    return 1 if family == CONV else 2


def _unit_axes(array, axes, name, ndim):
    """``array`` (checked to be an ndarray of rank ``ndim``) with unit axes inserted, as a view."""
    if array is None:
        return None
    if not isinstance(array, np.ndarray):
        raise checks.type_error(name, f"a {ndim}-D numpy.ndarray", checks.describe(array))
    if array.ndim != ndim:
        raise checks.value_error(name, f"a {ndim}-D array", f"shape {array.shape}")
    return np.expand_dims(array, axes) if axes else array


def _shape_unit_axes(shape, axes, name, ndim):
    shape = list(checks.shape_tuple(shape, name, ndim))
    for axis in axes:
        shape.insert(axis, 1)
    return tuple(shape)


def _params_2d(stride, padding, dilation):
    return ((1, geometry.stride1d(stride, "stride")), geometry.padding1d(padding),
            (1, geometry.stride1d(dilation, "dilation")))


def _drop_unit_axes(result, axes, out, arrays=_HOST):
    return out if out is not None else arrays.squeeze(result, axes)


def _forward_1d(family, x, w, b, stride, padding, dilation, groups, tile_mode, out, arrays=_HOST):
    x2 = arrays.unit_axes(x, _X_AXES, "x", 3)
    w2 = arrays.unit_axes(w, _WEIGHT_AXES[family], "w", _weight_ndim_1d(family))
    b2 = arrays.unit_axes(b, _BIAS_AXES[family], "b", _bias_ndim_1d(family))
    stride, padding, dilation = _params_2d(stride, padding, dilation)
    out2 = arrays.unit_axes(out, _X_AXES, "out", 3)
    y = _forward(family, x2, w2, b2, stride, padding, dilation, groups, tile_mode, out2, arrays)
    return _drop_unit_axes(y, _X_AXES, out, arrays)


def _backward_input_1d(family, dy, w, input_shape, stride, padding, dilation, groups, tile_mode, out, arrays=_HOST):
    dy2 = arrays.unit_axes(dy, _X_AXES, "dy", 3)
    w2 = arrays.unit_axes(w, _WEIGHT_AXES[family], "w", _weight_ndim_1d(family))
    shape2 = _shape_unit_axes(input_shape, _X_AXES, "input_shape", 3)
    stride, padding, dilation = _params_2d(stride, padding, dilation)
    out2 = arrays.unit_axes(out, _X_AXES, "out", 3)
    dx = _backward_input(family, dy2, w2, shape2, stride, padding, dilation, groups, tile_mode, out2, arrays)
    return _drop_unit_axes(dx, _X_AXES, out, arrays)


def _backward_weight_1d(family, dy, x, weight_shape, stride, padding, dilation, groups, tile_mode, out, accumulate,
                        arrays=_HOST):
    dy2 = arrays.unit_axes(dy, _X_AXES, "dy", 3)
    x2 = arrays.unit_axes(x, _X_AXES, "x", 3)
    axes = _WEIGHT_AXES[family]
    shape2 = _shape_unit_axes(weight_shape, axes, "weight_shape", _weight_ndim_1d(family))
    stride, padding, dilation = _params_2d(stride, padding, dilation)
    out2 = arrays.unit_axes(out, axes, "out", _weight_ndim_1d(family))
    dw = _backward_weight(family, dy2, x2, shape2, stride, padding, dilation, groups, tile_mode, out2, accumulate,
                          arrays)
    return _drop_unit_axes(dw, axes, out, arrays)


def _backward_bias_1d(family, dy, bias_shape, tile_mode, out, accumulate, arrays=_HOST):
    dy2 = arrays.unit_axes(dy, _X_AXES, "dy", 3)
    axes = _BIAS_AXES[family]
    shape2 = _shape_unit_axes(bias_shape, axes, "bias_shape", _bias_ndim_1d(family))
    out2 = arrays.unit_axes(out, axes, "out", _bias_ndim_1d(family))
    db = _backward_bias(family, dy2, shape2, tile_mode, out2, accumulate, arrays)
    return _drop_unit_axes(db, axes, out, arrays)


def _backward_1d(family, dy, x, w, b, stride, padding, dilation, groups, tile_mode, arrays=_HOST):
    dy2 = arrays.unit_axes(dy, _X_AXES, "dy", 3)
    x2 = arrays.unit_axes(x, _X_AXES, "x", 3)
    w2 = arrays.unit_axes(w, _WEIGHT_AXES[family], "w", _weight_ndim_1d(family))
    b2 = arrays.unit_axes(b, _BIAS_AXES[family], "b", _bias_ndim_1d(family))
    stride, padding, dilation = _params_2d(stride, padding, dilation)
    dx, dw, db = _backward(family, dy2, x2, w2, b2, stride, padding, dilation, groups, tile_mode, arrays)
    return (arrays.squeeze(dx, _X_AXES), arrays.squeeze(dw, _WEIGHT_AXES[family]),
            None if db is None else arrays.squeeze(db, _BIAS_AXES[family]))


# ---------------------------------------------------------------- public functions


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Shared 2-D convolution (cross-correlation, as in PyTorch) forward: ``y = b[f] + sum_{c,a,b} w[f, c, a, b] x[n, g*Cg + c, i*SH - PT + a*DH, j*SW - PL + b*DW]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input, float32 or float64.
    w : ndarray, shape (F, C/groups, KH, KW)
        One filter bank shared by every output position.
    b : ndarray, shape (F,), optional
        One bias per filter.
    stride, dilation : int or (SH, SW)
        Step between output positions and between kernel taps.
    padding : int, (SH, SW), ((top, bottom), (left, right)), "valid" or "same"
        Zeros added around the input; ``"same"`` needs stride 1 and puts an odd extra cell bottom/right.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    out : ndarray, shape (N, F, OH, OW), optional
        C-contiguous buffer of the input dtype to write into; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW)
        ``OH = floor((H + pad_top + pad_bottom - DH*(KH-1) - 1) / SH) + 1``, likewise OW.

    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input.
    """
    if checks.device_of({"x": x, "w": w, "b": b, "out": out}) == "cuda":
        return _cuda().conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _forward(CONV, x, w, b, stride, padding, dilation, groups, None, out)


def conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Gradient of :func:`conv2d_forward` with respect to ``x``: ``dx = conv2d_forward^T(dy)``.

    Each input element gathers the output positions that read it; see
    ``docs/derivations/conv.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape (F, C/groups, KH, KW)
    input_shape : tuple of ints
        Shape of ``x``, (N, C, H, W).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (N, C, H, W), optional
        Buffer to write ``dx`` into; returned.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    if checks.device_of({"dy": dy, "w": w, "out": out}) == "cuda":
        return _cuda().conv2d_backward_input(dy, w, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _backward_input(CONV, dy, w, input_shape, stride, padding, dilation, groups, None, out)


def conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False, stream=0):
    """Gradient of :func:`conv2d_forward` with respect to ``w``.

    ``dw[f, c, a, b] = sum_{n,i,j} dy[n, f, i, j] x[n, c, i*SH - PT + a*DH, j*SW - PL + b*DW]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
    weight_shape : tuple of ints
        Shape of ``w``, (F, C/groups, KH, KW).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (F, C/groups, KH, KW), optional
        Buffer for ``dw``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dw : ndarray, shape (F, C/groups, KH, KW)
    """
    if checks.device_of({"dy": dy, "x": x, "out": out}) == "cuda":
        return _cuda().conv2d_backward_weight(dy, x, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, accumulate=accumulate, stream=stream)
    return _backward_weight(CONV, dy, x, weight_shape, stride, padding, dilation, groups, None, out, accumulate)


def conv2d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    """Gradient of :func:`conv2d_forward` with respect to ``b``: ``db[f] = sum_{n,i,j} dy[n, f, i, j]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    bias_shape : tuple of ints
        Shape of ``b``, (F,).
    out : ndarray, shape (F,), optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    db : ndarray, shape (F,)
    """
    if checks.device_of({"dy": dy, "out": out}) == "cuda":
        return _cuda().conv2d_backward_bias(dy, bias_shape, out=out, accumulate=accumulate, stream=stream)
    return _backward_bias(CONV, dy, bias_shape, None, out, accumulate)


def conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    """All gradients of :func:`conv2d_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C/groups, KH, KW)
    b : ndarray, shape (F,), optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    stride, padding, dilation, groups
        As given to the forward.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C/groups, KH, KW)
    db : ndarray, shape (F,), or None
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b}) == "cuda":
        return _cuda().conv2d_backward(dy, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, stream=stream)
    return _backward(CONV, dy, x, w, b, stride, padding, dilation, groups, None)


def tiled_conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None, stream=0):
    """Tiled 2-D convolution (Ngiam et al. 2010) forward: ``y = b[f, ti, tj] + sum w[ti, tj, f, c, a, b] x[n, c, i*SH - PT + a*DH, j*SW - PL + b*DW]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input, float32 or float64.
    w : ndarray, shape (TH, TW, F, C/groups, KH, KW)
        TH x TW filter banks; output (i, j) uses bank (ti, tj) = (i % TH, j % TW) in ``"periodic"`` mode,
        (i * TH // OH, j * TW // OW) in ``"block"`` mode.
    b : ndarray, shape (F, TH, TW), optional
        One bias per filter and tile.
    stride, dilation : int or (SH, SW)
        Step between output positions and between kernel taps.
    padding : int, (SH, SW), ((top, bottom), (left, right)), "valid" or "same"
        Zeros added around the input; ``"same"`` needs stride 1 and puts an odd extra cell bottom/right.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    tile_mode : {"periodic", "block"}
        How output positions map to tiles.
    out : ndarray, shape (N, F, OH, OW), optional
        C-contiguous buffer of the input dtype to write into; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW)
        Output size as for :func:`conv2d_forward`.

    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input.
    """
    if checks.device_of({"x": x, "w": w, "b": b, "out": out}) == "cuda":
        return _cuda().tiled_conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, out=out, stream=stream)
    return _forward(TILED, x, w, b, stride, padding, dilation, groups, tile_mode, out)


def tiled_conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None, stream=0):
    """Gradient of :func:`tiled_conv2d_forward` with respect to ``x``: ``dx = tiled_conv2d_forward^T(dy)``.

    Each input element gathers the output positions that read it; see
    ``docs/derivations/conv.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape (TH, TW, F, C/groups, KH, KW)
    input_shape : tuple of ints
        Shape of ``x``, (N, C, H, W).
    stride, padding, dilation, groups, tile_mode
        As given to the forward.
    out : ndarray, shape (N, C, H, W), optional
        Buffer to write ``dx`` into; returned.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    if checks.device_of({"dy": dy, "w": w, "out": out}) == "cuda":
        return _cuda().tiled_conv2d_backward_input(dy, w, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, out=out, stream=stream)
    return _backward_input(TILED, dy, w, input_shape, stride, padding, dilation, groups, tile_mode, out)


def tiled_conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None, accumulate=False, stream=0):
    """Gradient of :func:`tiled_conv2d_forward` with respect to ``w``.

    ``dw[ti, tj]`` sums the conv2d weight gradient over the output positions that use tile ``(ti, tj)``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
    weight_shape : tuple of ints
        Shape of ``w``, (TH, TW, F, C/groups, KH, KW).
    stride, padding, dilation, groups, tile_mode
        As given to the forward.
    out : ndarray, shape (TH, TW, F, C/groups, KH, KW), optional
        Buffer for ``dw``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dw : ndarray, shape (TH, TW, F, C/groups, KH, KW)
    """
    if checks.device_of({"dy": dy, "x": x, "out": out}) == "cuda":
        return _cuda().tiled_conv2d_backward_weight(dy, x, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, out=out, accumulate=accumulate, stream=stream)
    return _backward_weight(TILED, dy, x, weight_shape, stride, padding, dilation, groups, tile_mode, out, accumulate)


def tiled_conv2d_backward_bias(dy, bias_shape, *, tile_mode="periodic", out=None, accumulate=False, stream=0):
    """Gradient of :func:`tiled_conv2d_forward` with respect to ``b``: ``db[f, ti, tj]`` sums ``dy[:, f]`` over the positions of tile ``(ti, tj)``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    bias_shape : tuple of ints
        Shape of ``b``, (F, TH, TW).
    tile_mode : {"periodic", "block"}
        As given to the forward.
    out : ndarray, shape (F, TH, TW), optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    db : ndarray, shape (F, TH, TW)
    """
    if checks.device_of({"dy": dy, "out": out}) == "cuda":
        return _cuda().tiled_conv2d_backward_bias(dy, bias_shape, tile_mode=tile_mode, out=out, accumulate=accumulate, stream=stream)
    return _backward_bias(TILED, dy, bias_shape, tile_mode, out, accumulate)


def tiled_conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", stream=0):
    """All gradients of :func:`tiled_conv2d_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (TH, TW, F, C/groups, KH, KW)
    b : ndarray, shape (F, TH, TW), optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    stride, padding, dilation, groups, tile_mode
        As given to the forward.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (TH, TW, F, C/groups, KH, KW)
    db : ndarray, shape (F, TH, TW), or None
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b}) == "cuda":
        return _cuda().tiled_conv2d_backward(dy, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, stream=stream)
    return _backward(TILED, dy, x, w, b, stride, padding, dilation, groups, tile_mode)


def local_conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Locally connected (unshared) 2-D convolution, as in DeepFace forward: ``y = b[f, i, j] + sum w[i, j, f, c, a, b] x[n, c, i*SH - PT + a*DH, j*SW - PL + b*DW]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input, float32 or float64.
    w : ndarray, shape (OH, OW, F, C/groups, KH, KW)
        A filter bank per output position; (OH, OW) must be the output size
        (see :func:`lcnumba.geometry.local_conv2d_output_shape`).
    b : ndarray, shape (F, OH, OW), optional
        One bias per filter and output position.
    stride, dilation : int or (SH, SW)
        Step between output positions and between kernel taps.
    padding : int, (SH, SW), ((top, bottom), (left, right)), "valid" or "same"
        Zeros added around the input; ``"same"`` needs stride 1 and puts an odd extra cell bottom/right.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    out : ndarray, shape (N, F, OH, OW), optional
        C-contiguous buffer of the input dtype to write into; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, F, OH, OW)
        Output size as for :func:`conv2d_forward`.

    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input.
    """
    if checks.device_of({"x": x, "w": w, "b": b, "out": out}) == "cuda":
        return _cuda().local_conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _forward(LOCAL, x, w, b, stride, padding, dilation, groups, None, out)


def local_conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Gradient of :func:`local_conv2d_forward` with respect to ``x``: ``dx = local_conv2d_forward^T(dy)``.

    Each input element gathers the output positions that read it; see
    ``docs/derivations/conv.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape (OH, OW, F, C/groups, KH, KW)
    input_shape : tuple of ints
        Shape of ``x``, (N, C, H, W).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (N, C, H, W), optional
        Buffer to write ``dx`` into; returned.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    if checks.device_of({"dy": dy, "w": w, "out": out}) == "cuda":
        return _cuda().local_conv2d_backward_input(dy, w, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _backward_input(LOCAL, dy, w, input_shape, stride, padding, dilation, groups, None, out)


def local_conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False, stream=0):
    """Gradient of :func:`local_conv2d_forward` with respect to ``w``.

    ``dw[i, j, f, c, a, b] = sum_n dy[n, f, i, j] x[n, c, i*SH - PT + a*DH, j*SW - PL + b*DW]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
    weight_shape : tuple of ints
        Shape of ``w``, (OH, OW, F, C/groups, KH, KW).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (OH, OW, F, C/groups, KH, KW), optional
        Buffer for ``dw``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dw : ndarray, shape (OH, OW, F, C/groups, KH, KW)
    """
    if checks.device_of({"dy": dy, "x": x, "out": out}) == "cuda":
        return _cuda().local_conv2d_backward_weight(dy, x, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, accumulate=accumulate, stream=stream)
    return _backward_weight(LOCAL, dy, x, weight_shape, stride, padding, dilation, groups, None, out, accumulate)


def local_conv2d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    """Gradient of :func:`local_conv2d_forward` with respect to ``b``: ``db[f, i, j] = sum_n dy[n, f, i, j]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    bias_shape : tuple of ints
        Shape of ``b``, (F, OH, OW).
    out : ndarray, shape (F, OH, OW), optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    db : ndarray, shape (F, OH, OW)
    """
    if checks.device_of({"dy": dy, "out": out}) == "cuda":
        return _cuda().local_conv2d_backward_bias(dy, bias_shape, out=out, accumulate=accumulate, stream=stream)
    return _backward_bias(LOCAL, dy, bias_shape, None, out, accumulate)


def local_conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    """All gradients of :func:`local_conv2d_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (OH, OW, F, C/groups, KH, KW)
    b : ndarray, shape (F, OH, OW), optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    stride, padding, dilation, groups
        As given to the forward.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (OH, OW, F, C/groups, KH, KW)
    db : ndarray, shape (F, OH, OW), or None
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b}) == "cuda":
        return _cuda().local_conv2d_backward(dy, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, stream=stream)
    return _backward(LOCAL, dy, x, w, b, stride, padding, dilation, groups, None)


def conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Shared 1-D convolution forward: ``y = b[f] + sum_{c,k} w[f, c, k] x[n, c, l*S - P + k*D]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L)
        Input, float32 or float64.
    w : ndarray, shape (F, C/groups, K)
        One filter bank shared by every output position.
    b : ndarray, shape (F,), optional
        One bias per filter.
    stride, dilation : int or 1-tuple
        Step between output positions and between kernel taps.
    padding : int, 1-tuple, (left, right), "valid" or "same"
        Zeros added around the input; ``"same"`` needs stride 1 and puts an odd extra cell right.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    out : ndarray, shape (N, F, OL), optional
        C-contiguous buffer of the input dtype to write into; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, F, OL)
        ``OL = floor((L + pad_left + pad_right - D*(K-1) - 1) / S) + 1``.

    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input.
    """
    if checks.device_of({"x": x, "w": w, "b": b, "out": out}) == "cuda":
        return _cuda().conv1d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _forward_1d(CONV, x, w, b, stride, padding, dilation, groups, None, out)


def conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Gradient of :func:`conv1d_forward` with respect to ``x``: ``dx = conv1d_forward^T(dy)``.

    Each input element gathers the output positions that read it; see
    ``docs/derivations/conv.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape (F, C/groups, K)
    input_shape : tuple of ints
        Shape of ``x``, (N, C, L).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (N, C, L), optional
        Buffer to write ``dx`` into; returned.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)
    """
    if checks.device_of({"dy": dy, "w": w, "out": out}) == "cuda":
        return _cuda().conv1d_backward_input(dy, w, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _backward_input_1d(CONV, dy, w, input_shape, stride, padding, dilation, groups, None, out)


def conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False, stream=0):
    """Gradient of :func:`conv1d_forward` with respect to ``w``.

    ``dw[f, c, k] = sum_{n,l} dy[n, f, l] x[n, c, l*S - P + k*D]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    x : ndarray, shape (N, C, L)
    weight_shape : tuple of ints
        Shape of ``w``, (F, C/groups, K).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (F, C/groups, K), optional
        Buffer for ``dw``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dw : ndarray, shape (F, C/groups, K)
    """
    if checks.device_of({"dy": dy, "x": x, "out": out}) == "cuda":
        return _cuda().conv1d_backward_weight(dy, x, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, accumulate=accumulate, stream=stream)
    return _backward_weight_1d(CONV, dy, x, weight_shape, stride, padding, dilation, groups, None, out, accumulate)


def conv1d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    """Gradient of :func:`conv1d_forward` with respect to ``b``: ``db[f] = sum_{n,l} dy[n, f, l]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    bias_shape : tuple of ints
        Shape of ``b``, (F,).
    out : ndarray, shape (F,), optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    db : ndarray, shape (F,)
    """
    if checks.device_of({"dy": dy, "out": out}) == "cuda":
        return _cuda().conv1d_backward_bias(dy, bias_shape, out=out, accumulate=accumulate, stream=stream)
    return _backward_bias_1d(CONV, dy, bias_shape, None, out, accumulate)


def conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    """All gradients of :func:`conv1d_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    x : ndarray, shape (N, C, L)
    w : ndarray, shape (F, C/groups, K)
    b : ndarray, shape (F,), optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    stride, padding, dilation, groups
        As given to the forward.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)
    dw : ndarray, shape (F, C/groups, K)
    db : ndarray, shape (F,), or None
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b}) == "cuda":
        return _cuda().conv1d_backward(dy, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, stream=stream)
    return _backward_1d(CONV, dy, x, w, b, stride, padding, dilation, groups, None)


def tiled_conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None, stream=0):
    """Tiled 1-D convolution forward: ``y = b[f, t] + sum w[t, f, c, k] x[n, c, l*S - P + k*D]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L)
        Input, float32 or float64.
    w : ndarray, shape (T, F, C/groups, K)
        T filter banks; output l uses bank l % T (``"periodic"``) or l * T // OL (``"block"``).
    b : ndarray, shape (F, T), optional
        One bias per filter and tile.
    stride, dilation : int or 1-tuple
        Step between output positions and between kernel taps.
    padding : int, 1-tuple, (left, right), "valid" or "same"
        Zeros added around the input; ``"same"`` needs stride 1 and puts an odd extra cell right.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    tile_mode : {"periodic", "block"}
        How output positions map to tiles.
    out : ndarray, shape (N, F, OL), optional
        C-contiguous buffer of the input dtype to write into; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, F, OL)
        Output size as for :func:`conv1d_forward`.

    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input.
    """
    if checks.device_of({"x": x, "w": w, "b": b, "out": out}) == "cuda":
        return _cuda().tiled_conv1d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, out=out, stream=stream)
    return _forward_1d(TILED, x, w, b, stride, padding, dilation, groups, tile_mode, out)


def tiled_conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None, stream=0):
    """Gradient of :func:`tiled_conv1d_forward` with respect to ``x``: ``dx = tiled_conv1d_forward^T(dy)``.

    Each input element gathers the output positions that read it; see
    ``docs/derivations/conv.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape (T, F, C/groups, K)
    input_shape : tuple of ints
        Shape of ``x``, (N, C, L).
    stride, padding, dilation, groups, tile_mode
        As given to the forward.
    out : ndarray, shape (N, C, L), optional
        Buffer to write ``dx`` into; returned.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)
    """
    if checks.device_of({"dy": dy, "w": w, "out": out}) == "cuda":
        return _cuda().tiled_conv1d_backward_input(dy, w, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, out=out, stream=stream)
    return _backward_input_1d(TILED, dy, w, input_shape, stride, padding, dilation, groups, tile_mode, out)


def tiled_conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None, accumulate=False, stream=0):
    """Gradient of :func:`tiled_conv1d_forward` with respect to ``w``.

    ``dw[t]`` sums the conv1d weight gradient over the positions that use tile ``t``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    x : ndarray, shape (N, C, L)
    weight_shape : tuple of ints
        Shape of ``w``, (T, F, C/groups, K).
    stride, padding, dilation, groups, tile_mode
        As given to the forward.
    out : ndarray, shape (T, F, C/groups, K), optional
        Buffer for ``dw``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dw : ndarray, shape (T, F, C/groups, K)
    """
    if checks.device_of({"dy": dy, "x": x, "out": out}) == "cuda":
        return _cuda().tiled_conv1d_backward_weight(dy, x, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, out=out, accumulate=accumulate, stream=stream)
    return _backward_weight_1d(TILED, dy, x, weight_shape, stride, padding, dilation, groups, tile_mode, out, accumulate)


def tiled_conv1d_backward_bias(dy, bias_shape, *, tile_mode="periodic", out=None, accumulate=False, stream=0):
    """Gradient of :func:`tiled_conv1d_forward` with respect to ``b``: ``db[f, t]`` sums ``dy[:, f]`` over the positions of tile ``t``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    bias_shape : tuple of ints
        Shape of ``b``, (F, T).
    tile_mode : {"periodic", "block"}
        As given to the forward.
    out : ndarray, shape (F, T), optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    db : ndarray, shape (F, T)
    """
    if checks.device_of({"dy": dy, "out": out}) == "cuda":
        return _cuda().tiled_conv1d_backward_bias(dy, bias_shape, tile_mode=tile_mode, out=out, accumulate=accumulate, stream=stream)
    return _backward_bias_1d(TILED, dy, bias_shape, tile_mode, out, accumulate)


def tiled_conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", stream=0):
    """All gradients of :func:`tiled_conv1d_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    x : ndarray, shape (N, C, L)
    w : ndarray, shape (T, F, C/groups, K)
    b : ndarray, shape (F, T), optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    stride, padding, dilation, groups, tile_mode
        As given to the forward.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)
    dw : ndarray, shape (T, F, C/groups, K)
    db : ndarray, shape (F, T), or None
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b}) == "cuda":
        return _cuda().tiled_conv1d_backward(dy, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, tile_mode=tile_mode, stream=stream)
    return _backward_1d(TILED, dy, x, w, b, stride, padding, dilation, groups, tile_mode)


def local_conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Locally connected (unshared) 1-D convolution forward: ``y = b[f, l] + sum w[l, f, c, k] x[n, c, l*S - P + k*D]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L)
        Input, float32 or float64.
    w : ndarray, shape (OL, F, C/groups, K)
        A filter bank per output position; OL must be the output length.
    b : ndarray, shape (F, OL), optional
        One bias per filter and position.
    stride, dilation : int or 1-tuple
        Step between output positions and between kernel taps.
    padding : int, 1-tuple, (left, right), "valid" or "same"
        Zeros added around the input; ``"same"`` needs stride 1 and puts an odd extra cell right.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    out : ndarray, shape (N, F, OL), optional
        C-contiguous buffer of the input dtype to write into; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, F, OL)
        Output size as for :func:`conv1d_forward`.

    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input.
    """
    if checks.device_of({"x": x, "w": w, "b": b, "out": out}) == "cuda":
        return _cuda().local_conv1d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _forward_1d(LOCAL, x, w, b, stride, padding, dilation, groups, None, out)


def local_conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    """Gradient of :func:`local_conv1d_forward` with respect to ``x``: ``dx = local_conv1d_forward^T(dy)``.

    Each input element gathers the output positions that read it; see
    ``docs/derivations/conv.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape (OL, F, C/groups, K)
    input_shape : tuple of ints
        Shape of ``x``, (N, C, L).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (N, C, L), optional
        Buffer to write ``dx`` into; returned.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)
    """
    if checks.device_of({"dy": dy, "w": w, "out": out}) == "cuda":
        return _cuda().local_conv1d_backward_input(dy, w, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, stream=stream)
    return _backward_input_1d(LOCAL, dy, w, input_shape, stride, padding, dilation, groups, None, out)


def local_conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, accumulate=False, stream=0):
    """Gradient of :func:`local_conv1d_forward` with respect to ``w``.

    ``dw[l, f, c, k] = sum_n dy[n, f, l] x[n, c, l*S - P + k*D]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    x : ndarray, shape (N, C, L)
    weight_shape : tuple of ints
        Shape of ``w``, (OL, F, C/groups, K).
    stride, padding, dilation, groups
        As given to the forward.
    out : ndarray, shape (OL, F, C/groups, K), optional
        Buffer for ``dw``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dw : ndarray, shape (OL, F, C/groups, K)
    """
    if checks.device_of({"dy": dy, "x": x, "out": out}) == "cuda":
        return _cuda().local_conv1d_backward_weight(dy, x, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups, out=out, accumulate=accumulate, stream=stream)
    return _backward_weight_1d(LOCAL, dy, x, weight_shape, stride, padding, dilation, groups, None, out, accumulate)


def local_conv1d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    """Gradient of :func:`local_conv1d_forward` with respect to ``b``: ``db[f, l] = sum_n dy[n, f, l]``.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    bias_shape : tuple of ints
        Shape of ``b``, (F, OL).
    out : ndarray, shape (F, OL), optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    db : ndarray, shape (F, OL)
    """
    if checks.device_of({"dy": dy, "out": out}) == "cuda":
        return _cuda().local_conv1d_backward_bias(dy, bias_shape, out=out, accumulate=accumulate, stream=stream)
    return _backward_bias_1d(LOCAL, dy, bias_shape, None, out, accumulate)


def local_conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    """All gradients of :func:`local_conv1d_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape (N, F, OL)
    x : ndarray, shape (N, C, L)
    w : ndarray, shape (OL, F, C/groups, K)
    b : ndarray, shape (F, OL), optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    stride, padding, dilation, groups
        As given to the forward.
    stream : int
        CUDA stream (ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape (N, C, L)
    dw : ndarray, shape (OL, F, C/groups, K)
    db : ndarray, shape (F, OL), or None
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b}) == "cuda":
        return _cuda().local_conv1d_backward(dy, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, stream=stream)
    return _backward_1d(LOCAL, dy, x, w, b, stride, padding, dilation, groups, None)


def _cuda():
    """The CUDA implementations, imported on first use so that ``import lcnumba`` needs no CUDA."""
    from ..gpu import ops as cuda_ops

    return cuda_ops
