"""Reference transposed convolutions: shared, tiled and local; 2-D and 1-D; the forward and every backward.

Written in scatter form, the definition of a transposed convolution: every
input cell ``x[n, c, i]`` adds ``w[bank of i][c, f, a] * x[n, c, i]`` to the
output cell ``i*S - P + a*D`` of every output channel ``f`` of its group and
every tap ``a``. Cells that land in the padding or past the output are
dropped. The backward passes are the same loop read the other way (a gather
from the output gradient, reading zeros outside the output); none of them calls the forward references of
``lcnumba.testing.conv`` or any kernel, so the identity "the transposed
forward is the forward op's input gradient" is tested, not assumed.

A weight is a grid of filter banks ``(*grid, C, F/groups, *kernel)``: a
shared weight one bank, a tiled one ``TH x TW`` (or ``T``) banks, a local one
a bank per *input* position; the input position ``i`` uses bank ``i % T``
(``"periodic"``) or ``i * T // size`` (``"block"``) per axis. The bias is
``(F,)``, ``(F, *tiles)`` over the output positions by the same rule, or
``(F, *output size)`` for a local weight.

Parameters are normalised and output sizes computed here; everything runs
in float64 and is cast to the inputs' dtype at the end.
"""

from typing import NamedTuple

import numpy as np

from .. import table
from ._arguments import float_result_dtype, ints, require_ndim, require_shape
from .conv import Family, _padding, generated, pass_table, split_weight

TILE_MODES = ("periodic", "block")

#: The transposed families of the op table (names and sharing only).
FAMILIES = tuple(Family(fam.name, fam.sharing, fam.spatial) for fam in table.TRANSPOSE_FAMILIES)


class Geometry(NamedTuple):
    """Normalised geometry of one call; the tuples have one entry per spatial axis."""

    n: int
    c: int  # input channels
    f: int  # output channels
    groups: int
    size: tuple  # input size
    kernel: tuple
    stride: tuple
    dilation: tuple
    before: tuple  # padding cut from the start of each axis
    grid: tuple  # weight banks per axis
    out: tuple  # output size
    periodic: bool

    @property
    def output_shape(self):
        return (self.n, self.f) + self.out


def geometry(family, x_shape, w_shape, stride, padding, output_padding, dilation, groups, tile_mode,
             *, w_name="w"):
    """Normalise the parameters of one call of ``family`` and compute its output size (PyTorch's rule)."""
    d = family.d
    grid, (c_in, fg, *kernel) = split_weight(family, w_shape, w_name)
    n, c, *size = (int(s) for s in x_shape)
    stride = ints(stride, "stride", d, minimum=1)
    dilation = ints(dilation, "dilation", d, minimum=1)
    extra = ints(output_padding, "output_padding", d, minimum=0)
    (groups,) = ints(groups, "groups", 1, minimum=1)
    pads = _padding(padding, d, kernel, stride, dilation)
    if tile_mode not in TILE_MODES:
        raise ValueError(f"tile_mode: expected one of {TILE_MODES}, got {tile_mode!r}")
    if any(e >= max(s, dil) for e, s, dil in zip(extra, stride, dilation)):
        raise ValueError(f"output_padding: expected ints smaller than the stride or the dilation, got {extra}")
    if c_in != c:
        raise ValueError(f"{w_name}: expected C = {c} input channels, got {c_in}")
    if c % groups:
        raise ValueError(f"groups: expected a divisor of the {c} input channels, got {groups}")
    out = tuple((s - 1) * st - before - after + dil * (k - 1) + e + 1
                for s, st, (before, after), dil, k, e in zip(size, stride, pads, dilation, kernel, extra))
    if min(out) < 1:
        raise ValueError(f"padding: expected an output of at least one cell, got output size {out}")
    if family.sharing == "local":
        require_shape(grid, size, w_name, "the leading axes of a transposed local weight are the input size")
    return Geometry(n, c, fg * groups, groups, tuple(size), tuple(kernel), stride, dilation,
                    tuple(before for before, _ in pads), grid, out, tile_mode == "periodic")


def _bank(index, size, tiles, periodic):
    """The bank of position ``index`` of ``size`` along an axis of ``tiles`` banks."""
    return tuple(i % t if periodic else i * t // s for i, s, t in zip(index, size, tiles))


def _links(geo):
    """Every ``(input position, its bank, tap, output position, inside)``; ``inside``: the output cell exists."""
    for position in np.ndindex(*geo.size):
        bank = _bank(position, geo.size, geo.grid, geo.periodic)
        for tap in np.ndindex(*geo.kernel):
            target = tuple(i * s - before + a * dil
                           for i, s, before, a, dil in zip(position, geo.stride, geo.before, tap, geo.dilation))
            yield position, bank, tap, target, all(0 <= t < o for t, o in zip(target, geo.out))


def _read(dy, fs, target, inside):
    """``dy[:, fs, target]``, zeros for a cell outside the output (so that ``0 * inf`` is NaN there, as a
    convolution over a zero-padded input has it)."""
    return dy[(slice(None), fs) + target] if inside else np.zeros((dy.shape[0], fs.stop - fs.start))


def _bias_grid(family, geo):
    if family.sharing == "shared":
        return (1,) * family.d
    return geo.out if family.sharing == "local" else geo.grid


def _banks(family, w):
    """The weight as ``(*grid, C, F/groups, *kernel)`` (a shared weight gets a grid of one bank)."""
    return w.reshape((1,) * family.d + w.shape) if family.sharing == "shared" else w


def _groups(geo):
    """``(input channels, output channels)`` slices of each group."""
    cg, fg = geo.c // geo.groups, geo.f // geo.groups
    return [(slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg)) for g in range(geo.groups)]


# ================================================================ passes


def forward(family, x, w, b, stride, padding, output_padding, dilation, groups, tile_mode="periodic"):
    x = require_ndim(x, "x", 2 + family.d)
    w = require_ndim(w, "w", np.ndim(w))
    dtype = float_result_dtype(x, w, None if b is None else np.asarray(b))
    geo = geometry(family, x.shape, w.shape, stride, padding, output_padding, dilation, groups, tile_mode)
    x, banks = np.asarray(x, np.float64), _banks(family, np.asarray(w, np.float64))
    y = np.zeros(geo.output_shape)
    for position, bank, tap, target, inside in _links(geo):
        for cs, fs in _groups(geo) if inside else ():
            # y[:, f, target] += sum_c x[:, c, position] w[bank][c, f, tap]
            y[(slice(None), fs) + target] += x[(slice(None), cs) + position] @ banks[bank][(cs, slice(None)) + tap]
    if b is not None:
        b = np.asarray(b, np.float64)
        require_shape(b.shape, (geo.f,) + (_bias_grid(family, geo) if family.sharing != "shared" else ()), "b")
        y += _bias_image(family, geo, b)
    return y.astype(dtype)


def _bias_image(family, geo, b):
    """The bias of every output cell, ``(F, *out)``."""
    grid = _bias_grid(family, geo)
    b = b.reshape((geo.f,) + grid)
    image = np.empty((geo.f,) + geo.out)
    for target in np.ndindex(*geo.out):
        image[(slice(None),) + target] = b[(slice(None),) + _bank(target, geo.out, grid, geo.periodic)]
    return image


def backward_input(family, dy, w, input_shape, stride, padding, output_padding, dilation, groups,
                   tile_mode="periodic"):
    dy = require_ndim(dy, "dy", 2 + family.d)
    dtype = float_result_dtype(dy, np.asarray(w))
    geo = geometry(family, input_shape, np.shape(w), stride, padding, output_padding, dilation, groups, tile_mode)
    require_shape(dy.shape, geo.output_shape, "dy")
    dy, banks = np.asarray(dy, np.float64), _banks(family, np.asarray(w, np.float64))
    dx = np.zeros((geo.n, geo.c) + geo.size)
    for position, bank, tap, target, inside in _links(geo):
        for cs, fs in _groups(geo):
            dx[(slice(None), cs) + position] += _read(dy, fs, target, inside) @ banks[bank][(cs, slice(None)) + tap].T
    return dx.astype(dtype)


def backward_weight(family, dy, x, weight_shape, stride, padding, output_padding, dilation, groups,
                    tile_mode="periodic"):
    dy = require_ndim(dy, "dy", 2 + family.d)
    x = require_ndim(x, "x", 2 + family.d)
    dtype = float_result_dtype(dy, x)
    weight_shape = tuple(int(s) for s in weight_shape)
    geo = geometry(family, x.shape, weight_shape, stride, padding, output_padding, dilation, groups, tile_mode,
                   w_name="weight_shape")
    require_shape(dy.shape, geo.output_shape, "dy")
    dy, x = np.asarray(dy, np.float64), np.asarray(x, np.float64)
    dw = np.zeros(weight_shape)
    banks = _banks(family, dw)  # a view: the sums land in dw
    for position, bank, tap, target, inside in _links(geo):
        for cs, fs in _groups(geo):
            banks[bank][(cs, slice(None)) + tap] += x[(slice(None), cs) + position].T @ _read(dy, fs, target, inside)
    return dw.astype(dtype)


def backward_bias(family, dy, bias_shape, tile_mode="periodic"):
    dy = require_ndim(dy, "dy", 2 + family.d)
    dtype = float_result_dtype(dy)
    bias_shape = tuple(int(s) for s in bias_shape)
    if tile_mode not in TILE_MODES:
        raise ValueError(f"tile_mode: expected one of {TILE_MODES}, got {tile_mode!r}")
    out = dy.shape[2:]
    grid = {"shared": (1,) * family.d, "tiled": bias_shape[1:], "local": out}[family.sharing]
    require_shape(bias_shape, (dy.shape[1],) + (grid if family.sharing != "shared" else ()), "bias_shape")
    db = np.zeros((dy.shape[1],) + grid)
    summed = np.asarray(dy, np.float64).sum(axis=0)
    for target in np.ndindex(*out):
        db[(slice(None),) + _bank(target, out, grid, tile_mode == "periodic")] += summed[(slice(None),) + target]
    return db.reshape(bias_shape).astype(dtype)


def backward(family, dy, x, w, b, stride, padding, output_padding, dilation, groups, tile_mode="periodic"):
    geometry_args = (stride, padding, output_padding, dilation, groups, tile_mode)
    dx = backward_input(family, dy, w, np.shape(x), *geometry_args)
    dw = backward_weight(family, dy, x, np.shape(w), *geometry_args)
    db = None if b is None else backward_bias(family, dy, np.shape(b), tile_mode)
    return dx, dw, db


# ================================================================ the public references

PASSES = pass_table(forward, backward_input, backward_weight, backward_bias, backward)

_GEOMETRY = "stride=1, padding=0, output_padding=0, dilation=1, groups=1"

_DOC = """Reference {what} of the transposed {sharing} {d}-D convolution ``{name}_forward`` (scatter form).

Parameters
----------
{parameters}
    As the public function of the same name (``lcnumba.{name}_{part}``).

Returns
-------
{returns}
    Computed in float64, returned in the dtype of the inputs.
"""

_RETURNS = {"forward": "y : ndarray", "backward_input": "dx : ndarray", "backward_weight": "dw : ndarray",
            "backward_bias": "db : ndarray", "backward": "(dx, dw, db) : tuple of ndarrays (db None without b)"}
_WHAT = {"forward": "forward", "backward_input": "input gradient", "backward_weight": "weight gradient",
         "backward_bias": "bias gradient", "backward": "gradients"}


def _public(family, part):
    """The public reference ``{family.name}_{part}``, with the public function's signature less buffers."""
    function = generated(family, part, PASSES, __name__, _GEOMETRY)
    code = function.__code__
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    function.__doc__ = _DOC.format(what=_WHAT[part], sharing=family.sharing, d=family.d, name=family.name, part=part,
                                   parameters=", ".join(names), returns=_RETURNS[part])
    return function


_PUBLIC = {f"{family.name}_{part}": _public(family, part) for family in FAMILIES for part in table.CONV_PASSES}
globals().update(_PUBLIC)
__all__ = list(_PUBLIC)
