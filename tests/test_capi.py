"""C entry points (lcnumba.capi): bitwise agreement with the Python API, every status code, the header, a C host.

Entry points compile on first use (their cores load from Numba's on-disk
cache after the first run), so each one is called once per dtype on tiny
shapes, every case of a family in one test.
"""

import ctypes
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import lcnumba as lc
from lcnumba import capi, table
from lcnumba.capi import Status, cores, entry

from families import CONV_NAMES, TRANSPOSED

DTYPES = {"f32": np.float32, "f64": np.float64}
ROOT = pathlib.Path(lc.__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _restore_blas_threads():
    """``capi.address`` sets BLAS to one thread for the process; give the other test modules theirs back."""
    from lcnumba.cpu.blas import _blas_libraries

    saved = [(lib, lib.num_threads) for lib in _blas_libraries()]
    yield
    for lib, threads in saved:
        lib.set_num_threads(threads)


def _call(name, *args):
    return capi.ctypes_function(name)(*args)


def _ok(name, *args):
    status = _call(name, *args)
    assert status == Status.OK, f"{name}: {capi.status_message(status)}"


def _same(got, want):
    """Bitwise equality (NaN payloads and signed zeros included)."""
    want = np.ascontiguousarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


def _random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _gradients_match(name, inputs, scalars, want):
    """Call the backward ``name`` with NaN-filled gradient buffers shaped as ``want``; compare them bitwise."""
    grads = [np.full(expected.shape, np.nan, expected.dtype) for expected in want]
    _ok(name, *inputs, *grads, *scalars)
    for got, expected in zip(grads, want):
        _same(got, expected)


# ---------------------------------------------------------------- convolution family

# 2-D: groups, stride, asymmetric padding and dilation all in play; 1-D likewise.
GEOMETRY_2D = dict(x=(2, 4, 7, 8), f=4, kernel=(3, 2), stride=(2, 1), pads=(1, 0, 2, 1), dilation=(1, 2), groups=2,
                   tiles=(2, 3))
GEOMETRY_1D = dict(x=(2, 4, 9), f=4, kernel=3, stride=2, pads=(1, 2), dilation=1, groups=2, tiles=2)
# The transposed families: output_padding as well, in 1-D at least the stride (allowed below the dilation).
TRANSPOSE_2D = dict(x=(2, 4, 3, 4), f=4, kernel=(3, 2), stride=(2, 1), pads=(1, 0, 0, 1), output_padding=(1, 0),
                    dilation=(1, 2), groups=2, tiles=(2, 3))
TRANSPOSE_1D = dict(x=(2, 4, 5), f=4, kernel=3, stride=2, pads=(1, 2), output_padding=2, dilation=3, groups=2,
                    tiles=2)
TRANSPOSE_NAMES = tuple(dict.fromkeys(fam.name for fam in TRANSPOSED))
FAMILIES = CONV_NAMES + TRANSPOSE_NAMES


class _Conv:
    """Shapes, Python keyword arguments and C arguments of one family on the test geometry.

    A transposed family's weight is (grid, c, f / groups, kernel), its grid the tiles or the input positions.
    """

    def __init__(self, family):
        self.family = family
        self.one_d = "conv1d" in family
        transposed = family.endswith("_transpose")
        g = {(False, False): GEOMETRY_2D, (False, True): GEOMETRY_1D, (True, False): TRANSPOSE_2D,
             (True, True): TRANSPOSE_1D}[transposed, self.one_d]
        self.x_shape = g["x"]
        f, groups = g["f"], g["groups"]
        channels = (self.x_shape[1], f // groups) if transposed else (f, self.x_shape[1] // groups)
        extra = ("output_padding",) if transposed else ()
        if self.one_d:
            left, right = g["pads"]
            self.kwargs = dict(stride=g["stride"], padding=g["pads"], **{k: g[k] for k in extra},
                               dilation=g["dilation"], groups=groups)
            self.geometry = (g["stride"], left, right, *(g[k] for k in extra), g["dilation"], groups)
            kernel = (g["kernel"],)
            tiles = (g["tiles"],)
        else:
            top, left, bottom, right = g["pads"]
            self.kwargs = dict(stride=g["stride"], padding=((top, bottom), (left, right)),
                               **{k: g[k] for k in extra}, dilation=g["dilation"], groups=groups)
            self.geometry = (*g["stride"], top, left, bottom, right, *(v for k in extra for v in g[k]),
                             *g["dilation"], groups)
            kernel = g["kernel"]
            tiles = g["tiles"]
        sharing = table.family(family).sharing
        query = getattr(lc, f"{family}_output_shape")
        if sharing == "local" and not transposed:  # a bank per output position: the query takes kernel and filters
            self.y_shape = query(self.x_shape, kernel[-1] if self.one_d else kernel, f, **self.kwargs)
            self.w_shape = (*self.y_shape[2:], *channels, *kernel)
        else:  # a bank per tile, or per input position when transposed
            grid = {"shared": (), "tiled": tiles, "local": self.x_shape[2:]}[sharing]
            self.w_shape = (*grid, *channels, *kernel)
            self.y_shape = query(self.x_shape, self.w_shape, **self.kwargs)
        self.b_shape = (f, *{"shared": (), "tiled": tiles, "local": self.y_shape[2:]}[sharing])

    @classmethod
    def case(cls, family, dtype, suffix=""):
        """The family's ``_Conv``, the NumPy dtype of ``dtype`` (``"f32"``, ``"f64"``) and the pattern of its entry
        points' names, ``"lcn_<family>_{}<suffix>_<dtype>"`` (``{}`` the pass)."""
        return cls(family), DTYPES[dtype], f"lcn_{family}_{{}}{suffix}_{dtype}"

    def python(self, function):
        return getattr(lc, f"{self.family}_{function}")

    def c_dims(self):
        return (*self.x_shape, *self.w_shape, *self.geometry)

    def arrays(self, dtype):
        """Random x, w, b, dy and starting buffers for dw and db (``accumulate``), of this family's shapes."""
        shapes = (self.x_shape, self.w_shape, self.b_shape, self.y_shape, self.w_shape, self.b_shape)
        return [_random(shape, dtype, seed) for seed, shape in enumerate(shapes, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_conv_family_bitwise(family, dtype):
    conv, dt, name = _Conv.case(family, dtype)
    tiled = family.startswith("tiled")
    x, w, b, dy, dw0, db0 = conv.arrays(dt)
    for mode_index, mode in enumerate(("periodic", "block") if tiled else (None,)):
        kwargs = dict(conv.kwargs, **({"tile_mode": mode} if tiled else {}))
        flag = (mode_index,) if tiled else ()

        for bias in (b, None):
            want = conv.python("forward")(x, w, bias, **kwargs)
            y = np.full(conv.y_shape, np.nan, dt)
            _ok(name.format("forward"), x, w, bias, y, *conv.c_dims(), *flag)
            _same(y, want)

        want = conv.python("backward_input")(dy, w, conv.x_shape, **kwargs)
        dx = np.full(conv.x_shape, np.nan, dt)
        _ok(name.format("backward_input"), dy, w, dx, *conv.c_dims(), *flag)
        _same(dx, want)

        for accumulate in (0, 1):
            want = conv.python("backward_weight")(dy, x, conv.w_shape, **kwargs, out=dw0.copy(),
                                                  accumulate=bool(accumulate))
            dw = dw0.copy()
            _ok(name.format("backward_weight"), dy, x, dw, *conv.c_dims(), *flag, accumulate)
            _same(dw, want)

            bias_kwargs = {"tile_mode": mode} if tiled else {}
            want = conv.python("backward_bias")(dy, conv.b_shape, **bias_kwargs, out=db0.copy(),
                                                accumulate=bool(accumulate))
            db = db0.copy()
            tiles = conv.b_shape[1:] if tiled else ()
            _ok(name.format("backward_bias"), dy, db, *conv.y_shape, *tiles, *flag, accumulate)
            _same(db, want)


@pytest.mark.parametrize("family", ["conv2d", "local_conv1d", "local_conv2d_transpose"])
def test_conv_empty_batch(family):
    """N = 0: nothing to compute; the weight gradient is zeroed (or kept with accumulate), as in Python."""
    conv = _Conv(family)
    name = f"lcn_{family}_{{}}_f32"
    x = np.zeros((0, *conv.x_shape[1:]), np.float32)
    w = _random(conv.w_shape, np.float32, 0)
    y = np.zeros((0, *conv.y_shape[1:]), np.float32)
    dims = (0, *conv.c_dims()[1:])
    _ok(name.format("forward"), x, w, None, y, *dims)
    for accumulate in (0, 1):
        dw = w.copy()
        _ok(name.format("backward_weight"), y, x, dw, *dims, accumulate)
        _same(dw, conv.python("backward_weight")(y, x, conv.w_shape, **conv.kwargs, out=w.copy(),
                                                 accumulate=bool(accumulate)))


# ---------------------------------------------------------------- padding modes (the _ex entry points)

PADDING_MODES = table.PADDING_MODES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", CONV_NAMES)
def test_padding_modes_bitwise(family, dtype):
    """``lcn_<family>_<pass>_ex`` with each padding mode gives the Python API's bits with that ``padding_mode``."""
    conv, dt, name = _Conv.case(family, dtype, "_ex")
    flag = (0,) if family.startswith("tiled") else ()  # periodic tiles, the Python default
    x, w, b, dy, dw0, _ = conv.arrays(dt)
    for mode, padding_mode in enumerate(PADDING_MODES):
        kwargs = dict(conv.kwargs, padding_mode=padding_mode)
        y = np.full(conv.y_shape, np.nan, dt)
        _ok(name.format("forward"), x, w, b, y, *conv.c_dims(), *flag, mode)
        _same(y, conv.python("forward")(x, w, b, **kwargs))
        dx = np.full(conv.x_shape, np.nan, dt)
        _ok(name.format("backward_input"), dy, w, dx, *conv.c_dims(), *flag, mode)
        _same(dx, conv.python("backward_input")(dy, w, conv.x_shape, **kwargs))
        for accumulate in (0, 1):
            dw = dw0.copy()
            _ok(name.format("backward_weight"), dy, x, dw, *conv.c_dims(), *flag, accumulate, mode)
            _same(dw, conv.python("backward_weight")(dy, x, conv.w_shape, **kwargs, out=dw0.copy(),
                                                     accumulate=bool(accumulate)))


def test_padding_modes_in_chunks():
    """A batch padded in two chunks (one sample each: 2.25 Mi padded cells a sample): the weight gradient adds
    the chunks in the Python API's order, so the C and Python chunk sizes agree."""
    x = _random((2, 1, 1498, 1498), np.float32, 0)
    w = _random((1, 1, 3, 3), np.float32, 1)
    dy = _random((2, 1, 1498, 1498), np.float32, 2)
    dw = np.full(w.shape, np.nan, np.float32)
    _ok("lcn_conv2d_backward_weight_ex_f32", dy, x, dw, 2, 1, 1498, 1498, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        0, PADDING_MODES.index("circular"))
    _same(dw, lc.conv2d_backward_weight(dy, x, w.shape, padding=1, padding_mode="circular"))
    from lcnumba.cpu import conv_padded

    assert conv_padded.samples_per_chunk(2, 1, 1500, 1500, conv_padded.CHUNK_ELEMENTS) == 1


# (changes to the valid conv2d arguments, padding_mode, expected status): PyTorch's bounds, as the Python API's
PADDING_CASES = [
    ("mode 4", {}, 4, Status.ERR_FLAG),
    ("mode -1", {}, -1, Status.ERR_FLAG),
    ("reflect, padding = size", dict(pt=5, kh=1), 1, Status.ERR_GEOMETRY),
    ("reflect, padding = size on the right", dict(pr=5, kw=1), 1, Status.ERR_GEOMETRY),
    ("reflect, padding = size - 1", dict(pb=4, kh=1), 1, Status.OK),
    ("circular, padding = size", dict(pl=5, kw=1), 3, Status.OK),
    ("circular, padding = size + 1", dict(pt=6, kh=1), 3, Status.ERR_GEOMETRY),
    ("replicate, padding > size", dict(pt=7, pr=9), 2, Status.OK),
    ("zeros, padding > size", dict(pt=7, pr=9), 0, Status.OK),
]


@pytest.mark.parametrize("changes, mode, expected", [pytest.param(*c[1:], id=c[0]) for c in PADDING_CASES])
def test_padding_mode_status(changes, mode, expected):
    """The _ex entry points refuse what the Python API refuses (with a ValueError) and accept what it accepts."""
    values = _conv2d_args(**changes)
    x, w, b, _, n, c, h, wd, f, cg, kh, kw, sh, sw, pt, pl, pb, pr = values[:18]
    oh, ow = lc.conv2d_output_shape(x.shape, (f, cg, kh, kw), padding=((pt, pb), (pl, pr)))[2:]
    w = np.ones((f, cg, kh, kw), np.float32)
    y = np.full((n, f, oh, ow), 7, np.float32)
    for name in ("forward", "backward_input", "backward_weight"):
        args = {"forward": (x, w, b, y), "backward_input": (y, w, x.copy()), "backward_weight": (y, x, w.copy())}
        extra = (0,) if name == "backward_weight" else ()
        assert _call(f"lcn_conv2d_{name}_ex_f32", *args[name], *values[4:], *extra, mode) == expected, name
    assert (y == 7).all() or expected == Status.OK
    python = dict(padding=((pt, pb), (pl, pr)),
                  padding_mode=PADDING_MODES[mode] if 0 <= mode < len(PADDING_MODES) else "wrap")
    if expected == Status.OK:
        lc.conv2d_forward(x, w, b, **python)
    else:
        with pytest.raises(ValueError):
            lc.conv2d_forward(x, w, b, **python)


def test_padding_modes_only_for_the_forward_families():
    """PyTorch's ConvTranspose pads with zeros only: no _ex form for a transposed family, nor for a bias gradient."""
    names = set(capi.names())
    for family in CONV_NAMES:
        for function in ("forward", "backward_input", "backward_weight"):
            assert f"lcn_{family}_{function}_ex_f64" in names
        assert f"lcn_{family}_backward_bias_ex_f64" not in names
    assert not [name for name in names if "_transpose_" in name and "_ex_" in name]
    text = capi.header()
    for mode, padding_mode in enumerate(PADDING_MODES):
        assert re.search(rf"^#define LCN_PADDING_{padding_mode.upper()} +{mode} ", text, re.M), padding_mode


# ---------------------------------------------------------------- max-pooling

# (kernel, stride, padding, dilation, ceil_mode) per axis pair; the 1-D forms use the second of each pair
POOL_GEOMETRIES = [((3, 2), (2, 3), (1, 1), (1, 1), 0), ((3, 3), (2, 2), (1, 0), (2, 1), 1)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_bitwise(dtype):
    dt = DTYPES[dtype]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (2, 3, 9, 11)).astype(dt)  # many ties
    x[0, 1, 2, 3] = np.nan  # NaN wins
    x[1, 0, 0, 5] = np.nan  # in the row the 1-D forms use
    x[1, 2, 4, 4] = -0.0
    for kernel, stride, padding, dilation, ceil_mode in POOL_GEOMETRIES:
        for one_d in (False, True):
            xx = x[:, :, 0, :].copy() if one_d else x
            if one_d:
                kw = dict(kernel_size=kernel[1], stride=stride[1], padding=padding[1], dilation=dilation[1],
                          ceil_mode=bool(ceil_mode))
                geometry = (kernel[1], stride[1], padding[1], dilation[1])
                prefix = "lcn_max_pool1d"
            else:
                kw = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                          ceil_mode=bool(ceil_mode))
                geometry = (*kernel, *stride, *padding, *dilation)
                prefix = "lcn_max_pool2d"
            want_y, want_i = getattr(lc, prefix[4:] + "_forward")(xx, return_indices=True, **kw)
            y = np.full(want_y.shape, np.inf, dt)
            indices = np.full(want_y.shape, -7, np.int64)
            _ok(f"{prefix}_forward_{dtype}", xx, y, indices, *xx.shape, *geometry, ceil_mode, 1)
            _same(y, want_y)
            _same(indices, want_i)
            y_only = np.full(want_y.shape, np.inf, dt)
            _ok(f"{prefix}_forward_{dtype}", xx, y_only, None, *xx.shape, *geometry, ceil_mode, 0)
            _same(y_only, getattr(lc, prefix[4:] + "_forward")(xx, **kw))

            dy = _random(want_y.shape, dt, 1)
            dx = np.full(xx.shape, np.nan, dt)
            _ok(f"{prefix}_backward_{dtype}", dy, want_i, dx, *xx.shape, *want_y.shape[2:])
            _same(dx, getattr(lc, prefix[4:] + "_backward")(dy, want_i, xx.shape))


# ---------------------------------------------------------------- NetVLAD


@pytest.mark.parametrize("dtype", DTYPES)
def test_netvlad_bitwise(dtype):
    dt = DTYPES[dtype]
    x = _random((3, 5, 2, 3), dt, 0)  # a (N, D, H, W) feature map: M = 6 descriptors
    w = _random((4, 5), dt, 1)  # K = 3 clusters and one ghost
    b = _random((4,), dt, 2)
    c = _random((3, 5), dt, 3)
    dy = _random((3, 15), dt, 4)
    dims = (3, 5, 6, 4, 3)
    for normalize_input in (1, 0):
        kw = dict(normalize_input=bool(normalize_input), eps=1e-12)
        y = np.full((3, 15), np.nan, dt)
        _ok(f"lcn_netvlad_forward_{dtype}", x, w, b, c, y, *dims, normalize_input, 1e-12)
        _same(y, lc.netvlad_forward(x, w, b, c, **kw))
        _gradients_match(f"lcn_netvlad_backward_{dtype}", (dy, x, w, b, c), (*dims, normalize_input, 1e-12),
                         lc.netvlad_backward(dy, x, w, b, c, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_netvlad_options_bitwise(dtype):
    """lcn_netvlad_*_ex: the mask (NULL or not) and both normalisation switches, against the Python API."""
    dt = DTYPES[dtype]
    x = _random((3, 5, 2, 3), dt, 0)
    w, b, c, dy = _random((4, 5), dt, 1), _random((4,), dt, 2), _random((3, 5), dt, 3), _random((3, 15), dt, 4)
    mask = np.ones((3, 6), bool)
    mask[0, ::2] = False
    mask[2] = False  # a sample without descriptors
    dims = (3, 5, 6, 4, 3)
    for use_mask, normalize_input, intra, final in ((1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0), (1, 1, 0, 0)):
        kw = dict(normalize_input=bool(normalize_input), intra_normalize=bool(intra), final_normalize=bool(final),
                  mask=mask if use_mask else None, eps=1e-12)
        c_mask = mask.astype(np.uint8) * 3 if use_mask else None  # any nonzero value is a valid descriptor
        flags = (normalize_input, intra, final, 1e-12)
        y = np.full((3, 15), np.nan, dt)
        _ok(f"lcn_netvlad_forward_ex_{dtype}", x, w, b, c, c_mask, y, *dims, *flags)
        _same(y, lc.netvlad_forward(x, w, b, c, **kw))
        _gradients_match(f"lcn_netvlad_backward_ex_{dtype}", (dy, x, w, b, c, c_mask), (*dims, *flags),
                         lc.netvlad_backward(dy, x, w, b, c, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_vlad_aggregate_and_pca_bitwise(dtype):
    dt = DTYPES[dtype]
    x = _random((3, 5, 2, 3), dt, 0)
    a = _random((3, 4, 2, 3), dt, 1)
    c = _random((4, 5), dt, 2)
    dy = _random((3, 20), dt, 3)
    for intra, final in ((1, 1), (0, 1), (1, 0), (0, 0)):
        kw = dict(intra_normalize=bool(intra), final_normalize=bool(final), eps=1e-12)
        y = np.full((3, 20), np.nan, dt)
        _ok(f"lcn_vlad_aggregate_forward_{dtype}", x, a, c, y, 3, 5, 6, 4, intra, final, 1e-12)
        _same(y, lc.vlad_aggregate_forward(x, a, c, **kw))
        _gradients_match(f"lcn_vlad_aggregate_backward_{dtype}", (dy, x, a, c), (3, 5, 6, 4, intra, final, 1e-12),
                         lc.vlad_aggregate_backward(dy, x, a, c, **kw))

    v, p, bias, dz = _random((3, 20), dt, 4), _random((6, 20), dt, 5), _random((6,), dt, 6), _random((3, 6), dt, 7)
    z = np.full((3, 6), np.nan, dt)
    _ok(f"lcn_netvlad_pca_forward_{dtype}", v, p, bias, z, 3, 20, 6, 1e-12)
    _same(z, lc.netvlad_pca_forward(v, p, bias))
    _gradients_match(f"lcn_netvlad_pca_backward_{dtype}", (dz, v, p, bias), (3, 20, 6, 1e-12),
                     lc.netvlad_pca_backward(dz, v, p, bias))


def test_netvlad_parts_empty_batch():
    """N = 0: the forwards compute nothing; the summed gradients are zero, as in Python."""
    x, a, c = np.zeros((0, 2, 3), np.float32), np.zeros((0, 2, 3), np.float32), np.ones((2, 2), np.float32)
    dc = np.full((2, 2), 7, np.float32)
    empty = np.zeros((0, 4), np.float32)
    _ok("lcn_vlad_aggregate_forward_f32", x, a, c, empty, 0, 2, 3, 2, 1, 1, 1e-12)
    _ok("lcn_vlad_aggregate_backward_f32", empty, x, a, c, x.copy(), a.copy(), dc, 0, 2, 3, 2, 1, 1, 1e-12)
    _same(dc, lc.vlad_aggregate_backward(empty, x, a, c)[2])
    p, bias = np.ones((3, 4), np.float32), np.ones(3, np.float32)
    dp, dbias = np.full((3, 4), 7, np.float32), np.full(3, 7, np.float32)
    _ok("lcn_netvlad_pca_backward_f32", np.zeros((0, 3), np.float32), empty, p, bias, empty.copy(), dp, dbias,
        0, 4, 3, 1e-12)
    for got, want in zip((dp, dbias), lc.netvlad_pca_backward(np.zeros((0, 3), np.float32), empty, p, bias)[1:]):
        _same(got, want)


# ---------------------------------------------------------------- status codes


def _conv2d_args(**changes):
    """Valid arguments of lcn_conv2d_forward_f32 (x 1x2x5x5, w 2x2x3x3 -> y 1x2x3x3), with ``changes``."""
    args = dict(x=np.ones((1, 2, 5, 5), np.float32), w=np.ones((2, 2, 3, 3), np.float32),
                b=np.ones(2, np.float32), y=np.zeros((1, 2, 3, 3), np.float32),
                n=1, c=2, h=5, wd=5, f=2, cg=2, kh=3, kw=3, sh=1, sw=1, pt=0, pl=0, pb=0, pr=0, dil_h=1, dil_w=1,
                groups=1)
    args.update(changes)
    return list(args.values())


_BIG = 2**31 - 1

CONV2D_CASES = [
    ("null x", dict(x=None), Status.ERR_NULL),
    ("null y", dict(y=None), Status.ERR_NULL),
    ("negative batch", dict(n=-1), Status.ERR_SIZE),
    ("no channels", dict(c=0), Status.ERR_SIZE),
    ("size 2^31", dict(h=2**31), Status.ERR_SIZE),
    ("buffer > 2^59 elements", dict(n=_BIG, c=_BIG, cg=_BIG), Status.ERR_SIZE),
    ("stride 0", dict(sh=0), Status.ERR_PARAMETER),
    ("negative padding", dict(pr=-1), Status.ERR_PARAMETER),
    ("dilation 2^31", dict(dil_w=2**31), Status.ERR_PARAMETER),
    ("groups 0", dict(groups=0), Status.ERR_PARAMETER),
    ("channels not divisible", dict(groups=3, cg=1), Status.ERR_GROUPS),
    ("filters not divisible", dict(c=4, f=3, cg=2, groups=2), Status.ERR_GROUPS),
    ("weight channels", dict(cg=1), Status.ERR_SHAPE),
    ("kernel larger than the padded input", dict(kh=6, pt=0), Status.ERR_GEOMETRY),
    ("dilated kernel larger", dict(dil_w=3), Status.ERR_GEOMETRY),
]


@pytest.mark.parametrize("args, expected", [pytest.param(c[1], c[2], id=c[0]) for c in CONV2D_CASES])
def test_conv2d_status(args, expected):
    values = _conv2d_args(**args)
    y = values[3]
    if isinstance(y, np.ndarray):
        y[...] = 7
    assert _call("lcn_conv2d_forward_f32", *values) == expected
    if isinstance(y, np.ndarray):
        assert (y == 7).all(), "a failed call wrote its output"


def test_status_overlap_and_null_bias():
    values = _conv2d_args(b=None)
    assert _call("lcn_conv2d_forward_f32", *values) == Status.OK  # a NULL bias is allowed
    x = np.ones((1, 2, 5, 5), np.float32)
    values = _conv2d_args(x=x, y=x)  # y would overwrite x
    assert _call("lcn_conv2d_forward_f32", *values) == Status.ERR_OVERLAP
    values = _conv2d_args(x=x, y=x.reshape(-1)[32:])  # partial overlap
    assert _call("lcn_conv2d_forward_f32", *values) == Status.ERR_OVERLAP
    assert (x == 1).all()
    # NetVLAD's gradients may not overlap each other either
    x, w, b, c, dy = (np.ones(s, np.float32) for s in ((1, 2, 3), (2, 2), (2,), (1, 2), (1, 2)))
    dx, dc = np.zeros((1, 2, 3), np.float32), np.zeros((1, 2), np.float32)
    dwb = np.zeros(6, np.float32)
    assert _call("lcn_netvlad_backward_f32", dy, x, w, b, c, dx, dwb, dwb[3:], dc, 1, 2, 3, 2, 1, 1,
                 1e-12) == Status.ERR_OVERLAP


def test_status_flags_and_local_shape():
    conv = _Conv("tiled_conv2d")
    x = np.ones(conv.x_shape, np.float32)
    w = np.ones(conv.w_shape, np.float32)
    y = np.zeros(conv.y_shape, np.float32)
    assert _call("lcn_tiled_conv2d_forward_f32", x, w, None, y, *conv.c_dims(), 2) == Status.ERR_FLAG
    dw = np.zeros(conv.w_shape, np.float32)
    assert _call("lcn_tiled_conv2d_backward_weight_f32", y, x, dw, *conv.c_dims(), 0, -1) == Status.ERR_FLAG
    db = np.zeros(conv.b_shape, np.float32)
    assert _call("lcn_tiled_conv2d_backward_bias_f32", y, db, *conv.y_shape, *conv.b_shape[1:], 0, 2) \
        == Status.ERR_FLAG

    local = _Conv("local_conv2d")
    x = np.ones(local.x_shape, np.float32)
    w = np.ones(local.w_shape, np.float32)
    y = np.zeros(local.y_shape, np.float32)
    dims = list(local.c_dims())
    dims[4] += 1  # the weight's oh is not the output height
    assert _call("lcn_local_conv2d_forward_f32", x, w, None, y, *dims) == Status.ERR_SHAPE
    dims = list(_Conv("local_conv1d").c_dims())
    dims[3] -= 1  # the weight's ol
    x1 = np.ones(GEOMETRY_1D["x"], np.float32)
    assert _call("lcn_local_conv1d_backward_input_f32", x1, x1, x1.copy(), *dims) == Status.ERR_SHAPE
    # a 1-D size of zero
    dims = list(_Conv("conv1d").c_dims())
    dims[2] = 0
    assert _call("lcn_conv1d_forward_f32", x1, x1, None, x1.copy(), *dims) == Status.ERR_SIZE


def test_status_max_pool():
    x = np.ones((1, 2, 6, 6), np.float32)
    y = np.zeros((1, 2, 3, 3), np.float32)
    indices = np.zeros((1, 2, 3, 3), np.int64)
    geometry = [2, 2, 2, 2, 0, 0, 1, 1]
    name = "lcn_max_pool2d_forward_f32"
    assert _call(name, x, y, indices, 1, 2, 6, 6, *geometry, 0, 1) == Status.OK
    assert _call(name, x, y, None, 1, 2, 6, 6, *geometry, 0, 1) == Status.ERR_NULL  # indices requested
    assert _call(name, x, y, indices, 1, 2, 6, 6, *geometry, 0, 0) == Status.ERR_FLAG  # indices not requested
    assert _call(name, x, y, None, 1, 2, 6, 6, *geometry, 2, 0) == Status.ERR_FLAG  # ceil_mode 2
    assert _call(name, x, y, None, 1, 2, 6, 6, 2, 2, 0, 2, 0, 0, 1, 1, 0, 0) == Status.ERR_PARAMETER  # stride 0
    assert _call(name, x, y, None, 1, 2, 6, 6, 2, 2, 2, 2, 2, 0, 1, 1, 0, 0) == Status.ERR_GEOMETRY  # pad > k / 2
    assert _call(name, x, y, None, 1, 2, 6, 6, 4, 4, 1, 1, 0, 0, 3, 1, 0, 0) == Status.ERR_GEOMETRY  # kernel 10 > 6
    assert _call(name, x, y, None, 1, 2, 6, -6, *geometry, 0, 0) == Status.ERR_SIZE
    assert _call(name, x, x, None, 1, 2, 6, 6, *geometry, 0, 0) == Status.ERR_OVERLAP

    dy = np.ones((1, 2, 3, 3), np.float32)
    dx = np.full((1, 2, 6, 6), 5, np.float32)
    name = "lcn_max_pool2d_backward_f32"
    for bad in (36, -2):  # outside [-1, h * w)
        indices[0, 1, 2, 2] = bad
        assert _call(name, dy, indices, dx, 1, 2, 6, 6, 3, 3) == Status.ERR_INDEX
        assert (dx == 5).all(), "the index check runs before dx is written"
    indices[0, 1, 2, 2] = -1  # -1 (a window without cells) is allowed
    assert _call(name, dy, indices, dx, 1, 2, 6, 6, 3, 3) == Status.OK
    assert _call(name, dy, None, dx, 1, 2, 6, 6, 3, 3) == Status.ERR_NULL


def test_status_netvlad():
    x, w, b, c = (np.ones(s, np.float32) for s in ((1, 2, 3), (2, 2), (2,), (1, 2)))
    y = np.zeros((1, 2), np.float32)
    name = "lcn_netvlad_forward_f32"
    assert _call(name, x, w, b, c, y, 1, 2, 3, 2, 1, 1, 1e-12) == Status.OK
    assert _call(name, x, w, None, c, y, 1, 2, 3, 2, 1, 1, 1e-12) == Status.ERR_NULL  # bias is required
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        assert _call(name, x, w, b, c, y, 1, 2, 3, 2, 1, 1, eps) == Status.ERR_PARAMETER
    assert _call(name, x, w, b, c, y, 1, 2, 3, 2, 1, 2, 1e-12) == Status.ERR_FLAG
    assert _call(name, x, w, b, c, y, 1, 2, 3, 1, 2, 1, 1e-12) == Status.ERR_SHAPE  # k > kg
    assert _call(name, x, w, b, c, y, 1, 0, 3, 2, 1, 1, 1e-12) == Status.ERR_SIZE


def _conv2d_transpose_args(**changes):
    """Valid arguments of lcn_conv2d_transpose_forward_f32 (x 1x2x3x3, w 2x2x3x3, stride 2, padding 1,
    output_padding 1 -> y 1x2x6x6), with ``changes``."""
    args = dict(x=np.ones((1, 2, 3, 3), np.float32), w=np.ones((2, 2, 3, 3), np.float32),
                b=np.ones(2, np.float32), y=np.zeros((1, 2, 6, 6), np.float32),
                n=1, c=2, h=3, wd=3, wc=2, fg=2, kh=3, kw=3, sh=2, sw=2, pt=1, pl=1, pb=1, pr=1, oph=1, opw=1,
                dil_h=1, dil_w=1, groups=1)
    args.update(changes)
    return list(args.values())


CONV2D_TRANSPOSE_CASES = [
    ("null x", dict(x=None), Status.ERR_NULL),
    ("null weight", dict(w=None), Status.ERR_NULL),
    ("negative batch", dict(n=-1), Status.ERR_SIZE),
    ("no output channels", dict(fg=0), Status.ERR_SIZE),
    ("buffer > 2^59 elements", dict(n=_BIG, c=_BIG, wc=_BIG), Status.ERR_SIZE),
    ("output > 2^59 elements", dict(n=2**28, fg=_BIG), Status.ERR_SIZE),
    ("stride 0", dict(sw=0), Status.ERR_PARAMETER),
    ("negative output_padding", dict(opw=-1), Status.ERR_PARAMETER),
    ("output_padding = stride", dict(oph=2), Status.ERR_PARAMETER),
    ("output_padding = dilation > stride", dict(sw=1, opw=2, dil_w=2), Status.ERR_PARAMETER),
    ("channels not divisible", dict(groups=3), Status.ERR_GROUPS),
    ("weight channels", dict(wc=1), Status.ERR_SHAPE),
    ("padding larger than the kernel adds", dict(pt=4, pb=4), Status.ERR_GEOMETRY),
]


def test_conv_transpose_status():
    """Every status of the transposed entry points (the 2-D shared forward, and the flags and local weights)."""
    for what, changes, expected in CONV2D_TRANSPOSE_CASES:
        values = _conv2d_transpose_args(**changes)
        y = values[3]
        y[...] = 7
        assert _call("lcn_conv2d_transpose_forward_f32", *values) == expected, what
        assert (y == 7).all(), f"{what}: a failed call wrote its output"
    assert _call("lcn_conv2d_transpose_forward_f32", *_conv2d_transpose_args(b=None)) == Status.OK
    values = _conv2d_transpose_args()
    x, w = values[0], values[1]
    assert _call("lcn_conv2d_transpose_forward_f32", *_conv2d_transpose_args(x=x, y=x)) == Status.ERR_OVERLAP
    dy = np.ones((1, 2, 6, 6), np.float32)
    assert _call("lcn_conv2d_transpose_backward_input_f32", dy, w, dy.reshape(-1)[4:], *values[4:]) \
        == Status.ERR_OVERLAP  # dx inside dy
    assert (x == 1).all() and (dy == 1).all()

    tiled = _Conv("tiled_conv2d_transpose")
    x, w = np.ones(tiled.x_shape, np.float32), np.ones(tiled.w_shape, np.float32)
    y = np.zeros(tiled.y_shape, np.float32)
    assert _call("lcn_tiled_conv2d_transpose_forward_f32", x, w, None, y, *tiled.c_dims(), 2) == Status.ERR_FLAG
    assert _call("lcn_tiled_conv2d_transpose_backward_weight_f32", y, x, w, *tiled.c_dims(), 0, 2) \
        == Status.ERR_FLAG
    local = _Conv("local_conv1d_transpose")
    x, w = np.ones(local.x_shape, np.float32), np.ones(local.w_shape, np.float32)
    dims = list(local.c_dims())
    dims[3] -= 1  # the weight's wl is not the input length
    assert _call("lcn_local_conv1d_transpose_backward_input_f32", np.ones(local.y_shape, np.float32), w, x, *dims) \
        == Status.ERR_SHAPE


def test_status_netvlad_parts():
    """The statuses of the NetVLAD options, the aggregation and the PCA layer."""
    x, w, b, c = (np.ones(s, np.float32) for s in ((1, 2, 3), (2, 2), (2,), (1, 2)))
    y = np.zeros((1, 2), np.float32)
    mask = np.ones((1, 3), np.uint8)
    name = "lcn_netvlad_forward_ex_f32"
    assert _call(name, x, w, b, c, None, y, 1, 2, 3, 2, 1, 1, 1, 1, 1e-12) == Status.OK  # NULL mask: all valid
    assert _call(name, x, w, b, c, mask, None, 1, 2, 3, 2, 1, 1, 1, 1, 1e-12) == Status.ERR_NULL
    assert _call(name, x, w, b, c, mask, y, 1, 2, 3, 2, 1, 1, 2, 1, 1e-12) == Status.ERR_FLAG  # intra_normalize
    assert _call(name, x, w, b, c, mask, y, 1, 2, 3, 2, 1, 1, 1, -1, 1e-12) == Status.ERR_FLAG  # final_normalize
    assert _call(name, x, w, b, c, mask, y, 1, 2, 3, 2, 1, 1, 1, 1, 0.0) == Status.ERR_PARAMETER
    assert _call(name, x, w, b, c, mask, y, 1, 2, 3, 1, 2, 1, 1, 1, 1e-12) == Status.ERR_SHAPE  # k > kg
    assert _call(name, x, w, b, c, mask, y, 1, 2, 0, 2, 1, 1, 1, 1, 1e-12) == Status.ERR_SIZE
    assert _call(name, x, w, b, c, y.ctypes.data, y, 1, 2, 3, 2, 1, 1, 1, 1, 1e-12) == Status.ERR_OVERLAP
    grads = [np.zeros(s, np.float32) for s in ((1, 2, 3), (2, 2), (2,), (1, 2))]
    assert _call("lcn_netvlad_backward_ex_f32", y, x, w, b, c, grads[0].ctypes.data, *grads, 1, 2, 3, 2, 1, 1, 1, 1,
                 1e-12) == Status.ERR_OVERLAP  # a mask inside dx

    a = np.ones((1, 1, 3), np.float32)
    name = "lcn_vlad_aggregate_forward_f32"
    assert _call(name, x, a, c, y, 1, 2, 3, 1, 1, 1, 1e-12) == Status.OK
    assert _call(name, x, None, c, y, 1, 2, 3, 1, 1, 1, 1e-12) == Status.ERR_NULL
    assert _call(name, x, a, c, y, 1, 2, 3, 0, 1, 1, 1e-12) == Status.ERR_SIZE
    assert _call(name, x, a, c, y, 1, 2, 3, 1, 1, 1, float("inf")) == Status.ERR_PARAMETER
    assert _call(name, x, a, c, y, 1, 2, 3, 1, 1, 2, 1e-12) == Status.ERR_FLAG
    assert _call(name, x, a, c, x.reshape(-1)[4:], 1, 2, 3, 1, 1, 1, 1e-12) == Status.ERR_OVERLAP
    dx, da = np.zeros((1, 2, 3), np.float32), np.zeros((1, 1, 3), np.float32)
    assert _call("lcn_vlad_aggregate_backward_f32", y, x, a, c, dx, da, dx.reshape(-1)[4:], 1, 2, 3, 1, 1, 1,
                 1e-12) == Status.ERR_OVERLAP  # two gradients overlap

    v, p, bias, z = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), np.ones(3, np.float32), \
        np.zeros((2, 3), np.float32)
    name = "lcn_netvlad_pca_forward_f32"
    assert _call(name, v, p, bias, z, 2, 4, 3, 1e-12) == Status.OK
    assert _call(name, v, p, None, z, 2, 4, 3, 1e-12) == Status.ERR_NULL
    assert _call(name, v, p, bias, z, -1, 4, 3, 1e-12) == Status.ERR_SIZE
    assert _call(name, v, p, bias, z, 2, 4, 3, float("nan")) == Status.ERR_PARAMETER
    assert _call(name, v, p, bias, p.reshape(-1)[6:], 2, 4, 3, 1e-12) == Status.ERR_OVERLAP
    dv, dp = np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)
    assert _call("lcn_netvlad_pca_backward_f32", z, v, p, bias, dv, dp, bias, 2, 4, 3, 1e-12) \
        == Status.ERR_OVERLAP  # dbias is the input bias

_INTERNAL = """
import ctypes, sys
from lcnumba import capi
# conv2d backward_weight whose reduction workspace (2 x 2^24 x 2^26 floats, 2^53 bytes)
# cannot be allocated: the driver asks for it before it reads any buffer, so the
# buffers can be made-up addresses, spaced so that their claimed sizes do not overlap.
dy, x, dw = 1 << 20, 1 << 40, 1 << 42
status = capi.ctypes_function("lcn_conv2d_backward_weight_f32")(
    dy, x, dw, 1, 1 << 26, 2, 2, 1 << 24, 1 << 26, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0)
print("status", status)
# the same driver call from the transposed family: its x is the forward op's dy, its dy the forward op's x
status = capi.ctypes_function("lcn_conv2d_transpose_backward_weight_f32")(
    x, dy, dw, 1, 1 << 24, 2, 2, 1 << 24, 1 << 26, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0)
print("transposed status", status)
"""


def test_status_internal():
    """A kernel that fails (its workspace cannot be allocated) returns ERR_INTERNAL; run apart, to be safe."""
    result = subprocess.run([sys.executable, "-c", _INTERNAL], capture_output=True, text=True, timeout=600,
                            env=_python_env())
    assert result.returncode == 0, result.stderr
    assert f"\nstatus {int(Status.ERR_INTERNAL)}\n" in "\n" + result.stdout, result.stdout + result.stderr
    assert f"transposed status {int(Status.ERR_INTERNAL)}" in result.stdout, result.stdout + result.stderr


def test_every_status_code_is_tested_and_documented():
    source = pathlib.Path(__file__).read_text()
    page = (ROOT / "docs" / "capi.md").read_text()
    for status in Status:
        assert f"Status.{status.name}" in source, status
        assert f"| `LCN_{status.name}` | {int(status)} |" in page, status


# ---------------------------------------------------------------- Python helpers


def test_doc_example():
    # magictoken.capi_python.begin
    import numpy as np
    import lcnumba
    from lcnumba import capi

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)        # (N, C, H, W)
    w = rng.standard_normal((6, 6, 4, 3, 3, 3), dtype=np.float32)  # (OH, OW, F, C, KH, KW)
    y = np.empty((2, 4, 6, 6), np.float32)                         # (N, F, OH, OW)

    forward = capi.ctypes_function("lcn_local_conv2d_forward_f32")
    status = forward(x, w, None, y,             # buffers; bias NULL
                     2, 3, 8, 8,                # n, c, h, w
                     6, 6, 4, 3, 3, 3,          # oh, ow, f, cg, kh, kw
                     1, 1,                      # stride_h, stride_w
                     0, 0, 0, 0,                # pad_top, pad_left, pad_bottom, pad_right
                     1, 1, 1)                   # dilation_h, dilation_w, groups
    assert status == capi.Status.OK
    assert np.array_equal(y, lcnumba.local_conv2d_forward(x, w))

    address = capi.address("lcn_local_conv2d_forward_f32")  # an int, for a C host
    # magictoken.capi_python.end
    assert address == capi.address("lcn_local_conv2d_forward_f32")


def test_names_and_lookup():
    names = capi.names()
    assert len(names) == len(set(names)) == 156  # 120, and the 36 padding-mode forms of the conv families
    for family in FAMILIES:
        for function in ("forward", "backward_input", "backward_weight", "backward_bias"):
            for dtype in DTYPES:
                assert f"lcn_{family}_{function}_{dtype}" in names
    for op in ("max_pool2d", "max_pool1d", "netvlad", "vlad_aggregate", "netvlad_pca"):
        for function in ("forward", "backward"):
            for dtype in DTYPES:
                assert f"lcn_{op}_{function}_{dtype}" in names
            assert f"lcn_netvlad_{function}_ex_{dtype}" in names
    with pytest.raises(ValueError, match="lcn_conv3d_forward_f32"):
        capi.address("lcn_conv3d_forward_f32")
    assert capi.status_message(-2).startswith("LCN_ERR_SIZE: ")


def test_ctypes_function_checks_numpy_buffers():
    fn = capi.ctypes_function("lcn_conv2d_forward_f32")
    assert fn.restype is ctypes.c_int32
    assert len(fn.argtypes) == 21
    values = _conv2d_args()
    values[0] = values[0].astype(np.float64)
    with pytest.raises(ctypes.ArgumentError, match="dtype float32"):
        fn(*values)
    values = _conv2d_args()
    values[3] = np.zeros((1, 2, 3, 6), np.float32)[..., ::2]
    with pytest.raises(ctypes.ArgumentError, match="C-contiguous"):
        fn(*values)
    values = _conv2d_args()
    values[3].flags.writeable = False
    with pytest.raises(ctypes.ArgumentError, match="writeable"):
        fn(*values)


def test_address_is_cached_and_serializes_blas():
    from lcnumba.cpu.blas import _blas_libraries

    first = capi.address("lcn_conv2d_forward_f32")
    assert capi.address("lcn_conv2d_forward_f32") == first
    assert all(lib.num_threads == 1 for lib in _blas_libraries())


def test_output_size_helpers_match_python():
    """The compiled output sizes the cores check with (int32 flags, as C passes them) against the Python API."""
    from lcnumba import geometry

    for size in range(1, 9):
        for kernel in range(1, 5):
            for stride in (1, 2, 3):
                for dilation in (1, 2):
                    for pads in ((0, 0), (1, 0), (2, 1)):
                        assert cores.conv_output_size(size, kernel, stride, dilation, *pads) == \
                            geometry.output_size(size, kernel, stride, dilation, *pads)
                    for pad in range(kernel // 2 + 1):
                        for ceil_mode in (np.int32(0), np.int32(1)):
                            got = cores.pool_output_size(size, kernel, stride, pad, dilation, ceil_mode)
                            try:
                                want = lc.max_pool1d_output_shape((1, 1, size), kernel, stride=stride, padding=pad,
                                                                  dilation=dilation, ceil_mode=bool(ceil_mode))[2]
                            except ValueError:
                                assert got < 1
                            else:
                                assert got == want
                    for output_padding in range(max(stride, dilation)):
                        for pads in ((0, 0), (1, 0), (2, 1)):
                            got = cores.conv_transpose_output_size(size, kernel, stride, dilation, *pads,
                                                                   output_padding)
                            # PyTorch's formula, and the forward op maps that size back onto `size`
                            assert got == (size - 1) * stride - sum(pads) + dilation * (kernel - 1) + \
                                output_padding + 1
                            if got >= 1:
                                assert cores.conv_output_size(got, kernel, stride, dilation, *pads) == \
                                    size + output_padding // stride


# ---------------------------------------------------------------- the header

_C_TYPES = {"const float *": "float32*", "float *": "float32*", "const double *": "float64*",
            "double *": "float64*", "const int64_t *": "int64*", "int64_t *": "int64*", "const uint8_t *": "uint8*",
            "int64_t ": "int64",
            "int32_t ": "int32", "double ": "float64"}


def test_header_is_generated():
    committed = (pathlib.Path(capi.include_dir()) / "lcnumba.h").read_text()
    assert committed == capi.header(), "regenerate it: python -m lcnumba.capi header --write"


def test_header_agrees_with_the_signatures():
    """Parse every typedef of the committed header and compare it with the Numba signature that is compiled."""
    text = (pathlib.Path(capi.include_dir()) / "lcnumba.h").read_text()
    typedefs = dict(re.findall(r"typedef int32_t (lcn_\w+)_fn\(([^)]*)\);", text))
    assert sorted(typedefs) == sorted(capi.names())
    for name, params in typedefs.items():
        parsed = []
        for param in params.split(","):
            param = " ".join(param.split())
            ctype = next(t for t in _C_TYPES if param.startswith(t))
            parsed.append((_C_TYPES[ctype], param[len(ctype):].strip()))
        sig = entry.numba_signature(name)
        assert str(sig.return_type) == "int32"
        assert [t for t, _ in parsed] == [str(a) for a in sig.args], name
        assert [p for _, p in parsed] == [p.name for p in entry.entry(name).op.params], name
        assert capi.prototype(name).startswith(f"int32_t {name}(")


# ---------------------------------------------------------------- a C host


def _python_env():
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _embed_flags():
    """Compiler and linker flags to embed this interpreter: python3-config --embed, or sysconfig."""
    version = sysconfig.get_config_var("VERSION")
    for config in (pathlib.Path(sys.base_prefix) / "bin" / f"python{version}-config",
                   pathlib.Path(sys.base_prefix) / "bin" / "python3-config"):
        if config.exists():
            out = subprocess.run([sys.executable, str(config), "--embed", "--cflags", "--ldflags"],
                                 capture_output=True, text=True)
            if out.returncode != 0:  # a shell script rather than a Python one
                out = subprocess.run([str(config), "--embed", "--cflags", "--ldflags"], capture_output=True,
                                     text=True)
            if out.returncode == 0:
                flags = shlex.split(out.stdout)
                if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
                    flags += shlex.split(sysconfig.get_config_var("LINKFORSHARED") or "")
                return flags
    libdir = sysconfig.get_config_var("LIBDIR")
    return (["-I" + sysconfig.get_paths()["include"], "-L" + libdir, f"-Wl,-rpath,{libdir}",
             f"-lpython{version}{getattr(sys, 'abiflags', '')}"]
            + shlex.split(sysconfig.get_config_var("LIBS") or "") + shlex.split(sysconfig.get_config_var("SYSLIBS")
                                                                                 or ""))


def _compiler():
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(shlex.split(candidate)[0]):
            return shlex.split(candidate)
    pytest.skip("no C compiler found (CC, cc, gcc or clang)")


def test_header_compiles_as_c_and_cxx(tmp_path):
    cc = _compiler()
    for language, extra in (("c", ["-std=c99"]), ("c++", [])):
        result = subprocess.run(cc + ["-x", language, *extra, "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                                      str(pathlib.Path(capi.include_dir()) / "lcnumba.h")],
                                capture_output=True, text=True)
        if language == "c++" and result.returncode != 0 and "c++" in result.stderr.lower():
            continue  # a C-only compiler
        assert result.returncode == 0, result.stderr


def test_c_host(tmp_path):
    """tests/capi/host.c embeds Python, fetches addresses and checks the results against its own loops."""
    cc = _compiler()
    source = ROOT / "tests" / "capi" / "host.c"
    binary = tmp_path / "host"
    build = subprocess.run(cc + ["-std=c99", "-Wall", "-Wextra", "-o", str(binary), str(source),
                                 "-I" + capi.include_dir()] + _embed_flags() + ["-lm"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary), sys.executable], capture_output=True, text=True, timeout=600,
                         env=_python_env())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "host: ok" in run.stdout
