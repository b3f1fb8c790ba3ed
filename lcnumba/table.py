"""The op table: every op family and pass of lcnumba, declared once.

Everything that lists ops is made from these rows: the public CPU/CUDA
functions (``lcnumba.ops.public``), their docstrings, the C entry points and
header (``lcnumba.capi.entry``), the warmup list (``lcnumba.warmup``), the
initialisers' families (``lcnumba.init``), the references' dispatch
(``lcnumba.testing``), the framework bridges and the tests' family table
(``tests/conftest.py``). A new family or pass is a row here plus its kernels.

This module is plain data: it imports nothing from the package, so every
layer (the kernels' C entry points included) may read it without pulling in
the public layer or a kernel.

Dimension names (lower case, as in the C header): ``n`` batch, ``c`` input
channels, ``f`` filters, ``cg = c / groups``, ``kh, kw`` (``k`` in 1-D) kernel,
``th, tw`` (``t``) tiles, ``oh, ow`` (``ol``) output positions; a transposed family's weight has ``h, w``
(``l``) input positions and ``fg = f / groups``.
"""

from dataclasses import dataclass

#: Passes of every convolution family, in the order the docs list them.
CONV_PASSES = ("forward", "backward_input", "backward_weight", "backward_bias", "backward")
#: Passes of the pooling and NetVLAD families.
POOL_PASSES = ("forward", "backward")
NETVLAD_PASSES = ("forward", "backward")
#: The weight-sharing kinds of the convolution family, from most to least shared.
SHARINGS = ("shared", "tiled", "local")
#: How output positions map onto the tiles of a tiled convolution.
TILE_MODES = ("periodic", "block")
#: What the convolution family reads outside the input (PyTorch's ``padding_mode``); a kernel gets the
#: index of its mode here (``lcnumba.indexing.pad_source``).
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvFamily:
    """One member of the convolution family (DESIGN §1: tiled with a 1x1 tile is shared, with OHxOW local).

    A 1-D form runs as its 2-D twin of height 1: ``*_unit_axes`` say where the
    2-D layouts have axes of size 1 that the 1-D layouts leave out.
    """

    name: str
    sharing: str  # "shared", "tiled" or "local"
    spatial: int  # 2: x (N, C, H, W); 1: x (N, C, L)
    weight_dims: tuple
    bias_dims: tuple
    summary: str  # what the family computes, for the C header
    twin: str = ""  # the 2-D family a 1-D form runs as
    x_unit_axes: tuple = ()
    weight_unit_axes: tuple = ()
    bias_unit_axes: tuple = ()

    kind = "conv"
    passes = CONV_PASSES

    @property
    def has_tiles(self):
        """True when the call takes ``tile_mode`` (tiled families only)."""
        return self.sharing == "tiled"

    @property
    def x_ndim(self):
        return 2 + self.spatial

    @property
    def weight_ndim(self):
        return len(self.weight_dims)

    @property
    def bias_ndim(self):
        return len(self.bias_dims)

    @staticmethod
    def layout(dims):
        """Dimension names as a shape in the docs: ``("oh", "ow", "f", "cg")`` -> ``"(OH, OW, F, C/groups)"``."""
        spelled = {"cg": "C/groups", "fg": "F/groups"}
        return "(" + ", ".join(spelled.get(d, d.upper()) for d in dims) + (",)" if len(dims) == 1 else ")")


@dataclass(frozen=True)
class ConvTransposeFamily(ConvFamily):
    """The transpose of a convolution family member (``forward``), as PyTorch's ``conv_transpose2d``.

    Its input is the forward op's output and its output the forward op's input: a weight of the
    forward op's layout, read as ``(*grid, C, F/groups, *kernel)`` with ``C`` the transposed op's input
    channels and ``F`` its output channels (PyTorch's ``(in_channels, out_channels/groups, *kernel)``).
    A local weight has a bank per *input* position; a bias is laid out as the forward op's, over the
    transposed op's *output* positions.
    """

    forward: str = ""  # the forward family whose kernels it runs

    kind = "conv_transpose"


@dataclass(frozen=True)
class PoolFamily:
    """Max-pooling over (N, C, H, W) or, as its 2-D twin of height 1, (N, C, L)."""

    name: str
    spatial: int
    summary: str
    twin: str = ""
    x_unit_axes: tuple = ()

    kind = "pool"
    passes = POOL_PASSES
    has_tiles = False

    @property
    def x_ndim(self):
        return 2 + self.spatial


@dataclass(frozen=True)
class NetVLADFamily:
    """NetVLAD pooling with GhostVLAD's ghost clusters."""

    name: str
    summary: str
    twin: str = ""

    kind = "netvlad"
    passes = NETVLAD_PASSES
    has_tiles = False


CONV_FAMILIES = (
    ConvFamily("conv2d", "shared", 2, ("f", "cg", "kh", "kw"), ("f",),
               "shared 2-D convolution (one filter bank)"),
    ConvFamily("tiled_conv2d", "tiled", 2, ("th", "tw", "f", "cg", "kh", "kw"), ("f", "th", "tw"),
               "tiled 2-D convolution (th x tw filter banks)"),
    ConvFamily("local_conv2d", "local", 2, ("oh", "ow", "f", "cg", "kh", "kw"), ("f", "oh", "ow"),
               "locally connected 2-D convolution (one filter bank per output position)"),
    ConvFamily("conv1d", "shared", 1, ("f", "cg", "k"), ("f",),
               "shared 1-D convolution", "conv2d", (2,), (2,), ()),
    ConvFamily("tiled_conv1d", "tiled", 1, ("t", "f", "cg", "k"), ("f", "t"),
               "tiled 1-D convolution (t filter banks)", "tiled_conv2d", (2,), (0, 4), (1,)),
    ConvFamily("local_conv1d", "local", 1, ("ol", "f", "cg", "k"), ("f", "ol"),
               "locally connected 1-D convolution (one filter bank per output position)",
               "local_conv2d", (2,), (0, 4), (1,)),
)

#: The transposed families: their passes run the kernels of ``forward`` (DESIGN §4, docs/derivations/conv.md).
TRANSPOSE_FAMILIES = (
    ConvTransposeFamily("conv2d_transpose", "shared", 2, ("c", "fg", "kh", "kw"), ("f",),
                        "transposed shared 2-D convolution (one filter bank)", forward="conv2d"),
    ConvTransposeFamily("tiled_conv2d_transpose", "tiled", 2, ("th", "tw", "c", "fg", "kh", "kw"), ("f", "th", "tw"),
                        "transposed tiled 2-D convolution (th x tw filter banks)", forward="tiled_conv2d"),
    ConvTransposeFamily("local_conv2d_transpose", "local", 2, ("h", "w", "c", "fg", "kh", "kw"), ("f", "oh", "ow"),
                        "transposed locally connected 2-D convolution (one filter bank per input position)",
                        forward="local_conv2d"),
    ConvTransposeFamily("conv1d_transpose", "shared", 1, ("c", "fg", "k"), ("f",),
                        "transposed shared 1-D convolution", "conv2d_transpose", (2,), (2,), (), forward="conv1d"),
    ConvTransposeFamily("tiled_conv1d_transpose", "tiled", 1, ("t", "c", "fg", "k"), ("f", "t"),
                        "transposed tiled 1-D convolution (t filter banks)", "tiled_conv2d_transpose", (2,), (0, 4),
                        (1,), forward="tiled_conv1d"),
    ConvTransposeFamily("local_conv1d_transpose", "local", 1, ("l", "c", "fg", "k"), ("f", "ol"),
                        "transposed locally connected 1-D convolution (one filter bank per input position)",
                        "local_conv2d_transpose", (2,), (0, 4), (1,), forward="local_conv1d"),
)

POOL_FAMILIES = (
    PoolFamily("max_pool2d", 2, "2-D max-pooling, as PyTorch's F.max_pool2d"),
    PoolFamily("max_pool1d", 1, "1-D max-pooling, as PyTorch's F.max_pool1d", "max_pool2d", (2,)),
)

NETVLAD_FAMILIES = (
    NetVLADFamily("netvlad", "NetVLAD pooling (Arandjelovic et al. 2016) with GhostVLAD ghost clusters"),
)



@dataclass(frozen=True)
class NetVLADPart:
    """A stage of NetVLAD as an op of its own, for callers who assemble their own pooling layer.

    ``vlad_aggregate``: the aggregation and normalisation chain for a
    soft-assignment the caller computes (a separate convolution, a Sinkhorn
    dustbin). ``netvlad_pca``: the PCA-whitening layer on NetVLAD vectors
    (projection, bias, L2 normalisation), fitted by ``lcnumba.netvlad_pca_fit``.
    These rows make public functions, docstrings, C entry points and the
    framework bridges' operators and functions; they are not in
    ``FAMILIES``, so the warmup list does not cover them.
    """

    name: str
    summary: str

    passes = NETVLAD_PASSES
    has_tiles = False
    twin = ""

    @property
    def kind(self):
        return self.name


NETVLAD_PART_FAMILIES = (
    NetVLADPart("vlad_aggregate", "VLAD aggregation and normalisation of a given soft-assignment"),
    NetVLADPart("netvlad_pca", "PCA-whitening of NetVLAD vectors (Arandjelovic et al. 2016, addPCA.m)"),
)

#: The families with kernels of their own: the warmup lists these (the C ABI and the framework bridges
#: cover every public family).
FAMILIES = CONV_FAMILIES + POOL_FAMILIES + NETVLAD_FAMILIES
#: Every family with public functions, and so with operators and functions in the framework bridges: the
#: transposed ones run the kernels of their forward families, NetVLAD's parts those of NetVLAD.
PUBLIC_FAMILIES = CONV_FAMILIES + TRANSPOSE_FAMILIES + POOL_FAMILIES + NETVLAD_FAMILIES + NETVLAD_PART_FAMILIES
BY_NAME = {fam.name: fam for fam in PUBLIC_FAMILIES}


def family(name):
    """The row of the family called ``name`` (``KeyError`` for an unknown name)."""
    return BY_NAME[name]


def functions():
    """``(public name, family, pass)`` of every public op function, in table order."""
    return tuple((f"{fam.name}_{part}", fam, part) for fam in PUBLIC_FAMILIES for part in fam.passes)


def bridge_name(fam):
    """The name of ``fam``'s function in the framework bridges: PyTorch's spelling for a transposed family
    (``conv_transpose2d``, ``local_conv_transpose1d`` for ``conv2d_transpose``, ``local_conv1d_transpose``),
    the family's name for the others."""
    if fam.kind == "conv_transpose":
        return fam.name.replace(f"conv{fam.spatial}d_transpose", f"conv_transpose{fam.spatial}d")
    return fam.name


def per_family(makers, module):
    """One function per public family, ``makers[fam.kind](fam)``, named ``bridge_name(fam)`` and placed in ``module``.

    How the framework bridges (``lcnumba.torch.functional``, ``lcnumba.jax``) turn the table into their
    functional forms: ``{bridge name: function}``.
    """
    functions = {}
    for fam in PUBLIC_FAMILIES:
        function = makers[fam.kind](fam)
        function.__name__ = function.__qualname__ = name = bridge_name(fam)
        function.__module__ = module
        functions[name] = function
    return functions
