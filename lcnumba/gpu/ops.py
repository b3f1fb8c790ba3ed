"""The public functions on CUDA arrays: the same names, arguments, checks and results as ``lcnumba``.

``lcnumba.ops.*`` send a call here when its arrays are CUDA arrays (Numba
device arrays, real or simulated, or objects with
``__cuda_array_interface__``); results are Numba device arrays. The
parameter normalisation and argument checks are the CPU path's own
(``lcnumba.ops.conv`` runs its cores with a :class:`DeviceArrays` backend;
max-pooling and NetVLAD reuse ``pool_geometry`` and ``_check_inputs``), so
both devices accept and refuse exactly the same calls with the same
messages. Every kernel is launched on ``stream`` and every output and
scratch buffer is allocated on it; nothing synchronises except the
max-pooling backward, which validates the caller's indices before its
kernel runs (two integers come back to the host).
"""

import numpy as np

from .. import checks
from ..ops import conv as _conv
from ..ops import netvlad as _netvlad
from ..ops import pool as _pool
from . import conv as conv_kernels
from . import launch
from . import netvlad as netvlad_kernels
from . import pool as pool_kernels

CONV, TILED, LOCAL = _conv.CONV, _conv.TILED, _conv.LOCAL


class DeviceArrays:
    """The CUDA backend of ``lcnumba.ops.conv``'s cores: device checks, views, and kernel launches on one stream."""

    def __init__(self, stream):
        self.stream = launch.stream_arg(stream)

    def float_array(self, value, name, ndim, dtype=None):
        return launch.float_array(value, name, ndim, dtype, self.stream)

    def output(self, out, name, shape, dtype, inputs):
        return launch.output(out, name, shape, dtype, inputs, self.stream)

    def unit_axes(self, array, axes, name, ndim):
        return launch.with_unit_axes(array, axes, name, ndim, self.stream)

    @staticmethod
    def squeeze(array, axes):
        return launch.without_axes(array, axes)

    def zero(self, array):
        launch.fill(array, 0, self.stream)

    @staticmethod
    def _flat_weight(plan, w):
        size = int(np.prod(w.shape))
        return w.reshape(plan.n_tiles, plan.geo.f, size // (plan.n_tiles * plan.geo.f))

    def forward(self, plan, x, w, b, y):
        bias = None if b is None else b.reshape(plan.geo.f, plan.n_tiles)
        conv_kernels.forward(x, self._flat_weight(plan, w), bias, *plan.tiling, plan.kernel_args, plan.geo.groups,
                             y, self.stream)

    def backward_input(self, plan, dy, w, dx):
        conv_kernels.backward_input(dy, self._flat_weight(plan, w), *plan.tiling, plan.kernel_args,
                                    plan.geo.groups, dx, self.stream)

    def backward_weight(self, plan, dy, x, accumulate, dw):
        conv_kernels.backward_weight(dy, x, *plan.tiling, plan.kernel_args, plan.geo.groups, accumulate,
                                     self._flat_weight(plan, dw), self.stream)

    def backward_bias(self, dy, th, tw, periodic, accumulate, db):
        conv_kernels.backward_bias(dy, th, tw, periodic, accumulate, db.reshape(db.shape[0], th * tw), self.stream)


# ---------------------------------------------------------------- convolution family, 2-D


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    return _conv._forward(CONV, x, w, b, stride, padding, dilation, groups, None, out, DeviceArrays(stream))


def conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    return _conv._backward_input(CONV, dy, w, input_shape, stride, padding, dilation, groups, None, out,
                                 DeviceArrays(stream))


def conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                           accumulate=False, stream=0):
    return _conv._backward_weight(CONV, dy, x, weight_shape, stride, padding, dilation, groups, None, out,
                                  accumulate, DeviceArrays(stream))


def conv2d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    return _conv._backward_bias(CONV, dy, bias_shape, None, out, accumulate, DeviceArrays(stream))


def conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    return _conv._backward(CONV, dy, x, w, b, stride, padding, dilation, groups, None, DeviceArrays(stream))


def tiled_conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None,
                         stream=0):
    return _conv._forward(TILED, x, w, b, stride, padding, dilation, groups, tile_mode, out, DeviceArrays(stream))


def tiled_conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                tile_mode="periodic", out=None, stream=0):
    return _conv._backward_input(TILED, dy, w, input_shape, stride, padding, dilation, groups, tile_mode, out,
                                 DeviceArrays(stream))


def tiled_conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                 tile_mode="periodic", out=None, accumulate=False, stream=0):
    return _conv._backward_weight(TILED, dy, x, weight_shape, stride, padding, dilation, groups, tile_mode, out,
                                  accumulate, DeviceArrays(stream))


def tiled_conv2d_backward_bias(dy, bias_shape, *, tile_mode="periodic", out=None, accumulate=False, stream=0):
    return _conv._backward_bias(TILED, dy, bias_shape, tile_mode, out, accumulate, DeviceArrays(stream))


def tiled_conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic",
                          stream=0):
    return _conv._backward(TILED, dy, x, w, b, stride, padding, dilation, groups, tile_mode, DeviceArrays(stream))


def local_conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    return _conv._forward(LOCAL, x, w, b, stride, padding, dilation, groups, None, out, DeviceArrays(stream))


def local_conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                                stream=0):
    return _conv._backward_input(LOCAL, dy, w, input_shape, stride, padding, dilation, groups, None, out,
                                 DeviceArrays(stream))


def local_conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                                 accumulate=False, stream=0):
    return _conv._backward_weight(LOCAL, dy, x, weight_shape, stride, padding, dilation, groups, None, out,
                                  accumulate, DeviceArrays(stream))


def local_conv2d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    return _conv._backward_bias(LOCAL, dy, bias_shape, None, out, accumulate, DeviceArrays(stream))


def local_conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    return _conv._backward(LOCAL, dy, x, w, b, stride, padding, dilation, groups, None, DeviceArrays(stream))


# ---------------------------------------------------------------- convolution family, 1-D (the 2-D path on views)


def conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    return _conv._forward_1d(CONV, x, w, b, stride, padding, dilation, groups, None, out, DeviceArrays(stream))


def conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    return _conv._backward_input_1d(CONV, dy, w, input_shape, stride, padding, dilation, groups, None, out,
                                    DeviceArrays(stream))


def conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                           accumulate=False, stream=0):
    return _conv._backward_weight_1d(CONV, dy, x, weight_shape, stride, padding, dilation, groups, None, out,
                                     accumulate, DeviceArrays(stream))


def conv1d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    return _conv._backward_bias_1d(CONV, dy, bias_shape, None, out, accumulate, DeviceArrays(stream))


def conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    return _conv._backward_1d(CONV, dy, x, w, b, stride, padding, dilation, groups, None, DeviceArrays(stream))


def tiled_conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic", out=None,
                         stream=0):
    return _conv._forward_1d(TILED, x, w, b, stride, padding, dilation, groups, tile_mode, out,
                             DeviceArrays(stream))


def tiled_conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                tile_mode="periodic", out=None, stream=0):
    return _conv._backward_input_1d(TILED, dy, w, input_shape, stride, padding, dilation, groups, tile_mode, out,
                                    DeviceArrays(stream))


def tiled_conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                 tile_mode="periodic", out=None, accumulate=False, stream=0):
    return _conv._backward_weight_1d(TILED, dy, x, weight_shape, stride, padding, dilation, groups, tile_mode, out,
                                     accumulate, DeviceArrays(stream))


def tiled_conv1d_backward_bias(dy, bias_shape, *, tile_mode="periodic", out=None, accumulate=False, stream=0):
    return _conv._backward_bias_1d(TILED, dy, bias_shape, tile_mode, out, accumulate, DeviceArrays(stream))


def tiled_conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic",
                          stream=0):
    return _conv._backward_1d(TILED, dy, x, w, b, stride, padding, dilation, groups, tile_mode,
                              DeviceArrays(stream))


def local_conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, out=None, stream=0):
    return _conv._forward_1d(LOCAL, x, w, b, stride, padding, dilation, groups, None, out, DeviceArrays(stream))


def local_conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                                stream=0):
    return _conv._backward_input_1d(LOCAL, dy, w, input_shape, stride, padding, dilation, groups, None, out,
                                    DeviceArrays(stream))


def local_conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None,
                                 accumulate=False, stream=0):
    return _conv._backward_weight_1d(LOCAL, dy, x, weight_shape, stride, padding, dilation, groups, None, out,
                                     accumulate, DeviceArrays(stream))


def local_conv1d_backward_bias(dy, bias_shape, *, out=None, accumulate=False, stream=0):
    return _conv._backward_bias_1d(LOCAL, dy, bias_shape, None, out, accumulate, DeviceArrays(stream))


def local_conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, stream=0):
    return _conv._backward_1d(LOCAL, dy, x, w, b, stride, padding, dilation, groups, None, DeviceArrays(stream))


# ---------------------------------------------------------------- max-pooling


def _pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out, indices_out, stream,
                  input_name="x"):
    x_in = x
    x = launch.float_array(x, input_name, 4, stream=stream)
    geo = _pool.pool_geometry(tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode,
                              input_name=input_name)
    return_indices = checks.flag(return_indices, "return_indices")
    y = launch.output(out, "out", geo.output_shape, x.dtype, {input_name: x_in}, stream)
    planes = geo.n * geo.c
    if not return_indices:
        if indices_out is not None:
            raise checks.value_error("indices_out", "None when return_indices is False", checks.describe(indices_out))
        if planes:
            pool_kernels.forward(x.reshape(planes, geo.h, geo.w), geo.kernel_args,
                                 y.reshape(planes, geo.oh, geo.ow), None, stream)
        return y
    indices = launch.output(indices_out, "indices_out", geo.output_shape, np.int64, {input_name: x_in, "out": y},
                            stream)
    if planes:
        pool_kernels.forward(x.reshape(planes, geo.h, geo.w), geo.kernel_args, y.reshape(planes, geo.oh, geo.ow),
                             indices.reshape(planes, geo.oh, geo.ow), stream)
    return y, indices


def _pool_backward(dy, indices, input_shape, out, stream):
    dy_in, indices_in = dy, indices
    dy = launch.float_array(dy, "dy", 4, stream=stream)
    indices = launch.index_array(indices, "indices", tuple(dy.shape), stream)
    input_shape = checks.shape_tuple(input_shape, "input_shape", 4)
    n, c, h, w = input_shape
    if (n, c) != tuple(dy.shape[:2]):
        raise checks.value_error("input_shape", f"the batch and channels of dy, ({dy.shape[0]}, {dy.shape[1]}, H, W)",
                                 input_shape)
    dx = launch.output(out, "out", input_shape, dy.dtype, {"dy": dy_in, "indices": indices_in}, stream)
    planes = n * c
    per_plane = dy.shape[2] * dy.shape[3]
    if planes and per_plane:
        low, high = pool_kernels.index_bounds(indices.reshape(planes, per_plane), stream)
        if low < -1 or high >= h * w:
            bad = low if low < -1 else high
            raise checks.value_error(
                "indices", f"flat positions in [0, {h * w}) of the input plane (or -1 for none)", f"index {bad}")
    if planes and h * w:
        pool_kernels.backward(dy.reshape(planes, per_plane), indices.reshape(planes, per_plane),
                              dx.reshape(planes, h * w), stream)
    return dx


def max_pool2d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
                       out=None, indices_out=None, stream=0):
    stream = launch.stream_arg(stream)
    return _pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out, indices_out,
                         stream)


def max_pool2d_backward(dy, indices, input_shape, *, out=None, stream=0):
    stream = launch.stream_arg(stream)
    return _pool_backward(dy, indices, input_shape, out, stream)


def _rank3(value, name, expected):
    arr = launch.as_device(value, name)
    if arr.ndim != 3:
        raise checks.value_error(name, expected, f"shape {tuple(arr.shape)}")
    return arr


def max_pool1d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
                       out=None, indices_out=None, stream=0):
    stream = launch.stream_arg(stream)
    x = _rank3(x, "x", "a 3-D array")
    k, s, p, d = _pool._params_1d(kernel_size, stride, padding, dilation)
    x4 = launch.with_unit_axes(x, (2,), "x", 3, stream)
    out4 = _unit_height(out, "out", stream)
    indices4 = _unit_height(indices_out, "indices_out", stream)
    result = _pool_forward(x4, k, s, p, d, ceil_mode, return_indices, out4, indices4, stream)
    if isinstance(result, tuple):
        return (launch.without_axes(result[0], (2,)) if out is None else out,
                launch.without_axes(result[1], (2,)) if indices_out is None else indices_out)
    return launch.without_axes(result, (2,)) if out is None else out


def max_pool1d_backward(dy, indices, input_shape, *, out=None, stream=0):
    stream = launch.stream_arg(stream)
    dy = _rank3(dy, "dy", "a 3-D array")
    indices_arr = launch.as_device(indices, "indices")
    if indices_arr.ndim != 3:
        raise checks.value_error("indices", f"shape {tuple(dy.shape)}", f"shape {tuple(indices_arr.shape)}")
    n, c, length = checks.shape_tuple(input_shape, "input_shape", 3)
    dy4 = launch.with_unit_axes(dy, (2,), "dy", 3, stream)
    indices4 = launch.with_unit_axes(indices_arr, (2,), "indices", 3, stream)
    dx = _pool_backward(dy4, indices4, (n, c, 1, length), _unit_height(out, "out", stream), stream)
    return launch.without_axes(dx, (2,)) if out is None else out


def _unit_height(array, name, stream):
    """The (N, C, 1, L) view of a 3-D CUDA array; anything else is passed on for the 2-D checks to report."""
    if array is None or not checks.is_cuda_array(array):
        return array
    arr = launch.as_device(array, name)
    if arr.ndim != 3:
        return arr
    return launch.with_unit_axes(arr, (2,), name, 3, stream)


# ---------------------------------------------------------------- NetVLAD


def netvlad_forward(x, w, b, centroids, *, normalize_input=True, eps=1e-12, out=None, stream=0):
    stream = launch.stream_arg(stream)
    inputs = {"x": x, "w": w, "b": b, "centroids": centroids}
    x, w, b, centroids, normalize_input, eps = _netvlad._check_inputs(
        x, w, b, centroids, normalize_input, eps, float_array=_float_array_on(stream))
    n, d, m = x.shape
    k = centroids.shape[0]
    y = launch.output(out, "out", (n, k * d), x.dtype, inputs, stream)
    if n:
        netvlad_kernels.forward(x, w, b, centroids, normalize_input, eps, y, stream)
    return y


def netvlad_backward(dy, x, w, b, centroids, *, normalize_input=True, eps=1e-12, stream=0):
    stream = launch.stream_arg(stream)
    dy = launch.float_array(dy, "dy", 2, stream=stream)
    x_shape = tuple(launch.as_device(x, "x").shape) if checks.is_cuda_array(x) else None
    x, w, b, centroids, normalize_input, eps = _netvlad._check_inputs(
        x, w, b, centroids, normalize_input, eps, dtype=dy.dtype, float_array=_float_array_on(stream))
    n, d, m = x.shape
    kg = w.shape[0]
    k = centroids.shape[0]
    checks.shape_equal(dy, "dy", (n, k * d), "the forward output (N, K * D) for x and centroids")
    dx, dw, db, dc = netvlad_kernels.backward(dy, x, w, b, centroids, normalize_input, eps, stream)
    return dx.reshape(x_shape), dw, db, dc


def _float_array_on(stream):
    def float_array(value, name, ndim, dtype=None):
        return launch.float_array(value, name, ndim, dtype, stream)

    return float_array
