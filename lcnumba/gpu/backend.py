"""The CUDA array backend: how the cores of ``lcnumba.ops`` meet device arrays and the CUDA kernels.

The twin of ``lcnumba.ops.backend.HostBackend``, with the same methods: the
cores run unchanged on either, so both devices accept and refuse the same
calls with the same messages. Arrays are Numba device arrays (real or
simulated) or objects with ``__cuda_array_interface__`` (viewed, not
copied); results are Numba device arrays. Every kernel is launched, and
every output and scratch buffer allocated, on the call's ``stream``.
Nothing synchronises: ``pool_backward`` checks the caller's indices in its
kernel, which writes a bad one to mapped host memory (see
``lcnumba.gpu.pool`` for when that error surfaces).

Imported only when a call has CUDA arrays, so ``import lcnumba`` needs no
numba-cuda.
"""

import numpy as np

from .. import checks
from . import conv as conv_kernels
from . import launch
from . import local as local_kernels
from . import netvlad as netvlad_kernels
from . import padding as padding_kernels
from . import pool as pool_kernels
from . import vlad_options


class DeviceBackend:
    """CUDA arrays on one stream, run by the ``@cuda.jit`` kernels of ``lcnumba.gpu``."""

    device = "cuda"

    def __init__(self, stream=0):
        self.stream = launch.stream_arg(stream)

    # ------------------------------------------------------------ arrays

    def float_array(self, value, name, ndim):
        return launch.float_array(value, name, ndim, None, self.stream)

    def index_array(self, value, name, shape):
        return launch.index_array(value, name, shape, self.stream)

    def mask_array(self, value, name, x_shape):
        """The CUDA twin of ``checks.mask_array``: bool or integer (N, M) or (N, H, W), as a contiguous (N, M)."""
        arr = launch.as_device(value, name)
        checks.mask_dtype_and_shape(name, arr.dtype, tuple(arr.shape), x_shape)
        return launch.contiguous(arr, self.stream).reshape(x_shape[0], int(np.prod(x_shape[2:])))

    def output(self, out, name, shape, dtype, inputs):
        return launch.output(out, name, shape, dtype, inputs, self.stream)

    def zero(self, array):
        launch.fill(array, 0, self.stream)


    # ------------------------------------------------------------ convolution family

    # A plan with one tile per output position (local convolution, or a tiled one with as many tiles)
    # runs on the streaming kernels of ``lcnumba.gpu.local``, every other on ``lcnumba.gpu.conv``.

    def conv_forward(self, x, w, b, plan, y):
        if _per_position(plan):
            local_kernels.forward(x, w, b, plan.kernel_args, plan.geo.groups, y, self.stream)
            return
        conv_kernels.forward(x, w, b, *plan.tiling, plan.kernel_args, plan.geo.groups, y, self.stream)

    def conv_backward_input(self, dy, w, plan, dx):
        if _per_position(plan):
            local_kernels.backward_input(dy, w, plan.kernel_args, plan.geo.groups, dx, self.stream)
            return
        conv_kernels.backward_input(dy, w, *plan.tiling, plan.kernel_args, plan.geo.groups, dx, self.stream)

    def conv_backward_weight(self, dy, x, plan, accumulate, dw):
        if _per_position(plan):
            local_kernels.backward_weight(dy, x, plan.kernel_args, plan.geo.groups, accumulate, dw, self.stream)
            return
        conv_kernels.backward_weight(dy, x, *plan.tiling, plan.kernel_args, plan.geo.groups, accumulate, dw,
                                     self.stream)

    def conv_pad(self, x, pads, mode, xp):
        padding_kernels.pad(x, pads, mode, xp, self.stream)

    def conv_fold(self, dxp, pads, mode, dx):
        padding_kernels.fold(dxp, pads, mode, dx, self.stream)

    def conv_backward_bias(self, dy, tiling, accumulate, db):
        conv_kernels.backward_bias(dy, *tiling, accumulate, db, self.stream)

    def conv_add_bias(self, z, b, tiling, y):
        """``y = z + b[:, tile of the position]``: the forward kernel of a 1x1 depthwise convolution of ones.

        ``1 * z + b`` rounds as ``z + b``, so this is exactly the sum, with the kernels the family has.
        """
        f = y.shape[1]
        th, tw, periodic = tiling
        ones = launch.output(None, "ones", (th * tw, f, 1), y.dtype, {}, self.stream)
        launch.fill(ones, 1, self.stream)
        conv_kernels.forward(z, ones, b, th, tw, periodic, (1, 1, 1, 1, 0, 0, 1, 1), f, y, self.stream)

    # The transposed family: the forward family's kernels with the arrays exchanged (``lcnumba.cpu.conv_transpose``).

    def conv_transpose_forward(self, x, w, b, tplan, y):
        """``y = conv_transpose(x, w) + b``: x (N, C, H, W), w flat, b (F, bias tiles) or None, y (N, F, OH, OW)."""
        if b is None:
            self.conv_backward_input(x, w, tplan.forward, y)
            return
        z = self.output(None, "y", tuple(y.shape), y.dtype, {})
        self.conv_backward_input(x, w, tplan.forward, z)
        self.conv_add_bias(z, b, tplan.bias_tiling, y)

    def conv_transpose_backward_input(self, dy, w, tplan, dx):
        self.conv_forward(dy, w, None, tplan.forward, dx)

    def conv_transpose_backward_weight(self, dy, x, tplan, accumulate, dw):
        self.conv_backward_weight(x, dy, tplan.forward, accumulate, dw)

    # ------------------------------------------------------------ max-pooling

    def pool_forward(self, x, geo, y, indices):
        pool_kernels.forward(x, geo.kernel_args, y, indices, self.stream)

    def pool_backward(self, dy, indices, geo, dx):
        """``dy`` (planes, OH, OW) into ``dx`` (planes, H, W): gathered with the geometry ``geo``, else scattered;
        the first bad index when it is known without waiting, else None.

        Never synchronises: a bad index may surface at a later max-pooling backward (``lcnumba.gpu.pool``).
        """
        return pool_kernels.backward(dy, indices, geo, dx, self.stream)

    # ------------------------------------------------------------ NetVLAD

    def netvlad_forward(self, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, eps, mask, y):
        if intra_normalize and final_normalize and mask is None:
            netvlad_kernels.forward(x, w, b, centroids, normalize_input, eps, y, self.stream)
        else:
            vlad_options.netvlad_forward(x, w, b, centroids, normalize_input, intra_normalize, final_normalize, eps,
                                         mask, y, self.stream)

    def netvlad_backward(self, dy, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, eps, mask):
        if intra_normalize and final_normalize and mask is None:
            return netvlad_kernels.backward(dy, x, w, b, centroids, normalize_input, eps, self.stream)
        return vlad_options.netvlad_backward(dy, x, w, b, centroids, normalize_input, intra_normalize,
                                             final_normalize, eps, mask, self.stream)

    def vlad_aggregate_forward(self, x, a, centroids, intra_normalize, final_normalize, eps, y):
        vlad_options.aggregate_forward(x, a, centroids, intra_normalize, final_normalize, eps, y, self.stream)

    def vlad_aggregate_backward(self, dy, x, a, centroids, intra_normalize, final_normalize, eps):
        return vlad_options.aggregate_backward(dy, x, a, centroids, intra_normalize, final_normalize, eps,
                                               self.stream)

    def netvlad_pca_forward(self, v, projection, bias, eps, y):
        vlad_options.pca_forward(v, projection, bias, eps, y, self.stream)

    def netvlad_pca_backward(self, dy, v, projection, bias, eps):
        return vlad_options.pca_backward(dy, v, projection, bias, eps, self.stream)


def _per_position(plan):
    """Whether every output position has a bank of its own (bank ``i * OW + j``, whatever the tile mode)."""
    return plan.th == plan.geo.oh and plan.tw == plan.geo.ow
