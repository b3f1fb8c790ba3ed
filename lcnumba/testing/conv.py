"""Reference convolutions: shared, tiled and local; 2-D and 1-D; the forward and every backward.

One computation serves the three weight sharings and both spatial ranks. A
weight is a grid of filter banks, ``(*grid, F, C/groups, *kernel)``: a shared
weight is a grid of one bank (``(1, 1)``, or ``(1,)`` in 1-D), a tiled weight
``TH x TW`` (or ``T``) banks, a local weight one bank per output position.
The bank of output position ``(i, j)`` is ``(bank of row i, bank of column
j)``, so the positions that use one bank are a Cartesian product of index
sets, and every pass is a loop over the banks of a plain convolution on
their positions (an ``einsum`` over the receptive fields). The 1-D forms run
the same code with one spatial axis; they are not the 2-D code with a unit
height.

The parameters are normalised and the output sizes computed here, from the
public spellings, without ``lcnumba.geometry``: a mistake there cannot hide
in the reference too. Everything is computed in float64 and cast to the dtype
of the inputs at the end, so the float32 references are more accurate than
float32 kernels can be.

The 30 public functions (6 families x 5 passes) are generated from the tables
``FAMILIES`` (the op table's families, ``lcnumba.table``) and ``PASSES``, with real signatures and numpydoc
docstrings.
"""

import linecache
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import table
from ._arguments import float_result_dtype, ints, require_ndim, require_shape

TILE_MODES = ("periodic", "block")
#: PyTorch's padding modes, as ``np.pad``'s modes.
NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Family(NamedTuple):
    """One convolution family: its public name prefix, weight sharing and number of spatial axes."""

    name: str
    sharing: str  # "shared", "tiled" or "local"
    d: int  # 2 for (N, C, H, W), 1 for (N, C, L)


#: The families of the op table (names and sharing only: the math below is the reference's own).
FAMILIES = tuple(Family(fam.name, fam.sharing, fam.spatial) for fam in table.CONV_FAMILIES)


# ================================================================ parameters and output size


class Geometry(NamedTuple):
    """Normalised geometry of one call; the tuples have one entry per spatial axis."""

    n: int
    c: int
    f: int
    groups: int
    size: tuple  # input size
    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple  # (before, after) per axis: ((top, bottom), (left, right)) or ((left, right),)
    grid: tuple  # banks per axis: (1, ...) for a shared weight
    out: tuple  # output size
    mode: str = "zeros"  # what the padding holds: a key of NP_PAD_MODES

    @property
    def output_shape(self):
        return (self.n, self.f) + self.out


def _padding(padding, d, kernel, stride, dilation):
    """``(before, after)`` per spatial axis from any public spelling of ``padding``."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * d
        if padding != "same":
            raise ValueError(f"padding: expected an int, a tuple, 'valid' or 'same', got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f'padding: expected "same" only with stride 1, got stride {stride}')
        # The padding that keeps the size; an odd total puts the extra cell after (bottom, right).
        totals = [dil * (k - 1) for k, dil in zip(kernel, dilation)]
        return tuple((total // 2, total - total // 2) for total in totals)
    sequence = isinstance(padding, (tuple, list))
    if d == 2 and sequence and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        return tuple(ints(p, "padding", 2, minimum=0) for p in padding)  # ((top, bottom), (left, right))
    if d == 1 and sequence and len(padding) == 2:
        return (ints(padding, "padding", 2, minimum=0),)  # (left, right)
    return tuple((p, p) for p in ints(padding, "padding", d, minimum=0))


def split_weight(family, w_shape, w_name="w"):
    """``(grid, bank)`` of a weight shape, ``bank = (F, C/groups, *kernel)``; a shared weight is one bank."""
    w_shape = tuple(int(s) for s in w_shape)
    ndim = 2 + family.d if family.sharing == "shared" else 2 + 2 * family.d
    if len(w_shape) != ndim:
        raise ValueError(f"{w_name}: expected the shape of a {ndim}-D {family.name} weight, got shape {w_shape}")
    if family.sharing == "shared":
        return (1,) * family.d, w_shape
    return w_shape[: family.d], w_shape[family.d :]


def _check_padding_mode(padding_mode, pads, size):
    """PyTorch's bounds: reflect pads less than the size, circular at most the size, replicate a non-empty axis."""
    if padding_mode not in NP_PAD_MODES:
        raise ValueError(f"padding_mode: expected one of {tuple(NP_PAD_MODES)}, got {padding_mode!r}")
    fits = {"zeros": lambda p, n: True, "reflect": lambda p, n: p < n, "replicate": lambda p, n: n > 0,
            "circular": lambda p, n: p <= n}[padding_mode]
    if not all(p == 0 or fits(p, n) for side, n in zip(pads, size) for p in side):
        raise ValueError(f"padding: expected padding that padding_mode={padding_mode!r} allows for the input size "
                         f"{size}, got {pads}")


def geometry(family, x_shape, w_shape, stride, padding, dilation, groups, *, w_name="w", padding_mode="zeros"):
    """Normalise the parameters of one call of ``family`` and compute its output size.

    Parameters
    ----------
    family : Family
    x_shape : tuple (N, C, *size)
    w_shape : tuple (*grid, F, C/groups, *kernel)
    stride, padding, dilation, groups
        Any public spelling.
    w_name : str
        The name of ``w_shape`` in error messages.
    padding_mode : str
        A key of ``NP_PAD_MODES``.

    Returns
    -------
    Geometry
    """
    d = family.d
    grid, (f, cg, *kernel) = split_weight(family, w_shape, w_name)
    n, c, *size = (int(s) for s in x_shape)
    stride = ints(stride, "stride", d, minimum=1)
    dilation = ints(dilation, "dilation", d, minimum=1)
    (groups,) = ints(groups, "groups", 1, minimum=1)
    pads = _padding(padding, d, kernel, stride, dilation)
    if c % groups or cg * groups != c:
        raise ValueError(f"{w_name}: expected C/groups = {c}/{groups} input channels per filter, got {cg}")
    if f % groups:
        raise ValueError(f"groups: expected a divisor of the {f} filters of {w_name}, got {groups}")
    _check_padding_mode(padding_mode, pads, size)
    # PyTorch's output size: floor((size + pads - dilation * (kernel - 1) - 1) / stride) + 1.
    out = tuple((s + before + after - dil * (k - 1) - 1) // st + 1
                for s, (before, after), k, st, dil in zip(size, pads, kernel, stride, dilation))
    if min(out) < 1:
        raise ValueError(f"{w_name}: expected a dilated kernel no larger than the padded input, "
                         f"got output size {out}")
    if family.sharing == "local":
        require_shape(grid, out, w_name, "the leading axes of a local weight are the output size")
    return Geometry(n, c, f, groups, tuple(size), tuple(kernel), stride, dilation, pads, grid, out, padding_mode)


def _check_tile_mode(family, tile_mode):
    if family.sharing == "tiled" and tile_mode not in TILE_MODES:
        raise ValueError(f"tile_mode: expected one of {TILE_MODES}, got {tile_mode!r}")


# ================================================================ banks and receptive fields


def bank_of(sharing, tile_mode, out, banks):
    """Bank of each of the ``out`` output indices along one axis that has ``banks`` banks."""
    index = np.arange(out)
    if sharing == "shared":
        return np.zeros(out, dtype=index.dtype)
    if sharing == "local":
        return index
    if tile_mode == "periodic":
        return index % banks
    return index * banks // out  # "block": contiguous runs of about out / banks positions


def bank_positions(sharing, tile_mode, out, grid):
    """Every bank of ``grid`` with the output positions that use it.

    Yields ``(bank, positions)``: ``bank`` a tuple of ints, ``positions`` an
    ``np.ix_`` tuple (one index array per output axis) whose product is the
    bank's positions; empty for a bank that no position uses.
    """
    per_axis = [bank_of(sharing, tile_mode, o, t) for o, t in zip(out, grid)]
    for bank in np.ndindex(*grid):
        yield bank, np.ix_(*[np.flatnonzero(b == k) for b, k in zip(per_axis, bank)])


def _at(positions, lead=3):
    """Index of ``positions`` in an array with ``lead`` axes before the output axes."""
    return (slice(None),) * lead + tuple(positions)


def windows(x, g):
    """The receptive field of every output position, ``(N, C, *out, *kernel)`` (a view of a padded copy)."""
    padded = np.pad(x, ((0, 0), (0, 0)) + g.pads, mode=NP_PAD_MODES[g.mode])
    extent = tuple(dil * (k - 1) + 1 for k, dil in zip(g.kernel, g.dilation))
    view = sliding_window_view(padded, extent, axis=tuple(range(2, x.ndim)))
    starts = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(g.out, g.stride))
    taps = tuple(slice(None, None, dil) for dil in g.dilation)
    return view[(slice(None), slice(None)) + starts + taps]


def _grouped(array, axis, groups):
    """Split axis ``axis`` of ``array`` into ``(groups, size // groups)``."""
    shape = array.shape
    return array.reshape(shape[:axis] + (groups, shape[axis] // groups) + shape[axis + 1 :])


def _banks(w, g):
    """The weight as ``(*grid, G, F/G, C/G, *kernel)``."""
    return _grouped(w.reshape(g.grid + w.shape[-2 - len(g.out) :]), len(g.grid), g.groups)


def _letters(d):
    """einsum letters of the output axes and of the kernel axes."""
    return "ij"[:d], "pq"[:d]


# ================================================================ the passes, on float64 arrays


def _forward(x, w, b, g, sharing, tile_mode):
    o, k = _letters(len(g.out))
    xw = _grouped(windows(x, g), 1, g.groups)  # (N, G, C/G, *out, *kernel)
    wb = _banks(w, g)
    bb = None if b is None else b.reshape((g.groups, g.f // g.groups) + g.grid)
    y = np.zeros((g.n, g.groups, g.f // g.groups) + g.out)
    for bank, positions in bank_positions(sharing, tile_mode, g.out, g.grid):
        at = _at(positions)
        y[at] = np.einsum(f"ngc{o}{k},gfc{k}->ngf{o}", xw[at], wb[bank])
        if bb is not None:
            bias = bb[(Ellipsis,) + bank]  # (G, F/G)
            y[at] += bias.reshape(bias.shape + (1,) * len(g.out))
    return y.reshape(g.output_shape)


def _backward_input(dy, w, g, sharing, tile_mode):
    # The explicit transpose of the forward, not a gather: every output
    # position's w^T dy (formed bank by bank) is added back over its receptive
    # field, one kernel tap at a time; within a tap the strided destinations
    # are distinct, so a sliced += is exact.
    o, k = _letters(len(g.out))
    wb = _banks(w, g)
    dyg = _grouped(dy, 1, g.groups)
    spread = np.zeros((g.n, g.groups, g.c // g.groups) + g.out + g.kernel)
    for bank, positions in bank_positions(sharing, tile_mode, g.out, g.grid):
        at = _at(positions)
        spread[at] = np.einsum(f"ngf{o},gfc{k}->ngc{o}{k}", dyg[at], wb[bank])
    padded = tuple(s + before + after for s, (before, after) in zip(g.size, g.pads))
    dx = np.zeros((g.n, g.groups, g.c // g.groups) + padded)
    for tap in np.ndindex(*g.kernel):
        # Output index i reads padded cell i * stride + tap * dilation.
        cells = tuple(slice(t * dil, t * dil + (o - 1) * s + 1, s)
                      for t, dil, o, s in zip(tap, g.dilation, g.out, g.stride))
        dx[(slice(None),) * 3 + cells] += spread[(Ellipsis,) + tap]
    dx = dx.reshape((g.n, g.c) + padded)
    if g.mode != "zeros":
        return _fold(dx, g)
    inside = tuple(slice(before, before + s) for s, (before, _) in zip(g.size, g.pads))
    return dx[(slice(None), slice(None)) + inside]


def _fold(dxp, g):
    """The adjoint of ``np.pad``: each padded cell's gradient added into the input cell it copies.

    Which cell that is comes from ``np.pad`` itself, applied to the cells' flat indices.
    """
    source = np.pad(np.arange(int(np.prod(g.size))).reshape(g.size), g.pads, mode=NP_PAD_MODES[g.mode])
    dx = np.zeros((g.n, g.c, int(np.prod(g.size))))
    np.add.at(dx, (slice(None), slice(None), source.ravel()), dxp.reshape(g.n, g.c, -1))
    return dx.reshape((g.n, g.c) + g.size)


def _backward_weight(dy, x, g, sharing, tile_mode):
    o, k = _letters(len(g.out))
    xw = _grouped(windows(x, g), 1, g.groups)
    dyg = _grouped(dy, 1, g.groups)
    dw = np.zeros(g.grid + (g.groups, g.f // g.groups, g.c // g.groups) + g.kernel)
    for bank, positions in bank_positions(sharing, tile_mode, g.out, g.grid):
        at = _at(positions)
        dw[bank] = np.einsum(f"ngf{o},ngc{o}{k}->gfc{k}", dyg[at], xw[at])
    return dw


def _backward_bias(dy, grid, sharing, tile_mode):
    out = dy.shape[2:]
    db = np.zeros((dy.shape[1],) + grid)
    for bank, positions in bank_positions(sharing, tile_mode, out, grid):
        db[(Ellipsis,) + bank] = dy[_at(positions, lead=2)].sum(axis=(0,) + tuple(range(2, 2 + len(out))))
    return db


# ================================================================ the passes of one family


def forward(family, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
            tile_mode="periodic"):
    """``y`` (N, F, *out) of ``family``'s forward, in the dtype of the inputs."""
    _check_tile_mode(family, tile_mode)
    x = require_ndim(x, "x", 2 + family.d)
    w = np.asarray(w)
    g = geometry(family, x.shape, w.shape, stride, padding, dilation, groups, padding_mode=padding_mode)
    if b is not None:
        b = np.asarray(b)
        require_shape(b.shape, (g.f,) if family.sharing == "shared" else (g.f,) + g.grid, "b")
    dtype = float_result_dtype(x, w, b)
    y = _forward(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64), g,
                 family.sharing, tile_mode)
    return y.astype(dtype)


def backward_input(family, dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                   tile_mode="periodic"):
    """``dx`` of ``input_shape``: the gradient of ``family``'s forward with respect to ``x``."""
    _check_tile_mode(family, tile_mode)
    dy = require_ndim(dy, "dy", 2 + family.d)
    w = np.asarray(w)
    input_shape = tuple(input_shape)
    if len(input_shape) != 2 + family.d:
        raise ValueError(f"input_shape: expected {2 + family.d} sizes, got {input_shape}")
    g = geometry(family, input_shape, w.shape, stride, padding, dilation, groups, padding_mode=padding_mode)
    require_shape(dy.shape, g.output_shape, "dy", "the forward output shape")
    dtype = float_result_dtype(dy, w)
    return _backward_input(dy.astype(np.float64), w.astype(np.float64), g, family.sharing, tile_mode).astype(dtype)


def backward_weight(family, dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", tile_mode="periodic"):
    """``dw`` of ``weight_shape``: the gradient of ``family``'s forward with respect to ``w``."""
    _check_tile_mode(family, tile_mode)
    dy = require_ndim(dy, "dy", 2 + family.d)
    x = require_ndim(x, "x", 2 + family.d)
    g = geometry(family, x.shape, weight_shape, stride, padding, dilation, groups, w_name="weight_shape",
                 padding_mode=padding_mode)
    require_shape(dy.shape, g.output_shape, "dy", "the forward output shape")
    dtype = float_result_dtype(dy, x)
    dw = _backward_weight(dy.astype(np.float64), x.astype(np.float64), g, family.sharing, tile_mode)
    return dw.reshape(tuple(weight_shape)).astype(dtype)


def backward_bias(family, dy, bias_shape, *, tile_mode="periodic"):
    """``db`` of ``bias_shape``: the gradient of ``family``'s forward with respect to ``b``."""
    _check_tile_mode(family, tile_mode)
    dy = require_ndim(dy, "dy", 2 + family.d)
    bias_shape = tuple(int(s) for s in bias_shape)
    f, out = dy.shape[1], dy.shape[2:]
    if family.sharing == "shared":
        require_shape(bias_shape, (f,), "bias_shape")
    elif family.sharing == "local":
        require_shape(bias_shape, (f,) + out, "bias_shape", "a local bias has the output size")
    elif len(bias_shape) != 1 + family.d or bias_shape[0] != f:
        raise ValueError(f"bias_shape: expected (F={f}, *tiles) with {family.d} tile sizes, got {bias_shape}")
    dtype = float_result_dtype(dy)
    grid = (1,) * family.d if family.sharing == "shared" else bias_shape[1:]
    return _backward_bias(dy.astype(np.float64), grid, family.sharing, tile_mode).reshape(bias_shape).astype(dtype)


def backward(family, dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
             tile_mode="periodic"):
    """``(dx, dw, db)`` of ``family``'s forward; ``db`` is None when ``b`` is None."""
    x, w = np.asarray(x), np.asarray(w)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  tile_mode=tile_mode)
    dx = backward_input(family, dy, w, x.shape, **params)
    dw = backward_weight(family, dy, x, w.shape, **params)
    db = None if b is None else backward_bias(family, dy, np.shape(b), tile_mode=tile_mode)
    return dx, dw, db


# ================================================================ the public functions
#
# Each public reference is a two-line function generated from its family and
# pass, so that it has the real signature of the public op (without out=,
# accumulate= and stream=) and a docstring that names its shapes.

def pass_table(forward, backward_input, backward_weight, backward_bias, backward):
    """pass -> (implementation, positional parameters, whether it takes the geometry): one per public reference."""
    return {
        "forward": (forward, "x, w, b=None", True),
        "backward_input": (backward_input, "dy, w, input_shape", True),
        "backward_weight": (backward_weight, "dy, x, weight_shape", True),
        "backward_bias": (backward_bias, "dy, bias_shape", False),
        "backward": (backward, "dy, x, w, b=None", True),
    }


PASSES = pass_table(forward, backward_input, backward_weight, backward_bias, backward)


def _source(family, part, passes, geometry):
    """The text of the public function ``{family.name}_{part}``."""
    _, positional, geometric = passes[part]
    keywords = [geometry] if geometric else []
    keywords += ['tile_mode="periodic"'] if family.sharing == "tiled" else []
    parameters = ", ".join([positional] + (["*"] + keywords if keywords else []))
    names = [item.split("=")[0].strip() for item in ", ".join([positional] + keywords).split(",")]
    arguments = ", ".join(f"{name}={name}" for name in names)
    return f"def {family.name}_{part}({parameters}):\n    return _pass(_family, {arguments})\n"


#: rank -> the axis names and the geometry parameters of its docstrings
_RANK_WORDS = {
    2: dict(
        x="(N, C, H, W)", out="OH, OW", kernel="KH, KW", tiles="TH, TW", position="i, j", tile="ti, tj",
        taps="p, q", reads="i*SH + p*DH, j*SW + q*DW",
        geometry="""stride : int or pair of ints
padding : int, pair, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``
    ``"same"`` (stride 1 only) keeps the input size; an odd total padding
    puts the extra cell bottom/right.
dilation : int or pair of ints
""",
        tile_mode="""tile_mode : {"periodic", "block"}
    ``"periodic"``: output ``(i, j)`` uses bank ``(i % TH, j % TW)``;
    ``"block"``: bank ``(i * TH // OH, j * TW // OW)``.
""",
    ),
    1: dict(
        x="(N, C, L)", out="OL", kernel="K", tiles="T", position="i", tile="t", taps="p", reads="i*S + p*D",
        geometry="""stride : int or 1-tuple
padding : int, 1-tuple, ``(left, right)``, ``"valid"`` or ``"same"``
    ``"same"`` (stride 1 only) keeps the input length; an odd total padding
    puts the extra cell on the right.
dilation : int or 1-tuple
""",
        tile_mode="""tile_mode : {"periodic", "block"}
    ``"periodic"``: output ``i`` uses bank ``i % T``; ``"block"``: bank ``i * T // OL``.
""",
    ),
}

_GROUPS_WORDS = """groups : int
    Filters ``g*F/groups .. (g+1)*F/groups - 1`` see channels
    ``g*C/groups .. (g+1)*C/groups - 1``.
padding_mode : {"zeros", "reflect", "replicate", "circular"}
    What ``xpad`` holds outside the input: ``np.pad``'s ``"constant"``,
    ``"reflect"``, ``"edge"`` or ``"wrap"`` (PyTorch's bounds: reflect pads
    less than the input size, circular at most the input size).
"""

#: sharing -> the phrases of its docstrings; ``grid`` and ``bank`` name the bank axes and a position's bank
_SHARING_WORDS = {
    "shared": dict(
        grid="", bank="", title="{d}-D convolution (cross-correlation, as in PyTorch)",
        banks="One filter bank, used at every output position.",
        folded="Summed over every output position.", summed="the batch and every output position",
    ),
    "tiled": dict(
        grid="{tiles}", bank="{tile}", title="tiled {d}-D convolution (Ngiam et al. 2010)",
        banks="One filter bank per tile of a ``({tiles})`` grid; ``tile_mode`` says which tile each output "
              "position uses.",
        folded="Summed over the output positions of each bank; a bank that no position uses gets zeros.",
        summed="the batch and the output positions of each bank",
    ),
    "local": dict(
        grid="{out}", bank="{position}", title="locally connected {d}-D layer (unshared weights, DeepFace L4-L6)",
        banks="One filter bank per output position: ``({out})`` must be the output size.",
        folded="Each bank's gradient comes from its own output position.", summed="the batch",
    ),
}


def _words(family):
    """The shapes and phrases that ``family``'s docstrings are made of."""
    rank = _RANK_WORDS[family.d]
    words = {key: text.format(d=family.d, **rank) for key, text in _SHARING_WORDS[family.sharing].items()}
    grid, bank, tiled = words["grid"], words["bank"], family.sharing == "tiled"
    return dict(
        words, name=family.name, x=rank["x"], y=f"(N, F, {rank['out']})",
        w=f"({grid + ', ' if grid else ''}F, C/groups, {rank['kernel']})",
        b=f"(F, {grid})" if grid else "(F,)",
        formula=f"``y[n, f, {rank['position']}] = b[f{', ' + bank if bank else ''}] + "
                f"sum_{{c, {rank['taps']}}} w[{bank + ', ' if bank else ''}f, c, {rank['taps']}] * "
                f"xpad[n, g*C/groups + c, {rank['reads']}]``",
        which=f" and ``({bank})`` the bank of ``({rank['position']})``" if tiled else "",
        geometry=rank["geometry"] + _GROUPS_WORDS + (rank["tile_mode"] if tiled else ""),
        same=f"stride, padding, dilation, groups, padding_mode{', tile_mode' if tiled else ''}\n"
             f"    As in ``{family.name}_forward``.\n",
        bias_mode=f'tile_mode : {{"periodic", "block"}}\n    As in ``{family.name}_forward``.\n' if tiled else "",
    )


#: pass -> numpydoc template, filled in with ``_words(family)``
_DOCSTRINGS = {
    "forward": """Reference {title}.

Parameters
----------
x : ndarray {x}
w : ndarray {w}
    {banks}
b : ndarray {b} or None
{geometry}
Returns
-------
y : ndarray {y}
    {formula},

    with ``xpad`` the input padded as ``padding_mode`` says, ``g`` the group of ``f``{which}.
    Computed in float64, returned in the dtype of the inputs.
""",
    "backward_input": """Reference gradient of ``{name}_forward`` with respect to ``x``.

Computed as the explicit transpose of the forward (a scatter-add of
``w^T dy`` over the receptive fields), not by gathering; with a
``padding_mode`` other than zeros, each padded cell's gradient is then
added into the input cell it copies.

Parameters
----------
dy : ndarray {y}
w : ndarray {w}
input_shape : tuple {x}
{same}
Returns
-------
dx : ndarray {x}
""",
    "backward_weight": """Reference gradient of ``{name}_forward`` with respect to ``w``.

Parameters
----------
dy : ndarray {y}
x : ndarray {x}
weight_shape : tuple {w}
{same}
Returns
-------
dw : ndarray {w}
    {folded}
""",
    "backward_bias": """Reference gradient of ``{name}_forward`` with respect to ``b``.

Parameters
----------
dy : ndarray {y}
bias_shape : tuple {b}
{bias_mode}
Returns
-------
db : ndarray {b}
    ``dy`` summed over {summed}.
""",
    "backward": """Reference gradients of ``{name}_forward``.

Parameters
----------
dy : ndarray {y}
x, w, b
    The forward's inputs (``b`` may be None).
{same}
Returns
-------
dx : ndarray {x}
dw : ndarray {w}
db : ndarray {b} or None
    None when ``b`` is None.
""",
}


def generated(family, part, passes, module, geometry="stride=1, padding=0, dilation=1, groups=1"):
    """The public reference ``{family.name}_{part}`` of ``module``, calling ``passes[part]``; no docstring yet."""
    name = f"{family.name}_{part}"
    source = _source(family, part, passes, geometry)
    filename = f"<{module}.{name}>"
    # Registered with linecache so that tracebacks and inspect.getsource show the generated line.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"_pass": passes[part][0], "_family": family}
    exec(compile(source, filename, "exec"), namespace)
    function = namespace[name]
    function.__module__ = module
    return function


_GEOMETRY = 'stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"'


def _public(family, part):
    """The public reference ``{family.name}_{part}``."""
    function = generated(family, part, PASSES, __name__, _GEOMETRY)
    function.__doc__ = _DOCSTRINGS[part].format(**_words(family))
    return function


_PUBLIC = {f"{family.name}_{part}": _public(family, part) for family in FAMILIES for part in table.CONV_PASSES}
globals().update(_PUBLIC)
__all__ = list(_PUBLIC)
