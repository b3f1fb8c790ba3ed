"""``torch.nn`` modules of lcnumba's layers: locally connected, tiled, their transposes, and NetVLAD.

===============================  ===============================  ==============================
module                           weight                           bias
===============================  ===============================  ==============================
``LocallyConnected2d``           (OH, OW, F, C/groups, KH, KW)    (F, OH, OW)
``LocallyConnected1d``           (OL, F, C/groups, K)             (F, OL)
``TiledConv2d``                  (TH, TW, F, C/groups, KH, KW)    (F, TH, TW)
``TiledConv1d``                  (T, F, C/groups, K)              (F, T)
``LocallyConnectedTranspose2d``  (H, W, C, F/groups, KH, KW)      (F, OH, OW)
``TiledConvTranspose2d``         (TH, TW, C, F/groups, KH, KW)    (F, TH, TW)
``NetVLAD``                      (K + G, D); centroids (K, D)     (K + G,)
===============================  ===============================  ==============================

The layouts are those of lcnumba's NumPy functions (the op table's
``weight_dims``), so a state dict holds the arrays a NumPy user passes.
Each convolution module normalises its geometry once, when it is built, and
calls its family's forward operator (``lcnumba.torch.library``) in
``forward``. ``reset_parameters`` draws the weights with ``lcnumba.init``
seeded from PyTorch's global generator, so ``torch.manual_seed`` makes it
reproducible.
"""

import numpy as np
import torch

from .. import checks, geometry, init, table
from . import functional, library

def _seed():
    """A seed for ``lcnumba.init`` drawn from PyTorch's global generator."""
    return int(torch.randint(0, 2**62, (1,)).item())


def _assign(parameter, array):
    """Copy a NumPy array into a parameter (any device and dtype), outside autograd."""
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _per_axis(fam, value, name):
    """A size per spatial axis (``kernel_size``, ``tiles``, ``input_size``) as a tuple of ints >= 1."""
    if fam.spatial == 2:
        return checks.int_tuple(value, name, 2, minimum=1)
    return (checks.one_int(value, name, minimum=1),)


def _documented(cls):
    """Append the Parameters, Attributes and Shape sections of ``cls``'s family (its table row) to its docstring."""
    fam = table.family(cls._family)
    two = fam.spatial == 2
    if fam.sharing == "local":
        banks = ("input_size : int or (H, W)\n        The spatial size of the inputs: the number of output positions, "
                 "and so of filter banks,\n        follows from it." if two else
                 "input_size : int\n        The input length L: the number of output positions follows from it.")
        per, extra = "output position", f"\n    output_size : {'(OH, OW)' if two else '(OL,)'}"
    else:
        banks = "tiles : int or (TH, TW)" if two else "tiles : int"
        per, extra = "tile", ""
    tile_mode = '\n    tile_mode : {"periodic", "block"}' if fam.has_tiles else ""
    tile_mode += ('\n    padding_mode : {"zeros", "reflect", "replicate", "circular"}\n        What the padding '
                  "holds, as ``torch.nn.Conv2d``'s.")
    x, y = ("(N, C, H, W)", "(N, F, OH, OW)") if two else ("(N, C, L)", "(N, F, OL)")
    any_size = ", any input size" if fam.sharing == "tiled" else ""
    cls.__doc__ = cls.__doc__.rstrip() + f"""

    Parameters
    ----------
    in_channels, out_channels : int
        C and F.
    kernel_size : {'int or (KH, KW)' if two else 'int'}
    {banks}
    stride, dilation : {'int or pair' if two else 'int'}
    padding : {'int, pair, ((top, bottom), (left, right))' if two else 'int, (left, right)'}, "valid" or "same"
    groups : int
        Input channels and filters are split into this many groups.
    bias : bool
        Learn a bias per filter and {per}.{tile_mode}
    device, dtype
        Of the parameters (float32 or float64 for the kernels).

    Attributes
    ----------
    weight : Parameter, shape {fam.layout(fam.weight_dims)}
    bias : Parameter, shape {fam.layout(fam.bias_dims)}, or None{extra}

    Shape: ``x`` {x} -> {y}{any_size}.
    """
    return cls


class _Conv(torch.nn.Module):
    """A member of the convolution family with its weight (and bias) as parameters.

    Subclasses name their family (``_family``) and keep ``input_size``
    (local) or ``tiles`` (tiled) for ``_bank_sizes``; the weight and bias
    shapes follow from the family's dimension names in the op table.
    """

    _family = None

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, tile_mode,
                 padding_mode, device, dtype):
        super().__init__()
        fam = table.family(self._family)
        self.padding_mode = functional.padding_mode_of(padding_mode)
        self.in_channels = checks.integer(in_channels, "in_channels", minimum=1)
        self.out_channels = checks.integer(out_channels, "out_channels", minimum=1)
        self.kernel_size = _per_axis(fam, kernel_size, "kernel_size")
        self.groups = checks.integer(groups, "groups", minimum=1)
        checks.groups_divide(self.groups, self.in_channels, "in_channels", self.out_channels, "out_channels")
        self.tile_mode = tile_mode if not fam.has_tiles else checks.choice(tile_mode, "tile_mode", table.TILE_MODES)
        sizes = {"f": self.out_channels, "cg": self.in_channels // self.groups,
                 **dict(zip(("kh", "kw") if fam.spatial == 2 else ("k",), self.kernel_size)),
                 **self._bank_sizes(fam, stride, padding, dilation)}
        weight_shape = tuple(sizes[d] for d in fam.weight_dims)
        stride, pads, dilation, _ = functional.conv_geometry(fam, weight_shape, stride, padding, dilation, groups)
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(pads)
        self._geometry = ((self.stride, tuple(pads), self.dilation, self.groups, self.padding_mode)
                          + ((self.tile_mode,) if fam.has_tiles else ()))
        self._op = library.FAMILIES[fam.name].forward
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(weight_shape, **factory))
        if checks.flag(bias, "bias"):
            self.bias = torch.nn.Parameter(torch.empty(tuple(sizes[d] for d in fam.bias_dims), **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _bank_sizes(self, fam, stride, padding, dilation):
        """Sizes of the weight's leading axes: output positions (local, from ``input_size``) or tiles."""
        if fam.sharing == "tiled":
            self.tiles = _per_axis(fam, self._tiles, "tiles")
            return dict(zip(("th", "tw") if fam.spatial == 2 else ("t",), self.tiles))
        self.input_size = _per_axis(fam, self._input_size, "input_size")
        query = getattr(geometry, f"{fam.name}_output_shape")
        self.output_size = tuple(query((1, self.in_channels) + self.input_size,
                                       self.kernel_size if fam.spatial == 2 else self.kernel_size[0],
                                       self.out_channels, stride=stride, padding=padding, dilation=dilation,
                                       groups=self.groups)[2:])
        return dict(zip(("oh", "ow") if fam.spatial == 2 else ("ol",), self.output_size))

    def reset_parameters(self):
        """He-uniform weights (``lcnumba.he_uniform`` for this family's layout) and zero biases."""
        _assign(self.weight, init.he_uniform(tuple(self.weight.shape), self._family, dtype=np.float64, seed=_seed()))
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def forward(self, x):
        return self._op(x, self.weight, self.bias, *self._geometry)

    def extra_repr(self):
        if table.family(self._family).sharing == "tiled":
            banks = f"tiles={self.tiles}" + ("" if self.tile_mode == "periodic" else f", tile_mode={self.tile_mode!r}")
        else:
            banks = f"input_size={self.input_size}"
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, {banks}",
                 f"stride={self.stride}"]
        if self.padding not in (0, (0,) * (2 * len(self.kernel_size))):
            parts.append(f"padding={self.padding!r}")
        if self.dilation != (1,) * len(self.kernel_size):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        return ", ".join(parts)


class _Local(_Conv):
    """A locally connected family: one filter bank per output position, as many as ``input_size`` gives."""

    def __init__(self, in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        self._input_size = input_size
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, None,
                         padding_mode, device, dtype)


@_documented
class LocallyConnected2d(_Local):
    """Locally connected (unshared) 2-D convolution, as in DeepFace: a filter bank per output position.

    ``y[n, f, i, j] = bias[f, i, j] + sum_{c,a,b} weight[i, j, f, c, a, b] x[n, g*Cg + c, i*SH - PT + a*DH,
    j*SW - PL + b*DW]``, computed by :func:`lcnumba.local_conv2d_forward` and differentiated by its
    backward passes.
    """

    _family = "local_conv2d"


@_documented
class LocallyConnected1d(_Local):
    """Locally connected (unshared) 1-D convolution: a filter bank per output position.
    """

    _family = "local_conv1d"


class _Tiled(_Conv):
    """A tiled family: ``tiles`` filter banks shared periodically or by blocks."""

    def __init__(self, in_channels, out_channels, kernel_size, tiles, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, tile_mode="periodic", padding_mode="zeros", device=None, dtype=None):
        self._tiles = tiles
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, tile_mode,
                         padding_mode, device, dtype)


@_documented
class TiledConv2d(_Tiled):
    """Tiled 2-D convolution (Ngiam et al. 2010): TH x TW filter banks over the output positions.

    Output position (i, j) uses bank ``(i % TH, j % TW)`` (``tile_mode="periodic"``) or
    ``(i * TH // OH, j * TW // OW)`` (``"block"``); a 1 x 1 tile is an ordinary convolution.
    Computed by :func:`lcnumba.tiled_conv2d_forward` and its backward passes.
    """

    _family = "tiled_conv2d"


@_documented
class TiledConv1d(_Tiled):
    """Tiled 1-D convolution: T filter banks; position l uses bank ``l % T`` or ``l * T // OL``.
    """

    _family = "tiled_conv1d"


class _ConvTranspose(torch.nn.Module):
    """A transposed family (``_family``) with its weight and bias as parameters, built as ``nn.ConvTranspose2d``.

    ``banks`` is the input size (H, W) of a locally connected layer, which has a filter bank per input
    position, or the tiles (TH, TW) of a tiled one.
    """

    _family = None
    _banks = None  # "input_size" or "tiles"

    def __init__(self, in_channels, out_channels, kernel_size, banks, stride, padding, output_padding, groups, bias,
                 dilation, tile_mode, device, dtype):
        super().__init__()
        fam = table.family(self._family)
        self.in_channels = checks.integer(in_channels, "in_channels", minimum=1)
        self.out_channels = checks.integer(out_channels, "out_channels", minimum=1)
        self.kernel_size = _per_axis(fam, kernel_size, "kernel_size")
        self.groups = checks.integer(groups, "groups", minimum=1)
        checks.groups_divide(self.groups, self.in_channels, "in_channels", self.out_channels, "out_channels")
        setattr(self, self._banks, _per_axis(fam, banks, self._banks))
        grid = getattr(self, self._banks)
        weight_shape = grid + (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        strides, pads, dilations, _ = functional.conv_geometry(fam, weight_shape, stride, padding, dilation, groups)
        self.stride, self.dilation = tuple(strides), tuple(dilations)
        self.padding = padding if isinstance(padding, str) else tuple(pads)
        self.output_padding = tuple(functional.output_padding_of(fam, output_padding))
        tail = (self.output_padding,)
        if fam.has_tiles:
            self.tile_mode = checks.choice(tile_mode, "tile_mode", table.TILE_MODES)
            tail += (self.tile_mode,)
        if fam.sharing == "local":  # the bias lies over the output positions, which the input size gives
            query = getattr(geometry, f"{fam.name}_output_shape")
            self.output_size = tuple(query((1, self.in_channels) + grid, weight_shape, stride=stride,
                                           padding=padding, output_padding=output_padding, dilation=dilation,
                                           groups=self.groups)[2:])
            bias_shape = (self.out_channels,) + self.output_size
        else:
            bias_shape = (self.out_channels,) + grid
        self._geometry = (self.stride, tuple(pads), self.dilation, self.groups) + tail
        self._op = library.FAMILIES[fam.name].forward
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(weight_shape, **factory))
        if checks.flag(bias, "bias"):
            self.bias = torch.nn.Parameter(torch.empty(bias_shape, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """He-uniform weights with the fans of the forward family's layout (fan-in ``F/groups * KH * KW``, as
        PyTorch's ``ConvTranspose2d``) and zero biases."""
        forward = table.family(self._family).forward
        _assign(self.weight, init.he_uniform(tuple(self.weight.shape), forward, dtype=np.float64, seed=_seed()))
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def forward(self, x):
        return self._op(x, self.weight, self.bias, *self._geometry)

    def extra_repr(self):
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                 f"{self._banks}={getattr(self, self._banks)}", f"stride={self.stride}"]
        if getattr(self, "tile_mode", "periodic") != "periodic":
            parts.append(f"tile_mode={self.tile_mode!r}")
        if self.padding not in (0, (0, 0, 0, 0)):
            parts.append(f"padding={self.padding!r}")
        if self.output_padding != (0, 0):
            parts.append(f"output_padding={self.output_padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)


def _transpose_documented(cls):
    """Append the Parameters, Attributes and Shape sections of ``cls``'s transposed family to its docstring."""
    fam = table.family(cls._family)
    local = fam.sharing == "local"
    banks = ("input_size : int or (H, W)\n        The spatial size of the inputs: one filter bank per input position."
             if local else "tiles : int or (TH, TW)")
    tile_mode = ('\n    tile_mode : {"periodic", "block"}\n        Which bank each input position uses, as for '
                 ":class:`TiledConv2d`'s output positions." if fam.has_tiles else "")
    output_size = ("\n    output_size : (OH, OW)\n        ``OH = (H-1)*SH - PT - PB + DH*(KH-1) + output_padding + 1``,"
                   " likewise ``OW``." if local else "")
    cls.__doc__ = cls.__doc__.rstrip() + f"""

    Parameters
    ----------
    in_channels, out_channels : int
        C and F.
    kernel_size : int or (KH, KW)
    {banks}
    stride, dilation : int or pair
    padding : int, pair, ((top, bottom), (left, right)), "valid" or "same"
        Removed from the output, as in PyTorch.
    output_padding : int or pair
        Cells added after the last output position of each axis, less than ``stride`` or ``dilation``.
    groups : int
    bias : bool
        Learn a bias per filter and {"output position" if local else "tile"}.{tile_mode}
    device, dtype
        Of the parameters (float32 or float64 for the kernels).

    Attributes
    ----------
    weight : Parameter, shape {fam.layout(fam.weight_dims)}
    bias : Parameter, shape {fam.layout(fam.bias_dims)}, or None{output_size}

    Shape: ``x`` (N, C, H, W) -> (N, F, OH, OW){"" if local else ", any input size"}.
    """
    return cls


@_transpose_documented
class LocallyConnectedTranspose2d(_ConvTranspose):
    """Transposed locally connected 2-D convolution: a filter bank per *input* position (DCGAN-style decoders).

    The adjoint of :class:`LocallyConnected2d` in ``x``, with ``nn.ConvTranspose2d``'s parameters:
    :func:`lcnumba.local_conv2d_transpose_forward` and its backward passes.
    """

    _family = "local_conv2d_transpose"
    _banks = "input_size"

    def __init__(self, in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, input_size, stride, padding, output_padding, groups,
                         bias, dilation, None, device, dtype)


@_transpose_documented
class TiledConvTranspose2d(_ConvTranspose):
    """Transposed tiled 2-D convolution: TH x TW filter banks over the input positions.

    The adjoint of :class:`TiledConv2d` in ``x``, with ``nn.ConvTranspose2d``'s parameters:
    :func:`lcnumba.tiled_conv2d_transpose_forward` and its backward passes.
    """

    _family = "tiled_conv2d_transpose"
    _banks = "tiles"

    def __init__(self, in_channels, out_channels, kernel_size, tiles, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, tile_mode="periodic", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, tiles, stride, padding, output_padding, groups,
                         bias, dilation, tile_mode, device, dtype)


class NetVLAD(torch.nn.Module):
    """NetVLAD pooling (Arandjelovic et al. 2016) with GhostVLAD's ghost clusters.

    Soft-assigns each of the M local descriptors of a sample to K real and G
    ghost clusters, sums the residuals to the real clusters' centroids,
    intra-normalises and L2-normalises: :func:`lcnumba.netvlad_forward` and
    :func:`lcnumba.netvlad_backward`. ``forward(x, mask=None)`` takes a mask
    of the valid descriptors, (N, M) or (N, H, W), for batches of padded
    inputs (videos with fewer frames, images of different sizes).

    Parameters
    ----------
    num_clusters : int
        K, the real clusters.
    dim : int
        D, the size of a descriptor (the channels of the input).
    num_ghost : int
        G, ghost clusters: they take assignment mass but add no residuals.
    normalize_input : bool
        L2-normalise each descriptor first.
    eps : float
        Floor of the norms divided by.
    intra_normalize : bool
        L2-normalise each cluster's residual sum.
    final_normalize : bool
        L2-normalise the whole vector.
    device, dtype
        Of the parameters.

    Attributes
    ----------
    weight : Parameter, shape (K + G, D)
    bias : Parameter, shape (K + G,)
    centroids : Parameter, shape (K, D)

    Shape: ``x`` (N, D, H, W) or (N, D, M) -> (N, K * D).

    Notes
    -----
    ``reset_parameters`` gives a start that needs no data (Glorot-uniform
    weights and centroids, zero biases); :meth:`init_from` gives the paper's
    start from k-means on sample descriptors, which trains much faster.
    """

    def __init__(self, num_clusters, dim, num_ghost=0, normalize_input=True, eps=1e-12, intra_normalize=True,
                 final_normalize=True, device=None, dtype=None):
        super().__init__()
        self.num_clusters = checks.integer(num_clusters, "num_clusters", minimum=1)
        self.dim = checks.integer(dim, "dim", minimum=1)
        self.num_ghost = checks.integer(num_ghost, "num_ghost", minimum=0)
        self.normalize_input = checks.flag(normalize_input, "normalize_input")
        self.eps = checks.positive_float(eps, "eps")
        self.intra_normalize = checks.flag(intra_normalize, "intra_normalize")
        self.final_normalize = checks.flag(final_normalize, "final_normalize")
        factory = {"device": device, "dtype": dtype}
        clusters = self.num_clusters + self.num_ghost
        self.weight = torch.nn.Parameter(torch.empty((clusters, self.dim), **factory))
        self.bias = torch.nn.Parameter(torch.empty((clusters,), **factory))
        self.centroids = torch.nn.Parameter(torch.empty((self.num_clusters, self.dim), **factory))
        self._op = library.FAMILIES["netvlad"].forward
        self.reset_parameters()

    def reset_parameters(self):
        """Glorot-uniform assignment weights and centroids (``lcnumba.glorot_uniform``), zero biases."""
        _assign(self.weight, init.glorot_uniform(tuple(self.weight.shape), "linear", dtype=np.float64, seed=_seed()))
        _assign(self.centroids, init.glorot_uniform(tuple(self.centroids.shape), "linear", dtype=np.float64,
                                                    seed=_seed()))
        with torch.no_grad():
            self.bias.zero_()

    def init_from(self, descriptors, *, alpha=None, seed=None):
        """Set the parameters from k-means on sample descriptors (:func:`lcnumba.netvlad_init`).

        Parameters
        ----------
        descriptors : Tensor or ndarray, shape (M, D), (N, D, M) or (N, D, H, W)
            Sample local descriptors, e.g. the features of a few batches before this layer.
        alpha : float, optional
            Sharpness of the initial assignment (by default calibrated on ``descriptors``).
        seed : int, optional
            Seed of k-means and of the ghost weights; by default drawn from PyTorch's generator.

        Returns
        -------
        NetVLAD
            This module.
        """
        if isinstance(descriptors, torch.Tensor):
            descriptors = descriptors.detach().cpu().numpy()
        w, b, centroids = init.netvlad_init(descriptors, self.num_clusters, num_ghost=self.num_ghost, alpha=alpha,
                                            seed=_seed() if seed is None else seed)
        for parameter, array in ((self.weight, w), (self.bias, b), (self.centroids, centroids)):
            _assign(parameter, array)
        return self

    def forward(self, x, mask=None):
        return self._op(x, self.weight, self.bias, self.centroids, mask, self.normalize_input, self.intra_normalize,
                        self.final_normalize, self.eps)

    def extra_repr(self):
        parts = [f"num_clusters={self.num_clusters}", f"dim={self.dim}"]
        if self.num_ghost:
            parts.append(f"num_ghost={self.num_ghost}")
        for switch in ("normalize_input", "intra_normalize", "final_normalize"):
            if not getattr(self, switch):
                parts.append(f"{switch}=False")
        return ", ".join(parts)


__all__ = ["LocallyConnected1d", "LocallyConnected2d", "LocallyConnectedTranspose2d", "NetVLAD", "TiledConv1d",
           "TiledConv2d", "TiledConvTranspose2d"]
