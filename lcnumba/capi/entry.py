"""The table of C entry points, their thin ``@cfunc`` wrappers and the C header.

One table (``ENTRIES``) describes every entry point: its name, its
parameters in order with their C types and meanings, and how its arguments
map onto one of the validating cores of ``lcnumba.capi.cores``. Everything
else is generated from it: the Numba signatures, the wrapper functions, the
ctypes prototypes and ``lcnumba.h``, so the header and the compiled
signatures cannot disagree (``tests/test_capi.py`` checks that the committed
header is the generated one).

Parameter kinds:

=====  ====================  ===========================================
kind   C type                meaning
=====  ====================  ===========================================
in     const float/double *  input buffer, C-contiguous
in?    const float/double *  input buffer that may be NULL (a bias)
out    float/double *        output buffer, C-contiguous, written
iin    const int64_t *       input index buffer
iout   int64_t *             output index buffer (NULL if not requested)
min?   const uint8_t *       input mask buffer that may be NULL (no mask)
n      int64_t               a dimension or geometry parameter
b      int32_t               a flag (0 or 1)
e      double                a floating parameter (eps)
=====  ====================  ===========================================
"""

import ctypes
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, types

from .. import table
from . import cores
from .status import MEANINGS, Status, header_name

DTYPES = ("f32", "f64")
_C_FLOAT = {"f32": "float", "f64": "double"}
_NUMPY = {"f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}
_CTYPES = {"f32": ctypes.c_float, "f64": ctypes.c_double}


class Param(NamedTuple):
    name: str
    kind: str
    doc: str


class Operation(NamedTuple):
    """One entry point before its dtype is chosen: ``lcn_<base>_<f32|f64>``."""

    base: str
    summary: str
    params: tuple
    core: str
    call: str  # the core's arguments, as Python source over the parameter names
    notes: tuple = ()


class Entry(NamedTuple):
    name: str
    dtype: str
    op: Operation


# ---------------------------------------------------------------- the table


def _p(name, kind, doc=""):
    return Param(name, kind, doc)


_CONV_SUMMARY = {
    "forward": "forward: y = conv(x, weight) + bias",
    "backward_input": "gradient with respect to x: dx = conv^T(dy)",
    "backward_weight": "gradient with respect to weight: dweight (+)= sum over n of dy * x",
    "backward_bias": "gradient with respect to bias: dbias (+)= sum of dy over n and the positions of each tile",
}
#: The transposed families: their passes run the forward family's kernels with the arrays exchanged.
_TRANSPOSE_SUMMARY = dict(
    _CONV_SUMMARY,
    forward="forward: y = conv^T(x, weight) + bias, the forward convolution's input gradient of x",
    backward_input="gradient with respect to x: dx = conv(dy), the forward convolution of dy",
    backward_weight="gradient with respect to weight: dweight (+)= sum over n of x * dy, the forward "
                    "convolution's weight gradient with x and dy exchanged",
)

#: A transposed family's weight repeats names of the input's dimensions: the C parameters say "the weight's".
_WEIGHT_NAMES = {"c": "wc", "h": "wh", "w": "ww", "l": "wl"}


class _Family(NamedTuple):
    """A convolution family of the op table, as the C entry points see it."""

    name: str
    code: int  # cores.CONV, TILED or LOCAL
    one_d: bool
    transposed: bool
    weight_dims: tuple  # names of the weight's leading (tile) dims, then its channel and kernel dims
    tiles: str  # the core's th, tw
    bias_layout: str
    text: str


def _family(row):
    transposed = row.kind == "conv_transpose"
    weight_dims = tuple(_WEIGHT_NAMES.get(d, d) for d in row.weight_dims) if transposed else row.weight_dims
    lead = weight_dims[:len(weight_dims) - 2 - row.spatial]  # the tile or position axes
    tiles = ("1",) * (2 - len(lead)) + tuple(lead)
    return _Family(row.name, {"shared": cores.CONV, "tiled": cores.TILED, "local": cores.LOCAL}[row.sharing],
                   row.spatial == 1, transposed, weight_dims, ", ".join(tiles), "(" + ", ".join(row.bias_dims) + ")",
                   row.summary)


_FAMILIES = tuple(_family(row) for row in table.CONV_FAMILIES + table.TRANSPOSE_FAMILIES)

_DIM_DOC = {
    "n": "batch size (0 is allowed: nothing to compute)",
    "c": "input channels",
    "h": "input height",
    "w": "input width",
    "l": "input length",
    "f": "filters (output channels)",
    "cg": "input channels per group, c / groups",
    "fg": "output channels per group: the output has f = fg * groups channels",
    "wc": "the weight's input channels, = c",
    "kh": "kernel height",
    "kw": "kernel width",
    "k": "kernel length",
    "th": "tiles along the height",
    "tw": "tiles along the width",
    "t": "tiles",
    "oh": "output height (the local weight's first axis)",
    "ow": "output width (the local weight's second axis)",
    "ol": "output length (the local weight's first axis)",
    "wh": "the local weight's first axis, = h (one bank per input position)",
    "ww": "the local weight's second axis, = w",
    "wl": "the local weight's first axis, = l (one bank per input position)",
}


def _padding_name(mode):
    """The header's name of a padding mode of ``table.PADDING_MODES``: ``"reflect"`` -> ``LCN_PADDING_REFLECT``."""
    return "LCN_PADDING_" + mode.upper()


def _geometry(d1, transposed):
    """The geometry parameters of a convolution entry point and the core's geometry arguments, as source.

    The core takes (sh, sw, pt, pl, pb, pr, oph, opw, dil_h, dil_w, groups); a forward family has no
    output padding (0).
    """
    groups = _p("groups", "n", "divides c" + ("" if transposed else " and f"))
    if d1:
        extra = [_p("output_padding", "n", "0 <= output_padding < max(stride, dilation)")] if transposed else []
        params = [_p("stride", "n", ">= 1"), _p("pad_left", "n", ">= 0"), _p("pad_right", "n", ">= 0"), *extra,
                  _p("dilation", "n", ">= 1"), groups]
        core = ("1, stride, 0, pad_left, 0, pad_right, " + ("0, output_padding, " if transposed else "0, 0, ")
                + "1, dilation, groups")
        return params, core
    extra = [_p("output_padding_h", "n", "0 <= output_padding_h < max(stride_h, dilation_h)"),
             _p("output_padding_w", "n", "0 <= output_padding_w < max(stride_w, dilation_w)")] if transposed else []
    params = [_p("stride_h", "n", ">= 1"), _p("stride_w", "n", ">= 1"), _p("pad_top", "n", ">= 0"),
              _p("pad_left", "n", ">= 0"), _p("pad_bottom", "n", ">= 0"), _p("pad_right", "n", ">= 0"), *extra,
              _p("dilation_h", "n", ">= 1"), _p("dilation_w", "n", ">= 1"), groups]
    names = [p.name for p in params]
    if not transposed:
        names[6:6] = ["0", "0"]
    return params, ", ".join(names)


_PADDING_MODE = _p("padding_mode", "b", "what the padding holds, as PyTorch's padding_mode: "
                                        + ", ".join(f"{i} {_padding_name(mode)}" for i, mode in
                                                    enumerate(table.PADDING_MODES)))
_PADDING_NOTES = (
    "The *_ex functions add padding_mode; those without _ex are them with padding_mode = LCN_PADDING_ZEROS. "
    "The backward_bias functions read no padding and have no _ex form",
    "With LCN_PADDING_REFLECT every padding must be below the input size along its axis, with "
    "LCN_PADDING_CIRCULAR at most the input size (else LCN_ERR_GEOMETRY); a padding_mode outside 0..3 is "
    "LCN_ERR_FLAG",
)


def _size_notes(fam):
    """How the output size follows from the geometry, and what the weight must match."""
    if fam.transposed:
        if fam.one_d:
            notes = ("Output length ol = lcn_conv_transpose_output_size(l, k, stride, dilation, pad_left, pad_right, "
                     "output_padding); f = fg * groups output channels",)
        else:
            notes = ("Output size oh = lcn_conv_transpose_output_size(h, kh, stride_h, dilation_h, pad_top, "
                     "pad_bottom, output_padding_h), ow = lcn_conv_transpose_output_size(w, kw, stride_w, dilation_w, "
                     "pad_left, pad_right, output_padding_w); f = fg * groups output channels",)
        notes += ("The weight's wc must equal c (else LCN_ERR_SHAPE)",)
        local = ("The weight's wl must equal l" if fam.one_d
                 else "The weight's (wh, ww) must equal the input size (h, w)")
    else:
        if fam.one_d:
            notes = ("Output length ol = lcn_conv_output_size(l, k, stride, dilation, pad_left, pad_right)",)
        else:
            notes = ("Output size oh = lcn_conv_output_size(h, kh, stride_h, dilation_h, pad_top, pad_bottom), "
                     "ow = lcn_conv_output_size(w, kw, stride_w, dilation_w, pad_left, pad_right)",)
        local = ("The weight's ol must equal the output length" if fam.one_d
                 else "The weight's (oh, ow) must equal the output size")
    if fam.code == cores.LOCAL:
        notes += (local + " (else LCN_ERR_SHAPE)",)
    return notes


def _conv_ops(fam):
    d1 = fam.one_d
    x_dims = ("n", "c", "l") if d1 else ("n", "c", "h", "w")
    x_layout = "(" + ", ".join(x_dims) + ")"
    w_layout = "(" + ", ".join(fam.weight_dims) + ")"
    y_layout = "(n, f, ol)" if d1 else "(n, f, oh, ow)"
    dims = [_p(name, "n", _DIM_DOC[name]) for name in x_dims + fam.weight_dims]
    geometry, core_geometry = _geometry(d1, fam.transposed)
    channels = "wc, fg" if fam.transposed else "f, cg"
    kernel = "1, k" if d1 else "kh, kw"
    core_dims = f"{'n, c, 1, l' if d1 else 'n, c, h, w'}, {fam.tiles}, {channels}, {kernel}, {core_geometry}"
    tiled = fam.code == cores.TILED
    tile_flag = [_p("tile_mode", "b", "0 periodic: position i uses tile i % t; "
                                      "1 block: tile i * t / (output size)")] if tiled else []
    tile_arg = "tile_mode" if tiled else "0"
    accumulate = _p("accumulate", "b", "1: add into the output instead of overwriting it")
    head = f"{fam.name}_"
    core = "conv_transpose" if fam.transposed else "conv"
    summary = _TRANSPOSE_SUMMARY if fam.transposed else _CONV_SUMMARY
    notes = _size_notes(fam)
    text = fam.text

    def passes(suffix, mode_params, mode_arg, more_notes, more_summary):
        """forward, backward_input and backward_weight, their names ending in ``suffix``."""
        return [
            Operation(
                head + "forward" + suffix, f"{text}, {summary['forward']}{more_summary}",
                (_p("x", "in", x_layout), _p("weight", "in", w_layout),
                 _p("bias", "in?", fam.bias_layout + ", or NULL for no bias"), _p("y", "out", y_layout),
                 *dims, *geometry, *tile_flag, *mode_params),
                core + "_forward",
                f"x, weight, bias, y, {core_dims}, {fam.code}, _threads(), {tile_arg}, {mode_arg}",
                notes + more_notes),
            Operation(
                head + "backward_input" + suffix, f"{text}, {summary['backward_input']}{more_summary}",
                (_p("dy", "in", y_layout), _p("weight", "in", w_layout), _p("dx", "out", x_layout),
                 *dims, *geometry, *tile_flag, *mode_params),
                core + "_backward_input",
                f"dy, weight, dx, {core_dims}, {fam.code}, _threads(), {tile_arg}, {mode_arg}", notes + more_notes),
            Operation(
                head + "backward_weight" + suffix, f"{text}, {summary['backward_weight']}{more_summary}",
                (_p("dy", "in", y_layout), _p("x", "in", x_layout), _p("dweight", "out", w_layout),
                 *dims, *geometry, *tile_flag, accumulate, *mode_params),
                core + "_backward_weight",
                f"dy, x, dweight, {core_dims}, {fam.code}, _threads(), {tile_arg}, accumulate, {mode_arg}",
                notes + more_notes),
        ]

    ops = passes("", (), "0", (), "")
    # backward_bias: only the output's dimensions (and the tiles) are needed; a transposed family's bias
    # is laid out over its output positions as the forward family's is over its own
    if d1:
        out_dims = [_p("n", "n", _DIM_DOC["n"]), _p("f", "n", _DIM_DOC["f"]), _p("ol", "n", "output length")]
        bias_core = "n, f, 1, ol, " + {cores.CONV: "1, 1", cores.TILED: "1, t", cores.LOCAL: "1, ol"}[fam.code]
        tile_dims = [_p("t", "n", _DIM_DOC["t"])] if tiled else []
    else:
        out_dims = [_p("n", "n", _DIM_DOC["n"]), _p("f", "n", _DIM_DOC["f"]), _p("oh", "n", "output height"),
                    _p("ow", "n", "output width")]
        bias_core = "n, f, oh, ow, " + {cores.CONV: "1, 1", cores.TILED: "th, tw", cores.LOCAL: "oh, ow"}[fam.code]
        tile_dims = [_p("th", "n", _DIM_DOC["th"]), _p("tw", "n", _DIM_DOC["tw"])] if tiled else []
    ops.append(Operation(
        head + "backward_bias", f"{text}, {summary['backward_bias']}",
        (_p("dy", "in", y_layout), _p("dbias", "out", fam.bias_layout), *out_dims, *tile_dims, *tile_flag,
         accumulate),
        "conv_backward_bias", f"dy, dbias, {bias_core}, {tile_arg}, accumulate"))
    if not fam.transposed:  # PyTorch's ConvTranspose pads with zeros only, and so do the transposed families
        ops += passes("_ex", (_PADDING_MODE,), "padding_mode", _PADDING_NOTES, ", with a padding mode")
    return ops


def _pool_ops():
    ops = []
    for one_d in (False, True):
        name = "max_pool1d" if one_d else "max_pool2d"
        if one_d:
            x_dims = [_p("n", "n", _DIM_DOC["n"]), _p("c", "n", "channels"), _p("l", "n", "input length")]
            geometry = [_p("k", "n", "window length"), _p("stride", "n", ">= 1 (no default: pass k for PyTorch's)"),
                        _p("pad", "n", "0 <= pad <= k / 2, both sides"), _p("dilation", "n", ">= 1")]
            x_layout, y_layout = "(n, c, l)", "(n, c, ol)"
            core_geometry = "n, c, 1, l, 1, k, 1, stride, 0, pad, 1, dilation"
            size_note = "Output length ol = lcn_pool_output_size(l, k, stride, pad, dilation, ceil_mode)"
            index_doc = "position in l of each maximum, -1 for a window without input cells"
            bwd_dims = [*x_dims, _p("ol", "n", "output length")]
            bwd_core = "n, c, 1, l, 1, ol"
        else:
            x_dims = [_p("n", "n", _DIM_DOC["n"]), _p("c", "n", "channels"), _p("h", "n", "input height"),
                      _p("w", "n", "input width")]
            geometry = [_p("kh", "n", "window height"), _p("kw", "n", "window width"),
                        _p("stride_h", "n", ">= 1 (no default: pass kh for PyTorch's)"),
                        _p("stride_w", "n", ">= 1 (no default: pass kw for PyTorch's)"),
                        _p("pad_h", "n", "0 <= pad_h <= kh / 2, top and bottom"),
                        _p("pad_w", "n", "0 <= pad_w <= kw / 2, left and right"),
                        _p("dilation_h", "n", ">= 1"), _p("dilation_w", "n", ">= 1")]
            x_layout, y_layout = "(n, c, h, w)", "(n, c, oh, ow)"
            core_geometry = "n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w"
            size_note = ("Output size oh = lcn_pool_output_size(h, kh, stride_h, pad_h, dilation_h, ceil_mode), "
                         "ow = lcn_pool_output_size(w, kw, stride_w, pad_w, dilation_w, ceil_mode)")
            index_doc = "flat position i * w + j of each maximum in its (h, w) input plane, -1 for none"
            bwd_dims = [*x_dims, _p("oh", "n", "output height"), _p("ow", "n", "output width")]
            bwd_core = "n, c, h, w, oh, ow"
        ops.append(Operation(
            f"{name}_forward",
            f"{'1-D' if one_d else '2-D'} max-pooling forward, PyTorch semantics (padding is -inf, NaN wins, "
            "ties take the first cell)",
            (_p("x", "in", x_layout), _p("y", "out", y_layout),
             _p("indices", "iout", y_layout + ", " + index_doc + "; NULL when return_indices is 0"),
             *x_dims, *geometry,
             _p("ceil_mode", "b", "1: round the output size up (a window may not start in the right padding)"),
             _p("return_indices", "b", "1: write indices")),
            "pool_forward", f"x, y, indices, {core_geometry}, ceil_mode, return_indices", (size_note,)))
        ops.append(Operation(
            f"{name}_backward",
            f"{'1-D' if one_d else '2-D'} max-pooling backward: dx[plane][indices[q]] += dy[q]",
            (_p("dy", "in", y_layout), _p("indices", "iin", y_layout + ", from the forward"),
             _p("dx", "out", x_layout), *bwd_dims),
            "pool_backward", f"dy, indices, dx, {bwd_core}",
            ("Every index must lie in [-1, plane size) (else LCN_ERR_INDEX, checked before dx is written)",)))
    return ops


def _netvlad_ops():
    dims = [_p("n", "n", _DIM_DOC["n"]), _p("d", "n", "descriptor size"),
            _p("m", "n", "descriptors per sample (h * w of a feature map)"),
            _p("kg", "n", "clusters k plus ghost clusters g"), _p("k", "n", "real clusters, 1 <= k <= kg")]
    eps = _p("eps", "e", "every norm is max(norm, eps); finite and > 0")
    flags = [_p("normalize_input", "b", "1: L2-normalise every descriptor first")]
    switches = [_p("intra_normalize", "b", "1: L2-normalise every cluster's residual sum"),
                _p("final_normalize", "b", "1: L2-normalise the whole vector")]
    inputs = [_p("x", "in", "(n, d, m)"), _p("weight", "in", "(kg, d)"), _p("bias", "in", "(kg)"),
              _p("centroids", "in", "(k, d)")]
    mask = _p("mask", "min?", "(n, m), 0 for a descriptor left out of the assignment and the aggregation, "
                              "else valid; or NULL for every descriptor valid")
    grads = [_p("dx", "out", "(n, d, m)"), _p("dweight", "out", "(kg, d)"), _p("dbias", "out", "(kg)"),
             _p("dcentroids", "out", "(k, d)")]
    note = ("The output is cluster-major, y[n, k * d + j]; the last kg - k rows of weight and bias are "
            "GhostVLAD's ghost clusters",)
    ex_note = ("The lcn_netvlad_*_ex functions add the mask and the two normalisation switches; "
               "lcn_netvlad_forward and lcn_netvlad_backward are them with mask = NULL and both switches 1",)
    forward_summary = ("NetVLAD (GhostVLAD) pooling forward, soft-assignment, residual aggregation, intra- and "
                       "global L2 normalisation")
    backward_summary = "NetVLAD backward: gradients with respect to every input"
    forward_call = "x, weight, bias, centroids, {mask}, y, n, d, m, kg, k, normalize_input, {switches}, eps"
    backward_call = ("dy, x, weight, bias, centroids, {mask}, dx, dweight, dbias, dcentroids, n, d, m, kg, k, "
                     "normalize_input, {switches}, eps")
    plain = dict(mask="_no_mask()", switches="1, 1")
    options = dict(mask="mask", switches="intra_normalize, final_normalize")
    return [
        Operation("netvlad_forward", forward_summary, (*inputs, _p("y", "out", "(n, k * d)"), *dims, *flags, eps),
                  "netvlad_forward", forward_call.format(**plain), note),
        Operation("netvlad_backward", backward_summary, (_p("dy", "in", "(n, k * d)"), *inputs, *grads, *dims, *flags,
                                                         eps),
                  "netvlad_backward", backward_call.format(**plain), note),
        Operation("netvlad_forward_ex", forward_summary + ", with a mask of valid descriptors and the "
                  "normalisations switched", (*inputs, mask, _p("y", "out", "(n, k * d)"), *dims, *flags, *switches,
                                              eps),
                  "netvlad_forward", forward_call.format(**options), note + ex_note),
        Operation("netvlad_backward_ex", backward_summary + ", with the mask and switches of lcn_netvlad_forward_ex",
                  (_p("dy", "in", "(n, k * d)"), *inputs, mask, *grads, *dims, *flags, *switches, eps),
                  "netvlad_backward", backward_call.format(**options), note + ex_note),
    ]


def _netvlad_part_ops():
    """``vlad_aggregate`` and ``netvlad_pca`` (rows of ``table.NETVLAD_PART_FAMILIES``), forward and backward."""
    rows = {row.name: row for row in table.NETVLAD_PART_FAMILIES}
    eps = _p("eps", "e", "every norm is max(norm, eps); finite and > 0")
    vlad_dims = [_p("n", "n", _DIM_DOC["n"]), _p("d", "n", "descriptor size"),
                 _p("m", "n", "descriptors per sample (h * w of a feature map)"), _p("k", "n", "clusters")]
    switches = [_p("intra_normalize", "b", "1: L2-normalise every cluster's residual sum"),
                _p("final_normalize", "b", "1: L2-normalise the whole vector")]
    vlad_in = [_p("x", "in", "(n, d, m), used as given (not normalised)"),
               _p("assignment", "in", "(n, k, m), the soft-assignment of each descriptor to each cluster"),
               _p("centroids", "in", "(k, d)")]
    vlad_note = ("y[n, k * d + j] = sum over i of assignment[n, k, i] * (x[n, j, i] - centroids[k, j]), "
                 "then normalised as switched",)
    pca_dims = [_p("n", "n", _DIM_DOC["n"]), _p("p", "n", "size of a NetVLAD vector (k * d)"),
                _p("dim", "n", "output size")]
    pca_in = [_p("v", "in", "(n, p), NetVLAD vectors"), _p("projection", "in", "(dim, p)"),
              _p("bias", "in", "(dim)")]
    pca_note = ("y[n] = (projection v[n] + bias) / max(||projection v[n] + bias||, eps); lcnumba.netvlad_pca_fit "
                "learns projection and bias",)
    vlad, pca = rows["vlad_aggregate"].summary, rows["netvlad_pca"].summary
    return [
        Operation("vlad_aggregate_forward", f"{vlad}, forward",
                  (*vlad_in, _p("y", "out", "(n, k * d)"), *vlad_dims, *switches, eps), "vlad_aggregate_forward",
                  "x, assignment, centroids, y, n, d, m, k, intra_normalize, final_normalize, eps", vlad_note),
        Operation("vlad_aggregate_backward", f"{vlad}, backward: gradients with respect to x, the assignment and "
                  "the centroids",
                  (_p("dy", "in", "(n, k * d)"), *vlad_in, _p("dx", "out", "(n, d, m)"),
                   _p("dassignment", "out", "(n, k, m)"), _p("dcentroids", "out", "(k, d)"), *vlad_dims, *switches,
                   eps),
                  "vlad_aggregate_backward",
                  "dy, x, assignment, centroids, dx, dassignment, dcentroids, n, d, m, k, intra_normalize, "
                  "final_normalize, eps", vlad_note),
        Operation("netvlad_pca_forward", f"{pca}, forward",
                  (*pca_in, _p("y", "out", "(n, dim)"), *pca_dims, eps), "netvlad_pca_forward",
                  "v, projection, bias, y, n, p, dim, eps", pca_note),
        Operation("netvlad_pca_backward", f"{pca}, backward: gradients with respect to v, projection and bias",
                  (_p("dy", "in", "(n, dim)"), *pca_in, _p("dv", "out", "(n, p)"),
                   _p("dprojection", "out", "(dim, p)"), _p("dbias", "out", "(dim)"), *pca_dims, eps),
                  "netvlad_pca_backward", "dy, v, projection, bias, dv, dprojection, dbias, n, p, dim, eps",
                  pca_note),
    ]


OPERATIONS = (tuple(op for fam in _FAMILIES for op in _conv_ops(fam)) + tuple(_pool_ops()) + tuple(_netvlad_ops())
              + tuple(_netvlad_part_ops()))

ENTRIES = {f"lcn_{op.base}_{dt}": Entry(f"lcn_{op.base}_{dt}", dt, op) for op in OPERATIONS for dt in DTYPES}


def names():
    """Every entry point name, in header order."""
    return tuple(ENTRIES)


def entry(name):
    try:
        return ENTRIES[name]
    except KeyError:
        raise ValueError(f"name: expected one of the {len(ENTRIES)} names of lcnumba.capi.names(), "
                         f"got {name!r}") from None


# ---------------------------------------------------------------- Numba and ctypes signatures


def numba_signature(name):
    e = entry(name)
    floats = types.CPointer(cores.DTYPES[e.dtype])
    kinds = {"in": floats, "in?": floats, "out": floats, "iin": types.CPointer(types.int64),
             "iout": types.CPointer(types.int64), "min?": types.CPointer(types.uint8), "n": types.int64,
             "b": types.int32, "e": types.float64}
    return types.int32(*[kinds[p.kind] for p in e.op.params])


def _buffer_type(ctype, dtype, output):
    """A ctypes pointer type whose ``from_param`` also takes NumPy arrays (checked) and int addresses."""
    base = ctypes.POINTER(ctype)

    @classmethod
    def from_param(cls, obj):
        if isinstance(obj, np.ndarray):
            if obj.dtype != dtype:
                raise TypeError(f"expected a numpy.ndarray of dtype {dtype}, got dtype {obj.dtype}")
            if not obj.flags.c_contiguous:
                raise ValueError(f"expected a C-contiguous array, got strides {obj.strides}")
            if output and not obj.flags.writeable:
                raise ValueError("expected a writeable array for an output, got a read-only array")
            return obj.ctypes.data_as(base)
        if isinstance(obj, int) and not isinstance(obj, bool):
            return ctypes.cast(ctypes.c_void_p(obj), base)
        return base.from_param(obj)  # None (NULL) or a ctypes pointer or array

    kind = "out" if output else "in"
    return type(f"{kind}_{ctype.__name__}_buffer", (base,), {"from_param": from_param})


_BUFFERS = {}


def _ctypes_arg(kind, dtype):
    if kind in ("n", "b", "e"):
        return {"n": ctypes.c_int64, "b": ctypes.c_int32, "e": ctypes.c_double}[kind]
    key = (kind, dtype)
    if key not in _BUFFERS:
        if kind in ("iin", "iout"):
            _BUFFERS[key] = _buffer_type(ctypes.c_int64, np.dtype(np.int64), kind == "iout")
        elif kind == "min?":
            _BUFFERS[key] = _buffer_type(ctypes.c_uint8, np.dtype(np.uint8), False)
        else:
            _BUFFERS[key] = _buffer_type(_CTYPES[dtype], _NUMPY[dtype], kind == "out")
    return _BUFFERS[key]


def ctypes_prototype(name):
    """``ctypes.CFUNCTYPE`` of the entry point ``name`` (buffers also accept NumPy arrays)."""
    e = entry(name)
    return ctypes.CFUNCTYPE(ctypes.c_int32, *[_ctypes_arg(p.kind, e.dtype) for p in e.op.params])


# ---------------------------------------------------------------- thin wrappers


@njit
def _threads():
    """``numba.get_num_threads()`` of the calling thread, as the int64 the Python API passes."""
    return np.int64(numba.get_num_threads())


_CONSTANT_TYPE = {"n": "_int64", "b": "_int32"}


def wrapper_source(name):
    """Python source of the wrapper of ``name``: its own parameters, one call of its core."""
    e = entry(name)
    params = ", ".join(p.name for p in e.op.params)
    args = [arg.strip() for arg in e.op.call.split(",")]
    kinds = cores.KINDS[e.op.core]
    assert len(args) == len(kinds), name
    # a first-class function call does not convert types: constants get the core's own
    args = [f"{_CONSTANT_TYPE[kind]}({arg})" if arg.isdigit() else arg for arg, kind in zip(args, kinds)]
    return f"def {name}({params}):\n    return _core({', '.join(args)})\n"


def build(name):
    """Compile the C callback of ``name`` (its core first, from the disk cache when possible)."""
    e = entry(name)
    namespace = {"_core": cores.compiled(e.op.core, e.dtype), "_threads": _threads, "_int64": np.int64,
                 "_int32": np.int32, "_no_mask": cores.no_mask}
    exec(compile(wrapper_source(name), f"<lcnumba.capi {name}>", "exec"), namespace)  # noqa: S102
    return numba.cfunc(numba_signature(name))(namespace[name])


# ---------------------------------------------------------------- header


def c_parameter(param, dtype):
    ctype = _C_FLOAT[dtype]
    return {
        "in": f"const {ctype} *{param.name}",
        "in?": f"const {ctype} *{param.name}",
        "out": f"{ctype} *{param.name}",
        "iin": f"const int64_t *{param.name}",
        "iout": f"int64_t *{param.name}",
        "min?": f"const uint8_t *{param.name}",
        "n": f"int64_t {param.name}",
        "b": f"int32_t {param.name}",
        "e": f"double {param.name}",
    }[param.kind]


def prototype(name):
    """The C function type of ``name``, as declared in ``lcnumba.h`` (without the ``_fn`` typedef)."""
    e = entry(name)
    return f"int32_t {name}({', '.join(c_parameter(p, e.dtype) for p in e.op.params)})"


def _wrap(text, width, indent, lead=""):
    """``lead + text`` wrapped at ``width``; continuation lines aligned under the text."""
    lines, line = [], ""
    for word in text.split():
        if line and len(lead) + len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines = lines + [line] if line else lines or [""]
    return [indent + lead + lines[0]] + [indent + " " * len(lead) + rest for rest in lines[1:]]


_BUFFER_KINDS = {"in": "in ", "in?": "in ", "out": "out", "iin": "in ", "iout": "out", "min?": "in "}


def _comment(op):
    lines = [f"/* lcn_{op.base}_f32 (float), lcn_{op.base}_f64 (double)"]
    lines += _wrap(op.summary[0].upper() + op.summary[1:] + ".", 100, " *   ")
    lines.append(" *")
    for p in op.params:
        if p.kind in _BUFFER_KINDS:
            lines += _wrap(p.doc, 100, " *   ", f"{p.name:<11} {_BUFFER_KINDS[p.kind]}  ")
    scalars = [p for p in op.params if p.kind not in _BUFFER_KINDS and p.doc]
    if scalars:
        lines.append(" *")
        for p in scalars:
            lines += _wrap(p.doc, 100, " *   ", f"{p.name:<15} ")
    if op.notes:
        lines.append(" *")
        for note in op.notes:
            lines += _wrap(note + ".", 100, " *   ")
    lines.append(" */")
    return lines


def _typedef(name):
    """``typedef int32_t <name>_fn(...);``, wrapped between parameters."""
    e = entry(name)
    lead = f"typedef int32_t {name}_fn("
    params = [c_parameter(p, e.dtype) for p in e.op.params]
    lines, line = [], ""
    for i, param in enumerate(params):
        piece = param + (");" if i == len(params) - 1 else ",")
        if line and len(lead) + len(line) + 1 + len(piece) > 110:
            lines.append(line)
            line = piece
        else:
            line = f"{line} {piece}" if line else piece
    lines.append(line)
    return [lead + lines[0]] + [" " * len(lead) + rest for rest in lines[1:]]


_PREAMBLE = """\
/* lcnumba.h: C entry points of lcnumba's CPU kernels (generated by
 * `python -m lcnumba.capi header`; do not edit).
 *
 * The functions live in the Python process: a host that embeds Python (or
 * calls it through ctypes/cffi) gets their addresses from
 *
 *     lcnumba.capi.address("lcn_local_conv2d_forward_f32")   -> int
 *
 * and casts them to the function types below:
 *
 *     lcn_local_conv2d_forward_f32_fn *fwd =
 *         (lcn_local_conv2d_forward_f32_fn *)(uintptr_t)address;
 *
 * Conventions (every function):
 *   - buffers are C-contiguous arrays of float (_f32) or double (_f64) in the
 *     layouts given per function, as in the Python API; inputs are const and
 *     never written; outputs are written whole (or added to, with
 *     accumulate = 1) and may not overlap any other buffer of the call;
 *   - then every dimension and geometry parameter as int64_t, then flags
 *     as int32_t (0 or 1), then eps as double; NetVLAD's mask is a
 *     const uint8_t buffer (NULL for none);
 *   - the return value is LCN_OK or a negative LCN_ERR_* code, returned
 *     before anything is written; the arguments are checked in the order
 *     of the codes below (a buffer of more than 2^59 elements is found
 *     once the output size is known);
 *   - output sizes are computed inside from the geometry, as
 *     lcn_conv_output_size, lcn_conv_transpose_output_size and
 *     lcn_pool_output_size below compute them: size the output buffers
 *     with those;
 *   - results are bitwise those of the Python API for the same arguments;
 *   - a function's arguments never change: options added later come as a
 *     new function with the suffix _ex (lcn_netvlad_forward_ex adds
 *     NetVLAD's mask and normalisation switches to lcn_netvlad_forward,
 *     lcn_conv2d_forward_ex a padding_mode to lcn_conv2d_forward).
 *
 * Threads and BLAS: a call runs Numba's parallel kernels on
 * numba.get_num_threads() threads of the calling thread. The convolution
 * and NetVLAD kernels call BLAS from every worker; lcnumba.capi.address()
 * sets every loaded BLAS library to one thread for the rest of the process
 * (unless called with serial_blas=False) so that BLAS does not start
 * threads of its own inside the workers. With Numba's "workqueue" threading
 * layer, calls must not run concurrently from several threads ("omp" and
 * "tbb" allow it).
 */
#ifndef LCNUMBA_H
#define LCNUMBA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
"""

#: What each padding mode's cells hold, for the header.
_PADDING_MEANINGS = {
    "zeros": "zeros",
    "reflect": "the input mirrored about its edge cells: x2 x1 | x0 x1 x2",
    "replicate": "the edge cell repeated: x0 x0 | x0 x1",
    "circular": "the input wrapped around: x1 x2 | x0 x1 x2",
}

_HELPERS = """\
/* tile_mode of the tiled convolutions */
#define LCN_TILE_PERIODIC 0 /* output (i, j) uses tile (i % th, j % tw), Ngiam et al. */
#define LCN_TILE_BLOCK 1    /* output (i, j) uses tile (i * th / oh, j * tw / ow) */

static inline int64_t lcn_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Output size along one axis of the convolution family:
 * floor((size + pads - dilation * (kernel - 1) - 1) / stride) + 1. */
static inline int64_t lcn_conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t dilation,
                                           int64_t pad_before, int64_t pad_after)
{
    return lcn_floor_div(size + pad_before + pad_after - dilation * (kernel - 1) - 1, stride) + 1;
}

/* Output size along one axis of a transposed convolution (PyTorch's conv_transpose):
 * (size - 1) * stride - pads + dilation * (kernel - 1) + output_padding + 1. */
static inline int64_t lcn_conv_transpose_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t dilation,
                                                     int64_t pad_before, int64_t pad_after, int64_t output_padding)
{
    return (size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1;
}

/* Output size along one axis of max-pooling (PyTorch's, with ceil_mode). */
static inline int64_t lcn_pool_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                                           int64_t dilation, int32_t ceil_mode)
{
    int64_t span = size + 2 * pad - dilation * (kernel - 1) - 1;
    int64_t out;
    if (!ceil_mode)
        return lcn_floor_div(span, stride) + 1;
    out = lcn_floor_div(span + stride - 1, stride) + 1;
    if ((out - 1) * stride >= size + pad) /* a last window may not start in the right padding */
        out -= 1;
    return out;
}
"""


def header():
    """The text of ``lcnumba.h``, generated from ``ENTRIES`` and the status codes."""
    out = [_PREAMBLE]
    out.append("/* Status codes (int32_t return values) */")
    for status in Status:
        text = _wrap(MEANINGS[status], 96, "")
        if len(text) == 1:
            out.append(f"/* {text[0]} */")
        else:
            out += ["/* " + text[0]] + [" * " + line.strip() for line in text[1:]] + [" */"]
        out.append(f"#define {header_name(status)} ({int(status)})")
    out.append("")
    out.append("/* padding_mode of the convolutions' _ex functions, as PyTorch's nn.Conv2d(padding_mode=...) */")
    width = max(len(_padding_name(mode)) for mode in table.PADDING_MODES)
    for i, mode in enumerate(table.PADDING_MODES):
        out.append(f"#define {_padding_name(mode):<{width}} {i} /* {_PADDING_MEANINGS[mode]} */")
    out.append("")
    out.append(_HELPERS)
    for op in OPERATIONS:
        out += _comment(op)
        for dt in DTYPES:
            name = f"lcn_{op.base}_{dt}"
            out += _typedef(name)
        out.append("")
    out.append("#ifdef __cplusplus\n}\n#endif\n\n#endif /* LCNUMBA_H */")
    return "\n".join(out) + "\n"
