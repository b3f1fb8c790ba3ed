"""Reference max-pooling, 2-D and 1-D, forward and backward: PyTorch's CPU max-pooling, transcribed.

Window cells are visited row-major and a cell replaces the running maximum
when it is greater or NaN; the running maximum starts at -inf with the index
of the window's first in-image cell. Vectorised over (N, C, OH, OW), looping
over window cells. A window with no in-image cell (only possible with
dilation) gives -inf and index -1, which the backward skips. The output size
and the parameters are worked out here, not taken from ``lcnumba.geometry``.
"""

import numpy as np

from ._arguments import ints, require_ndim, require_shape

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "max_pool1d_forward", "max_pool1d_backward"]


def output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's ``pooling_output_shape`` along one axis."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = (span + stride - 1) // stride + 1
        if (out - 1) * stride >= size + pad:  # the last window would start in the right padding
            out -= 1
    else:
        out = span // stride + 1
    return out


def _windows(h, w, kernel_size, stride, padding, dilation, ceil_mode):
    """Kernel, stride, padding, dilation and output size, each ``(rows, columns)``, of a pooling of an H x W plane."""
    kh, kw = ints(kernel_size, "kernel_size", 2, minimum=1)
    sh, sw = (kh, kw) if stride is None else ints(stride, "stride", 2, minimum=1)
    ph, pw = ints(padding, "padding", 2, minimum=0)
    dh, dw = ints(dilation, "dilation", 2, minimum=1)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding: expected at most half the kernel size, got {(ph, pw)} for {(kh, kw)}")
    oh = output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = output_size(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel_size: expected an output size of at least 1, got ({oh}, {ow})")
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow)


def _tap(cells, windows, kernel, stride, pad, dilation):
    """Along one axis, whether input position ``cells`` is read by window ``windows`` (arrays of one shape)."""
    t = cells + pad - windows * stride
    return (t >= 0) & (t % dilation == 0) & (t < kernel * dilation)


def _own_window(indices, w, geometry):
    """Whether each index of ``indices`` (N, C, OH, OW) names a cell of its own window (never for -1)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = geometry
    i = np.arange(oh)[:, None]
    j = np.arange(ow)[None, :]
    cell = np.maximum(indices, 0)
    return (indices >= 0) & _tap(cell // w, i, kh, sh, ph, dh) & _tap(cell % w, j, kw, sw, pw, dw)


def max_pool2d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """Reference 2-D max-pooling; PyTorch's ``F.max_pool2d``.

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    kernel_size : int or pair of ints
    stride : int, pair of ints or None
        None: the kernel size.
    padding : int or pair of ints
        At most half the kernel size; padded cells are -inf.
    dilation : int or pair of ints
    ceil_mode : bool
        Round the output size up, dropping a last window that would start in
        the right (bottom) padding.
    return_indices : bool

    Returns
    -------
    y : ndarray (N, C, OH, OW)
        The dtype of ``x``; NaN wins the max.
    indices : int64 ndarray (N, C, OH, OW)
        With ``return_indices`` only: ``h * W + w`` of the first maximum into
        the unpadded plane, -1 for a window without an in-image cell.
    """
    x = require_ndim(x, "x", 4)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _windows(h, w, kernel_size, stride, padding, dilation,
                                                                ceil_mode)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    index = np.full((n, c, oh, ow), -1, dtype=np.int64)
    for r in range(kh):
        rows = np.arange(oh) * sh - ph + r * dh
        for q in range(kw):
            cols = np.arange(ow) * sw - pw + q * dw
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
            v = x[:, :, np.clip(rows, 0, h - 1)][:, :, :, np.clip(cols, 0, w - 1)]
            first = inside & (index < 0)
            take = (inside & ((v > y) | np.isnan(v))) | first
            y = np.where(take, v, y)
            index = np.where(take, rows[:, None] * w + cols[None, :], index)
    return (y, index) if return_indices else y


def max_pool2d_backward(dy, indices, input_shape, *, kernel_size=None, stride=None, padding=None, dilation=None,
                        ceil_mode=None):
    """Reference gradient of 2-D max-pooling: ``dx[n, c].flat[indices[n, c]] += dy[n, c]``.

    Parameters
    ----------
    dy : ndarray (N, C, OH, OW)
    indices : int64 ndarray (N, C, OH, OW)
        As returned by ``max_pool2d_forward``; -1 adds nothing.
    input_shape : tuple (N, C, H, W)
    kernel_size, stride, padding, dilation, ceil_mode : optional
        The forward's geometry (None: not given; with ``kernel_size`` the others default as the
        forward's). Given, ``dy`` must have the forward's output shape, and an index adds only when
        it names a cell of its own window: the gather's rule.

    Returns
    -------
    dx : ndarray (N, C, H, W)
        Contributions added in output order, in the dtype of ``dy``.
    """
    dy = require_ndim(dy, "dy", 4)
    indices = np.asarray(indices)
    require_shape(indices.shape, dy.shape, "indices")
    n, c, h, w = (int(v) for v in input_shape)
    if (n, c) != dy.shape[:2]:
        raise ValueError(f"input_shape: expected N, C of dy {dy.shape[:2]}, got {(n, c)}")
    if indices.size and (indices.min() < -1 or indices.max() >= h * w):
        raise ValueError(f"indices: expected values in [-1, {h * w}), got [{indices.min()}, {indices.max()}]")
    keep = indices >= 0
    if kernel_size is None:
        if (stride, padding, dilation, ceil_mode) != (None,) * 4:
            raise ValueError("kernel_size: expected the pooling geometry to start with kernel_size, got None")
    else:
        geometry = _windows(h, w, kernel_size, stride, 0 if padding is None else padding,
                            1 if dilation is None else dilation, bool(ceil_mode))
        require_shape(dy.shape, (n, c, *geometry[-1]), "dy")
        keep = _own_window(indices, w, geometry)
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    flat_dy = dy.reshape(n * c, -1)
    flat_index = indices.reshape(n * c, -1)
    planes = np.broadcast_to(np.arange(n * c)[:, None], flat_index.shape)
    keep = keep.reshape(n * c, -1)
    np.add.at(dx, (planes[keep], flat_index[keep]), flat_dy[keep])
    return dx.reshape(n, c, h, w)


def max_pool1d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """Reference 1-D max-pooling; PyTorch's ``F.max_pool1d``.

    The 2-D reference over ``(N, C, 1, L)`` with a window of height 1.

    Parameters
    ----------
    x : ndarray (N, C, L)
    kernel_size, stride, padding, dilation : int or 1-tuple
        As in ``max_pool2d_forward`` (``stride`` None: the kernel size).
    ceil_mode, return_indices : bool

    Returns
    -------
    y : ndarray (N, C, OL)
    indices : int64 ndarray (N, C, OL)
        With ``return_indices`` only: positions in ``L``.
    """
    x = require_ndim(x, "x", 3)

    def height_one(value, name, minimum):
        return (1,) + ints(value, name, 1, minimum)

    result = max_pool2d_forward(
        x[:, :, None, :], height_one(kernel_size, "kernel_size", 1),
        stride=None if stride is None else height_one(stride, "stride", 1),
        padding=(0,) + ints(padding, "padding", 1, minimum=0), dilation=height_one(dilation, "dilation", 1),
        ceil_mode=ceil_mode, return_indices=return_indices,
    )
    if return_indices:
        return result[0][:, :, 0, :], result[1][:, :, 0, :]
    return result[:, :, 0, :]


def max_pool1d_backward(dy, indices, input_shape, *, kernel_size=None, stride=None, padding=None, dilation=None,
                        ceil_mode=None):
    """Reference gradient of 1-D max-pooling.

    Parameters
    ----------
    dy : ndarray (N, C, OL)
    indices : int64 ndarray (N, C, OL)
    input_shape : tuple (N, C, L)
    kernel_size, stride, padding, dilation, ceil_mode : optional
        As in ``max_pool2d_backward``, along L (ints or 1-tuples).

    Returns
    -------
    dx : ndarray (N, C, L)
    """
    dy = require_ndim(dy, "dy", 3)
    n, c, length = (int(v) for v in input_shape)
    geometry = {}
    if kernel_size is not None:
        geometry = dict(kernel_size=(1,) + ints(kernel_size, "kernel_size", 1, 1),
                        stride=None if stride is None else (1,) + ints(stride, "stride", 1, 1),
                        padding=(0,) + ints(0 if padding is None else padding, "padding", 1, 0),
                        dilation=(1,) + ints(1 if dilation is None else dilation, "dilation", 1, 1),
                        ceil_mode=ceil_mode)
    else:  # the 2-D reference refuses any of them without kernel_size
        geometry = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return max_pool2d_backward(dy[:, :, None, :], np.asarray(indices)[:, :, None, :], (n, c, 1, length),
                               **geometry)[:, :, 0, :]
