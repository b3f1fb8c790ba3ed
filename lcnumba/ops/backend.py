"""The host array backend: how the cores meet NumPy arrays and the CPU kernels.

Every core of ``lcnumba.ops`` (normalise -> check -> allocate -> kernel)
runs on a backend object with this interface; ``lcnumba.gpu.backend`` is its
CUDA twin. Both check, allocate and launch; neither normalises parameters or
chooses what to check, so the two devices accept and refuse exactly the same
calls with the same messages.

Array methods: ``float_array``, ``index_array`` (check an input, return it
C-contiguous), ``output`` (check a caller's ``out`` or allocate one),
``zero``. Kernel methods take C-contiguous arrays in the kernels' layouts
(images (N, C, H, W), flat weights (tiles, F, C/groups * KH * KW), flat biases
(F, tiles), pooling planes, NetVLAD descriptors (N, D, M)) plus the call's
``Plan`` or ``PoolGeometry``.
"""

import numba
import numpy as np

from .. import checks
from ..cpu import conv as conv_kernels
from ..cpu import netvlad as netvlad_kernels
from ..cpu import pool as pool_kernels
from ..cpu.blas import serial_blas
from ..cpu.guard import kernel_guard


class HostBackend:
    """NumPy arrays, run by the ``@njit(parallel=True)`` kernels of ``lcnumba.cpu``."""

    device = "cpu"

    # ------------------------------------------------------------ arrays

    @staticmethod
    def float_array(value, name, ndim):
        return checks.float_array(value, name, ndim)

    @staticmethod
    def index_array(value, name, shape):
        return checks.index_array(value, name, shape)

    @staticmethod
    def output(out, name, shape, dtype, inputs):
        return checks.output(out, name, shape, dtype, inputs)

    @staticmethod
    def zero(array):
        array[...] = 0

    # ------------------------------------------------------------ convolution family

    @staticmethod
    def conv_forward(x, w, b, plan, y):
        bias = b if b is not None else np.zeros((0, 0), dtype=x.dtype)
        with kernel_guard(), serial_blas():
            conv_kernels.forward(x, w, bias, *plan.tiling, *plan.kernel_args, plan.geo.groups,
                                 numba.get_num_threads(), y)

    @staticmethod
    def conv_backward_input(dy, w, plan, dx):
        with kernel_guard(), serial_blas():
            conv_kernels.backward_input(dy, w, *plan.tiling, *plan.kernel_args, plan.geo.groups,
                                        numba.get_num_threads(), dx)

    @staticmethod
    def conv_backward_weight(dy, x, plan, accumulate, dw):
        with kernel_guard(), serial_blas():
            conv_kernels.backward_weight(dy, x, *plan.tiling, *plan.kernel_args, plan.geo.groups,
                                         numba.get_num_threads(), accumulate, dw)

    @staticmethod
    def conv_backward_bias(dy, tiling, accumulate, db):
        with kernel_guard():
            conv_kernels.backward_bias(dy, *tiling, accumulate, db)

    # ------------------------------------------------------------ max-pooling

    @staticmethod
    def pool_forward(x, geo, y, indices):
        with kernel_guard():
            if indices is None:
                pool_kernels.max_pool2d_fwd(x, y, *geo.kernel_args)
            else:
                pool_kernels.max_pool2d_fwd_indices(x, y, indices, *geo.kernel_args)

    @staticmethod
    def index_bounds(indices):
        """``(min, max)`` of the (planes, cells) index array."""
        lo = np.empty(indices.shape[0], dtype=np.int64)
        hi = np.empty(indices.shape[0], dtype=np.int64)
        with kernel_guard():
            pool_kernels.index_range(indices, lo, hi)
        return int(lo.min()), int(hi.max())

    @staticmethod
    def pool_backward(dy, indices, dx):
        with kernel_guard():
            pool_kernels.max_pool2d_bwd(dy, indices, dx)

    # ------------------------------------------------------------ NetVLAD

    @staticmethod
    def netvlad_forward(x, w, b, centroids, normalize_input, eps, y):
        with kernel_guard(), serial_blas():
            netvlad_kernels.netvlad_fwd(x, w, b, centroids, normalize_input, eps, y)

    @staticmethod
    def netvlad_backward(dy, x, w, b, centroids, normalize_input, eps):
        """``(dx (N, D, M), dw, db, dcentroids)``; per-sample weight gradients summed in sample order."""
        n, d, _ = x.shape
        kg, k = w.shape[0], centroids.shape[0]
        dtype = x.dtype
        dx = np.empty(x.shape, dtype)
        dw = np.zeros((kg, d), dtype)
        db = np.zeros((kg,), dtype)
        dc = np.zeros((k, d), dtype)
        if n == 0:
            return dx, dw, db, dc
        dw_part = np.empty((n, kg, d), dtype)
        db_part = np.empty((n, kg), dtype)
        dc_part = np.empty((n, k, d), dtype)
        with kernel_guard():
            with serial_blas():
                netvlad_kernels.netvlad_bwd(dy, x, w, b, centroids, normalize_input, eps, dx, dw_part, db_part,
                                            dc_part)
            netvlad_kernels.reduce_samples(dw_part.reshape(n, -1), dw.reshape(-1))
            netvlad_kernels.reduce_samples(db_part, db)
            netvlad_kernels.reduce_samples(dc_part.reshape(n, -1), dc.reshape(-1))
        return dx, dw, db, dc


HOST = HostBackend()
