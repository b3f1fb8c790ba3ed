"""The transposed convolution family (shared, tiled, local; 2-D and 1-D) against the scatter-form references.

Every public function is compared with ``lcnumba.testing.conv_transpose``
(which shares no code with the kernels); the gradients are also checked by
finite differences and by the adjoint identities, the shared case against
PyTorch's ``conv_transpose2d``/``conv_transpose1d``, and the documented
identities (the transposed forward *is* the forward op's input gradient)
bitwise.
"""

from dataclasses import dataclass

import numpy as np
import pytest

import lcnumba
from lcnumba import testing

from families import TRANSPOSED, Family, transposed

DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)

#: name -> 2-D parameters; the 1-D forms take the last axis (see ``spelled``).
GEOMETRIES = {
    "plain": dict(),
    "stride2-pad1-outpad1": dict(stride=2, padding=1, output_padding=1),
    "mixed-groups": dict(stride=(2, 3), padding=((1, 0), (0, 2)), output_padding=(1, 2), dilation=(1, 2), groups=2),
    "outpad-below-dilation": dict(stride=1, padding=1, output_padding=2, dilation=3),
}


def _last(value):
    if isinstance(value, tuple):
        return value[-1]
    return value


def spelled(fam, params):
    """``params`` as the 2-D form takes them, or their last axis for a 1-D form."""
    if fam.spatial == 2:
        return dict(params)
    return {key: _last(value) for key, value in params.items()}


@dataclass
class Case:
    fam: Family
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray | None
    params: dict  # with the tile mode

    @property
    def output_shape(self):
        return getattr(lcnumba, f"{self.fam.name}_output_shape")(self.x.shape, self.w.shape,
                                                                  **{k: v for k, v in self.params.items()
                                                                     if k != "tile_mode"})

    def dy(self, seed=1):
        return np.random.default_rng(seed).standard_normal(self.output_shape).astype(self.x.dtype)


def make_case(fam, params=(), *, n=2, c=4, size=(3, 4), fg=3, kernel=(3, 2), tiles=(2, 3), dtype=np.float64, seed=0,
              bias=True):
    """A random case of ``fam``: input (N, C, *size), weight (*grid, C, Fg, *kernel)."""
    params = spelled(fam, dict(params))
    d = fam.spatial
    rng = np.random.default_rng(seed)
    grid = {"shared": (), "tiled": tuple(tiles[-d:]), "local": tuple(size[-d:])}[fam.sharing]
    x = rng.standard_normal((n, c) + tuple(size[-d:])).astype(dtype)
    w = rng.standard_normal(grid + (c, fg) + tuple(kernel[-d:])).astype(dtype)
    case = Case(fam, x, w, None, dict(params, **fam.mode))
    if bias:
        f = fg * params.get("groups", 1)
        bias_grid = {"shared": (), "tiled": grid, "local": case.output_shape[2:]}[fam.sharing]
        case.b = rng.standard_normal((f,) + bias_grid).astype(dtype)
    return case


def op(case, part):
    return case.fam.op(part)


def ref(case, part):
    return case.fam.ref(part)


def _close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=RTOL[np.dtype(dtype)], atol=RTOL[np.dtype(dtype)])


geometries = pytest.mark.parametrize("geo", list(GEOMETRIES))


# ---------------------------------------------------------------- against the references


@transposed
@geometries
@dtypes
def test_forward_matches_reference(fam, geo, dtype):
    case = make_case(fam, GEOMETRIES[geo], dtype=dtype)
    y = op(case, "forward")(case.x, case.w, case.b, **case.params)
    assert y.dtype == dtype and y.shape == case.output_shape
    _close(y, ref(case, "forward")(case.x, case.w, case.b, **case.params), dtype)
    _close(op(case, "forward")(case.x, case.w, **case.params), ref(case, "forward")(case.x, case.w, **case.params),
           dtype)


@transposed
@geometries
@dtypes
def test_backward_passes_match_reference(fam, geo, dtype):
    case = make_case(fam, GEOMETRIES[geo], dtype=dtype)
    dy, p = case.dy(), case.params
    _close(op(case, "backward_input")(dy, case.w, case.x.shape, **p),
           ref(case, "backward_input")(dy, case.w, case.x.shape, **p), dtype)
    _close(op(case, "backward_weight")(dy, case.x, case.w.shape, **p),
           ref(case, "backward_weight")(dy, case.x, case.w.shape, **p), dtype)
    _close(op(case, "backward_bias")(dy, case.b.shape, **case.fam.mode),
           ref(case, "backward_bias")(dy, case.b.shape, **case.fam.mode), dtype)
    for got, expected in zip(op(case, "backward")(dy, case.x, case.w, case.b, **p),
                             ref(case, "backward")(dy, case.x, case.w, case.b, **p)):
        _close(got, expected, dtype)
    assert op(case, "backward")(dy, case.x, case.w, None, **p)[2] is None


# ---------------------------------------------------------------- calculus


@transposed
@pytest.mark.parametrize("geo", ["plain", "mixed-groups", "outpad-below-dilation"])
def test_gradcheck(fam, geo):
    case = make_case(fam, GEOMETRIES[geo], n=1, c=2, fg=2, size=(3, 3), kernel=(2, 2), tiles=(2, 2))
    p = case.params

    def analytic(dy, x, w, b):
        return (op(case, "backward_input")(dy, w, x.shape, **p), op(case, "backward_weight")(dy, x, w.shape, **p),
                op(case, "backward_bias")(dy, b.shape, **case.fam.mode))

    forward = lambda x, w, b: op(case, "forward")(x, w, b, **p)  # noqa: E731
    assert testing.gradcheck(forward, [case.x, case.w, case.b], analytic, names=["x", "w", "b"], directions="all")
    assert testing.gradcheck(forward, [case.x, case.w, case.b],
                             lambda dy, x, w, b: op(case, "backward")(dy, x, w, b, **p), names=["x", "w", "b"])


@transposed
@geometries
def test_adjoint_identities(fam, geo):
    """<T(x), dy> = <x, T*(dy)> = <w, dW(dy, x)>, and the bias term's <B(b), dy> = <b, dB(dy)>."""
    case = make_case(fam, GEOMETRIES[geo])
    dy, p = case.dy(), case.params
    y = op(case, "forward")(case.x, case.w, **p)
    dx = op(case, "backward_input")(dy, case.w, case.x.shape, **p)
    dw = op(case, "backward_weight")(dy, case.x, case.w.shape, **p)
    db = op(case, "backward_bias")(dy, case.b.shape, **case.fam.mode)
    bias_only = op(case, "forward")(case.x, case.w, case.b, **p) - y
    inner = np.vdot(y, dy)
    assert np.vdot(case.x, dx) == pytest.approx(inner, rel=1e-12, abs=1e-12)
    assert np.vdot(case.w, dw) == pytest.approx(inner, rel=1e-12, abs=1e-12)
    assert np.vdot(case.b, db) == pytest.approx(np.vdot(bias_only, dy), rel=1e-12, abs=1e-12)


@transposed
@pytest.mark.parametrize("geo", ["mixed-groups", "stride2-pad1-outpad1"])
def test_passes_are_the_forward_ops_passes_with_arguments_exchanged(fam, geo):
    """The documented identities, bitwise: the same kernels run on the same arrays."""
    case = make_case(fam, GEOMETRIES[geo], bias=False)
    forward = Family(fam.row.forward, fam.sharing, fam.spatial, fam.tile_mode)
    p = {k: v for k, v in case.params.items() if k != "output_padding"}
    y = op(case, "forward")(case.x, case.w, **case.params)
    dy = case.dy()
    np.testing.assert_array_equal(y, forward.op("backward_input")(case.x, case.w, y.shape, **p))
    np.testing.assert_array_equal(op(case, "backward_input")(dy, case.w, case.x.shape, **case.params),
                                  forward.op("forward")(dy, case.w, **p))
    np.testing.assert_array_equal(op(case, "backward_weight")(dy, case.x, case.w.shape, **case.params),
                                  forward.op("backward_weight")(case.x, dy, case.w.shape, **p))


# ---------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("geo", list(GEOMETRIES))
@pytest.mark.parametrize("d", [1, 2])
def test_shared_matches_pytorch(d, geo):
    torch = pytest.importorskip("torch")
    fam = next(f for f in TRANSPOSED if f.sharing == "shared" and f.spatial == d)
    params = spelled(fam, GEOMETRIES[geo])
    if isinstance(params.get("padding"), tuple) and isinstance(params["padding"][0], tuple) or (
            d == 1 and isinstance(params.get("padding"), tuple)):
        params["padding"] = 1  # PyTorch pads both sides alike
    case = make_case(fam, params)
    function = torch.nn.functional.conv_transpose2d if d == 2 else torch.nn.functional.conv_transpose1d
    x, w, b = (torch.tensor(a, requires_grad=True) for a in (case.x, case.w, case.b))
    expected = function(x, w, b, **params)
    y = op(case, "forward")(case.x, case.w, case.b, **params)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = case.dy()
    expected.backward(torch.tensor(dy))
    for got, tensor in zip(op(case, "backward")(dy, case.x, case.w, case.b, **params), (x, w, b)):
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- buffers and empty batches


@transposed
def test_out_and_accumulate(fam):
    case = make_case(fam, GEOMETRIES["stride2-pad1-outpad1"])
    dy, p = case.dy(), case.params
    y = np.empty(case.output_shape)
    assert op(case, "forward")(case.x, case.w, case.b, out=y, **p) is y
    np.testing.assert_array_equal(y, op(case, "forward")(case.x, case.w, case.b, **p))
    dx = np.full(case.x.shape, np.nan)
    assert op(case, "backward_input")(dy, case.w, case.x.shape, out=dx, **p) is dx
    np.testing.assert_array_equal(dx, op(case, "backward_input")(dy, case.w, case.x.shape, **p))
    dw_once = op(case, "backward_weight")(dy, case.x, case.w.shape, **p)
    dw = np.ones(case.w.shape)
    assert op(case, "backward_weight")(dy, case.x, case.w.shape, out=dw, accumulate=True, **p) is dw
    np.testing.assert_allclose(dw, dw_once + 1, rtol=1e-13)
    db_once = op(case, "backward_bias")(dy, case.b.shape, **fam.mode)
    db = np.ones(case.b.shape)
    assert op(case, "backward_bias")(dy, case.b.shape, out=db, accumulate=True, **fam.mode) is db
    np.testing.assert_allclose(db, db_once + 1, rtol=1e-13)


@transposed
def test_empty_batch(fam):
    case = make_case(fam, GEOMETRIES["mixed-groups"], n=0)
    p = case.params
    y = op(case, "forward")(case.x, case.w, case.b, **p)
    assert y.shape == case.output_shape and y.shape[0] == 0
    dy = case.dy()
    assert op(case, "backward_input")(dy, case.w, case.x.shape, **p).shape == case.x.shape
    np.testing.assert_array_equal(op(case, "backward_weight")(dy, case.x, case.w.shape, **p), 0)
    dw = np.ones(case.w.shape)
    op(case, "backward_weight")(dy, case.x, case.w.shape, out=dw, accumulate=True, **p)
    np.testing.assert_array_equal(dw, 1)
    dx, dw, db = op(case, "backward")(dy, case.x, case.w, case.b, **p)
    assert dx.shape == case.x.shape
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


# ---------------------------------------------------------------- errors


def _errors(fam):
    """``(label, call, exception, message)``: every refusal of the transposed functions' own rules."""
    case = make_case(fam, GEOMETRIES["stride2-pad1-outpad1"])
    x, w, b, p = case.x, case.w, case.b, case.params
    forward, dy = op(case, "forward"), case.dy()
    c_axis = w.ndim - 2 - fam.spatial
    wrong_channels = np.zeros(w.shape[:c_axis] + (w.shape[c_axis] + 1,) + w.shape[c_axis + 1:])
    rows = [
        ("output_padding-at-stride", lambda: forward(x, w, **dict(p, output_padding=2)), ValueError,
         r"output_padding: expected each smaller than the stride or the dilation \(< "),
        ("output_padding-negative", lambda: forward(x, w, **dict(p, output_padding=-1)), ValueError,
         "output_padding: expected"),
        ("output_padding-float", lambda: forward(x, w, **dict(p, output_padding=0.5)), TypeError, "output_padding"),
        ("weight-channels", lambda: forward(x, wrong_channels, **p), ValueError, "input channels"),
        ("groups", lambda: forward(x, w, **dict(p, groups=3)), ValueError, "groups: expected a divisor"),
        ("no-output", lambda: forward(x, w, **dict(p, padding=9)), ValueError, "padding: expected at most"),
        ("bias-shape", lambda: forward(x, w, b[:1], **p), ValueError, "b: expected shape"),
        ("dy-shape", lambda: op(case, "backward_input")(dy[:, :1], w, x.shape, **p), ValueError,
         "dy: expected shape"),
        ("dy-shape-weight", lambda: op(case, "backward_weight")(dy[..., :-1], x, w.shape, **p), ValueError,
         "dy: expected shape"),
        ("accumulate-without-out", lambda: op(case, "backward_weight")(dy, x, w.shape, accumulate=True, **p),
         ValueError, "accumulate"),
        ("out-shape", lambda: forward(x, w, out=np.empty(dy.shape[:-1] + (dy.shape[-1] + 1,)), **p), ValueError,
         "out: expected"),
        ("dtype-mix", lambda: forward(x.astype(np.float32), w, **p), TypeError, "one dtype"),
    ]
    if fam.sharing == "local":
        rows.append(("local-grid", lambda: forward(x[..., :-1], w, **p), ValueError,
                     "a filter bank per input position"))
    if fam.sharing == "tiled":
        rows.append(("tile_mode", lambda: forward(x, w, **dict(p, tile_mode="spiral")), ValueError, "tile_mode"))
    return rows


ERRORS = [pytest.param(fam, call, error, match, id=f"{fam}-{label}")
          for fam in TRANSPOSED for label, call, error, match in _errors(fam)]


@pytest.mark.parametrize("fam, call, error, match", ERRORS)
def test_errors(fam, call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("fam", [f for f in TRANSPOSED if f.tile_mode != "block"], ids=str)
def test_references_refuse_what_the_library_refuses(fam):
    case = make_case(fam, GEOMETRIES["stride2-pad1-outpad1"])
    with pytest.raises(ValueError, match="output_padding"):
        ref(case, "forward")(case.x, case.w, **dict(case.params, output_padding=2))
    with pytest.raises(ValueError, match="input channels"):
        ref(case, "forward")(case.x[:, :-1], case.w, **case.params)


@pytest.mark.parametrize("d", [1, 2])
def test_output_shape_queries(d):
    name = "conv2d_transpose_output_shape" if d == 2 else "conv1d_transpose_output_shape"
    query = getattr(lcnumba, name)
    if d == 2:
        # (H-1)*S - 2P + D*(K-1) + output_padding + 1 per axis
        assert query((2, 4, 5, 6), (4, 3, 3, 2), stride=(2, 3), padding=1, output_padding=(1, 2), dilation=(1, 2)) \
            == (2, 3, (5 - 1) * 2 - 2 + 2 + 1 + 1, (6 - 1) * 3 - 2 + 2 + 2 + 1)
    else:
        assert query((2, 4, 7), (4, 3, 3), stride=2, padding=(0, 1), output_padding=1) == (2, 3, 6 * 2 - 1 + 2 + 1 + 1)
    assert lcnumba.local_conv2d_transpose_output_shape((1, 2, 3, 4), (3, 4, 2, 5, 2, 2)) == (1, 5, 4, 5)
    assert lcnumba.tiled_conv1d_transpose_output_shape((1, 2, 3), (2, 2, 5, 2), groups=2) == (1, 10, 4)
    with pytest.raises(ValueError, match="a filter bank per input position"):
        lcnumba.local_conv1d_transpose_output_shape((1, 2, 3), (4, 2, 5, 2))
