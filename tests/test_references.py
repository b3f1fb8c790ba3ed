"""The references of ``lcnumba.testing``, checked against identities that do not use them.

Every kernel test compares with these references, so they are checked here on
their own: the convolution forward against its definition (a loop over output
positions of an input padded by hand) and against PyTorch where it is
installed; the weight sharings against each other (a tiled weight of one tile
is a conv2d weight, a tiled weight of the output size a local one); the 1-D
forms against the 2-D ones with a unit height; the backward passes against
the forward by the identities of a linear map; the pooling output size
against a table worked by hand from PyTorch's definition; and the names,
signatures, docstrings and imports of the package.
"""

import ast
import inspect
import pydoc
from pathlib import Path

import numpy as np
import pytest

import lcnumba
from lcnumba import testing

SHARINGS = ("shared", "tiled", "local")
PREFIX = {"shared": "", "tiled": "tiled_", "local": "local_"}
PASSES = ("forward", "backward_input", "backward_weight", "backward_bias", "backward")
PUBLIC = {f"{PREFIX[s]}conv{d}d{t}_{p}" for s in SHARINGS for d in (1, 2) for t in ("", "_transpose")
          for p in PASSES} | {
    "max_pool2d_forward", "max_pool2d_backward", "max_pool1d_forward", "max_pool1d_backward",
    "netvlad_forward", "netvlad_backward", "vlad_aggregate_forward", "vlad_aggregate_backward",
    "netvlad_pca_forward", "netvlad_pca_backward", "netvlad_pca_fit", "gradcheck"}


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


# ================================================================ the forward against its definition


def _direct_conv2d(x, w, b, pads, stride, dilation, groups, bank):
    """``y`` one output position at a time, from an input padded by ``pads`` ((top, bottom), (left, right)).

    ``bank(i, j, oh, ow)`` is the index of position (i, j)'s filter bank in
    the leading axes of ``w`` (``()`` for a conv2d weight).
    """
    xpad = np.pad(x, ((0, 0), (0, 0)) + pads)
    f, cg, kh, kw = w.shape[-4:]
    (sh, sw), (dh, dw) = stride, dilation
    # Output positions are the window starts whose whole window lies in the padded input.
    oh = len(range(0, xpad.shape[2] - dh * (kh - 1), sh))
    ow = len(range(0, xpad.shape[3] - dw * (kw - 1), sw))
    fg = f // groups
    y = np.empty((x.shape[0], f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            t = bank(i, j, oh, ow)
            patch = xpad[:, :, i * sh : i * sh + dh * (kh - 1) + 1 : dh, j * sw : j * sw + dw * (kw - 1) + 1 : dw]
            for g in range(groups):
                filters, channels = slice(g * fg, (g + 1) * fg), slice(g * cg, (g + 1) * cg)
                y[:, filters, i, j] = np.einsum("ncpq,fcpq->nf", patch[:, channels], w[t][filters])
                if b is not None:
                    y[:, filters, i, j] += b[(filters,) + t]
    return y


# (keywords of the call, its padding worked out by hand, stride, dilation, groups); kernel (3, 2), input 6 x 7
GEOMETRIES_2D = [
    (dict(), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),
    (dict(padding=1, stride=2), ((1, 1), (1, 1)), (2, 2), (1, 1), 1),
    (dict(padding=(2, 0), dilation=(1, 2)), ((2, 2), (0, 0)), (1, 1), (1, 2), 1),
    (dict(padding=((0, 2), (1, 0)), stride=(2, 1), groups=2), ((0, 2), (1, 0)), (2, 1), (1, 1), 2),
    # "same": totals 2*(3-1) = 4 rows and 1*(2-1) = 1 column, the odd column on the right
    (dict(padding="same", dilation=(2, 1)), ((2, 2), (0, 1)), (1, 1), (2, 1), 1),
    (dict(padding="valid", stride=(1, 3), groups=4), ((0, 0), (0, 0)), (1, 3), (1, 1), 4),
]

# sharing, tile_mode, tiles, bank(i, j, oh, ow): the rules of DESIGN.md, written out
BANK_RULES = [
    ("shared", None, None, lambda i, j, oh, ow: ()),
    ("tiled", "periodic", (2, 3), lambda i, j, oh, ow: (i % 2, j % 3)),
    ("tiled", "block", (2, 3), lambda i, j, oh, ow: (i * 2 // oh, j * 3 // ow)),
    ("local", None, None, lambda i, j, oh, ow: (i, j)),
]


@pytest.mark.parametrize("rule", BANK_RULES, ids=lambda r: f"{r[0]}-{r[1]}")
@pytest.mark.parametrize("geometry", GEOMETRIES_2D, ids=lambda g: str(g[0]))
def test_forward_is_the_definition(rule, geometry):
    sharing, tile_mode, tiles, bank = rule
    keywords, pads, stride, dilation, groups = geometry
    x = _random((2, 4, 6, 7), 0)
    bank_shape = (4, 4 // groups, 3, 2)
    oh = len(range(0, 6 + sum(pads[0]) - dilation[0] * 2, stride[0]))
    ow = len(range(0, 7 + sum(pads[1]) - dilation[1] * 1, stride[1]))
    grid = {"shared": (), "tiled": tiles, "local": (oh, ow)}[sharing]
    w, b = _random(grid + bank_shape, 1), _random((4,) + grid, 2)
    mode = {} if tile_mode is None else {"tile_mode": tile_mode}
    y = getattr(testing, f"{PREFIX[sharing]}conv2d_forward")(x, w, b, **keywords, **mode)
    _close(y, _direct_conv2d(x, w, b, pads, stride, dilation, groups, bank))


@pytest.mark.parametrize("geometry", GEOMETRIES_2D, ids=lambda g: str(g[0]))
def test_conv_forward_matches_pytorch(geometry):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    keywords, ((top, bottom), (left, right)), stride, dilation, groups = geometry
    x, w, b = _random((2, 4, 6, 7), 0), _random((4, 4 // groups, 3, 2), 1), _random((4,), 2)
    padded = functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = functional.conv2d(padded, torch.from_numpy(w), torch.from_numpy(b), stride=stride,
                                 dilation=dilation, groups=groups).numpy()
    _close(testing.conv2d_forward(x, w, b, **keywords), expected)
    # the same with a unit height, through the 1-D form
    padded_1d = functional.pad(torch.from_numpy(x[:, :, 0, :]), (left, right))
    expected_1d = functional.conv1d(padded_1d, torch.from_numpy(w[:, :, 0, :]), torch.from_numpy(b),
                                    stride=stride[1], dilation=dilation[1], groups=groups).numpy()
    _close(testing.conv1d_forward(x[:, :, 0, :], w[:, :, 0, :], b, stride=stride[1], padding=(left, right),
                                  dilation=dilation[1], groups=groups), expected_1d)


# ================================================================ the sharings and ranks against each other


def _all_passes(name, x, w, b, dy, **keywords):
    """Every pass of family ``name``, as a flat list of arrays."""
    ref = {part: getattr(testing, f"{name}_{part}") for part in PASSES}
    mode = {k: v for k, v in keywords.items() if k == "tile_mode"}
    return [
        ref["forward"](x, w, b, **keywords),
        ref["backward_input"](dy, w, x.shape, **keywords),
        ref["backward_weight"](dy, x, w.shape, **keywords),
        ref["backward_bias"](dy, b.shape, **mode),
        *ref["backward"](dy, x, w, b, **keywords),
    ]


def _case(d, sharing, grid_of_output, seed=0):
    """``(x, w, b, dy, keywords)`` of a small geometric call in ``d`` dimensions with ``grid_of_output(out)`` banks."""
    size, kernel = ((5, 7), (2, 3)) if d == 2 else ((9,), (3,))
    keywords = dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2) if d == 2 else \
        dict(stride=2, padding=(2, 1), dilation=2, groups=2)
    out = (4, 4) if d == 2 else (4,)  # (5 + 1 - 2 - 1) // 1 + 1, (7 + 3 - 2 - 1) // 2 + 1; (9 + 3 - 4 - 1) // 2 + 1
    grid = () if sharing == "shared" else grid_of_output(out)
    x = _random((2, 4) + size, seed)
    w = _random(grid + (6, 2) + kernel, seed + 1)
    b = _random((6,) + grid, seed + 2)
    dy = _random((2, 6) + out, seed + 3)
    return x, w, b, dy, keywords


@pytest.mark.parametrize("d", [2, 1])
@pytest.mark.parametrize("tile_mode", ["periodic", "block"])
def test_tiled_with_one_tile_is_conv(d, tile_mode):
    x, w, b, dy, keywords = _case(d, "shared", None)
    one = (1,) * d
    tiled = _all_passes(f"tiled_conv{d}d", x, w.reshape(one + w.shape), b.reshape(b.shape + one), dy,
                        tile_mode=tile_mode, **keywords)
    shared = _all_passes(f"conv{d}d", x, w, b, dy, **keywords)
    for got, want in zip(tiled, shared):
        _close(got.reshape(want.shape), want)


@pytest.mark.parametrize("d", [2, 1])
@pytest.mark.parametrize("tile_mode", ["periodic", "block"])
def test_tiled_with_a_tile_per_position_is_local(d, tile_mode):
    x, w, b, dy, keywords = _case(d, "local", lambda out: out)
    tiled = _all_passes(f"tiled_conv{d}d", x, w, b, dy, tile_mode=tile_mode, **keywords)
    local = _all_passes(f"local_conv{d}d", x, w, b, dy, **keywords)
    for got, want in zip(tiled, local):
        _close(got, want)


# 1-D padding spellings and the 2-D (left, right) they mean, worked by hand (kernel 3, dilation 2 for "same")
PADDINGS_1D = [(0, (0, 0)), (2, (2, 2)), ((1,), (1, 1)), ((0, 3), (0, 3)), ([2, 1], (2, 1)), ("valid", (0, 0)),
               ("same", (2, 2))]


@pytest.mark.parametrize("sharing", SHARINGS)
@pytest.mark.parametrize("padding", PADDINGS_1D, ids=lambda p: repr(p[0]))
def test_1d_is_2d_with_unit_height(sharing, padding):
    padding_1d, (left, right) = padding
    stride = 1 if padding_1d == "same" else 2
    out = (8 + left + right - 5) // stride + 1
    grid = {"shared": (), "tiled": (3,), "local": (out,)}[sharing]
    x, w, b = _random((2, 2, 8), 0), _random(grid + (4, 1, 3), 1), _random((4,) + grid, 2)
    dy = _random((2, 4, out), 3)
    keywords = dict(stride=(stride,), padding=padding_1d, dilation=2, groups=2)
    one_d = _all_passes(f"{PREFIX[sharing]}conv1d", x, w, b, dy, **keywords)
    # (N, C, L) -> (N, C, 1, L); a bank grid (T,) -> (1, T); kernels K -> (1, K)
    w2 = w[:, :, None, :] if sharing == "shared" else w[None, :, :, :, None, :]
    b2 = b if sharing == "shared" else b[:, None, :]
    two_d = _all_passes(f"{PREFIX[sharing]}conv2d", x[:, :, None, :], w2, b2, dy[:, :, None, :],
                        stride=(1, stride), padding=((0, 0), (left, right)), dilation=(1, 2), groups=2)
    for got, want in zip(one_d, two_d):
        _close(got, want.reshape(got.shape))


@pytest.mark.parametrize("d", [2, 1])
@pytest.mark.parametrize("spellings", ["padding", "stride", "dilation"])
def test_spellings_of_one_geometry_agree(d, spellings):
    forms = {
        (2, "padding"): [1, (1, 1), [1, 1], ((1, 1), (1, 1)), [(1, 1), [1, 1]]],
        (2, "stride"): [2, (2, 2), [2, 2], np.int64(2), (np.int32(2), 2)],
        (2, "dilation"): [2, (2, 2), [2, 2], np.int64(2)],
        (1, "padding"): [1, (1,), (1, 1), [1, 1], np.int64(1)],
        (1, "stride"): [2, (2,), [2], np.int64(2)],
        (1, "dilation"): [2, (2,), np.uint8(2)],
    }[(d, spellings)]
    x, w = _random((1, 2) + (9,) * d, 0), _random((3, 2) + (2,) * d, 1)
    results = [getattr(testing, f"conv{d}d_forward")(x, w, **{spellings: form}) for form in forms]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.parametrize("name,call,error,match", [
    ("same needs stride 1", lambda x, w: testing.conv2d_forward(x, w, padding="same", stride=2), ValueError,
     "^padding: "),
    ("unknown padding word", lambda x, w: testing.conv2d_forward(x, w, padding="full"), ValueError, "^padding: "),
    ("negative padding", lambda x, w: testing.conv2d_forward(x, w, padding=(1, -1)), ValueError, "^padding: "),
    ("float stride", lambda x, w: testing.conv2d_forward(x, w, stride=1.0), TypeError, "^stride: "),
    ("three strides", lambda x, w: testing.conv2d_forward(x, w, stride=(1, 1, 1)), ValueError, "^stride: "),
    ("kernel beyond the input", lambda x, w: testing.conv2d_forward(x, w, dilation=4), ValueError, "^w: "),
    ("groups not dividing C", lambda x, w: testing.conv2d_forward(x, w, groups=3), ValueError, "^w: "),
    ("unknown tile mode", lambda x, w: testing.tiled_conv2d_forward(x, w[None, None], tile_mode="x"), ValueError,
     "^tile_mode: "),
    ("local grid not the output", lambda x, w: testing.local_conv2d_forward(x, w[None, None]), ValueError, "^w: "),
    ("dy not the output", lambda x, w: testing.conv2d_backward_input(np.zeros((1, 3, 2, 2)), w, x.shape),
     ValueError, "^dy: "),
])
def test_inconsistent_calls_are_refused(name, call, error, match):
    x, w = _random((1, 2, 4, 4), 0), _random((3, 2, 2, 2), 1)
    with pytest.raises(error, match=match):
        call(x, w)


# ================================================================ the backward against the forward


@pytest.mark.parametrize("d", [2, 1])
@pytest.mark.parametrize("sharing,tile_mode", [("shared", None), ("tiled", "periodic"), ("tiled", "block"),
                                               ("local", None)])
def test_backward_is_the_adjoint_of_the_forward(d, sharing, tile_mode):
    x, w, b, dy, keywords = _case(d, sharing, lambda out: out if sharing == "local" else (3, 2)[:d])
    name = f"{PREFIX[sharing]}conv{d}d"
    mode = {} if tile_mode is None else {"tile_mode": tile_mode}
    keywords.update(mode)
    forward = getattr(testing, f"{name}_forward")
    # y = A(w) x = B(x) w, so <y, dy> = <x, A(w)^T dy> = <w, B(x)^T dy>; and y(b) - y(0) = C b
    inner = np.vdot(forward(x, w, **keywords), dy)
    dx = getattr(testing, f"{name}_backward_input")(dy, w, x.shape, **keywords)
    dw = getattr(testing, f"{name}_backward_weight")(dy, x, w.shape, **keywords)
    db = getattr(testing, f"{name}_backward_bias")(dy, b.shape, **mode)
    np.testing.assert_allclose(np.vdot(x, dx), inner, rtol=1e-12)
    np.testing.assert_allclose(np.vdot(w, dw), inner, rtol=1e-12)
    np.testing.assert_allclose(np.vdot(b, db), np.vdot(forward(x, w, b, **keywords) - forward(x, w, **keywords), dy),
                               rtol=1e-12)
    for got, want in zip(getattr(testing, f"{name}_backward")(dy, x, w, b, **keywords), (dx, dw, db)):
        np.testing.assert_array_equal(got, want)


def test_float32_in_float32_out_computed_in_float64():
    x, w = _random((1, 2, 6, 6), 0), _random((3, 2, 3, 3), 1)
    y32 = testing.conv2d_forward(x.astype(np.float32), w.astype(np.float32))
    assert y32.dtype == np.float32
    # float32 inputs, float64 arithmetic: the float32 result is the rounded float64 one of the same inputs
    np.testing.assert_array_equal(
        y32, testing.conv2d_forward(x.astype(np.float32).astype(np.float64),
                                    w.astype(np.float32).astype(np.float64)).astype(np.float32))


# ================================================================ pooling output size

# (size, kernel, stride, padding, dilation, ceil_mode, output size), each worked by hand from the window
# starts i*stride - padding: floor mode keeps the windows that end inside the padded input; ceil mode also
# keeps a last, partial window, unless it starts in the right padding (index >= size).
POOL_SIZES = [
    (5, 2, 2, 0, 1, False, 2),  # starts 0, 2
    (5, 2, 2, 0, 1, True, 3),  # and 4, which starts inside
    (5, 2, 3, 1, 1, False, 2),  # starts -1, 2
    (5, 2, 3, 1, 1, True, 2),  # 5 would start in the right padding: dropped
    (5, 2, 2, 1, 1, True, 3),  # starts -1, 1, 3; 5 dropped
    (8, 3, 2, 0, 1, False, 3),  # starts 0, 2, 4
    (8, 3, 2, 0, 1, True, 4),  # and 6, whose window runs past the end
    (7, 3, 1, 0, 2, False, 3),  # dilated extent 5: starts 0, 1, 2
    (6, 2, 2, 1, 2, False, 3),  # extent 3 in the padded range -1..6: starts -1, 1, 3
    (6, 2, 2, 1, 2, True, 4),  # and 5, inside
    (6, 3, 2, 1, 1, True, 4),  # starts -1, 1, 3, 5
    (10, 3, None, 1, 1, False, 4),  # stride = kernel: starts -1, 2, 5, 8
    (10, 3, None, 1, 1, True, 4),
    (4, 4, 1, 2, 1, False, 5),  # padding half the kernel: starts -2 .. 2
    (1, 1, None, 0, 1, True, 1),
]


@pytest.mark.parametrize("row", POOL_SIZES, ids=str)
def test_max_pool1d_output_size(row):
    size, kernel, stride, padding, dilation, ceil_mode, expected = row
    x = _random((1, 2, size), 0)
    y, index = testing.max_pool1d_forward(x, kernel, stride=stride, padding=padding, dilation=dilation,
                                          ceil_mode=ceil_mode, return_indices=True)
    assert y.shape == index.shape == (1, 2, expected)
    # each output is the maximum of its window's cells inside the input
    for i in range(expected):
        first = i * (kernel if stride is None else stride) - padding
        cells = [c for c in range(first, first + dilation * (kernel - 1) + 1, dilation) if 0 <= c < size]
        np.testing.assert_array_equal(y[0, :, i], x[0][:, cells].max(axis=1))


def _pairs_of_rows():
    """Each row of POOL_SIZES with another of the same ceil_mode: the rows and columns of a 2-D case."""
    pairs = []
    for ceil_mode in (False, True):
        rows = [row for row in POOL_SIZES if row[5] == ceil_mode]
        pairs += list(zip(rows, rows[1:] + rows[:1]))
    return pairs


@pytest.mark.parametrize("rows", _pairs_of_rows(), ids=str)
def test_max_pool2d_output_size(rows):
    (h, kh, sh, ph, dh, ceil_mode, oh), (w, kw, sw, pw, dw, _, ow) = rows
    y = testing.max_pool2d_forward(_random((1, 1, h, w), 0), (kh, kw), stride=(sh or kh, sw or kw),
                                   padding=(ph, pw), dilation=(dh, dw), ceil_mode=ceil_mode)
    assert y.shape == (1, 1, oh, ow)


# ================================================================ names, signatures, docstrings, imports


def test_public_names():
    assert sorted(testing.__all__) == sorted(PUBLIC)
    assert all(callable(getattr(testing, name)) for name in PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC - {"gradcheck"}))
def test_signature_is_the_public_one_less_buffers_and_streams(name):
    ref = inspect.signature(getattr(testing, name))
    public = inspect.signature(getattr(lcnumba, name))
    library_only = {"out", "indices_out", "accumulate", "stream"}
    assert list(ref.parameters.values()) == [p for p in public.parameters.values() if p.name not in library_only]


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_documented_parameters_match_the_signature(name):
    docscrape = pytest.importorskip("numpydoc.docscrape", reason="the docs extra is not installed")
    function = getattr(testing, name)
    doc = docscrape.FunctionDoc(function)
    documented = [part.strip() for entry in doc["Parameters"] for part in entry.name.split(",")]
    assert documented == list(inspect.signature(function).parameters)
    assert doc["Returns"]
    # help() shows the real parameters
    assert f"{name}{inspect.signature(function)}" in pydoc.plain(pydoc.render_doc(function))


def test_references_import_nothing_of_the_library():
    """Only NumPy, the standard library, the package's own modules and the op table's names (plain data)."""
    allowed = {"numpy", "numpy.lib.stride_tricks", "operator", "linecache", "typing"}
    for path in Path(testing.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert {alias.name for alias in node.names} <= allowed, (path.name, ast.unparse(node))
            elif isinstance(node, ast.ImportFrom):
                table_names = node.level == 2 and node.module is None and [a.name for a in node.names] == ["table"]
                assert node.level == 1 or node.module in allowed or table_names, (path.name, ast.unparse(node))
