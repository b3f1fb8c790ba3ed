"""CPU drivers of the transposed convolution family: the forward family's drivers with the arrays exchanged.

A transposed op is the adjoint of its forward op as a linear map of the
input (``docs/derivations/conv.md``), so each of its passes is one pass of
the forward op's drivers (``lcnumba.cpu.conv``) with the roles of the arrays
exchanged:

================  ===============================================================
transposed pass   driver of the forward op
================  ===============================================================
forward           ``backward_input`` (``x`` in the place of ``dy``), then the bias
backward_input    ``forward`` (``dy`` in the place of ``x``, no bias)
backward_weight   ``backward_weight`` (``dy`` and ``x`` exchanged)
================  ===============================================================

The bias gradient is the forward family's ``backward_bias`` over this op's
output positions and needs no exchange. The exchange is written here once:
the Python API runs the plain drivers (``host_*``, through
``lcnumba.ops.backend``), the C entry points (``lcnumba.capi.cores``) their
compiled twins (``forward``, ...), so the two paths cannot differ.

Every argument is in the forward op's terms (``geometry.ConvTransposePlan.forward``):

==========  ======================  ============================================
name        shape                   meaning
==========  ======================  ============================================
x, dx       (N, C, H, W)            this op's input: the forward op's output
y, dy       (N, F, OH, OW)          this op's output: the forward op's input
w, dw       (T, C, F/groups*KH*KW)  the forward op's flat weight
b           (F, BT) or (0, 0)       bias per output channel and bias tile
==========  ======================  ============================================

``th, tw, periodic`` tile the forward op's output positions (this op's input
positions); ``bias_th, bias_tw, bias_periodic`` tile this op's output
positions for the bias (one tile per position for the local family).
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from . import conv
from .indexing import tile_of
from .twins import over_conv_drivers

#: twins.py binds the names the compiled drivers call (``over_conv_drivers``): it decides what they compile in.
COMPILES_IN = cache.sources("cpu/conv_transpose.py", "cpu/twins.py", conv.COMPILES_IN)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def add_bias(y, b, th, tw, periodic):
    """``y[n, f, i, j] += b[f, tile of (i, j)]``; y (N, F, OH, OW), b (F, TH * TW): one rounding per element."""
    _, f_size, oh, ow = y.shape
    for plane in prange(y.shape[0] * f_size):
        f = plane % f_size
        yp = y[plane // f_size, f]
        bias = b[f]
        for i in range(oh):
            row = yp[i]
            first = tile_of(i, oh, th, periodic) * tw
            for j in range(ow):
                row[j] += bias[first + tile_of(j, ow, tw, periodic)]


def host_forward(x, w, b, th, tw, periodic, bias_th, bias_tw, bias_periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w,
                 groups, n_threads, y):
    """``y = conv_transpose(x, w) + b``: the forward op's input gradient of ``x``, then the bias."""
    _backward_input(x, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y)
    if b.shape[0]:
        add_bias(y, b, bias_th, bias_tw, bias_periodic)


def host_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx):
    """``dx`` (N, C, H, W): the forward op of ``dy`` (N, F, OH, OW), without bias."""
    _forward(dy, w, np.zeros((0, 0), dy.dtype), th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
             n_threads, dx)


def host_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads,
                         accumulate, dw):
    """``dw (+)=`` the forward op's weight gradient with ``x`` as its output gradient and ``dy`` as its input."""
    _backward_weight(x, dy, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, accumulate,
                     dw)


#: The forward op's plain drivers, which the plain drivers above call from Python.
_forward = conv.host_forward
_backward_input = conv.host_backward_input
_backward_weight = conv.host_backward_weight


#: The drivers compiled, calling the compiled convolution drivers: for the C entry points.
forward, backward_input, backward_weight = over_conv_drivers(host_forward, host_backward_input, host_backward_weight)

cache.key_kernels(globals())
