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

import contextlib

import numba
import numpy as np

from .. import checks
from ..cpu import conv as conv_kernels
from ..cpu import conv_transpose as transpose_kernels
from ..cpu import netvlad as netvlad_kernels
from ..cpu import netvlad_pca as pca_kernels
from ..cpu import padding as padding_kernels
from ..cpu import pool as pool_kernels
from ..cpu.blas import serial_blas
from ..cpu.guard import kernel_guard


_NO_GUARD = contextlib.nullcontext()

#: A convolution call of fewer multiply-adds runs its parallel kernels on the calling thread alone: where
#: the worker threads sleep between parallel regions (``OMP_WAIT_POLICY=passive``, as beside PyTorch),
#: waking them costs tens of microseconds a region, more than such a call's work. The kernels' results
#: do not depend on the thread count, and BLAS runs a GEMM this small on one thread anyway.
ONE_THREAD_WORK = 1 << 16


class _OneThread:
    """Context: the calling thread's parallel regions on one thread (``numba.set_num_threads``), restored after."""

    def __enter__(self):
        self.threads = numba.get_num_threads()
        numba.set_num_threads(1)

    def __exit__(self, *exc):
        numba.set_num_threads(self.threads)


def _conv_threads(plan):
    """``(threads, context)`` of a call of the conv drivers: the context sets the threads up (see above), and
    keeps BLAS serial where the drivers take the BLAS path (the local kernels call no BLAS; setting and
    restoring BLAS's thread count costs microseconds)."""
    g = plan.geo
    if g.n * g.f * g.oh * g.ow * (g.c // g.groups) * g.kh * g.kw < ONE_THREAD_WORK:
        return 1, _OneThread()
    threads = numba.get_num_threads()
    if conv_kernels.uses_local(plan.th, plan.tw, g.oh, g.ow, g.kh, g.kw, g.stride_h, g.stride_w, g.dilation_h,
                               g.dilation_w, g.h, g.w):
        return threads, _NO_GUARD
    return threads, serial_blas()


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
    def mask_array(value, name, x_shape):
        return checks.mask_array(value, name, x_shape)

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
        threads, context = _conv_threads(plan)
        with kernel_guard(), context:
            conv_kernels.host_forward(x, w, bias, *plan.tiling, *plan.kernel_args, plan.geo.groups, threads, y)

    @staticmethod
    def conv_backward_input(dy, w, plan, dx):
        threads, context = _conv_threads(plan)
        with kernel_guard(), context:
            conv_kernels.host_backward_input(dy, w, *plan.tiling, *plan.kernel_args, plan.geo.groups, threads, dx)

    @staticmethod
    def conv_backward_weight(dy, x, plan, accumulate, dw):
        threads, context = _conv_threads(plan)
        with kernel_guard(), context:
            conv_kernels.host_backward_weight(dy, x, *plan.tiling, *plan.kernel_args, plan.geo.groups, threads,
                                              accumulate, dw)

    @staticmethod
    def conv_pad(x, pads, mode, xp):
        """``xp = F.pad(x, mode)``: x (n, C, H, W), pads (top, left, bottom, right), xp the padded (n, C, HP, WP)."""
        with kernel_guard():
            padding_kernels.pad(x, pads[0], pads[1], mode, xp)

    @staticmethod
    def conv_fold(dxp, pads, mode, dx):
        """``dx`` = the gradient of a padded chunk ``dxp`` folded onto the cells it copies (the adjoint of conv_pad)."""
        with kernel_guard():
            padding_kernels.fold(dxp, *pads, mode, dx)

    @staticmethod
    def conv_backward_bias(dy, tiling, accumulate, db):
        with kernel_guard(), _OneThread() if dy.size < ONE_THREAD_WORK else _NO_GUARD:
            conv_kernels.host_backward_bias(dy, *tiling, accumulate, db)

    # The transposed family: the forward family's drivers with the arrays exchanged, as the C entry points run them.

    @staticmethod
    def conv_transpose_forward(x, w, b, tplan, y):
        """``y = conv_transpose(x, w) + b``: x (N, C, H, W), w flat, b (F, bias tiles) or None, y (N, F, OH, OW)."""
        p = tplan.forward
        bias = b if b is not None else np.zeros((0, 0), dtype=x.dtype)
        threads, context = _conv_threads(p)
        with kernel_guard(), context:
            transpose_kernels.host_forward(x, w, bias, *p.tiling, *tplan.bias_tiling, *p.kernel_args, p.geo.groups,
                                           threads, y)

    @staticmethod
    def conv_transpose_backward_input(dy, w, tplan, dx):
        p = tplan.forward
        threads, context = _conv_threads(p)
        with kernel_guard(), context:
            transpose_kernels.host_backward_input(dy, w, *p.tiling, *p.kernel_args, p.geo.groups, threads, dx)

    @staticmethod
    def conv_transpose_backward_weight(dy, x, tplan, accumulate, dw):
        p = tplan.forward
        threads, context = _conv_threads(p)
        with kernel_guard(), context:
            transpose_kernels.host_backward_weight(dy, x, *p.tiling, *p.kernel_args, p.geo.groups, threads,
                                                   accumulate, dw)

    # ------------------------------------------------------------ max-pooling

    @staticmethod
    def pool_forward(x, geo, y, indices):
        with kernel_guard():
            if indices is None:
                pool_kernels.max_pool2d_fwd(x, y, *geo.kernel_args)
            else:
                pool_kernels.max_pool2d_fwd_indices(x, y, indices, *geo.kernel_args)

    @staticmethod
    def pool_backward(dy, indices, geo, dx):
        """Scatter ``dy`` (planes, OH, OW) into ``dx`` (planes, H, W); the first bad index, or None (``dx`` untouched).

        The CPU scatters whether or not the geometry ``geo`` was given (None if not): its scatter
        runs in output order per plane, which is also the gather's order per cell, so both forms
        give the same ``dx``.
        """
        planes = dx.shape[0]
        with kernel_guard():
            valid, bad = pool_kernels.host_backward(dy.reshape(planes, -1), indices.reshape(planes, -1),
                                                    dx.reshape(planes, -1))
        return None if valid else int(bad)

    # ------------------------------------------------------------ NetVLAD

    @staticmethod
    def netvlad_forward(x, w, b, centroids, normalize_input, intra_normalize, final_normalize, eps, mask, y):
        with kernel_guard(), serial_blas():
            netvlad_kernels.netvlad_fwd(x, w, b, centroids, normalize_input, intra_normalize, final_normalize, eps,
                                        _mask_rows(mask, x), y)

    @staticmethod
    def netvlad_backward(dy, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, eps, mask):
        """``(dx (N, D, M), dw, db, dcentroids)``; the per-sample weight gradients are summed in sample order."""
        kg, d = w.shape
        dx = np.empty(x.shape, x.dtype)
        dw = np.empty((kg, d), x.dtype)
        db = np.empty((kg,), x.dtype)
        dc = np.empty(centroids.shape, x.dtype)
        with kernel_guard(), serial_blas():
            netvlad_kernels.host_backward(dy, x, w, b, centroids, normalize_input, intra_normalize, final_normalize,
                                          eps, _mask_rows(mask, x), dx, dw, db, dc)
        return dx, dw, db, dc

    @staticmethod
    def vlad_aggregate_forward(x, a, centroids, intra_normalize, final_normalize, eps, y):
        with kernel_guard(), serial_blas():
            netvlad_kernels.aggregate_fwd(x, a, centroids, intra_normalize, final_normalize, eps, y)

    @staticmethod
    def vlad_aggregate_backward(dy, x, a, centroids, intra_normalize, final_normalize, eps):
        """``(dx (N, D, M), dassignment (N, K, M), dcentroids)``."""
        dx = np.empty(x.shape, x.dtype)
        da = np.empty(a.shape, x.dtype)
        dc = np.empty(centroids.shape, x.dtype)
        with kernel_guard(), serial_blas():
            netvlad_kernels.aggregate_backward(dy, x, a, centroids, intra_normalize, final_normalize, eps, dx, da, dc)
        return dx, da, dc

    @staticmethod
    def netvlad_pca_forward(v, projection, bias, eps, y):
        with kernel_guard(), serial_blas():
            pca_kernels.pca_forward(v, projection, bias, eps, y)

    @staticmethod
    def netvlad_pca_backward(dy, v, projection, bias, eps):
        """``(dv, dprojection, dbias)``."""
        dv = np.empty(v.shape, v.dtype)
        dp = np.empty(projection.shape, v.dtype)
        db = np.empty(bias.shape, v.dtype)
        with kernel_guard(), serial_blas():
            pca_kernels.pca_backward(dy, v, projection, bias, eps, dv, dp, db)
        return dv, dp, db


def _mask_rows(mask, x):
    """The kernels' mask: (N, M) uint8, or (N, 0) when every descriptor is valid."""
    return np.empty((x.shape[0], 0), np.uint8) if mask is None else mask


HOST = HostBackend()
