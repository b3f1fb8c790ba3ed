"""Max-pooling's cores: ``max_pool2d_*`` and ``max_pool1d_*``.

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

The backward takes the pooling geometry optionally. Without it the indices
may be any flat positions of the plane and the kernels scatter. With it the
core checks that ``dy`` and ``indices`` have the shape the forward gives
for that geometry, and a CUDA call gathers: one thread per input cell over
the windows that contain it (``gpu.pool.windows``, the windows of
``indexing.tap_range``'s taps), with no zeroing pass and no scan of a
plane's outputs per thread. The CPU scatters either way.

Each core normalises its parameters (``geometry.pool_geometry``), checks its
arguments in signature order, allocates or checks its outputs and hands
(planes, rows, columns) views to the backend's kernels. A 1-D pooling is a
2-D one of height 1; arrays are checked, and reported, at the caller's rank.
"""

import numpy as np

from .. import checks, geometry


def _geometry(fam, x_shape, kernel_size, stride, padding, dilation, ceil_mode, input_name):
    """The ``PoolGeometry`` of a call whose input has the caller's shape ``x_shape`` (a 1-D one as height 1)."""
    x4 = (x_shape[0], x_shape[1], 1, x_shape[2]) if fam.spatial == 1 else tuple(x_shape)
    params = geometry.pool_params_2d(fam.spatial, kernel_size, stride, padding, dilation)
    return geometry.pool_geometry(x4, *params, ceil_mode, input_name=input_name, spatial=fam.spatial)


def _output_shape(fam, geo):
    """``y``'s shape at the caller's rank."""
    return geo.output_shape if fam.spatial == 2 else (geo.n, geo.c, geo.ow)


def forward(fam, be, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out, indices_out):
    given = {"x": x}
    x = be.float_array(x, "x", fam.x_ndim)
    geo = _geometry(fam, tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode, "x")
    return_indices = checks.flag(return_indices, "return_indices")
    shape = _output_shape(fam, geo)
    y = be.output(out, "out", shape, x.dtype, given)
    planes = geo.n * geo.c
    if not return_indices:
        checks.indices_none_without_return(indices_out)
        if planes:
            be.pool_forward(x.reshape(planes, geo.h, geo.w), geo, y.reshape(planes, geo.oh, geo.ow), None)
        return y
    indices = be.output(indices_out, "indices_out", shape, np.dtype(np.int64), {**given, "out": y})
    if planes:
        be.pool_forward(x.reshape(planes, geo.h, geo.w), geo, y.reshape(planes, geo.oh, geo.ow),
                        indices.reshape(planes, geo.oh, geo.ow))
    return y, indices


def _backward_geometry(fam, input_shape, dy_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """The backward's ``PoolGeometry``, checked against ``dy``'s shape; None when no geometry was given.

    ``kernel_size`` decides: without it every other parameter must be None too; with it the others
    default as the forward's do (``stride`` to ``kernel_size``, no padding or dilation, no ceil_mode).
    """
    rest = {"stride": stride, "padding": padding, "dilation": dilation, "ceil_mode": ceil_mode}
    if kernel_size is None:
        for name, value in rest.items():
            checks.none_without_kernel_size(name, value)
        return None
    geo = _geometry(fam, input_shape, kernel_size, stride, 0 if padding is None else padding,
                    1 if dilation is None else dilation, False if ceil_mode is None else ceil_mode, "input_shape")
    checks.pool_gradient_shape(dy_shape, _output_shape(fam, geo), tuple(input_shape))
    return geo


def backward(fam, be, dy, indices, input_shape, kernel_size, stride, padding, dilation, ceil_mode, out):
    given = {"dy": dy, "indices": indices}
    dy = be.float_array(dy, "dy", fam.x_ndim)
    indices = be.index_array(indices, "indices", tuple(dy.shape))
    input_shape = checks.shape_tuple(input_shape, "input_shape", fam.x_ndim)
    checks.input_batch_and_channels(input_shape, tuple(dy.shape))
    geo = _backward_geometry(fam, input_shape, tuple(dy.shape), kernel_size, stride, padding, dilation, ceil_mode)
    dx = be.output(out, "out", input_shape, dy.dtype, given)
    planes = input_shape[0] * input_shape[1]
    if not planes:
        return dx
    # (planes, rows, columns) at rank 3; a 1-D pooling has one row
    per_plane = (1,) * (4 - dy.ndim) + tuple(dy.shape[2:])
    plane = (1,) * (4 - dy.ndim) + tuple(input_shape[2:])
    bad = be.pool_backward(dy.reshape(planes, *per_plane), indices.reshape(planes, *per_plane),
                           geo, dx.reshape(planes, *plane))
    checks.pool_index_valid(bad, plane[0] * plane[1])
    return dx
