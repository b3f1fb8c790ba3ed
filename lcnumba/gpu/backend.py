"""The CUDA array backend: how the cores of ``lcnumba.ops`` meet device arrays and the CUDA kernels.

The twin of ``lcnumba.ops.backend.HostBackend``, with the same methods: the
cores run unchanged on either, so both devices accept and refuse the same
calls with the same messages. Arrays are Numba device arrays (real or
simulated) or objects with ``__cuda_array_interface__`` (viewed, not
copied); results are Numba device arrays. Every kernel is launched, and
every output and scratch buffer allocated, on the call's ``stream``.
Nothing synchronises except ``pool_backward``, which checks the caller's
indices before its kernel runs (two integers come back to the host).

Imported only when a call has CUDA arrays, so ``import lcnumba`` needs no
numba-cuda.
"""

from . import conv as conv_kernels
from . import launch
from . import netvlad as netvlad_kernels
from . import pool as pool_kernels


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

    def output(self, out, name, shape, dtype, inputs):
        return launch.output(out, name, shape, dtype, inputs, self.stream)

    def zero(self, array):
        launch.fill(array, 0, self.stream)


    # ------------------------------------------------------------ convolution family

    def conv_forward(self, x, w, b, plan, y):
        conv_kernels.forward(x, w, b, *plan.tiling, plan.kernel_args, plan.geo.groups, y, self.stream)

    def conv_backward_input(self, dy, w, plan, dx):
        conv_kernels.backward_input(dy, w, *plan.tiling, plan.kernel_args, plan.geo.groups, dx, self.stream)

    def conv_backward_weight(self, dy, x, plan, accumulate, dw):
        conv_kernels.backward_weight(dy, x, *plan.tiling, plan.kernel_args, plan.geo.groups, accumulate, dw,
                                     self.stream)

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

    # ------------------------------------------------------------ max-pooling

    def pool_forward(self, x, geo, y, indices):
        pool_kernels.forward(x, geo.kernel_args, y, indices, self.stream)

    def pool_backward(self, dy, indices, dx):
        """Scatter ``dy`` into ``dx``; the first bad index, or None. The check synchronises the stream."""
        if dy.shape[0] and dy.shape[1]:
            low, high = pool_kernels.index_bounds(indices, self.stream)
            if low < -1 or high >= dx.shape[1]:
                return low if low < -1 else high
        if dx.shape[1]:
            pool_kernels.backward(dy, indices, dx, self.stream)
        return None

    # ------------------------------------------------------------ NetVLAD

    def netvlad_forward(self, x, w, b, centroids, normalize_input, eps, y):
        netvlad_kernels.forward(x, w, b, centroids, normalize_input, eps, y, self.stream)

    def netvlad_backward(self, dy, x, w, b, centroids, normalize_input, eps):
        return netvlad_kernels.backward(dy, x, w, b, centroids, normalize_input, eps, self.stream)
