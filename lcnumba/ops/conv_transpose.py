"""The transposed convolution family's cores: conv2d_transpose, tiled_conv2d_transpose, local_conv2d_transpose, 1-D.

A transposed op is the adjoint of its forward op (``fam.forward``, a row of
``lcnumba.table.CONV_FAMILIES``) as a linear map of the input, so each pass
is a pass of the forward op with the roles of the arrays exchanged
(``docs/derivations/conv.md``) and runs that op's kernels on either device
(the backends' ``conv_transpose_*``; on the CPU the exchange is
``lcnumba.cpu.conv_transpose``, which the C entry points call too):

==================  =====================================================
transposed pass     kernel of the forward op
==================  =====================================================
forward             ``conv_backward_input`` (``x`` in the place of ``dy``)
backward_input      ``conv_forward`` (``dy`` in the place of ``x``)
backward_weight     ``conv_backward_weight`` (``dy`` and ``x`` exchanged)
backward_bias       ``conv_backward_bias`` over the output positions
==================  =====================================================

The plan (``geometry.conv_transpose_plan``) is the forward op's plan from
this op's output onto its input positions; the weight has the forward op's
layout, so no array is copied or transposed.
"""

from .. import checks
from ..geometry import conv_transpose_plan
from . import conv


def _plan(fam, x_shape, w_shape, stride, padding, output_padding, dilation, groups, tile_mode, x_name, w_name):
    return conv_transpose_plan(fam, tuple(x_shape), tuple(w_shape), stride, padding, output_padding, dilation, groups,
                               tile_mode, x_name=x_name, w_name=w_name)


def _check_bias(fam, tp, b):
    if b is not None:
        why = {"shared": "one bias per filter", "tiled": "one bias per filter and tile",
               "local": "one bias per filter and output position"}[fam.sharing]
        checks.shape_equal(b, "b", tp.bias_shape, why)


# ---------------------------------------------------------------- passes


def forward(fam, be, x, w, b, stride, padding, output_padding, dilation, groups, out, tile_mode=None):
    given = {"x": x, "w": w, "b": b}
    arrays, dtype = conv._inputs(be, fam, x=(x, fam.x_ndim), w=(w, fam.weight_ndim), b=(b, fam.bias_ndim))
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    tp = _plan(fam, x.shape, w.shape, stride, padding, output_padding, dilation, groups, tile_mode, "x", "w")
    _check_bias(fam, tp, b)
    y = be.output(out, "out", tp.output_shape, dtype, given)
    if tp.geo.n:
        p = tp.forward
        be.conv_transpose_forward(p.image(x), p.flat_weight(w), None if b is None else tp.flat_bias(b), tp,
                                  p.image(y))
    return y


def backward_input(fam, be, dy, w, input_shape, stride, padding, output_padding, dilation, groups, out,
                   tile_mode=None):
    given = {"dy": dy, "w": w}
    arrays, dtype = conv._inputs(be, fam, dy=(dy, fam.x_ndim), w=(w, fam.weight_ndim))
    dy, w = arrays["dy"], arrays["w"]
    input_shape = checks.shape_tuple(input_shape, "input_shape", fam.x_ndim)
    tp = _plan(fam, input_shape, w.shape, stride, padding, output_padding, dilation, groups, tile_mode,
               "input_shape", "w")
    checks.shape_equal(dy, "dy", tp.output_shape, "the forward output for input_shape and w")
    dx = be.output(out, "out", input_shape, dtype, given)
    if tp.geo.n:
        p = tp.forward
        be.conv_transpose_backward_input(p.image(dy), p.flat_weight(w), tp, p.image(dx))
    return dx


def backward_weight(fam, be, dy, x, weight_shape, stride, padding, output_padding, dilation, groups, out, accumulate,
                    tile_mode=None):
    given = {"dy": dy, "x": x}
    arrays, dtype = conv._inputs(be, fam, dy=(dy, fam.x_ndim), x=(x, fam.x_ndim))
    dy, x = arrays["dy"], arrays["x"]
    weight_shape = checks.shape_tuple(weight_shape, "weight_shape", fam.weight_ndim)
    tp = _plan(fam, x.shape, weight_shape, stride, padding, output_padding, dilation, groups, tile_mode,
               "x", "weight_shape")
    checks.shape_equal(dy, "dy", tp.output_shape, "the forward output for x and weight_shape")
    accumulate = conv._accumulate(accumulate, out)
    dw = be.output(out, "out", weight_shape, dtype, given)
    _weight_gradient(be, tp, dy, x, accumulate, dw)
    return dw


def _weight_gradient(be, tp, dy, x, accumulate, dw):
    p = tp.forward
    if tp.geo.n:
        be.conv_transpose_backward_weight(p.image(dy), p.image(x), tp, accumulate, p.flat_weight(dw))
    elif not accumulate:
        be.zero(dw)


def backward_bias(fam, be, dy, bias_shape, out, accumulate, tile_mode=None):
    # The bias is laid out over the output positions as the forward family's is over its own.
    return conv.backward_bias(fam, be, dy, bias_shape, out, accumulate, tile_mode)


def backward(fam, be, dy, x, w, b, stride, padding, output_padding, dilation, groups, tile_mode=None):
    arrays, dtype = conv._inputs(be, fam, dy=(dy, fam.x_ndim), x=(x, fam.x_ndim), w=(w, fam.weight_ndim),
                                 b=(b, fam.bias_ndim))
    dy, x, w, b = arrays["dy"], arrays["x"], arrays["w"], arrays["b"]
    tp = _plan(fam, x.shape, w.shape, stride, padding, output_padding, dilation, groups, tile_mode, "x", "w")
    _check_bias(fam, tp, b)
    checks.shape_equal(dy, "dy", tp.output_shape, "the forward output for x and w")
    p = tp.forward
    dx = be.output(None, "dx", tuple(x.shape), dtype, {})
    dw = be.output(None, "dw", tuple(w.shape), dtype, {})
    if tp.geo.n:
        be.conv_transpose_backward_input(p.image(dy), p.flat_weight(w), tp, p.image(dx))
    _weight_gradient(be, tp, dy, x, False, dw)
    return conv.with_bias_gradient(be, p.image(dy), b, dtype, tp.bias_tiling, tp.flat_bias, dx, dw)
