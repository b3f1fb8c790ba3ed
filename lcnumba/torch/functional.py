"""Differentiable functional forms of every op family, as ``torch.nn.functional`` spells them.

``local_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)``
and its siblings take the parameter spellings of lcnumba's NumPy functions
(an int, a pair, ``((top, bottom), (left, right))``, ``"valid"``, ``"same"``),
normalise them once (``conv_geometry``, ``pool_geometry``) and call the
family's forward operator (``lcnumba.torch.library``), whose autograd
formula runs lcnumba's backward passes. One function per family of the op
table, made from its row; the transposed families are named and ordered as
PyTorch's ``conv_transpose2d`` (``local_conv_transpose2d(x, weight, bias=None,
stride=1, padding=0, output_padding=0, groups=1, dilation=1)``), NetVLAD's
parts after their families (``vlad_aggregate``, ``netvlad_pca``).
"""

from .. import checks, geometry, table
from . import library

_X = {2: "(N, C, H, W)", 1: "(N, C, L)"}
_Y_CONV = {2: "(N, F, OH, OW)", 1: "(N, F, OL)"}
_Y_POOL = {2: "(N, C, OH, OW)", 1: "(N, C, OL)"}
_PAIR = {2: "int or (SH, SW)", 1: "int or 1-tuple"}
_PADDING = {2: 'int, (PH, PW), ((top, bottom), (left, right)), "valid" or "same"',
            1: 'int, 1-tuple, (left, right), "valid" or "same"'}


def conv_geometry(fam, weight_shape, stride, padding, dilation, groups):
    """``(stride, padding, dilation, groups)`` of a call of ``fam`` as its operators take them.

    ``stride`` and ``dilation`` become one int per spatial axis, ``padding`` the
    cells before each axis then after (``"same"`` resolved with the kernel of
    ``weight_shape``); a wrong spelling raises the NumPy function's error.
    """
    kernel = tuple(weight_shape[len(weight_shape) - fam.spatial:])
    if fam.spatial == 2:
        stride = checks.int_tuple(stride, "stride", 2, minimum=1)
        dilation = checks.int_tuple(dilation, "dilation", 2, minimum=1)
        pads = geometry.padding4(padding, kernel, stride, dilation)
    else:
        stride = (geometry.stride1d(stride, "stride"),)
        dilation = (geometry.stride1d(dilation, "dilation"),)
        top, left, bottom, right = geometry.padding4(geometry.padding1d(padding), (1,) + kernel, (1,) + stride,
                                                     (1,) + dilation, spatial=1)
        pads = (left, right)
    return list(stride), list(pads), list(dilation), checks.integer(groups, "groups", minimum=1)


def output_padding_of(fam, output_padding):
    """``output_padding`` of a call of the transposed family ``fam`` as its operators take it: one int per axis."""
    return list(geometry._output_padding_2d(fam, output_padding)[2 - fam.spatial:])


def padding_mode_of(padding_mode):
    """``padding_mode`` checked: one of ``lcnumba.table.PADDING_MODES`` (the public functions check its bounds)."""
    return checks.choice(padding_mode, "padding_mode", table.PADDING_MODES)


def pool_geometry(fam, kernel_size, stride, padding, dilation):
    """``(kernel_size, stride, padding, dilation)`` of a pooling of ``fam``, one int per spatial axis each."""
    kernel_size, stride, padding, dilation = geometry.pool_params_2d(fam.spatial, kernel_size, stride, padding,
                                                                     dilation)
    kernel = checks.int_tuple(kernel_size, "kernel_size", 2, minimum=1)
    stride = kernel if stride is None else checks.int_tuple(stride, "stride", 2, minimum=1)
    padding = checks.int_tuple(padding, "padding", 2, minimum=0)
    dilation = checks.int_tuple(dilation, "dilation", 2, minimum=1)
    axes = slice(2 - fam.spatial, 2)
    return list(kernel[axes]), list(stride[axes]), list(padding[axes]), list(dilation[axes])


# ---------------------------------------------------------------- one function per family


def _conv_function(fam):
    op = library.FAMILIES[fam.name].forward
    if fam.has_tiles:
        def function(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic",
                     padding_mode="zeros"):
            tile_mode = checks.choice(tile_mode, "tile_mode", table.TILE_MODES)
            return op(x, weight, bias, *conv_geometry(fam, weight.shape, stride, padding, dilation, groups),
                      padding_mode_of(padding_mode), tile_mode)
    else:
        def function(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
            return op(x, weight, bias, *conv_geometry(fam, weight.shape, stride, padding, dilation, groups),
                      padding_mode_of(padding_mode))
    tile = ('\ntile_mode : {"periodic", "block"}\n    Which tile each output position uses, as for '
            f":func:`lcnumba.{fam.name}_forward`." if fam.has_tiles else "")
    tile += ('\npadding_mode : {"zeros", "reflect", "replicate", "circular"}\n    What the padding holds, as '
             "``torch.nn.Conv2d``'s ``padding_mode``.")
    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable.

:func:`lcnumba.{fam.name}_forward` as the operator ``torch.ops.lcnumba.{fam.name}_forward``; its
gradients come from lcnumba's backward passes.

Parameters
----------
x : Tensor, shape {_X[fam.spatial]}
    float32 or float64, on the CPU or a CUDA device.
weight : Tensor, shape {fam.layout(fam.weight_dims)}
    Same dtype and device as ``x``.
bias : Tensor, shape {fam.layout(fam.bias_dims)}, optional
stride, dilation : {_PAIR[fam.spatial]}
padding : {_PADDING[fam.spatial]}
groups : int
    Input channels and filters are split into this many groups.{tile}

Returns
-------
Tensor, shape {_Y_CONV[fam.spatial]}
"""
    return function


def _conv_transpose_function(fam):
    op = library.FAMILIES[fam.name].forward
    name = table.bridge_name(fam)
    if fam.has_tiles:
        def function(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     tile_mode="periodic"):
            tile_mode = checks.choice(tile_mode, "tile_mode", table.TILE_MODES)
            return op(x, weight, bias, *conv_geometry(fam, weight.shape, stride, padding, dilation, groups),
                      output_padding_of(fam, output_padding), tile_mode)
    else:
        def function(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
            return op(x, weight, bias, *conv_geometry(fam, weight.shape, stride, padding, dilation, groups),
                      output_padding_of(fam, output_padding))
    tile = ('\ntile_mode : {"periodic", "block"}\n    Which tile each input position uses, as for '
            f":func:`lcnumba.{fam.name}_forward`." if fam.has_tiles else "")
    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable: PyTorch's ``{name}``.

:func:`lcnumba.{fam.name}_forward` as the operator ``torch.ops.lcnumba.{fam.name}_forward``; its
gradients come from lcnumba's transposed backward passes. The parameters are those of
``torch.nn.functional.conv_transpose{fam.spatial}d``, in its order.

Parameters
----------
x : Tensor, shape {_X[fam.spatial].replace("C", "C_in")}
    float32 or float64, on the CPU or a CUDA device.
weight : Tensor, shape {fam.layout(fam.weight_dims)}
    Same dtype and device as ``x``; ``C`` is ``x``'s channels, ``F`` the output's.
bias : Tensor, shape {fam.layout(fam.bias_dims)}, optional
stride, dilation : {_PAIR[fam.spatial]}
padding : {_PADDING[fam.spatial]}
    Removed from the output, as in PyTorch.
output_padding : {_PAIR[fam.spatial]}
    Cells added after the last output position of each axis, less than ``stride`` or ``dilation``.
groups : int
    Input channels and filters are split into this many groups.{tile}

Returns
-------
Tensor, shape {_Y_CONV[fam.spatial]}
    ``OH = (H-1)*SH - PT - PB + DH*(KH-1) + output_padding + 1``, likewise ``OW``.
"""
    return function


def _pool_function(fam):
    op = library.FAMILIES[fam.name].forward

    def function(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        kernel_size, stride, padding, dilation = pool_geometry(fam, kernel_size, stride, padding, dilation)
        ceil_mode, return_indices = checks.flag(ceil_mode, "ceil_mode"), checks.flag(return_indices, "return_indices")
        if not return_indices:
            y = library.pool_values(fam, x, kernel_size, stride, padding, dilation, ceil_mode)
            if y is not None:
                return y
        y, indices = op(x, kernel_size, stride, padding, dilation, ceil_mode)
        return (y, indices) if return_indices else y

    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable.

:func:`lcnumba.{fam.name}_forward` as the operator ``torch.ops.lcnumba.{fam.name}_forward``.

Parameters
----------
x : Tensor, shape {_X[fam.spatial]}
kernel_size, stride, dilation : {_PAIR[fam.spatial]}
    ``stride`` defaults to ``kernel_size``.
padding : {_PAIR[fam.spatial]}
    At most half the kernel; padded cells are ``-inf``.
ceil_mode : bool
return_indices : bool
    Also return the int64 flat index ``h * W + w`` of each maximum in its input plane.

Returns
-------
y : Tensor, shape {_Y_POOL[fam.spatial]}
indices : Tensor of int64, same shape (only with ``return_indices``)
"""
    return function


# eps is checked by the public function when the operator runs: its check calls NumPy, which
# torch.compile would trace as a tensor computation.

_VLAD_SWITCHES = """intra_normalize : bool
    L2-normalise each cluster's residual sum.
final_normalize : bool
    L2-normalise the whole vector.
"""
_EPS = """eps : float
    Floor of the norms divided by.
"""


def _flags(**flags):
    return [checks.flag(value, name) for name, value in flags.items()]


def _netvlad_function(fam):
    op = library.FAMILIES[fam.name].forward

    def function(x, weight, bias, centroids, normalize_input=True, eps=1e-12, *, intra_normalize=True,
                 final_normalize=True, mask=None):
        return op(x, weight, bias, centroids, mask, *_flags(normalize_input=normalize_input,
                  intra_normalize=intra_normalize, final_normalize=final_normalize), eps)

    function.__doc__ = f"""{fam.summary}, differentiable.

:func:`lcnumba.netvlad_forward` as the operator ``torch.ops.lcnumba.netvlad_forward``; the gradients
of ``x``, ``weight``, ``bias`` and ``centroids`` come from :func:`lcnumba.netvlad_backward`.

Parameters
----------
x : Tensor, shape (N, D, H, W) or (N, D, M)
    Local descriptors of each sample.
weight : Tensor, shape (K + G, D)
    Soft-assignment weights of the K real and G ghost clusters.
bias : Tensor, shape (K + G,)
centroids : Tensor, shape (K, D)
normalize_input : bool
    L2-normalise each descriptor first.
{_EPS}{_VLAD_SWITCHES}mask : Tensor of bool or integers, shape (N, M) or (N, H, W), optional
    Nonzero for the valid descriptors: the others take no assignment and add nothing (padded frames
    or image borders). It has no gradient.

Returns
-------
Tensor, shape (N, K * D)
"""
    return function


def _vlad_aggregate_function(fam):
    op = library.FAMILIES[fam.name].forward

    def function(x, assignment, centroids, intra_normalize=True, final_normalize=True, eps=1e-12):
        return op(x, assignment, centroids, *_flags(intra_normalize=intra_normalize,
                                                    final_normalize=final_normalize), eps)

    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable.

:func:`lcnumba.vlad_aggregate_forward` as the operator ``torch.ops.lcnumba.vlad_aggregate_forward``:
NetVLAD's aggregation for a soft-assignment computed by the caller. The gradients of all three
tensors come from :func:`lcnumba.vlad_aggregate_backward`.

Parameters
----------
x : Tensor, shape (N, D, H, W) or (N, D, M)
    Local descriptors of each sample, used as given.
assignment : Tensor, shape (N, K, H, W) or (N, K, M)
    Weight of each descriptor for each cluster.
centroids : Tensor, shape (K, D)
{_VLAD_SWITCHES}{_EPS}
Returns
-------
Tensor, shape (N, K * D)
"""
    return function


def _netvlad_pca_function(fam):
    op = library.FAMILIES[fam.name].forward

    def function(v, projection, bias, eps=1e-12):
        return op(v, projection, bias, eps)

    function.__doc__ = f"""{fam.summary}, differentiable.

:func:`lcnumba.netvlad_pca_forward` as the operator ``torch.ops.lcnumba.netvlad_pca_forward``:
``(projection @ v + bias)`` L2-normalised per sample; ``projection`` and ``bias`` from
:func:`lcnumba.netvlad_pca_fit` start the layer. The gradients of all three tensors come from
:func:`lcnumba.netvlad_pca_backward`.

Parameters
----------
v : Tensor, shape (N, P)
    NetVLAD vectors.
projection : Tensor, shape (dim, P)
bias : Tensor, shape (dim,)
{_EPS}
Returns
-------
Tensor, shape (N, dim)
"""
    return function


FUNCTIONS = table.per_family({"conv": _conv_function, "conv_transpose": _conv_transpose_function,
                              "pool": _pool_function, "netvlad": _netvlad_function,
                              "vlad_aggregate": _vlad_aggregate_function, "netvlad_pca": _netvlad_pca_function},
                             __name__)
globals().update(FUNCTIONS)
__all__ = sorted(FUNCTIONS) + ["conv_geometry", "output_padding_of", "padding_mode_of", "pool_geometry"]
