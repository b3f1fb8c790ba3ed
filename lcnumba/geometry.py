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

import functools
from typing import NamedTuple

from . import checks, indexing, table

TILE_MODES = ("periodic", "block")


# ---------------------------------------------------------------- memoised plans


def _plain(value):
    """Whether ``value`` is an exact int, str or None, or a tuple of such (nested): a safe memo key.

    ``True == 1`` and ``1.0 == 1`` hash alike, but the checks refuse a bool or a float where the int
    passes; only values of these exact types can share an entry without changing what is accepted.
    """
    if type(value) is not tuple:
        return type(value) in _PLAIN_TYPES
    for item in value:
        if type(item) is tuple:
            if not _plain(item):
                return False
        elif type(item) not in _PLAIN_TYPES:
            return False
    return True


_PLAIN_TYPES = frozenset((int, str, type(None)))


def memoised(plan):
    """``plan`` remembered per argument set: a training loop calls each layer with the same shapes.

    A plan is an immutable function of its arguments, so a repeated call gets the same object without
    normalising and checking again (tens of microseconds, most of a tiny layer's call). Arguments
    that are not plain ints, strings and tuples of them (lists, NumPy integers, a bool or a float that
    the checks refuse) are planned afresh every time, so every message is the same as without the
    memo. A call that raises is not remembered.
    """
    remembered = functools.lru_cache(maxsize=512)(plan)

    @functools.wraps(plan)
    def lookup(fam, *args, **names):
        if _plain(args) and _plain(tuple(names.values())):
            return remembered(fam, *args, **names)
        return plan(fam, *args, **names)

    lookup.cache_clear = remembered.cache_clear
    return lookup


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


def padding4(padding, kernel_hw, stride_hw, dilation_hw, name="padding", spatial=2):
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
            checks.same_needs_stride_1(name, stride_hw[2 - spatial:])
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


def conv_geometry(x_shape, f, kernel_hw, stride, padding, dilation, groups, *, input_name="x", weight_name="w",
                  spatial=2):
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
    spatial : int
        The caller's spatial rank: a 1-D call (H = KH = 1) is reported along L only.

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
    pads = padding4(padding, kernel_hw, stride_hw, dilation_hw, spatial=spatial)
    checks.at_most(stride_hw, "stride")
    checks.at_most(dilation_hw, "dilation")
    checks.at_most(kernel_hw, weight_name)
    checks.at_most(pads, "padding")
    checks.groups_divide(groups, c, input_name, f, weight_name)
    oh = output_size(h, kernel_hw[0], stride_hw[0], dilation_hw[0], pads[0], pads[2])
    ow = output_size(w, kernel_hw[1], stride_hw[1], dilation_hw[1], pads[1], pads[3])
    if oh < 1 or ow < 1:
        padded = (h + pads[0] + pads[2], w + pads[1] + pads[3])
        extent = (indexing.kernel_extent(kernel_hw[0], dilation_hw[0]), indexing.kernel_extent(kernel_hw[1], dilation_hw[1]))
        checks.kernel_too_large(weight_name, padded[2 - spatial:], extent[2 - spatial:])
    return ConvGeometry(n, c, h, w, f, kernel_hw[0], kernel_hw[1], *stride_hw, *pads, *dilation_hw, groups, oh, ow)


# ---------------------------------------------------------------- one call of the convolution family


def with_unit_axes(shape, axes):
    """``shape`` with axes of size 1 inserted at ``axes`` (positions in the result)."""
    shape = list(shape)
    for axis in axes:
        shape.insert(axis, 1)
    return tuple(shape)


def without_axes(shape, axes):
    return tuple(s for i, s in enumerate(shape) if i not in axes)


class ConvPlan(NamedTuple):
    """Everything a kernel call needs besides the arrays, for one family and one call."""

    fam: table.ConvFamily
    geo: ConvGeometry  # always 2-D
    th: int
    tw: int
    periodic: bool
    mode: int = 0  # the padding mode, an index into table.PADDING_MODES

    @property
    def padded(self):
        """The same call on the input padded by ``mode`` (its padding then 0, its mode zeros): what the kernels run
        for a padding mode other than zeros, on a padded copy of the input."""
        g = self.geo
        geo = g._replace(h=g.h + g.pad_top + g.pad_bottom, w=g.w + g.pad_left + g.pad_right,
                         pad_top=0, pad_left=0, pad_bottom=0, pad_right=0)
        return self._replace(geo=geo, mode=0)

    @property
    def kernel_args(self):
        g = self.geo
        return (g.kh, g.kw, g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.dilation_h, g.dilation_w)

    @property
    def tiling(self):
        return (self.th, self.tw, self.periodic)

    @property
    def n_tiles(self):
        return self.th * self.tw

    # Shapes as the caller sees them (the family's rank) ...

    @property
    def output_shape(self):
        return without_axes(self.geo.output_shape, self.fam.x_unit_axes)

    @property
    def input_shape(self):
        g = self.geo
        return without_axes((g.n, g.c, g.h, g.w), self.fam.x_unit_axes)

    @property
    def bias_shape(self):
        g = self.geo
        shape2 = (g.f,) if self.fam.sharing == "shared" else (g.f, self.th, self.tw)
        return without_axes(shape2, self.fam.bias_unit_axes)

    # ... and the kernels' views of C-contiguous arrays.

    def image(self, array):
        """x, dx, y or dy as (N, C, H, W)."""
        return array.reshape(with_unit_axes(array.shape, self.fam.x_unit_axes))

    def flat_weight(self, w):
        """w or dw as (tiles, F, C/groups * KH * KW)."""
        g = self.geo
        return w.reshape(self.n_tiles, g.f, (g.c // g.groups) * g.kh * g.kw)

    def flat_bias(self, b):
        """b or db as (F, tiles)."""
        return b.reshape(self.geo.f, self.n_tiles)


def _params_2d(fam, stride, padding, dilation):
    if fam.spatial == 2:
        return stride, padding, dilation
    return ((1, stride1d(stride, "stride")), padding1d(padding),
            (1, stride1d(dilation, "dilation")))


def tile_mode_of(fam, tile_mode):
    """``tile_mode`` checked for a tiled family; the untiled ones behave as periodic with one or OHxOW tiles."""
    return checks.choice(tile_mode, "tile_mode", table.TILE_MODES) if fam.has_tiles else "periodic"


@memoised
def conv_plan(fam, x_shape, w_shape, stride, padding, dilation, groups, tile_mode, *, x_name, w_name,
              padding_mode="zeros"):
    """Normalise the geometry of a call and check the weight's shape against the input's.

    ``x_shape`` and ``w_shape`` are the caller's (the family's rank); messages show them.
    ``padding_mode`` is checked after ``groups`` and before ``tile_mode``, in signature order, and
    against the padding and the input size (PyTorch's bounds, ``checks.padding_fits_mode``).
    """
    checks.positive_dims(w_shape, w_name)
    x2 = with_unit_axes(x_shape, fam.x_unit_axes)
    w2 = with_unit_axes(w_shape, fam.weight_unit_axes)
    f, cg, kh, kw = w2[-4:]
    stride, padding, dilation = _params_2d(fam, stride, padding, dilation)
    geo = conv_geometry(x2, f, (kh, kw), stride, padding, dilation, groups, input_name=x_name,
                                 weight_name=w_name, spatial=fam.spatial)
    checks.channels_per_group(w_name, w_shape, fam.weight_dims.index("cg"), geo.c, geo.groups)
    padding_mode = checks.choice(padding_mode, "padding_mode", table.PADDING_MODES)
    checks.padding_fits_mode(padding_mode, (geo.pad_top, geo.pad_bottom, geo.pad_left, geo.pad_right),
                             (geo.h, geo.w), fam.spatial)
    pad_index = table.PADDING_MODES.index(padding_mode)
    mode = tile_mode_of(fam, tile_mode)
    if fam.sharing == "shared":
        return ConvPlan(fam, geo, 1, 1, True, pad_index)
    if fam.sharing == "local":
        expected = without_axes((geo.oh, geo.ow) + tuple(w2[2:]), fam.weight_unit_axes)
        positions = (geo.oh, geo.ow) if fam.spatial == 2 else (geo.ow,)
        checks.bank_per_position(w_name, w_shape, expected, positions)
    return ConvPlan(fam, geo, w2[0], w2[1], mode == "periodic", pad_index)


# ---------------------------------------------------------------- one call of a transposed family


def transpose_output_size(size, kernel, stride, dilation, pad_before, pad_after, output_padding):
    """``(size - 1)*stride - pads + dilation*(kernel-1) + output_padding + 1``: ``indexing.conv_transpose_output_size``.

    The forward op of this input size maps back onto ``size`` positions (for ``output_padding < stride``).
    """
    return indexing.conv_transpose_output_size(size, kernel, stride, dilation, pad_before, pad_after, output_padding)


class ConvTransposePlan(NamedTuple):
    """One call of a transposed family: the plan of its forward op, whose input is this op's output.

    The kernels run on ``forward``: the transposed op's input is the forward op's output and its
    output the forward op's input; ``bias_tiling`` maps this op's output positions to its bias.
    """

    fam: table.ConvTransposeFamily
    forward: ConvPlan

    @property
    def geo(self):
        return self.forward.geo

    @property
    def output_shape(self):
        return self.forward.input_shape

    @property
    def bias_tiling(self):
        """``(TH, TW, periodic)`` of the bias over the output positions: one tile per position if local."""
        g = self.geo
        if self.fam.sharing == "local":
            return (g.h, g.w, True)
        return self.forward.tiling

    @property
    def bias_shape(self):
        th, tw, _ = self.bias_tiling
        shape2 = (self.geo.c,) if self.fam.sharing == "shared" else (self.geo.c, th, tw)
        return without_axes(shape2, self.fam.bias_unit_axes)

    def flat_bias(self, b):
        """b or db as (F, bias tiles)."""
        th, tw, _ = self.bias_tiling
        return b.reshape(self.geo.c, th * tw)


def _output_padding_2d(fam, output_padding):
    if fam.spatial == 2:
        return checks.int_tuple(output_padding, "output_padding", 2, minimum=0)
    return (0, checks.one_int(output_padding, "output_padding", minimum=0))


@memoised
def conv_transpose_plan(fam, x_shape, w_shape, stride, padding, output_padding, dilation, groups, tile_mode, *,
                        x_name, w_name):
    """Normalise the geometry of a call of a transposed family and check the weight against the input.

    The input ``(N, C, H, W)`` and the weight ``(*grid, C, F/groups, KH, KW)`` give the output
    ``(N, F, OH, OW)``, ``OH = (H-1)*SH - PT - PB + DH*(KH-1) + output_padding + 1``; the plan is that of
    the forward op from ``(N, F, OH, OW)`` onto the ``H x W`` positions of the input. ``x_shape`` and
    ``w_shape`` are the caller's (the family's rank); messages show them.
    """
    checks.positive_dims(w_shape, w_name)
    x2 = with_unit_axes(x_shape, fam.x_unit_axes)
    w2 = with_unit_axes(w_shape, fam.weight_unit_axes)
    c_in, fg, kh, kw = w2[-4:]
    stride, padding, dilation = _params_2d(fam, stride, padding, dilation)
    stride_hw = checks.int_tuple(stride, "stride", 2, minimum=1)
    dilation_hw = checks.int_tuple(dilation, "dilation", 2, minimum=1)
    groups = checks.integer(groups, "groups", minimum=1)
    pads = padding4(padding, (kh, kw), stride_hw, dilation_hw, spatial=fam.spatial)
    extra = _output_padding_2d(fam, output_padding)
    shown = slice(2 - fam.spatial, 2)
    checks.at_most(stride_hw[shown], "stride")
    checks.at_most(dilation_hw[shown], "dilation")
    checks.at_most((kh, kw)[shown], w_name)
    checks.at_most(pads, "padding")
    checks.output_padding_below(extra[shown], stride_hw[shown], dilation_hw[shown])
    n, c, h, w = x2
    checks.input_channels(w_name, w_shape, fam.weight_dims.index("c"), c)
    checks.groups_divide(groups, c, x_name, fg * groups, w_name)
    oh = transpose_output_size(h, kh, stride_hw[0], dilation_hw[0], pads[0], pads[2], extra[0])
    ow = transpose_output_size(w, kw, stride_hw[1], dilation_hw[1], pads[1], pads[3], extra[1])
    if oh < 1 or ow < 1:
        checks.transpose_output_positive((oh, ow)[shown], x_shape)
    geo = ConvGeometry(n, fg * groups, oh, ow, c, kh, kw, *stride_hw, *pads, *dilation_hw, groups, h, w)
    forward = table.family(fam.forward)
    mode = tile_mode_of(fam, tile_mode)
    if fam.sharing == "shared":
        return ConvTransposePlan(fam, ConvPlan(forward, geo, 1, 1, True))
    if fam.sharing == "local":
        expected = without_axes((h, w) + tuple(w2[2:]), fam.weight_unit_axes)
        checks.bank_per_position(w_name, w_shape, expected, (h, w)[shown], where="input")
    return ConvTransposePlan(fam, ConvPlan(forward, geo, w2[0], w2[1], mode == "periodic"))


# ---------------------------------------------------------------- shape queries


def _query(name, input_shape, weight_shape, stride, padding, dilation, groups):
    """Output shape of the forward of family ``name``, with the forward's checks of the weight against the input."""
    fam = table.family(name)
    x_shape = checks.shape_tuple(input_shape, "input_shape", fam.x_ndim)
    w_shape = checks.shape_tuple(weight_shape, "weight_shape", fam.weight_ndim)
    return conv_plan(fam, x_shape, w_shape, stride, padding, dilation, groups, "periodic", x_name="input_shape",
                     w_name="weight_shape").output_shape


def conv2d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape ``(N, F, OH, OW)`` of ``conv2d_forward`` for a weight of ``(F, C/groups, KH, KW)``."""
    return _query("conv2d", input_shape, weight_shape, stride, padding, dilation, groups)


def tiled_conv2d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape of ``tiled_conv2d_forward`` for a weight of ``(TH, TW, F, C/groups, KH, KW)``."""
    return _query("tiled_conv2d", input_shape, weight_shape, stride, padding, dilation, groups)


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
    return _query("conv1d", input_shape, weight_shape, stride, padding, dilation, groups)


def tiled_conv1d_output_shape(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Output shape ``(N, F, OL)`` of ``tiled_conv1d_forward`` for a weight of ``(T, F, C/groups, K)``."""
    return _query("tiled_conv1d", input_shape, weight_shape, stride, padding, dilation, groups)


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


def _transpose_query(name, input_shape, weight_shape, stride, padding, output_padding, dilation, groups):
    """Output shape of the forward of the transposed family ``name``, with its checks of the weight and input."""
    fam = table.family(name)
    x_shape = checks.shape_tuple(input_shape, "input_shape", fam.x_ndim)
    w_shape = checks.shape_tuple(weight_shape, "weight_shape", fam.weight_ndim)
    return conv_transpose_plan(fam, x_shape, w_shape, stride, padding, output_padding, dilation, groups, "periodic",
                               x_name="input_shape", w_name="weight_shape").output_shape


def _transpose_shape_query(fam):
    """The public ``<family>_output_shape`` query of the transposed family ``fam`` (one per table row)."""

    def query(input_shape, weight_shape, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
        return _transpose_query(fam.name, input_shape, weight_shape, stride, padding, output_padding, dilation,
                                groups)

    y = "(N, F, OH, OW)" if fam.spatial == 2 else "(N, F, OL)"
    size = ("\n\n``OH = (H-1)*SH - PT - PB + DH*(KH-1) + output_padding + 1``, likewise OW: the input size of the\n"
            f"``{fam.forward}_forward`` that maps ``{y}`` onto the positions of the input."
            if fam.spatial == 2 else "")
    local = ("\n\nThe weight holds a filter bank per *input* position, so its leading axes are the input's;\n"
             "the bias has one entry per filter and output position of this shape." if fam.sharing == "local" else "")
    query.__name__ = query.__qualname__ = f"{fam.name}_output_shape"
    query.__doc__ = (f"Output shape ``{y}`` of ``{fam.name}_forward`` for a weight of "
                     f"``{table.ConvFamily.layout(fam.weight_dims)}``.{size}{local}")
    return query


for _fam in table.TRANSPOSE_FAMILIES:
    globals()[f"{_fam.name}_output_shape"] = _transpose_shape_query(_fam)
del _fam


# ---------------------------------------------------------------- 1-D forms as 2-D


def stride1d(value, name):
    """A 1-D stride or dilation: an int or a 1-tuple."""
    return checks.one_int(value, name, minimum=1)


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


# ---------------------------------------------------------------- max-pooling


class PoolGeometry(NamedTuple):
    """Normalised geometry of one 2-D max-pooling (1-D forms use ``H = KH = 1``)."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    oh: int
    ow: int

    @property
    def output_shape(self):
        return (self.n, self.c, self.oh, self.ow)

    @property
    def kernel_args(self):
        return (self.kh, self.kw, self.stride_h, self.stride_w, self.pad_h, self.pad_w,
                self.dilation_h, self.dilation_w)


def pool_params_2d(spatial, kernel_size, stride, padding, dilation):
    """Pooling parameters in the 2-D form; a 1-D pooling is a 2-D one of height 1 (range checks come later)."""
    if spatial == 2:
        return kernel_size, stride, padding, dilation
    k = checks.one_int(kernel_size, "kernel_size")
    s = None if stride is None else (1, checks.one_int(stride, "stride"))
    return (1, k), s, (0, checks.one_int(padding, "padding")), (1, checks.one_int(dilation, "dilation"))


def pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode, *, input_name="x", spatial=2):
    """Normalise the parameters of a max-pooling and compute its output size.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        ``(N, C, H, W)`` (``H = 1`` for a 1-D pooling).
    kernel_size, stride, padding, dilation, ceil_mode
        As accepted by :func:`lcnumba.max_pool2d_forward` (the 2-D form for a 1-D pooling, see
        :func:`pool_params_2d`).
    input_name : str
        Name of the argument ``x_shape`` came from, for messages.
    spatial : int
        The caller's spatial rank: a 1-D pooling is reported along L only.

    Returns
    -------
    PoolGeometry

    Raises
    ------
    TypeError, ValueError
        Naming the offending parameter.
    """
    n, c, h, w = x_shape
    kh, kw = checks.int_tuple(kernel_size, "kernel_size", 2, minimum=1)
    if stride is None:
        sh, sw = kh, kw
    else:
        sh, sw = checks.int_tuple(stride, "stride", 2, minimum=1)
    ph, pw = checks.int_tuple(padding, "padding", 2, minimum=0)
    dh, dw = checks.int_tuple(dilation, "dilation", 2, minimum=1)
    ceil_mode = checks.flag(ceil_mode, "ceil_mode")
    shown = slice(2 - spatial, 2)
    checks.at_most((kh, kw)[shown], "kernel_size")
    checks.at_most((sh, sw)[shown], "stride")
    checks.at_most((dh, dw)[shown], "dilation")
    checks.pool_padding((ph, pw)[shown], (kh, kw)[shown])
    checks.nonempty_plane(input_name, h * w, x_shape if spatial == 2 else (n, c, w))
    oh = indexing.pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = indexing.pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        padded = (h + 2 * ph, w + 2 * pw)[shown]
        extent = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)[shown]
        checks.kernel_too_large("kernel_size", padded, extent)
    return PoolGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def max_pool2d_output_shape(input_shape, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output shape of :func:`lcnumba.max_pool2d_forward`, without running it.

    Parameters
    ----------
    input_shape : tuple of 4 ints
        ``(N, C, H, W)``.
    kernel_size, stride, padding, dilation, ceil_mode
        As accepted by :func:`lcnumba.max_pool2d_forward`.

    Returns
    -------
    tuple of 4 ints
        ``(N, C, OH, OW)``, the shape of ``y`` and of the indices.

    Raises
    ------
    TypeError, ValueError
        As :func:`lcnumba.max_pool2d_forward` for the same parameters.
    """
    x_shape = checks.shape_tuple(input_shape, "input_shape", 4)
    return pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                         input_name="input_shape").output_shape


def max_pool1d_output_shape(input_shape, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output shape of :func:`lcnumba.max_pool1d_forward`, without running it.

    Parameters
    ----------
    input_shape : tuple of 3 ints
        ``(N, C, L)``.
    kernel_size, stride, padding, dilation, ceil_mode
        As accepted by :func:`lcnumba.max_pool1d_forward`.

    Returns
    -------
    tuple of 3 ints
        ``(N, C, OL)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`lcnumba.max_pool1d_forward` for the same parameters.
    """
    n, c, length = checks.shape_tuple(input_shape, "input_shape", 3)
    params = pool_params_2d(1, kernel_size, stride, padding, dilation)
    geo = pool_geometry((n, c, 1, length), *params, ceil_mode, input_name="input_shape", spatial=1)
    return (n, c, geo.ow)
