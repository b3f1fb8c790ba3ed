"""Output sizes and parameter normalisation for every op.

The public functions accept the parameter spellings users know from PyTorch
and Keras (an int, a pair, ``"valid"``, ``"same"``); everything below the
public layer sees one normalised form: ints per axis and explicit
``(top, left, bottom, right)`` padding, so asymmetric padding costs the
kernels nothing.

The ``*_output_shape`` queries answer, like ``cudnnGetConvolutionNdForwardOutputDim``,
what a forward call would return without running it.

The arithmetic itself (output sizes, the tile of a position) is that of
``lcnumba.indexing``, which the kernels compile: the sizes computed here are
the sizes the kernels assume.
"""

from typing import NamedTuple

from . import checks, indexing

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
        total_h = indexing.kernel_extent(kernel_hw[0], dilation_hw[0]) - 1
        total_w = indexing.kernel_extent(kernel_hw[1], dilation_hw[1]) - 1
        return (total_h // 2, total_w // 2, total_h - total_h // 2, total_w - total_w // 2)
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (top, bottom) = checks.int_tuple(padding[0], name, 2, minimum=0)
        (left, right) = checks.int_tuple(padding[1], name, 2, minimum=0)
        return (top, left, bottom, right)
    ph, pw = checks.int_tuple(padding, name, 2, minimum=0)
    return (ph, pw, ph, pw)


def output_size(size, kernel, stride, dilation, pad_before, pad_after):
    """``floor((size + pads - dilation*(kernel-1) - 1) / stride) + 1`` (may be <= 0): ``indexing.conv_output_size``."""
    return indexing.conv_output_size(size, kernel, stride, dilation, pad_before, pad_after)


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
            f"a dilated kernel of {indexing.kernel_extent(kernel_hw[0], dilation_hw[0])}x"
            f"{indexing.kernel_extent(kernel_hw[1], dilation_hw[1])}",
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
    """Tile index of output row/column ``index`` of ``size`` for ``tiles`` tiles along the axis.

    ``mode`` is a ``tile_mode`` name (``TILE_MODES``); the rule is ``indexing.tile_of``.
    """
    return indexing.tile_of(index, size, tiles, mode == "periodic")
