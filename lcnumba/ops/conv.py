"""The convolution family's cores: conv2d, tiled_conv2d, local_conv2d and their 1-D forms.

One core per pass, for every member of the family (a row of
``lcnumba.table.CONV_FAMILIES``) and either device (a backend from
``lcnumba.ops.backend`` or ``lcnumba.gpu.backend``): normalise the
parameters (``geometry``), check the arguments in signature order
(``checks``), allocate or check the outputs, then hand C-contiguous views to
the backend's kernels. The three families differ only in how many filter
banks (tiles) there are and which output positions use which.

A 1-D form runs as its 2-D twin of height 1. Arrays are checked at the rank
the caller passed and every message shows the caller's shapes; only the
kernels see the 2-D views (``reshape`` of C-contiguous arrays: no copy).

``padding_mode="zeros"`` runs the kernels as they are (they pad with
zeros); any other mode runs them on padded chunks of the batch
(``lcnumba.ops.conv_padded``).
"""

from .. import checks
from ..geometry import conv_plan as plan
from ..geometry import tile_mode_of, with_unit_axes, without_axes
from . import conv_padded


def _inputs(be, fam, **arrays):
    """Check the named arrays in order (``name: (array, rank)``; only ``b`` may be None); return them and their dtype."""
    checked = {name: None if value is None and name == "b" else be.float_array(value, name, rank)
               for name, (value, rank) in arrays.items()}
    return checked, checks.common_dtype(checked)


# ---------------------------------------------------------------- passes


def forward(fam, be, x, w, b, stride, padding, dilation, groups, out, tile_mode=None, padding_mode="zeros"):
    given = {"x": x, "w": w, "b": b}
    arrays, dtype = _inputs(be, fam, x=(x, fam.x_ndim), w=(w, fam.weight_ndim), b=(b, fam.bias_ndim))
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    p = plan(fam, tuple(x.shape), tuple(w.shape), stride, padding, dilation, groups, tile_mode, x_name="x", w_name="w",
             padding_mode=padding_mode)
    if b is not None:
        checks.shape_equal(b, "b", p.bias_shape, "one bias per filter" + ("" if fam.sharing == "shared" else " and tile"))
    y = be.output(out, "out", p.output_shape, dtype, given)
    bias = None if b is None else p.flat_bias(b)
    if p.geo.n and p.mode:
        conv_padded.forward(be, p, p.image(x), p.flat_weight(w), bias, p.image(y))
    elif p.geo.n:
        be.conv_forward(p.image(x), p.flat_weight(w), bias, p, p.image(y))
    return y


def backward_input(fam, be, dy, w, input_shape, stride, padding, dilation, groups, out, tile_mode=None,
                   padding_mode="zeros"):
    given = {"dy": dy, "w": w}
    arrays, dtype = _inputs(be, fam, dy=(dy, fam.x_ndim), w=(w, fam.weight_ndim))
    dy, w = arrays["dy"], arrays["w"]
    input_shape = checks.shape_tuple(input_shape, "input_shape", fam.x_ndim)
    p = plan(fam, input_shape, tuple(w.shape), stride, padding, dilation, groups, tile_mode,
             x_name="input_shape", w_name="w", padding_mode=padding_mode)
    checks.shape_equal(dy, "dy", p.output_shape, "the forward output for input_shape and w")
    dx = be.output(out, "out", input_shape, dtype, given)
    _input_gradient(be, p, dy, w, dx)
    return dx


def _input_gradient(be, p, dy, w, dx):
    if p.geo.n and p.mode:
        conv_padded.backward_input(be, p, p.image(dy), p.flat_weight(w), p.image(dx))
    elif p.geo.n:
        be.conv_backward_input(p.image(dy), p.flat_weight(w), p, p.image(dx))


def _accumulate(accumulate, out):
    accumulate = checks.flag(accumulate, "accumulate")
    checks.accumulate_needs_out(accumulate, out)
    return accumulate


def backward_weight(fam, be, dy, x, weight_shape, stride, padding, dilation, groups, out, accumulate, tile_mode=None,
                    padding_mode="zeros"):
    given = {"dy": dy, "x": x}
    arrays, dtype = _inputs(be, fam, dy=(dy, fam.x_ndim), x=(x, fam.x_ndim))
    dy, x = arrays["dy"], arrays["x"]
    weight_shape = checks.shape_tuple(weight_shape, "weight_shape", fam.weight_ndim)
    p = plan(fam, tuple(x.shape), weight_shape, stride, padding, dilation, groups, tile_mode,
             x_name="x", w_name="weight_shape", padding_mode=padding_mode)
    checks.shape_equal(dy, "dy", p.output_shape, "the forward output for x and weight_shape")
    accumulate = _accumulate(accumulate, out)
    dw = be.output(out, "out", weight_shape, dtype, given)
    _weight_gradient(be, p, dy, x, accumulate, dw)
    return dw


def _weight_gradient(be, p, dy, x, accumulate, dw):
    if p.geo.n and p.mode:
        conv_padded.backward_weight(be, p, p.image(dy), p.image(x), accumulate, p.flat_weight(dw))
    elif p.geo.n:
        be.conv_backward_weight(p.image(dy), p.image(x), p, accumulate, p.flat_weight(dw))
    elif not accumulate:
        be.zero(dw)


def backward_bias(fam, be, dy, bias_shape, out, accumulate, tile_mode=None):
    given = {"dy": dy}
    dy = be.float_array(dy, "dy", fam.x_ndim)
    bias_shape = checks.shape_tuple(bias_shape, "bias_shape", fam.bias_ndim)
    dy4 = with_unit_axes(dy.shape, fam.x_unit_axes)
    b2 = with_unit_axes(bias_shape, fam.bias_unit_axes)
    f, oh, ow = dy4[1], dy4[2], dy4[3]
    checks.bias_per_filter(bias_shape, f)
    th, tw = (1, 1) if fam.sharing == "shared" else b2[1:]
    checks.bias_tiles(bias_shape, th, tw)
    if fam.sharing == "local":
        checks.bias_per_position(bias_shape, without_axes((f, oh, ow), fam.bias_unit_axes))
    periodic = tile_mode_of(fam, tile_mode) == "periodic"
    accumulate = _accumulate(accumulate, out)
    db = be.output(out, "out", bias_shape, dy.dtype, given)
    checks.nonempty_positions(dy, oh, ow)
    be.conv_backward_bias(dy.reshape(dy4), (th, tw, periodic), accumulate, db.reshape(f, th * tw))
    return db


def backward(fam, be, dy, x, w, b, stride, padding, dilation, groups, tile_mode=None, padding_mode="zeros"):
    arrays, dtype = _inputs(be, fam, dy=(dy, fam.x_ndim), x=(x, fam.x_ndim), w=(w, fam.weight_ndim),
                            b=(b, fam.bias_ndim))
    dy, x, w, b = arrays["dy"], arrays["x"], arrays["w"], arrays["b"]
    p = plan(fam, tuple(x.shape), tuple(w.shape), stride, padding, dilation, groups, tile_mode, x_name="x", w_name="w",
             padding_mode=padding_mode)
    if b is not None:
        checks.shape_equal(b, "b", p.bias_shape, "one bias per filter" + ("" if fam.sharing == "shared" else " and tile"))
    checks.shape_equal(dy, "dy", p.output_shape, "the forward output for x and w")
    dx = be.output(None, "dx", tuple(x.shape), dtype, {})
    dw = be.output(None, "dw", tuple(w.shape), dtype, {})
    if p.geo.n and p.mode:  # both gradients from one padded copy of each chunk
        conv_padded.backward(be, p, p.image(dy), p.image(x), p.flat_weight(w), p.image(dx), p.flat_weight(dw))
    else:
        _input_gradient(be, p, dy, w, dx)
        _weight_gradient(be, p, dy, x, False, dw)
    return with_bias_gradient(be, p.image(dy), b, dtype, p.tiling, p.flat_bias, dx, dw)


def with_bias_gradient(be, dy_image, b, dtype, tiling, flat_bias, dx, dw):
    """``(dx, dw, db)`` of a combined backward; ``db`` (None without a bias) over the bias ``tiling``."""
    if b is None:
        return dx, dw, None
    db = be.output(None, "db", tuple(b.shape), dtype, {})
    be.conv_backward_bias(dy_image, tiling, False, flat_bias(db))
    return dx, dw, db
