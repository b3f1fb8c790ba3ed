"""Output sizes and parameter normalisation for every op.

The public functions accept the parameter spellings users know from PyTorch
and Keras (an int, a pair, ``"valid"``, ``"same"``); everything below the
public layer sees one normalised form: ints per axis and explicit
``(top, left, bottom, right)`` padding, so asymmetric padding costs the
kernels nothing.

The ``*_output_shape`` queries answer, like ``cudnnGetConvolutionNdForwardOutputDim``,
what a forward call would return without running it.

Weight sharing of the convolution family is described by *segments*: runs of
output positions in one output row that use the same filter bank (tile).
``conv2d`` has one tile, ``local_conv2d`` one per position, ``tiled_conv2d``
``TH * TW``; every kernel of the family walks segments, so the three are one
code path.
"""

import functools
from typing import NamedTuple

import numpy as np
from numba import njit

from . import checks, config  # noqa: F401 - config first makes sure kernels have a cache directory

TILE_MODES = ("periodic", "block")


class ConvGeometry(NamedTuple):
    """Normalised geometry of one 2-D convolution (1-D forms use ``H = KH = 1``)."""

    n: int
    c: int
    h: int
    w: int
    f: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    pad_bottom: int
    pad_right: int
    dilation_h: int
    dilation_w: int
    groups: int
    oh: int
    ow: int

    @property
    def output_shape(self):
        return (self.n, self.f, self.oh, self.ow)


def _kernel_extent(size, dilation):
    return dilation * (size - 1) + 1


def padding4(padding, kernel_hw, stride_hw, dilation_hw, name="padding"):
    """Normalise ``padding`` to ``(top, left, bottom, right)``.

    Accepted: an int, a pair ``(ph, pw)``, a pair of pairs
    ``((top, bottom), (left, right))``, ``"valid"`` (no padding) or ``"same"``
    (stride 1 only; an odd total puts the extra cell bottom/right, as
    TensorFlow and PyTorch do).
    """
    if isinstance(padding, str):
        checks.choice(padding, name, ("valid", "same"))
        if padding == "valid":
            return (0, 0, 0, 0)
        if stride_hw != (1, 1):
            raise checks.value_error(name, '"same" only with stride 1', f"stride {stride_hw}")
        total_h = _kernel_extent(kernel_hw[0], dilation_hw[0]) - 1
        total_w = _kernel_extent(kernel_hw[1], dilation_hw[1]) - 1
        return (total_h // 2, total_w // 2, total_h - total_h // 2, total_w - total_w // 2)
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (top, bottom) = checks.int_tuple(padding[0], name, 2, minimum=0)
        (left, right) = checks.int_tuple(padding[1], name, 2, minimum=0)
        return (top, left, bottom, right)
    ph, pw = checks.int_tuple(padding, name, 2, minimum=0)
    return (ph, pw, ph, pw)


def output_size(size, kernel, stride, dilation, pad_before, pad_after):
    """``floor((size + pads - dilation*(kernel-1) - 1) / stride) + 1`` (may be <= 0)."""
    return (size + pad_before + pad_after - _kernel_extent(kernel, dilation)) // stride + 1


def conv_geometry(x_shape, f, kernel_hw, stride, padding, dilation, groups, *, input_name="x", weight_name="w"):
    """Normalise the parameters of a 2-D convolution and compute its output size.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        ``(N, C, H, W)``.
    f : int
        Number of filters.
    kernel_hw : pair of ints
        ``(KH, KW)``.
    stride, padding, dilation, groups
        As accepted by the public functions.

    Returns
    -------
    ConvGeometry

    Raises
    ------
    TypeError, ValueError
        Naming the offending parameter.
    """
    n, c, h, w = x_shape
    stride_hw = checks.int_tuple(stride, "stride", 2, minimum=1)
    dilation_hw = checks.int_tuple(dilation, "dilation", 2, minimum=1)
    groups = checks.integer(groups, "groups", minimum=1)
    pads = padding4(padding, kernel_hw, stride_hw, dilation_hw)
    checks.at_most(stride_hw, "stride")
    checks.at_most(dilation_hw, "dilation")
    checks.at_most(kernel_hw, weight_name)
    checks.at_most(pads, "padding")
    if c % groups:
        raise checks.value_error("groups", f"a divisor of the {c} input channels of {input_name}", groups)
    if f % groups:
        raise checks.value_error("groups", f"a divisor of the {f} filters of {weight_name}", groups)
    oh = output_size(h, kernel_hw[0], stride_hw[0], dilation_hw[0], pads[0], pads[2])
    ow = output_size(w, kernel_hw[1], stride_hw[1], dilation_hw[1], pads[1], pads[3])
    if oh < 1 or ow < 1:
        raise checks.value_error(
            weight_name,
            f"a dilated kernel no larger than the padded input "
            f"({h + pads[0] + pads[2]}x{w + pads[1] + pads[3]})",
            f"a dilated kernel of {_kernel_extent(kernel_hw[0], dilation_hw[0])}x"
            f"{_kernel_extent(kernel_hw[1], dilation_hw[1])}",
        )
    return ConvGeometry(n, c, h, w, f, kernel_hw[0], kernel_hw[1], *stride_hw, *pads, *dilation_hw, groups, oh, ow)


# ---------------------------------------------------------------- shape queries


def _query_shape(x_shape, w_shape, ndim_x, ndim_w):
    x_shape = checks.shape_tuple(x_shape, "input_shape", ndim_x)
    w_shape = checks.shape_tuple(w_shape, "weight_shape", ndim_w)
    return x_shape, w_shape


def _query_geometry(w_shape, x_shape, f, cg, kernel_hw, stride, padding, dilation, groups):
    """Output shape of a query, with the forward's checks of the weight shape against the input."""
    if min(w_shape) < 1:
        raise checks.value_error("weight_shape", "a shape with every dimension >= 1", f"shape {w_shape}")
    geo = conv_geometry(x_shape, f, kernel_hw, stride, padding, dilation, groups,
                        input_name="input_shape", weight_name="weight_shape")
    if cg * geo.groups != geo.c:
        raise checks.value_error("weight_shape", f"C/groups = {geo.c}//{geo.groups} = {geo.c // geo.groups} input "
                                 f"channels per filter", f"{cg}")
    return geo.output_shape


def conv2d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape ``(N, F, OH, OW)`` of ``conv2d_forward`` for a weight of ``(F, C/groups, KH, KW)``."""
    x_shape, w_shape = _query_shape(input_shape, weight_shape, 4, 4)
    return _query_geometry(w_shape, x_shape, w_shape[0], w_shape[1], w_shape[2:], stride, padding, dilation, groups)


def tiled_conv2d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape of ``tiled_conv2d_forward`` for a weight of ``(TH, TW, F, C/groups, KH, KW)``."""
    x_shape, w_shape = _query_shape(input_shape, weight_shape, 4, 6)
    return _query_geometry(w_shape, x_shape, w_shape[2], w_shape[3], w_shape[4:], stride, padding, dilation, groups)


def local_conv2d_output_shape(input_shape, kernel_size, filters, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape of ``local_conv2d_forward`` for ``filters`` filters of ``kernel_size``.

    The local weight must then be ``(OH, OW, F, C/groups, KH, KW)``; this query
    is how a caller sizes it.
    """
    x_shape = checks.shape_tuple(input_shape, "input_shape", 4)
    kernel_hw = checks.int_tuple(kernel_size, "kernel_size", 2, minimum=1)
    filters = checks.integer(filters, "filters", minimum=1)
    return conv_geometry(x_shape, filters, kernel_hw, stride, padding, dilation, groups,
                         input_name="input_shape", weight_name="kernel_size").output_shape


def conv1d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape ``(N, F, OL)`` of ``conv1d_forward`` for a weight of ``(F, C/groups, K)``."""
    x_shape, w_shape = _query_shape(input_shape, weight_shape, 3, 3)
    n, f, _, ol = conv2d_output_shape(
        (x_shape[0], x_shape[1], 1, x_shape[2]), (w_shape[0], w_shape[1], 1, w_shape[2]),
        stride=(1, stride1d(stride, "stride")), padding=padding1d(padding),
        dilation=(1, stride1d(dilation, "dilation")), groups=groups,
    )
    return (n, f, ol)


def tiled_conv1d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape ``(N, F, OL)`` of ``tiled_conv1d_forward`` for a weight of ``(T, F, C/groups, K)``."""
    x_shape, w_shape = _query_shape(input_shape, weight_shape, 3, 4)
    return conv1d_output_shape(x_shape, (w_shape[1], w_shape[2], w_shape[3]), stride=stride,
                               padding=padding, dilation=dilation, groups=groups)


def local_conv1d_output_shape(input_shape, kernel_size, filters, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape ``(N, F, OL)`` of ``local_conv1d_forward``; the weight is then ``(OL, F, C/groups, K)``."""
    x_shape = checks.shape_tuple(input_shape, "input_shape", 3)
    kernel = checks.integer(kernel_size, "kernel_size", minimum=1)
    n, f, _, ol = local_conv2d_output_shape(
        (x_shape[0], x_shape[1], 1, x_shape[2]), (1, kernel), filters,
        stride=(1, stride1d(stride, "stride")), padding=padding1d(padding),
        dilation=(1, stride1d(dilation, "dilation")), groups=groups,
    )
    return (n, f, ol)


# ---------------------------------------------------------------- 1-D forms as 2-D


def stride1d(value, name):
    """A 1-D stride or dilation: an int or a 1-tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise checks.value_error(name, "an int or a 1-tuple", tuple(value))
        value = value[0]
    return checks.integer(value, name, minimum=1)


def padding1d(padding):
    """A 1-D padding (int, 1-tuple, ``(left, right)``, ``"valid"``, ``"same"``) in the 2-D form."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, (tuple, list)) and len(padding) == 1:
        padding = padding[0]
    elif isinstance(padding, (tuple, list)):
        left, right = checks.int_tuple(padding, "padding", 2, minimum=0)
        return ((0, 0), (left, right))
    p = checks.integer(padding, "padding", minimum=0)
    return (0, p)


# ---------------------------------------------------------------- weight sharing


def tile_of(index, size, tiles, mode):
    """Tile index of output row/column ``index`` of ``size`` for ``tiles`` tiles along the axis."""
    if mode == "periodic":
        return index % tiles
    return index * tiles // size


@njit(cache=True)
def segment_table(oh, ow, th, tw, periodic):
    """Runs of output positions that share a filter bank (compiled, so C entry points can call it).

    Parameters
    ----------
    oh, ow : int
        Output size.
    th, tw : int
        Number of tiles along each axis (``1, 1`` for conv2d, ``OH, OW`` for local).
    periodic : bool
        True: position (i, j) uses tile (i % TH, j % TW) (Ngiam et al.);
        False ("block"): tile (i * TH // OH, j * TW // OW), contiguous regions.

    Returns
    -------
    by_tile : int64 array (S, 5)
        Rows ``(tile, i, j0, j_step, count)``: positions ``(i, j0 + m * j_step)``
        for ``m < count`` use tile ``tile = ti * TW + tj``; sorted by tile, then row.
    tile_ptr : int64 array (TH * TW + 1,)
        Segments of tile ``t`` are ``by_tile[tile_ptr[t]:tile_ptr[t+1]]``.
    by_row : int64 array (S, 5)
        The same segments sorted by output row.
    row_ptr : int64 array (OH + 1,)
        Segments of row ``i`` are ``by_row[row_ptr[i]:row_ptr[i+1]]``.
    """
    per_row = min(tw, ow) if periodic else tw
    by_row = np.empty((oh * per_row, 5), dtype=np.int64)
    row_ptr = np.empty(oh + 1, dtype=np.int64)
    s = 0
    for i in range(oh):
        row_ptr[i] = s
        ti = i % th if periodic else i * th // oh
        for tj in range(per_row):
            if periodic:
                j0, step, count = tj, tw, (ow - tj + tw - 1) // tw
            else:
                j0 = (tj * ow + tw - 1) // tw  # first j with j * tw // ow == tj
                j1 = ((tj + 1) * ow + tw - 1) // tw
                step, count = 1, j1 - j0
            if count > 0:
                by_row[s, 0] = ti * tw + tj
                by_row[s, 1] = i
                by_row[s, 2] = j0
                by_row[s, 3] = step
                by_row[s, 4] = count
                s += 1
    row_ptr[oh] = s
    by_row = by_row[:s].copy()
    # Counting sort by tile keeps each tile's segments in row order.
    n_tiles = th * tw
    tile_ptr = np.zeros(n_tiles + 1, dtype=np.int64)
    for r in range(s):
        tile_ptr[by_row[r, 0] + 1] += 1
    for t in range(n_tiles):
        tile_ptr[t + 1] += tile_ptr[t]
    fill = tile_ptr[:n_tiles].copy()
    by_tile = np.empty_like(by_row)
    for r in range(s):
        t = by_row[r, 0]
        by_tile[fill[t]] = by_row[r]
        fill[t] += 1
    return by_tile, tile_ptr, by_row, row_ptr


@njit(cache=True)
def rows_per_phase_block(kh, stride_h, dilation_h):
    """Output rows per block so that blocks two apart read disjoint input rows.

    Block ``b`` covers output rows ``[b*R, (b+1)*R)`` and so input rows up to
    ``((b+1)*R - 1)*SH + (KH-1)*DH`` past its start; block ``b + 2`` starts
    ``2*R*SH`` later, which is beyond that whenever ``(KH-1)*DH < (R+1)*SH``.
    """
    return max(1, (dilation_h * (kh - 1)) // stride_h)


@functools.lru_cache(maxsize=256)
def segments(oh, ow, th, tw, mode):
    """``segment_table`` for a ``tile_mode`` name, cached and read-only."""
    tables = segment_table(oh, ow, th, tw, mode == "periodic")
    for array in tables:
        array.flags.writeable = False
    return tables
