"""lcnumba.torch: custom operators, autograd, torch.compile, modules, zero-copy tensors.

References independent of lcnumba's kernels: PyTorch's own ``F.conv2d``, ``F.conv1d``,
``F.conv_transpose2d``, ``F.conv_transpose1d``, ``F.max_pool2d`` and ``F.max_pool1d``, an
``F.unfold`` + ``einsum`` locally connected layer (the
recipe PyTorch users write), ``lcnumba.testing``'s plain-NumPy references, and float64 central
differences (``torch.autograd.gradcheck``). Forward values and gradients must also equal, bit for
bit, those of lcnumba's NumPy functions on the same data.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed: pip install -e '.[torch]'")

import lcnumba  # noqa: E402
import lcnumba.torch as lt  # noqa: E402
from lcnumba import table, testing  # noqa: E402
from lcnumba.ops.backend import HOST  # noqa: E402
from lcnumba.torch import functional as LF  # noqa: E402
from lcnumba.torch import library  # noqa: E402
from families import FAMILIES, TRANSPOSED  # noqa: E402

F = torch.nn.functional

# Geometry cases of the convolution family: (name, with bias, keyword arguments). Every case has C = 4
# input channels and 2 filters, so that groups=2 divides both.
CASES = [
    ("bias", True, dict()),
    ("strided-padded-dilated-grouped", False, dict(stride=2, padding=1, dilation=2, groups=2)),
    ("same-asymmetric", True, dict(padding="same")),
]
# The transposed families' cases: C = 4 input channels, 2 filters per group.
TRANSPOSE_CASES = [
    ("bias-strided-padded-grouped", True, dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("dilated-output-padded", False, dict(stride=2, output_padding=1, dilation=2)),
]


def _cases():
    return ([pytest.param(fam, bias, kwargs, id=f"{fam}-{name}") for fam in FAMILIES for name, bias, kwargs in CASES
             if not (name == "same-asymmetric" and fam.sharing == "local")]
            + [pytest.param(fam, bias, kwargs, id=f"{fam}-{name}") for fam in TRANSPOSED
               for name, bias, kwargs in TRANSPOSE_CASES])


def _transposed(fam):
    return fam.row.kind == "conv_transpose"


def _x_shape(fam):
    if _transposed(fam):
        return (2, 4, 3, 4) if fam.spatial == 2 else (2, 4, 5)
    return (2, 4, 6, 7) if fam.spatial == 2 else (2, 4, 9)


def _weight_shape(fam, kwargs):
    """The weight of ``fam`` for 2 filters (per group if transposed) of kernel 2 x 3 (1-D: 3) over ``_x_shape(fam)``."""
    groups = kwargs.get("groups", 1)
    kernel = (2, 3) if fam.spatial == 2 else (3,)
    bank = ((4, 2) if _transposed(fam) else (2, 4 // groups)) + kernel
    if fam.sharing == "shared":
        return bank
    if fam.sharing == "tiled":
        return ((2, 3) if fam.spatial == 2 else (2,)) + bank
    if _transposed(fam):  # a bank per input position
        return _x_shape(fam)[2:] + bank
    query = getattr(lcnumba, f"{fam.name}_output_shape")
    positions = query(_x_shape(fam), kernel if fam.spatial == 2 else kernel[0], 2, **kwargs)[2:]
    return positions + bank


def _tensors(fam, bias, kwargs, dtype, seed=0, requires_grad=False):
    """``x, w, b (or None), dy`` of a call of ``fam`` with ``kwargs``, random, in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(_x_shape(fam), generator=g, dtype=dtype)
    w = torch.randn(_weight_shape(fam, kwargs), generator=g, dtype=dtype)
    y_shape = fam.op("forward")(x.numpy(), w.numpy(), **kwargs, **fam.mode).shape
    b = torch.randn(_bias_shape(fam, w.shape, y_shape), generator=g, dtype=dtype) if bias else None
    dy = torch.randn(y_shape, generator=g, dtype=dtype)
    if requires_grad:
        for t in (x, w, b):
            if t is not None:
                t.requires_grad_(True)
    return x, w, b, dy


def _bias_shape(fam, w_shape, y_shape):
    if _transposed(fam):  # over the output: per filter, and per tile or output position
        return y_shape[1:2] + {"shared": (), "tiled": w_shape[:fam.spatial], "local": y_shape[2:]}[fam.sharing]
    sizes = dict(zip(fam.row.weight_dims, w_shape))
    return tuple(sizes[d] for d in fam.row.bias_dims)


def _geometry(fam, w, kwargs):
    """The operator's geometry arguments for the functional form's ``kwargs`` (and ``fam``'s tile mode)."""
    geometry = LF.conv_geometry(fam.row, w.shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                                kwargs.get("dilation", 1), kwargs.get("groups", 1))
    if _transposed(fam):
        geometry += (LF.output_padding_of(fam.row, kwargs.get("output_padding", 0)),)
    else:
        geometry += (kwargs.get("padding_mode", "zeros"),)
    return geometry + ((fam.tile_mode,) if fam.tile_mode else ())


def _call_op(fam, x, w, b, kwargs):
    """The family's forward through its registered operator (``torch.ops.lcnumba.<name>_forward``)."""
    return library.OVERLOADS[f"{fam.name}_forward"](x, w, b, *_geometry(fam, w, kwargs))


def _functional(fam):
    function = getattr(LF, table.bridge_name(fam.row))
    return lambda x, w, b, **kwargs: function(x, w, b, **kwargs, **fam.mode)


# ---------------------------------------------------------------- the operators


def test_every_family_and_pass_is_an_operator():
    expected = {f"{fam.name}_{part}" for fam in table.PUBLIC_FAMILIES for part in fam.passes
                if not (fam.kind in ("conv", "conv_transpose") and part == "backward")}
    assert set(library.OVERLOADS) == expected
    for name in expected:
        assert getattr(torch.ops.lcnumba, name).default is library.OVERLOADS[name]


@pytest.mark.parametrize("fam,bias,kwargs", _cases())
def test_gradcheck_through_the_operators(fam, bias, kwargs):
    x, w, b, _ = _tensors(fam, bias, kwargs, torch.float64, requires_grad=True)
    inputs = (x, w) + ((b,) if bias else ())
    assert torch.autograd.gradcheck(lambda *t: _call_op(fam, *t[:2], t[2] if bias else None, kwargs), inputs)


@pytest.mark.parametrize("spatial,kwargs", [(2, dict(kernel_size=2, stride=1)),
                                            (2, dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                                     ceil_mode=True)),
                                            (1, dict(kernel_size=3, stride=2, padding=1))])
def test_gradcheck_max_pool(spatial, kwargs):
    x = torch.randn((2, 3, 7, 8) if spatial == 2 else (2, 3, 11), dtype=torch.float64, requires_grad=True)
    pool = LF.max_pool2d if spatial == 2 else LF.max_pool1d
    assert torch.autograd.gradcheck(lambda x: pool(x, **kwargs), (x,))


def _mask():
    """A mask of valid descriptors for x (2, 5, 3, 4): the first sample keeps its first row only."""
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[0, 1:] = False
    return mask


#: NetVLAD's options: (ghost clusters, keyword arguments); the mask is ``_mask()``.
NETVLAD_OPTIONS = [(0, dict(normalize_input=True)), (2, dict(normalize_input=False)),
                   (1, dict(intra_normalize=False, masked=True)), (0, dict(final_normalize=False, masked=True))]


def _netvlad_tensors(ghosts, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    shapes = ((2, 5, 3, 4), (3 + ghosts, 5), (3 + ghosts,), (3, 5))
    return [torch.randn(shape, generator=g, dtype=dtype, requires_grad=True) for shape in shapes]


def _netvlad_kwargs(options):
    kwargs = {key: value for key, value in options.items() if key != "masked"}
    return kwargs | ({"mask": _mask()} if options.get("masked") else {})


@pytest.mark.parametrize("ghosts,options", NETVLAD_OPTIONS)
def test_gradcheck_netvlad(ghosts, options):
    kwargs = _netvlad_kwargs(options)
    assert torch.autograd.gradcheck(lambda *t: LF.netvlad(*t, **kwargs), _netvlad_tensors(ghosts))


def _part_tensors(name, dtype=torch.float64, seed=2):
    """The arguments of NetVLAD's part ``name``: x, a positive assignment and centroids, or v, projection and bias."""
    g = torch.Generator().manual_seed(seed)
    if name == "vlad_aggregate":
        shapes = ((2, 5, 3, 4), (2, 3, 3, 4), (3, 5))
    else:
        shapes = ((3, 8), (4, 8), (4,))
    tensors = [torch.randn(shape, generator=g, dtype=dtype) for shape in shapes]
    if name == "vlad_aggregate":
        tensors[1] = tensors[1].softmax(dim=1)
    return [t.requires_grad_(True) for t in tensors]


PARTS = [("vlad_aggregate", dict()), ("vlad_aggregate", dict(intra_normalize=False)),
         ("vlad_aggregate", dict(final_normalize=False)), ("netvlad_pca", dict())]


@pytest.mark.parametrize("name,kwargs", PARTS)
def test_gradcheck_netvlad_parts(name, kwargs):
    function = getattr(LF, name)
    assert torch.autograd.gradcheck(lambda *t: function(*t, **kwargs), _part_tensors(name))


def _opcheck_cases():
    cases = []
    for fam in FAMILIES + TRANSPOSED:
        for name, bias, kwargs in (TRANSPOSE_CASES[:1] if _transposed(fam) else CASES[:2]):
            x, w, b, dy = _tensors(fam, bias, kwargs, torch.float64)
            geometry = _geometry(fam, w, kwargs)
            tile = (fam.tile_mode,) if fam.tile_mode else ()
            grad = [t.clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
            cases += [
                (f"{fam.name}_forward", (*grad, *geometry)),
                (f"{fam.name}_backward_input", (dy, w, list(x.shape), *geometry)),
                (f"{fam.name}_backward_weight", (dy, x, list(w.shape), *geometry)),
            ]
            if bias:
                cases.append((f"{fam.name}_backward_bias", (dy, list(b.shape), *tile)))
    for spatial in (2, 1):
        name = "max_pool2d" if spatial == 2 else "max_pool1d"
        x = torch.randn((2, 3, 7, 8) if spatial == 2 else (2, 3, 11), dtype=torch.float64)
        params = ([3, 2], [2, 2], [1, 1], [1, 1]) if spatial == 2 else ([3], [2], [1], [1])
        y, indices = library.OVERLOADS[f"{name}_forward"](x, *params, False)
        cases += [(f"{name}_forward", (x.clone().requires_grad_(True), *params, False)),
                  (f"{name}_backward", (torch.randn_like(y), indices, list(x.shape)))]
    x, w, b, c = (t.detach() for t in _netvlad_tensors(1))
    dy = torch.randn(2, 15, dtype=torch.float64)
    for mask, options in ((None, (True, True, True, 1e-12)), (_mask(), (False, False, True, 1e-12))):
        cases += [("netvlad_forward", (*(t.clone().requires_grad_(True) for t in (x, w, b, c)), mask, *options)),
                  ("netvlad_backward", (dy, x, w, b, c, mask, *options))]
    for name, options in (("vlad_aggregate", (True, False, 1e-12)), ("netvlad_pca", (1e-12,))):
        tensors = _part_tensors(name)
        y = getattr(LF, name)(*tensors)
        cases += [(f"{name}_forward", (*tensors, *options)),
                  (f"{name}_backward", (torch.randn_like(y), *(t.detach() for t in tensors), *options))]
    return cases


OPCHECK_CASES = _opcheck_cases()


def test_opcheck_covers_every_operator():
    assert {name for name, _ in OPCHECK_CASES} == set(library.OVERLOADS)


@pytest.mark.parametrize("name,args", OPCHECK_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPCHECK_CASES)])
def test_opcheck(name, args):
    torch.library.opcheck(library.OVERLOADS[name], args)


def test_double_backward_raises_a_clear_error():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 3, 2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(LF.local_conv2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        dx.sum().backward()
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.gradgradcheck(lambda x: LF.max_pool2d(x, 2), (x,))


# ---------------------------------------------------------------- equal to the NumPy API and to references


@pytest.mark.parametrize("fam,bias,kwargs", _cases())
def test_forward_and_gradients_equal_the_numpy_api_bitwise(fam, bias, kwargs):
    x, w, b, dy = _tensors(fam, bias, kwargs, torch.float32, seed=3, requires_grad=True)
    arrays = [None if t is None else t.detach().numpy().copy() for t in (x, w, b, dy)]
    y_np = fam.op("forward")(*arrays[:3], **kwargs, **fam.mode)
    grads_np = fam.op("backward")(arrays[3], *arrays[:3], **kwargs, **fam.mode)
    leaves = [t for t in (x, w, b) if t is not None]
    for y in (_functional(fam)(x, w, b, **kwargs), _call_op(fam, x, w, b, kwargs)):  # direct path, operator
        assert np.array_equal(y.detach().numpy(), y_np)
        grads = torch.autograd.grad(y, leaves, dy)
        for got, expected in zip(grads, grads_np):
            assert np.array_equal(got.numpy(), expected)
    # A first layer: no input gradient, so the weight and bias gradients come from their own passes.
    y = _functional(fam)(x.detach(), w, b, **kwargs)
    for got, expected in zip(torch.autograd.grad(y, leaves[1:], dy), grads_np[1:]):
        assert np.array_equal(got.numpy(), expected)


@pytest.mark.parametrize("ghosts,options", NETVLAD_OPTIONS)
def test_netvlad_options_and_mask_equal_the_numpy_api_bitwise(ghosts, options):
    """The module (its options) and the functional form (an integer mask) against lcnumba's NumPy functions."""
    x, w, b, c = _netvlad_tensors(ghosts, torch.float32, seed=5)
    kwargs = _netvlad_kwargs(options)
    switches = {key: value for key, value in kwargs.items() if key != "mask"}
    mask = kwargs.get("mask")
    layer = lt.NetVLAD(3, 5, num_ghost=ghosts, **switches)
    with torch.no_grad():
        for parameter, value in zip((layer.weight, layer.bias, layer.centroids), (w, b, c)):
            parameter.copy_(value)
    arrays = [t.detach().numpy() for t in (x, w, b, c)]
    numpy_mask = None if mask is None else mask.numpy()
    y_np = lcnumba.netvlad_forward(*arrays, **switches, mask=numpy_mask)
    dy = torch.randn(y_np.shape, generator=torch.Generator().manual_seed(6))
    grads_np = lcnumba.netvlad_backward(dy.numpy(), *arrays, **switches, mask=numpy_mask)
    int_mask = None if mask is None else mask.to(torch.int32)
    for y, leaves in ((layer(x, mask=mask), (x, layer.weight, layer.bias, layer.centroids)),
                      (LF.netvlad(x, w, b, c, **switches, mask=int_mask), (x, w, b, c))):
        assert np.array_equal(y.detach().numpy(), y_np)
        for got, expected in zip(torch.autograd.grad(y, leaves, dy), grads_np):
            assert np.array_equal(got.numpy(), expected)
    if mask is not None:  # a masked descriptor moves nothing
        moved = x.detach().clone()
        moved[0, :, 1:] += 10.0
        assert torch.equal(layer(moved, mask=mask), layer(x, mask=mask))


@pytest.mark.parametrize("name,kwargs", PARTS)
def test_netvlad_parts_equal_the_numpy_api_bitwise(name, kwargs):
    tensors = _part_tensors(name, torch.float32, seed=7)
    arrays = [t.detach().numpy() for t in tensors]
    y = getattr(LF, name)(*tensors, **kwargs)
    y_np = getattr(lcnumba, f"{name}_forward")(*arrays, **kwargs)
    assert np.array_equal(y.detach().numpy(), y_np)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(8))
    expected = getattr(lcnumba, f"{name}_backward")(dy.numpy(), *arrays, **kwargs)
    for got, e in zip(torch.autograd.grad(y, tensors, dy), expected):
        assert np.array_equal(got.numpy(), e)


def _unfold_local(x, w, b, stride, padding, dilation, groups):
    """A locally connected layer as PyTorch users write it: ``F.unfold`` patches, one ``einsum`` per position.

    ``w`` is (OH, OW, F, C/groups, KH, KW); ``padding`` an int or a pair.
    """
    oh, ow, f, cg, kh, kw = w.shape
    n = x.shape[0]
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C*KH*KW, P)
    cols = cols.reshape(n, groups, cg * kh * kw, oh * ow)
    wg = w.reshape(oh * ow, groups, f // groups, cg * kh * kw)
    y = torch.einsum("ngkp,pgfk->ngfp", cols, wg).reshape(n, f, oh, ow)
    return y if b is None else y + b


def _position_weights(w, oh, ow, mode):
    """A tiled weight (TH, TW, ...) expanded to one bank per output position, as ``tile_mode`` assigns them."""
    th, tw = w.shape[:2]
    rows = [i % th if mode == "periodic" else i * th // oh for i in range(oh)]
    cols = [j % tw if mode == "periodic" else j * tw // ow for j in range(ow)]
    return w[rows][:, cols]


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, dilation=2, groups=2)])
def test_locally_connected2d_equals_unfold_einsum(kwargs):
    torch.manual_seed(0)
    layer = lt.LocallyConnected2d(4, 6, 3, (9, 8), **kwargs, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    params = dict(stride=1, padding=0, dilation=1, groups=1) | kwargs
    y = layer(x)
    reference = _unfold_local(x, layer.weight, layer.bias, **params)
    torch.testing.assert_close(y, reference)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)
    expected = torch.autograd.grad(reference, (x, layer.weight, layer.bias), dy)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("mode", table.TILE_MODES)
def test_tiled_conv2d_equals_unfold_einsum(mode):
    torch.manual_seed(1)
    layer = lt.TiledConv2d(4, 6, 3, (2, 3), padding=1, tile_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    oh, ow = y.shape[2:]
    w = _position_weights(layer.weight, oh, ow, mode)
    b = _position_weights(layer.bias.permute(1, 2, 0), oh, ow, mode).permute(2, 0, 1)
    reference = _unfold_local(x, w, b, 1, 1, 1, 1)
    torch.testing.assert_close(y, reference)
    dy = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (x, layer.weight, layer.bias), dy),
                    torch.autograd.grad(reference, (x, layer.weight, layer.bias), dy)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, dilation=2, groups=2)])
def test_conv_functions_equal_pytorch(kwargs):
    g = torch.Generator().manual_seed(2)
    for spatial, ours, theirs in ((2, LF.conv2d, F.conv2d), (1, LF.conv1d, F.conv1d)):
        x = torch.randn((2, 4, 9, 8)[:2 + spatial], generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn((6, 4 // kwargs.get("groups", 1)) + (3,) * spatial, generator=g, dtype=torch.float64,
                        requires_grad=True)
        b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
        y, reference = ours(x, w, b, **kwargs), theirs(x, w, b, **kwargs)
        torch.testing.assert_close(y, reference)
        dy = torch.randn_like(y)
        for a, e in zip(torch.autograd.grad(y, (x, w, b), dy), torch.autograd.grad(reference, (x, w, b), dy)):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, output_padding=1, groups=2, dilation=2),
                                    dict(stride=3, padding=2, output_padding=2)])
def test_conv_transpose_functions_equal_pytorch(kwargs):
    g = torch.Generator().manual_seed(9)
    groups = kwargs.get("groups", 1)
    for spatial, ours, theirs in ((2, LF.conv_transpose2d, F.conv_transpose2d),
                                  (1, LF.conv_transpose1d, F.conv_transpose1d)):
        x = torch.randn((2, 4, 5, 6)[:2 + spatial], generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn((4, 3) + (3,) * spatial, generator=g, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3 * groups, generator=g, dtype=torch.float64, requires_grad=True)
        y, reference = ours(x, w, b, **kwargs), theirs(x, w, b, **kwargs)
        torch.testing.assert_close(y, reference)
        dy = torch.randn_like(y)
        for a, e in zip(torch.autograd.grad(y, (x, w, b), dy), torch.autograd.grad(reference, (x, w, b), dy)):
            torch.testing.assert_close(a, e)
    # PyTorch's positional order: stride, padding, output_padding, groups, dilation
    x, w = torch.randn(1, 4, 3, 3, dtype=torch.float64), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(LF.conv_transpose2d(x, w, None, 2, 1, 1, 2, 2),
                               F.conv_transpose2d(x, w, None, 2, 1, 1, 2, 2))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, dilation=2),
                                    dict(kernel_size=3, stride=2, ceil_mode=True)])
def test_max_pool_equals_pytorch(kwargs):
    for spatial, ours, theirs in ((2, LF.max_pool2d, F.max_pool2d), (1, LF.max_pool1d, F.max_pool1d)):
        x = torch.randn((2, 3, 9, 10)[:2 + spatial], dtype=torch.float32, requires_grad=True)
        y, indices = ours(x, **kwargs, return_indices=True)
        y_ref, indices_ref = theirs(x, **kwargs, return_indices=True)
        assert torch.equal(y, y_ref) and torch.equal(indices, indices_ref)
        dy = torch.randn_like(y)
        assert torch.equal(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0])


def test_max_pool_without_gradient_skips_the_indices(monkeypatch):
    """A forward nothing differentiates, without return_indices, asks the core for y alone; the same y."""
    calls = []
    for name in ("max_pool2d_forward", "max_pool1d_forward"):
        def spy(*args, _fn=library.FUNCTIONS[name], **kwargs):
            calls.append(kwargs.get("return_indices", False))
            return _fn(*args, **kwargs)
        monkeypatch.setitem(library.FUNCTIONS, name, spy)
    for spatial, ours, theirs in ((2, LF.max_pool2d, F.max_pool2d), (1, LF.max_pool1d, F.max_pool1d)):
        x = torch.randn((2, 3, 9, 10)[:2 + spatial], dtype=torch.float32)
        kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        calls.clear()
        assert torch.equal(ours(x, **kwargs), theirs(x, **kwargs))
        with torch.no_grad():
            assert torch.equal(ours(x.requires_grad_(True), **kwargs), theirs(x, **kwargs))
        assert calls == [False, False]
        # indices asked for, or a gradient wanted: the operator's implementation (bound at registration,
        # so the spy does not see it), which writes the indices
        y, _ = ours(x, **kwargs, return_indices=True)
        y_grad = ours(x, **kwargs)
        assert calls == [False, False] and torch.equal(y, y_grad) and y_grad.requires_grad


def test_one_dimensional_layers_and_netvlad_equal_the_references():
    torch.manual_seed(3)
    x = torch.randn(2, 4, 12, dtype=torch.float64)
    local = lt.LocallyConnected1d(4, 3, 3, 12, padding=(1, 2), dtype=torch.float64)
    np.testing.assert_allclose(local(x).detach().numpy(), testing.local_conv1d_forward(
        x.numpy(), local.weight.detach().numpy(), local.bias.detach().numpy(), padding=(1, 2)), rtol=1e-12)
    tiled = lt.TiledConv1d(4, 3, 3, 2, stride=2, tile_mode="block", dtype=torch.float64)
    np.testing.assert_allclose(tiled(x).detach().numpy(), testing.tiled_conv1d_forward(
        x.numpy(), tiled.weight.detach().numpy(), tiled.bias.detach().numpy(), stride=2, tile_mode="block"),
        rtol=1e-12)
    vlad = lt.NetVLAD(3, 4, num_ghost=1, dtype=torch.float64)
    with torch.no_grad():
        vlad.bias.normal_()
    params = [p.detach().numpy() for p in (vlad.weight, vlad.bias, vlad.centroids)]
    np.testing.assert_allclose(vlad(x).detach().numpy(), testing.netvlad_forward(x.numpy(), *params), rtol=1e-10)


# ---------------------------------------------------------------- torch.compile


class _EveryLayer(torch.nn.Module):
    """Every layer of lcnumba.torch, and only those (the compiled graph then needs no C++ compiler)."""

    def __init__(self):
        super().__init__()
        self.conv_w = torch.nn.Parameter(0.3 * torch.randn(4, 1, 3, 3))
        self.local = lt.LocallyConnected2d(4, 4, 3, (8, 8), padding=1)
        self.tiled = lt.TiledConv2d(4, 4, 3, (2, 2), padding="same", tile_mode="block")
        self.local1 = lt.LocallyConnected1d(4, 4, 3, 64, padding=1)
        self.tiled1 = lt.TiledConv1d(4, 4, 3, 2, padding=1)
        self.conv1_w = torch.nn.Parameter(0.3 * torch.randn(4, 4, 3))
        self.vlad = lt.NetVLAD(3, 4, num_ghost=1)

    def forward(self, x):
        h = LF.max_pool2d(LF.conv2d(x, self.conv_w, padding=1), 2)
        h = self.tiled(self.local(h))
        h = self.tiled1(self.local1(h.reshape(h.shape[0], 4, 64)))
        return self.vlad(LF.max_pool1d(LF.conv1d(h, self.conv1_w, padding=1), 2))


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(4)
    model = _EveryLayer()
    x = torch.randn(2, 1, 16, 16)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break is an error
    y = compiled(x)
    y.backward(torch.ones_like(y))
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_eager = model(x)
    y_eager.backward(torch.ones_like(y_eager))
    assert torch.equal(y, y_eager)
    for compiled_grad, p in zip(grads, model.parameters()):
        assert torch.equal(compiled_grad, p.grad)


class _TransposedAndNetVLADParts(torch.nn.Module):
    """The transposed families, NetVLAD's options and mask, and NetVLAD's parts (lcnumba's operators only)."""

    def __init__(self):
        super().__init__()
        self.up_w = torch.nn.Parameter(0.3 * torch.randn(4, 2, 3, 3))
        self.local_w = torch.nn.Parameter(0.3 * torch.randn(8, 8, 4, 4, 1, 1))
        self.local_b = torch.nn.Parameter(0.1 * torch.randn(4, 8, 8))
        self.tiled_w = torch.nn.Parameter(0.3 * torch.randn(2, 4, 4, 3))
        self.vlad = lt.NetVLAD(3, 4, num_ghost=1, intra_normalize=False)
        self.projection = torch.nn.Parameter(0.3 * torch.randn(5, 12))
        self.pca_b = torch.nn.Parameter(0.1 * torch.randn(5))

    def forward(self, x, mask, assignment):
        h = LF.conv_transpose2d(x, self.up_w, stride=2, padding=1, output_padding=1, groups=2)  # (N, 4, 8, 8)
        h = LF.local_conv_transpose2d(h, self.local_w, self.local_b)
        h = LF.tiled_conv_transpose1d(h.reshape(h.shape[0], 4, 64), self.tiled_w, padding=1, tile_mode="block")
        v = LF.netvlad_pca(self.vlad(h, mask=mask), self.projection, self.pca_b)
        return v, LF.vlad_aggregate(h, assignment, self.vlad.centroids, final_normalize=False)


def test_torch_compile_fullgraph_transposed_and_netvlad_parts():
    torch.manual_seed(10)
    model = _TransposedAndNetVLADParts()
    x, mask = torch.randn(2, 4, 4, 4), torch.rand(2, 64) > 0.3
    assignment = torch.rand(2, 3, 64)
    outputs = torch.compile(model, fullgraph=True)(x, mask, assignment)
    torch.autograd.backward(outputs, [torch.ones_like(y) for y in outputs])
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(x, mask, assignment)
    torch.autograd.backward(eager, [torch.ones_like(y) for y in eager])
    for compiled_output, eager_output in zip(outputs, eager):
        assert torch.equal(compiled_output, eager_output)
    for compiled_grad, p in zip(grads, model.parameters()):
        assert torch.equal(compiled_grad, p.grad)


class _Subclass(torch.Tensor):
    pass


def test_the_direct_path_is_taken_only_for_plain_tensors_in_eager_mode():
    x = torch.randn(1, 1, 5, 5)
    assert library.direct((x, torch.nn.Parameter(x), None))
    assert not library.direct((x.as_subclass(_Subclass),))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert not library.direct((fake,))
        assert LF.max_pool2d(fake, 2).shape == (1, 1, 2, 2)  # the operator's fake, shapes from geometry


# ---------------------------------------------------------------- zero copy, devices, dtypes


def test_contiguous_cpu_tensors_are_not_copied(monkeypatch):
    """The kernel reads the input tensors' memory and writes the memory of the returned tensor."""
    seen = {}
    original = HOST.conv_forward

    def spy(x, w, b, plan, y):
        seen.update(x=x.ctypes.data, w=w.ctypes.data, y=y.ctypes.data)
        original(x, w, b, plan, y)

    monkeypatch.setattr(HOST, "conv_forward", spy)
    layer = lt.LocallyConnected2d(2, 3, 3, (6, 6))
    x = torch.randn(2, 2, 6, 6)
    y = layer(x)
    assert seen == {"x": x.data_ptr(), "w": layer.weight.data_ptr(), "y": y.data_ptr()}
    # A non-contiguous input is made contiguous once (its own memory is not what the kernel reads).
    wide = torch.randn(2, 2, 6, 12)
    view = wide[..., ::2]
    y_view = layer(view)
    assert seen["x"] != view.data_ptr() and seen["y"] == y_view.data_ptr()
    assert torch.equal(y_view, layer(view.contiguous()))


def test_other_dtypes_raise_the_core_errors():
    layer = lt.LocallyConnected2d(1, 1, 3, (5, 5))
    for dtype in (torch.float16, torch.bfloat16, torch.int32):
        with pytest.raises(TypeError, match="x: expected .*float32 or float64"):
            layer(torch.ones(1, 1, 5, 5, dtype=dtype))
    with pytest.raises(TypeError, match="w: expected dtype float64 like x"):
        LF.conv2d(torch.ones(1, 1, 5, 5, dtype=torch.float64), torch.ones(1, 1, 3, 3),
                  torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="w: expected a filter bank per output position"):
        layer(torch.ones(1, 1, 6, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch CUDA tensors need a GPU (Numba's simulator "
                                                          "cannot hold them)")
def test_cuda_tensors_run_on_the_current_stream_and_mixed_devices_raise():
    torch.manual_seed(5)
    layer = lt.LocallyConnected2d(2, 3, 3, (6, 6))
    x = torch.randn(2, 2, 6, 6, requires_grad=True)
    y = layer(x)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)
    layer_cuda = layer.to("cuda")
    x_cuda = x.detach().cuda().requires_grad_(True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y_cuda = layer_cuda(x_cuda)
        grads_cuda = torch.autograd.grad(y_cuda, (x_cuda, layer_cuda.weight, layer_cuda.bias), dy.cuda())
    torch.cuda.synchronize()
    assert y_cuda.is_cuda
    torch.testing.assert_close(y_cuda.cpu(), y.detach())
    for a, e in zip(grads_cuda, grads):
        torch.testing.assert_close(a.cpu(), e)
    with pytest.raises(TypeError, match="same device"):
        layer_cuda(x.detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch CUDA tensors need a GPU (Numba's simulator "
                                                          "cannot hold them)")
def test_cuda_transposed_and_masked_netvlad_equal_the_cpu():
    torch.manual_seed(12)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    vlad = _netvlad_tensors(1)
    calls = [lambda x, w, b: LF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2),
             lambda *t: LF.netvlad(*t, mask=t[0].new_ones(2, 3, 4, dtype=torch.bool).tril(), intra_normalize=False)]
    for call, args in zip(calls, ((x, w, b), [t.detach() for t in vlad])):
        cpu = [t.clone().requires_grad_(True) for t in args]
        cuda = [t.detach().cuda().requires_grad_(True) for t in args]
        y, y_cuda = call(*cpu), call(*cuda)
        dy = torch.randn_like(y)
        grads = torch.autograd.grad(y, cpu, dy)
        grads_cuda = torch.autograd.grad(y_cuda, cuda, dy.cuda())
        torch.testing.assert_close(y_cuda.cpu(), y.detach())
        for a, e in zip(grads_cuda, grads):
            torch.testing.assert_close(a.cpu(), e)


# ---------------------------------------------------------------- modules


def test_module_shapes_repr_and_state_dict():
    layer = lt.LocallyConnected2d(4, 6, 3, (9, 8), stride=2, groups=2, bias=False)
    assert layer.weight.shape == (4, 3, 6, 2, 3, 3) and layer.bias is None and layer.output_size == (4, 3)
    assert repr(layer) == "LocallyConnected2d(4, 6, kernel_size=(3, 3), input_size=(9, 8), stride=(2, 2), " \
                          "groups=2, bias=False)"
    tiled = lt.TiledConv1d(2, 3, 5, 4, padding="same", tile_mode="block")
    assert tiled.weight.shape == (4, 3, 2, 5) and tiled.bias.shape == (3, 4)
    assert repr(tiled) == "TiledConv1d(2, 3, kernel_size=(5,), tiles=(4,), tile_mode='block', stride=(1,), " \
                          "padding='same')"
    assert lt.LocallyConnected1d(2, 3, 3, 10, dilation=2).weight.shape == (6, 3, 2, 3)
    assert lt.TiledConv2d(2, 3, (3, 1), 2).bias.shape == (3, 2, 2)
    vlad = lt.NetVLAD(8, 16, num_ghost=2, normalize_input=False)
    assert [tuple(p.shape) for p in vlad.parameters()] == [(10, 16), (10,), (8, 16)]
    assert repr(vlad) == "NetVLAD(num_clusters=8, dim=16, num_ghost=2, normalize_input=False)"
    twins = {"LocallyConnected2d": lambda: lt.LocallyConnected2d(4, 6, 3, (9, 8), stride=2, groups=2, bias=False),
             "TiledConv1d": lambda: lt.TiledConv1d(2, 3, 5, 4, padding="same", tile_mode="block"),
             "NetVLAD": lambda: lt.NetVLAD(8, 16, num_ghost=2, normalize_input=False)}
    for module in (layer, tiled, vlad):
        twin = twins[type(module).__name__]()  # drawn afresh: differs until the state is loaded
        assert not all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), module.state_dict().values()))
        twin.load_state_dict(module.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), module.state_dict().values()))


def test_reset_parameters_uses_lcnumba_init_and_torch_seed():
    torch.manual_seed(6)
    first = lt.LocallyConnected2d(8, 4, 3, (7, 7))
    torch.manual_seed(6)
    second = lt.LocallyConnected2d(8, 4, 3, (7, 7))
    assert torch.equal(first.weight, second.weight)
    assert torch.count_nonzero(first.bias) == 0
    limit = np.sqrt(6.0 / lcnumba.fans(tuple(first.weight.shape), "local_conv2d")[0])  # he_uniform
    assert first.weight.abs().max() <= limit and first.weight.abs().max() > 0.9 * limit
    first.reset_parameters()
    assert not torch.equal(first.weight, second.weight)


def test_netvlad_init_from_runs_netvlad_init():
    torch.manual_seed(7)
    descriptors = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    vlad = lt.NetVLAD(3, 6, num_ghost=1, dtype=torch.float64).init_from(descriptors, seed=11)
    expected = lcnumba.netvlad_init(descriptors.numpy(), 3, num_ghost=1, seed=11)
    for parameter, array in zip((vlad.weight, vlad.bias, vlad.centroids), expected):
        assert np.array_equal(parameter.detach().numpy(), array)


def test_a_training_step_lowers_the_loss():
    torch.manual_seed(8)
    model = torch.nn.Sequential(lt.LocallyConnected2d(1, 4, 3, (8, 8)), torch.nn.ReLU(),
                                lt.TiledConv2d(4, 4, 3, 2), torch.nn.ReLU(), lt.NetVLAD(4, 4),
                                torch.nn.Linear(16, 3))
    x, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("module,kwargs", [
    ("LocallyConnectedTranspose2d", dict(input_size=(3, 4), stride=2, padding=1, output_padding=1, groups=2)),
    ("TiledConvTranspose2d", dict(tiles=(2, 3), stride=2, dilation=2, output_padding=1, tile_mode="block")),
])
def test_transposed_modules_equal_the_numpy_api_bitwise(module, kwargs):
    torch.manual_seed(11)
    layer = getattr(lt, module)(4, 6, (2, 3), **kwargs)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 4, 3, 4, requires_grad=True)
    name = table.family(layer._family).name
    params = {key: value for key, value in kwargs.items() if key not in ("input_size", "tiles")}
    arrays = [t.detach().numpy() for t in (x, layer.weight, layer.bias)]
    y = layer(x)
    assert np.array_equal(y.detach().numpy(), getattr(lcnumba, f"{name}_forward")(*arrays, **params))
    dy = torch.randn_like(y)
    expected = getattr(lcnumba, f"{name}_backward")(dy.numpy(), *arrays, **params)
    for got, e in zip(torch.autograd.grad(y, (x, layer.weight, layer.bias), dy), expected):
        assert np.array_equal(got.numpy(), e)
    groups = kwargs.get("groups", 1)
    assert layer.weight.shape[2:] == (4, 6 // groups, 2, 3)
    assert layer.bias.shape == (6,) + (y.shape[2:] if "input_size" in kwargs else kwargs["tiles"])
    assert repr(layer).startswith(f"{module}(4, 6, kernel_size=(2, 3), ")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_torch_and_differentiate(mode):
    """``padding_mode`` through the functional form (against ``nn.Conv2d``) and a module (gradcheck, NumPy API)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    conv = torch.nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode=mode, dtype=torch.float64)
    torch.testing.assert_close(LF.conv2d(x, conv.weight, conv.bias, padding=(1, 2), padding_mode=mode), conv(x),
                               rtol=1e-12, atol=1e-12)
    layer = lt.LocallyConnected2d(3, 2, 3, (6, 7), padding=1, padding_mode=mode, dtype=torch.float64)
    assert f"padding_mode={mode!r}" in repr(layer)
    expected = lcnumba.local_conv2d_forward(x.detach().numpy(), layer.weight.detach().numpy(),
                                            layer.bias.detach().numpy(), padding=1, padding_mode=mode)
    np.testing.assert_array_equal(layer(x).detach().numpy(), expected)
    assert torch.autograd.gradcheck(lambda a: layer(a), (x,))
    with pytest.raises(ValueError, match="padding_mode"):
        LF.conv2d(x, conv.weight, padding=1, padding_mode="mirror")
