"""CPU drivers of the convolution family with a padding mode: the batch padded and convolved chunk by chunk.

A padding mode other than zeros (``lcnumba.table.PADDING_MODES``: 1
reflect, 2 replicate, 3 circular) runs as the zero-padding drivers of
``lcnumba.cpu.conv`` with padding 0 on a padded copy of a chunk of the
batch (the pad and fold kernels of ``lcnumba.cpu.padding``), so no copy of
the input is larger than one padded chunk; mode 0 runs the drivers as they
are. The chunks are ``chunk`` samples each (``samples_per_chunk``, a
function of the shapes only); the weight gradient adds them in batch order
through the drivers' ``accumulate``, so every sum runs in an order the
shapes fix. The sequence of kernel calls is that of
``lcnumba.ops.conv_padded``: the same bits.

The plain drivers (``host_*``) call the plain convolution drivers from
Python; their compiled twins (``forward``, ...) call the compiled ones, for
the C entry points (``lcnumba.capi.cores``).

Arrays are the convolution drivers' (C-contiguous): x, dx (N, C, H, W)
unpadded; y, dy (N, F, OH, OW); w, dw (T, F, C/groups * KH * KW); b (F, T)
or (0, 0). ``pt, pl, pb, pr`` are the padding (top, left, bottom, right),
within PyTorch's bounds for ``mode`` (checked by the callers).
"""

import numpy as np
from numba import njit

from .. import cache
from . import conv, padding
from .twins import over_conv_drivers

#: twins.py binds the names the compiled drivers call (``over_conv_drivers``): it decides what they compile in.
COMPILES_IN = cache.sources("cpu/conv_padded.py", "cpu/twins.py", conv.COMPILES_IN, padding.COMPILES_IN)

#: Elements of the padded scratch buffer: a chunk holds as many samples as fit (at least one).
#: 4 Mi elements (16 MiB in float32): large enough that a chunk is many GEMM columns, small
#: enough to stay a fraction of any batch worth chunking.
CHUNK_ELEMENTS = 1 << 22


def samples_per_chunk(n, c, hp, wp, chunk_elements):
    """Samples padded at once: as many (C, HP, WP) padded samples as ``chunk_elements`` holds, at least 1, at
    most the batch ``n`` (1 for an empty batch)."""
    return max(1, min(n, chunk_elements // max(1, c * hp * wp)))


compiled_samples_per_chunk = njit(inline="always")(samples_per_chunk)


@njit(cache=True)
def _scratch(a, chunk, pt, pl, pb, pr):
    """The buffer of a padded chunk of ``a`` (N, C, H, W): ``(chunk, C, H + pt + pb, W + pl + pr)``."""
    _, c, h, w = a.shape
    return np.empty((chunk, c, h + pt + pb, w + pl + pr), a.dtype)


@njit(cache=True)
def _padded(x, n0, chunk, pt, pl, mode, scratch):
    """Samples ``n0`` to ``n0 + chunk`` (at most the batch) of ``x`` padded by ``mode`` into the front of
    ``scratch``: that view."""
    xp = scratch[: min(x.shape[0], n0 + chunk) - n0]
    padding.pad(x[n0:n0 + xp.shape[0]], pt, pl, mode, xp)
    return xp


def host_forward(x, w, b, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, n_threads, mode,
                 chunk, y):
    """``y = conv(pad(x, mode), w) + b``, ``chunk`` samples at a time."""
    if mode == 0:
        _forward(x, w, b, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, y)
        return
    scratch = _scratch(x, chunk, pt, pl, pb, pr)
    for n0 in range(0, x.shape[0], chunk):
        xp = _padded(x, n0, chunk, pt, pl, mode, scratch)
        _forward(xp, w, b, th, tw, periodic, kh, kw, sh, sw, 0, 0, dil_h, dil_w, groups, n_threads,
                 y[n0:n0 + xp.shape[0]])


def host_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, n_threads,
                        mode, chunk, dx):
    """``dx = fold(conv^T(dy, w), mode)``: each chunk's padded gradient folded onto the cells it copies."""
    if mode == 0:
        _backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads, dx)
        return
    scratch = _scratch(dx, chunk, pt, pl, pb, pr)
    for n0 in range(0, dx.shape[0], chunk):
        n1 = min(dx.shape[0], n0 + chunk)
        dxp = scratch[: n1 - n0]
        _backward_input(dy[n0:n1], w, th, tw, periodic, kh, kw, sh, sw, 0, 0, dil_h, dil_w, groups, n_threads, dxp)
        padding.fold(dxp, pt, pl, pb, pr, mode, dx[n0:n1])


def host_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, n_threads,
                         mode, chunk, accumulate, dw):
    """``dw (+)= sum over chunks of dy^T pad(x, mode)``, the chunks added in batch order."""
    if mode == 0:
        _backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups, n_threads,
                         accumulate, dw)
        return
    scratch = _scratch(x, chunk, pt, pl, pb, pr)
    for n0 in range(0, x.shape[0], chunk):
        xp = _padded(x, n0, chunk, pt, pl, mode, scratch)
        _backward_weight(dy[n0:n0 + xp.shape[0]], xp, th, tw, periodic, kh, kw, sh, sw, 0, 0, dil_h, dil_w, groups,
                         n_threads, accumulate or n0 > 0, dw)


#: The convolution drivers the plain drivers above call from Python.
_forward = conv.host_forward
_backward_input = conv.host_backward_input
_backward_weight = conv.host_backward_weight


#: The drivers compiled, calling the compiled convolution drivers: for the C entry points.
forward, backward_input, backward_weight = over_conv_drivers(host_forward, host_backward_input, host_backward_weight)

cache.key_kernels(globals())
