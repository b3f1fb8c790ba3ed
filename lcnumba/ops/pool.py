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

Each core normalises its parameters (``geometry.pool_geometry``), checks its
arguments in signature order, allocates or checks its outputs and hands
(planes, rows, columns) views to the backend's kernels. A 1-D pooling is a
2-D one of height 1; arrays are checked, and reported, at the caller's rank.
"""

import numpy as np

from .. import checks, geometry


def forward(fam, be, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, out, indices_out):
    given = {"x": x}
    x = be.float_array(x, "x", fam.x_ndim)
    x4 = (x.shape[0], x.shape[1], 1, x.shape[2]) if fam.spatial == 1 else tuple(x.shape)
    params = geometry.pool_params_2d(fam.spatial, kernel_size, stride, padding, dilation)
    geo = geometry.pool_geometry(x4, *params, ceil_mode, spatial=fam.spatial)
    return_indices = checks.flag(return_indices, "return_indices")
    shape = geo.output_shape if fam.spatial == 2 else (geo.n, geo.c, geo.ow)
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


def backward(fam, be, dy, indices, input_shape, out):
    given = {"dy": dy, "indices": indices}
    dy = be.float_array(dy, "dy", fam.x_ndim)
    indices = be.index_array(indices, "indices", tuple(dy.shape))
    input_shape = checks.shape_tuple(input_shape, "input_shape", fam.x_ndim)
    checks.input_batch_and_channels(input_shape, tuple(dy.shape))
    dx = be.output(out, "out", input_shape, dy.dtype, given)
    planes = input_shape[0] * input_shape[1]
    per_plane = int(np.prod(dy.shape[2:]))
    plane_size = int(np.prod(input_shape[2:]))
    if not planes:
        return dx
    bad = be.pool_backward(dy.reshape(planes, per_plane), indices.reshape(planes, per_plane),
                           dx.reshape(planes, plane_size))
    checks.pool_index_valid(bad, plane_size)
    return dx
