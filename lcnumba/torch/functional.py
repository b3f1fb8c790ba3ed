"""Differentiable functional forms of every op family, as ``torch.nn.functional`` spells them.

``local_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)``
and its siblings take the parameter spellings of lcnumba's NumPy functions
(an int, a pair, ``((top, bottom), (left, right))``, ``"valid"``, ``"same"``),
normalise them once (``conv_geometry``, ``pool_geometry``) and call the
family's forward operator (``lcnumba.torch.library``), whose autograd
formula runs lcnumba's backward passes. One function per family of the op
table, made from its row.
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
        def function(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic"):
            tile_mode = checks.choice(tile_mode, "tile_mode", table.TILE_MODES)
            return op(x, weight, bias, *conv_geometry(fam, weight.shape, stride, padding, dilation, groups),
                      tile_mode)
    else:
        def function(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            return op(x, weight, bias, *conv_geometry(fam, weight.shape, stride, padding, dilation, groups))
    tile = ('\ntile_mode : {"periodic", "block"}\n    Which tile each output position uses, as for '
            f":func:`lcnumba.{fam.name}_forward`." if fam.has_tiles else "")
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


def _pool_function(fam):
    op = library.FAMILIES[fam.name].forward

    def function(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        kernel_size, stride, padding, dilation = pool_geometry(fam, kernel_size, stride, padding, dilation)
        ceil_mode, return_indices = checks.flag(ceil_mode, "ceil_mode"), checks.flag(return_indices, "return_indices")
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


def _netvlad_function(fam):
    op = library.FAMILIES[fam.name].forward

    def function(x, weight, bias, centroids, normalize_input=True, eps=1e-12):
        # eps is checked by lcnumba.netvlad_forward when the operator runs: its check calls NumPy,
        # which torch.compile would trace as a tensor computation.
        return op(x, weight, bias, centroids, checks.flag(normalize_input, "normalize_input"), eps)

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
eps : float
    Floor of the norms divided by.

Returns
-------
Tensor, shape (N, K * D)
"""
    return function


FUNCTIONS = table.per_family({"conv": _conv_function, "pool": _pool_function, "netvlad": _netvlad_function}, __name__)
globals().update(FUNCTIONS)
__all__ = sorted(FUNCTIONS) + ["conv_geometry", "pool_geometry"]
