"""The convolution family (shared, tiled, local; 2-D and 1-D) against the NumPy references.

Every public function is compared with ``lcnumba.testing``; the backward
passes are also checked by finite differences and by the adjoint identities
of a linear map, so a reference and a kernel that share a mistake still
disagree with the calculus. Shapes are tiny: the kernels are compiled once
per dtype and every example after the first is cheap.
"""

import contextlib
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lcnumba
from lcnumba import geometry, testing

from families import FAMILIES, TILED, Family, families

DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


# ---------------------------------------------------------------- families and cases


dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


@dataclass
class Case:
    """Arrays and keyword parameters of one convolution call."""

    fam: Family
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray | None
    params: dict
    output_shape: tuple

    def dy(self, seed=1):
        rng = np.random.default_rng(seed)
        return rng.standard_normal(self.output_shape).astype(self.x.dtype)


def output_shape(fam, x_shape, f, kernel, params):
    """Output shape from the geometry queries (the property tests use the DESIGN formula instead)."""
    cg = x_shape[1] // params["groups"]
    if fam.spatial == 2:
        return geometry.conv2d_output_shape(x_shape, (f, cg, *kernel), **params)
    return geometry.conv1d_output_shape(x_shape, (f, cg, kernel[-1]), **params)


def weight_shapes(fam, f, cg, kernel, tiles, out_spatial):
    """``(w.shape, b.shape)`` of ``fam`` for the given bank, tiles and output size."""
    bank = (f, cg) + tuple(kernel[-fam.spatial :])
    grid = {"shared": (), "tiled": tuple(tiles[-fam.spatial :]), "local": tuple(out_spatial)}[fam.sharing]
    return grid + bank, (f,) + grid


def make_case(fam, *, n=2, c=4, size=(6, 7), f=4, kernel=(3, 2), stride=1, padding=0, dilation=1, groups=1,
              tiles=(2, 3), dtype=np.float64, seed=0, bias=True):
    """A random case of ``fam``; 2-D sizes are cut to their last entry for the 1-D forms."""
    rng = np.random.default_rng(seed)
    x_shape = (n, c) + tuple(size[-fam.spatial :])
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = output_shape(fam, x_shape, f, kernel, params)
    w_shape, b_shape = weight_shapes(fam, f, c // groups, kernel, tiles, out[2:])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype) if bias else None
    return Case(fam, x, w, b, params, out)


def call(case, part, dy=None, *, ref=False, **kwargs):
    """Call the public function (or the reference) ``part`` of the case's family."""
    fam = case.fam
    fn = fam.ref(part) if ref else fam.op(part)
    geo = dict(case.params, **fam.mode)
    if part == "forward":
        return fn(case.x, case.w, case.b, **geo, **kwargs)
    if part == "backward_input":
        return fn(dy, case.w, case.x.shape, **geo, **kwargs)
    if part == "backward_weight":
        return fn(dy, case.x, case.w.shape, **geo, **kwargs)
    if part == "backward_bias":
        return fn(dy, case.b.shape, **fam.mode, **kwargs)
    if part == "backward":
        return fn(dy, case.x, case.w, case.b, **geo, **kwargs)
    raise AssertionError(part)


def assert_close(actual, expected, rtol=None):
    """Relative agreement at the dtype's tolerance, with an absolute floor scaled by the result."""
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    rtol = RTOL[expected.dtype] if rtol is None else rtol
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_bitwise(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


@contextlib.contextmanager
def unchanged(*arrays):
    """Fail if any of ``arrays`` is written inside the block."""
    arrays = [a for a in arrays if a is not None]
    before = [a.copy() for a in arrays]
    yield
    for a, b in zip(arrays, before):
        assert_bitwise(a, b)


def inner(a, b):
    return float(np.dot(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)))


# 2-D geometries exercising each parameter; the 1-D forms take the last entry of each pair.
GEOMETRIES = {
    "plain": dict(),
    "strided": dict(stride=(2, 3), padding=((1, 0), (2, 1)), dilation=(1, 2), size=(7, 9)),
    "grouped": dict(groups=2, c=4, f=6, padding=1),
    "depthwise": dict(groups=4, c=4, f=4, kernel=(2, 3), padding=(1, 0)),
    "same": dict(padding="same", dilation=(1, 3), kernel=(2, 2)),  # odd totals: extra cell bottom/right
    # enough batch, rows and tiles for the kernels to split work into several chunks
    "larger": dict(n=9, c=6, f=6, size=(15, 17), kernel=(3, 4), stride=(2, 1), padding=((2, 0), (1, 2)),
                   dilation=(2, 1), groups=3, tiles=(4, 3)),
}


def geometry_kwargs(fam, name):
    """GEOMETRIES[name] spelled for the family's spatial rank."""
    return spelled(fam, GEOMETRIES[name])


def spelled(fam, kwargs):
    """2-D geometry keywords spelled for the family's rank: the 1-D forms take the last entry of each pair."""
    kwargs = dict(kwargs)
    if fam.spatial == 1:
        for key in ("stride", "dilation"):
            if isinstance(kwargs.get(key), tuple):
                kwargs[key] = kwargs[key][-1]
        if isinstance(kwargs.get("padding"), tuple):
            kwargs["padding"] = kwargs["padding"][-1]
    return kwargs


geometries = pytest.mark.parametrize("geo", list(GEOMETRIES))


# ---------------------------------------------------------------- forward and backward against the references


@families
@dtypes
@geometries
def test_forward_matches_reference(fam, dtype, geo):
    case = make_case(fam, dtype=dtype, **geometry_kwargs(fam, geo))
    with unchanged(case.x, case.w, case.b):
        y = call(case, "forward")
    assert y.shape == case.output_shape
    assert_close(y, call(case, "forward", ref=True))


@families
@dtypes
def test_forward_without_bias(fam, dtype):
    case = make_case(fam, dtype=dtype, bias=False, padding=1)
    assert_close(call(case, "forward"), call(case, "forward", ref=True))


@families
@dtypes
@geometries
def test_backward_matches_reference(fam, dtype, geo):
    case = make_case(fam, dtype=dtype, **geometry_kwargs(fam, geo))
    dy = case.dy()
    with unchanged(dy, case.x, case.w, case.b):
        for part in ("backward_input", "backward_weight", "backward_bias"):
            assert_close(call(case, part, dy), call(case, part, dy, ref=True))
        dx, dw, db = call(case, "backward", dy)
    rdx, rdw, rdb = call(case, "backward", dy, ref=True)
    assert_close(dx, rdx)
    assert_close(dw, rdw)
    assert_close(db, rdb)


@families
def test_backward_without_bias_returns_none(fam):
    case = make_case(fam, bias=False)
    dx, dw, db = call(case, "backward", case.dy())
    assert db is None
    assert dx.shape == case.x.shape and dw.shape == case.w.shape


# ---------------------------------------------------------------- calculus: finite differences and adjoints

GRADCHECK_GEOMETRIES = {
    "strided-grouped": dict(n=2, c=4, f=4, size=(5, 6), kernel=(2, 3), stride=(2, 1),
                            padding=((1, 0), (0, 2)), dilation=(1, 2), groups=2, tiles=(2, 2)),
    "same": dict(n=1, c=2, f=3, size=(4, 5), kernel=(3, 2), padding="same", tiles=(3, 2)),
}


@families
@pytest.mark.parametrize("geo", list(GRADCHECK_GEOMETRIES))
def test_gradcheck_parts(fam, geo):
    case = make_case(fam, **spelled(fam, GRADCHECK_GEOMETRIES[geo]))
    geo_kwargs = dict(case.params, **fam.mode)

    def forward(x, w, b):
        return fam.op("forward")(x, w, b, **geo_kwargs)

    def analytic(dy, x, w, b):
        return (
            fam.op("backward_input")(dy, w, x.shape, **geo_kwargs),
            fam.op("backward_weight")(dy, x, w.shape, **geo_kwargs),
            fam.op("backward_bias")(dy, b.shape, **fam.mode),
        )

    assert testing.gradcheck(forward, [case.x, case.w, case.b], analytic, names=["x", "w", "b"],
                             directions="all")


@families
def test_gradcheck_combined_backward(fam):
    case = make_case(fam, n=1, c=2, f=2, size=(4, 5), kernel=(2, 2), padding=1, tiles=(2, 2))
    geo_kwargs = dict(case.params, **fam.mode)
    assert testing.gradcheck(
        lambda x, w, b: fam.op("forward")(x, w, b, **geo_kwargs),
        [case.x, case.w, case.b],
        lambda dy, x, w, b: fam.op("backward")(dy, x, w, b, **geo_kwargs),
        names=["x", "w", "b"],
    )


@families
def test_gradcheck_random_directions(fam):
    # Larger than the elementwise mode wants: the jax-style directional check.
    case = make_case(fam, **spelled(fam, dict(n=3, c=6, f=6, size=(9, 11), kernel=(3, 3), stride=(1, 2), padding=1,
                                              groups=3, tiles=(3, 2))))
    geo_kwargs = dict(case.params, **fam.mode)
    assert testing.gradcheck(
        lambda x, w, b: fam.op("forward")(x, w, b, **geo_kwargs),
        [case.x, case.w, case.b],
        lambda dy, x, w, b: fam.op("backward")(dy, x, w, b, **geo_kwargs),
        names=["x", "w", "b"], directions=6, atol=1e-6,
    )


@pytest.mark.parametrize("directions", ["all", 3])
def test_gradcheck_catches_a_wrong_gradient(directions):
    # The checks above can only fail if gradcheck does: a gradient off in one element must be caught.
    case = make_case(FAMILIES[0], n=1, c=2, f=2, size=(4, 4), kernel=(2, 2))
    x, w, b = case.x.copy(), case.w.copy(), case.b.copy()

    def wrong(dy, x, w, b):
        dx, dw, db = lcnumba.conv2d_backward(dy, x, w, b)
        dw[1, 0, 1, 0] += 1e-3
        return dx, dw, db

    def forward(x, w, b):
        return lcnumba.conv2d_forward(x, w, b)

    with pytest.raises(AssertionError, match="^w: "):
        testing.gradcheck(forward, [case.x, case.w, case.b], wrong, names=["x", "w", "b"], directions=directions)
    assert testing.gradcheck(forward, [case.x, case.w, case.b], wrong, wrt=[0, 2], directions=directions)
    for before, after in ((x, case.x), (w, case.w), (b, case.b)):
        assert_bitwise(after, before)
    with pytest.raises(TypeError, match="float64"):
        testing.gradcheck(forward, [case.x.astype(np.float32), case.w, case.b], wrong)


@families
@dtypes
@geometries
def test_adjoint_identities(fam, dtype, geo):
    """``<A x, dy> == <x, A^T dy>`` for the input map and for the weight map (no bias)."""
    case = make_case(fam, dtype=dtype, bias=False, **geometry_kwargs(fam, geo))
    dy = case.dy()
    y = call(case, "forward")
    lhs = inner(y, dy)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    scale = float(np.abs(y).astype(np.float64).ravel() @ np.abs(dy).astype(np.float64).ravel())
    assert abs(lhs - inner(case.x, call(case, "backward_input", dy))) <= rtol * scale
    assert abs(lhs - inner(case.w, call(case, "backward_weight", dy))) <= rtol * scale


@families
def test_bias_adjoint(fam):
    case = make_case(fam, padding=1)
    dy = case.dy()
    no_bias = Case(fam, case.x, case.w, None, case.params, case.output_shape)
    lhs = inner(call(case, "forward") - call(no_bias, "forward"), dy)
    assert lhs == pytest.approx(inner(case.b, call(case, "backward_bias", dy)), rel=1e-10, abs=1e-10)


# ---------------------------------------------------------------- the family identities


IDENTITY_GEOMETRY = dict(n=2, c=4, f=6, size=(6, 7), kernel=(3, 2), stride=(2, 1), padding=((1, 1), (0, 1)),
                         groups=2)


@pytest.mark.parametrize("fam", TILED, ids=str)
@dtypes
@pytest.mark.parametrize("partner", ["shared", "local"])
def test_tiled_identities(fam, dtype, partner):
    """Tiled with a 1x1 tile is the shared convolution; with a tile of the output size, the local one."""
    partner_name = fam.name.replace("tiled_", "" if partner == "shared" else "local_")
    other = make_case(next(f for f in FAMILIES if f.name == partner_name), dtype=dtype,
                      **spelled(fam, IDENTITY_GEOMETRY))
    if partner == "shared":
        grid = (1,) * fam.spatial
        w, b = other.w.reshape(grid + other.w.shape), other.b.reshape(other.b.shape + grid)
    else:
        # a local weight (OH, OW, ...) is a tiled weight with one tile per output position, in either mode
        w, b = other.w, other.b
    tiled = Case(fam, other.x, w, b, other.params, other.output_shape)
    assert_close(call(tiled, "forward"), call(other, "forward"))
    dy = tiled.dy()
    dx_t, dw_t, db_t = call(tiled, "backward", dy)
    dx_o, dw_o, db_o = call(other, "backward", dy)
    assert_close(dx_t, dx_o)
    assert_close(dw_t.reshape(dw_o.shape), dw_o)
    assert_close(db_t.reshape(db_o.shape), db_o)


# ---------------------------------------------------------------- property tests over random geometry


@st.composite
def random_cases(draw, fam):
    """A random valid case of ``fam`` with its expected output size from the DESIGN formula."""
    dims = fam.spatial
    groups = draw(st.integers(1, 3))
    c, f = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    n = draw(st.integers(1, 2))
    size = [draw(st.integers(1, 7)) for _ in range(dims)]
    kernel = [draw(st.integers(1, 3)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 2)) for _ in range(dims)]
    kinds = ["int", "pair", "explicit", "valid", "same"] if dims == 2 else ["int", "explicit", "valid", "same"]
    kind = draw(st.sampled_from(kinds))
    stride = [1] * dims if kind == "same" else [draw(st.integers(1, 3)) for _ in range(dims)]
    if kind == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        pads = [(t // 2, t - t // 2) for t in totals]
        padding = "same"
    elif kind == "valid":
        pads, padding = [(0, 0)] * dims, "valid"
    elif kind == "int":
        p = draw(st.integers(0, 2))
        pads, padding = [(p, p)] * dims, p
    elif kind == "pair":
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        pads, padding = [(ph, ph), (pw, pw)], (ph, pw)
    else:
        pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(dims)]
        padding = tuple(pads) if dims == 2 else pads[0]
    out = [(s + p0 + p1 - d * (k - 1) - 1) // step + 1
           for s, (p0, p1), d, k, step in zip(size, pads, dilation, kernel, stride)]
    assume(all(o >= 1 for o in out))
    tiles = [draw(st.integers(1, 3)) for _ in range(dims)]
    dtype = draw(st.sampled_from(DTYPES))
    bias = draw(st.booleans())
    spell = (lambda v: v[0] if draw(st.booleans()) else tuple(v)) if dims == 1 else \
        (lambda v: v[0] if v[0] == v[1] and draw(st.booleans()) else tuple(v))
    params = dict(stride=spell(stride), padding=padding, dilation=spell(dilation), groups=groups)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    w_shape, b_shape = weight_shapes(fam, f, c // groups, kernel, tiles, out)
    x = rng.standard_normal((n, c, *size)).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype) if bias else None
    return Case(fam, x, w, b, params, (n, f, *out))


PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)


@families
@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_geometry(fam, data):
    case = data.draw(random_cases(fam), label="case")
    with unchanged(case.x, case.w, case.b):
        y = call(case, "forward")
    assert y.shape == case.output_shape
    assert_close(y, call(case, "forward", ref=True))
    dy = case.dy()
    with unchanged(dy, case.x, case.w, case.b):
        dx = call(case, "backward_input", dy)
        dw = call(case, "backward_weight", dy)
        assert_close(dx, call(case, "backward_input", dy, ref=True))
        assert_close(dw, call(case, "backward_weight", dy, ref=True))
        if case.b is not None:
            assert_close(call(case, "backward_bias", dy), call(case, "backward_bias", dy, ref=True))
    if case.x.dtype == np.float64:
        lhs = inner(call(Case(fam, case.x, case.w, None, case.params, case.output_shape), "forward"), dy)
        scale = 1e-12 * (1 + float(np.abs(y).ravel() @ np.abs(dy).ravel()))
        assert abs(lhs - inner(case.x, dx)) <= scale
        assert abs(lhs - inner(case.w, dw)) <= scale


# ---------------------------------------------------------------- destination passing


@families
@dtypes
def test_out_is_written_and_returned(fam, dtype):
    case = make_case(fam, dtype=dtype, padding=1)
    dy = case.dy()
    for part, arg in (("forward", None), ("backward_input", dy), ("backward_weight", dy), ("backward_bias", dy)):
        expected = call(case, part, arg)
        # NaN in the buffer: without accumulate the old contents must never be read
        out = np.full_like(expected, np.nan)
        result = call(case, part, arg, out=out)
        assert result is out, part
        assert_bitwise(out, expected)


@families
@dtypes
@pytest.mark.parametrize("part", ["backward_weight", "backward_bias"])
def test_accumulate_adds_into_out(fam, dtype, part):
    case = make_case(fam, dtype=dtype, padding=1)
    dy = case.dy()
    expected = call(case, part, dy)
    start = np.random.default_rng(5).standard_normal(expected.shape).astype(dtype)
    out = start.copy()
    assert call(case, part, dy, out=out, accumulate=True) is out
    assert_close(out, (start.astype(np.float64) + expected).astype(dtype))
    # two micro-batches accumulate to the gradient of their concatenation
    out = np.zeros_like(expected)
    half = case.x.shape[0] // 2
    for rows in (slice(None, half), slice(half, None)):
        part_case = Case(fam, case.x[rows], case.w, case.b, case.params, (dy[rows].shape))
        call(part_case, part, dy[rows], out=out, accumulate=True)
    assert_close(out, expected)


@families
@dtypes
def test_accumulate_false_overwrites(fam, dtype):
    case = make_case(fam, dtype=dtype)
    dy = case.dy()
    for part in ("backward_weight", "backward_bias"):
        expected = call(case, part, dy)
        out = np.full_like(expected, 7.0)
        call(case, part, dy, out=out, accumulate=False)
        assert_bitwise(out, expected)


@families
def test_stream_is_accepted_on_cpu(fam):
    case = make_case(fam)
    dy = case.dy()
    for part, arg in (("forward", None), ("backward_input", dy), ("backward_weight", dy), ("backward_bias", dy)):
        assert_bitwise(call(case, part, arg, stream=0), call(case, part, arg))


# ---------------------------------------------------------------- empty batches, strides, dtypes, determinism


@families
@dtypes
def test_empty_batch(fam, dtype):
    case = make_case(fam, n=0, dtype=dtype, padding=1)
    dy = case.dy()
    y = call(case, "forward")
    assert y.shape == case.output_shape and y.shape[0] == 0 and y.dtype == dtype
    dx = call(case, "backward_input", dy)
    assert dx.shape == case.x.shape and dx.dtype == dtype
    for part, shape in (("backward_weight", case.w.shape), ("backward_bias", case.b.shape)):
        grad = call(case, part, dy)
        assert grad.shape == shape and grad.dtype == dtype
        assert not grad.any()
        # a quick return on empty work must still zero a caller's buffer ...
        out = np.full(shape, np.nan, dtype=dtype)
        call(case, part, dy, out=out)
        assert not out.any()
        # ... and leave it as it was when accumulating
        out = np.full(shape, 3.0, dtype=dtype)
        call(case, part, dy, out=out, accumulate=True)
        assert (out == 3.0).all()
    dx, dw, db = call(case, "backward", dy)
    assert dx.shape == case.x.shape and not dw.any() and not db.any()


def _strided(a):
    """The same values as ``a`` in a non-contiguous view (every other element of a larger buffer)."""
    if a is None:
        return None
    base = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    base[..., ::2] = a
    return base[..., ::2]


def _transposed(a):
    """The same values as ``a`` in a transposed view (reversed strides)."""
    return None if a is None else np.ascontiguousarray(a.T).T


def _reversed(a):
    """The same values as ``a`` in a view with a negative stride on the last axis."""
    return None if a is None else np.ascontiguousarray(a[..., ::-1])[..., ::-1]


def _read_only(a):
    """A read-only strided view: inputs are only ever read, so this must be accepted."""
    view = _strided(a)
    if view is not None:
        view.flags.writeable = False
    return view


@families
@dtypes
@pytest.mark.parametrize("layout", [_strided, _transposed, _reversed, _read_only],
                         ids=["strided", "transposed", "reversed", "read-only"])
def test_non_contiguous_inputs(fam, dtype, layout):
    case = make_case(fam, dtype=dtype, padding=1, groups=2)
    dy = case.dy()
    view = Case(fam, layout(case.x), layout(case.w), layout(case.b), case.params, case.output_shape)
    dy_view = layout(dy)
    with unchanged(view.x, view.w, view.b, dy_view):
        assert_bitwise(call(view, "forward"), call(case, "forward"))
        for part in ("backward_input", "backward_weight", "backward_bias"):
            assert_bitwise(call(view, part, dy_view), call(case, part, dy))


@families
def test_float32_and_float64_agree(fam):
    case64 = make_case(fam, padding=1)
    case32 = Case(fam, case64.x.astype(np.float32), case64.w.astype(np.float32), case64.b.astype(np.float32),
                  case64.params, case64.output_shape)
    y32, y64 = call(case32, "forward"), call(case64, "forward")
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert_close(y32, y64.astype(np.float32), rtol=1e-4)


@families
@dtypes
def test_bitwise_deterministic(fam, dtype):
    # Large enough that the parallel loops split the work between threads.
    case = make_case(fam, n=4, c=6, f=6, size=(12, 13), kernel=(3, 3), padding=1, groups=3, tiles=(3, 2),
                     dtype=dtype)
    dy = case.dy()
    for part, arg in (("forward", None), ("backward_input", dy), ("backward_weight", dy), ("backward_bias", dy)):
        assert_bitwise(call(case, part, arg), call(case, part, arg))


@pytest.mark.parametrize("fam", [fam for fam in FAMILIES if fam.sharing == "local"], ids=str)
@pytest.mark.parametrize("geo, tail", [(dict(), 1), (dict(stride=2, padding=1), 3),
                                       (dict(dilation=2, groups=2, padding="same"), 3)],
                         ids=["plain-lone-tail", "strided-padded", "dilated-grouped-same"])
def test_local_batch_spanning_several_chunks(fam, geo, tail):
    """A batch larger than the local kernels' sample chunk: every chunk is computed and the weight gradient sums them.

    The last chunk holds ``tail`` samples: lanes past the batch, or a lone sample (one lane, which the
    products run along the taps instead) added onto the sums of a full chunk.
    """
    from lcnumba.cpu import local

    n = local.LANES_PER_CHUNK + tail
    case = make_case(fam, n=n, size=(5, 6), **geo)
    dy = case.dy()
    assert_close(call(case, "forward"), call(case, "forward", ref=True))
    for part in ("backward_input", "backward_weight"):
        assert_close(call(case, part, dy), call(case, part, dy, ref=True))
    start = np.ones(case.w.shape)
    total = call(case, "backward_weight", dy, out=start.copy(), accumulate=True)
    assert_close(total, start + call(case, "backward_weight", dy, ref=True))


@given(size=st.lists(st.integers(1, 30), max_size=8), n_runs=st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_tile_runs_have_the_smallest_largest_sum(size, n_runs):
    """``_runs`` against every way of cutting a short list into consecutive runs."""
    import itertools

    from lcnumba.cpu import local

    bounds = np.empty(n_runs + 1, dtype=np.int64)
    local._runs(np.array(size, dtype=np.int64), bounds)
    assert bounds[0] == 0 and bounds[-1] == len(size) and (np.diff(bounds) >= 0).all()
    got = max(sum(size[bounds[k]:bounds[k + 1]]) for k in range(n_runs))
    best = min(max(sum(size[a:b]) for a, b in zip((0,) + cuts, cuts + (len(size),)))
               for cuts in itertools.combinations_with_replacement(range(len(size) + 1), n_runs - 1))
    assert got == best


@given(oh=st.integers(1, 60), kh=st.integers(1, 9), sh=st.integers(1, 3), dil_h=st.integers(1, 3),
       n_threads=st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_input_gradient_bands_cover_the_padded_rows(oh, kh, sh, dil_h, n_threads):
    """The bands of the local input gradient are consecutive runs over every padded row, one per worker at most."""
    from lcnumba.cpu import local

    bounds = local.plan_input_rows(oh, kh, sh, dil_h, n_threads)
    hp = (oh - 1) * sh + (kh - 1) * dil_h + 1
    assert 2 <= len(bounds) <= n_threads + 1
    assert bounds[0] == 0 and bounds[-1] == hp and (np.diff(bounds) >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("geo", [(1, 1, 0, 1, 1, 9), (2, 1, 1, 1, 2, 9), (1, 2, 2, 3, 1, 9), (3, 2, 1, 2, 3, 9),
                                 (2, 1, 1, 2, 2, 1)],
                         ids=["plain", "strided", "dilated", "mixed", "lone-sample"])
def test_local_input_gradient_bands_change_no_bit(dtype, geo):
    """Every split of the input rows between workers gives the bits of one worker, and the reference's values.

    ``n_threads`` only cuts the bands (prange runs them on however many threads there are), so
    1 to 7 bands, windows straddling 1 to 6 band edges, must agree bit for bit; a lone sample too
    (one lane: the parts of a straddling window are column slices of the bank, multiplied along the taps).
    """
    from lcnumba.cpu import local

    sh, dil_h, pad, groups, sw, n = geo
    fam = next(fam for fam in FAMILIES if fam.sharing == "local" and fam.spatial == 2)
    case = make_case(fam, n=n, c=2 * groups, f=3 * groups, size=(17, 11), kernel=(3, 2), stride=(sh, sw),
                     padding=pad, dilation=(dil_h, 1), groups=groups, dtype=dtype)
    dy = case.dy()
    w = case.w.reshape(dy.shape[2] * dy.shape[3], dy.shape[1], -1)
    results = []
    for n_threads in range(1, 8):
        dx = np.full(case.x.shape, np.nan, dtype)
        local.backward_input(dy, w, 3, 2, sh, sw, pad, pad, dil_h, 1, groups, n_threads, dx)
        results.append(dx)
    for dx in results[1:]:
        assert_bitwise(dx, results[0])
    assert_close(results[0], call(case, "backward_input", dy, ref=True))
