"""``padding_mode`` of the convolution family (shared, tiled, local; 2-D and 1-D) on the CPU.

Every pass is compared with the NumPy references (``np.pad`` with the
matching mode, then the zero-padding reference; the input gradient folded
back with ``np.add.at``), checked by finite differences and by the adjoint
identities, and the shared family against ``torch.nn.Conv2d``/``Conv1d``
with the same ``padding_mode`` when torch is importable. The index maps of
``lcnumba.indexing`` are checked against ``np.pad`` itself. Shapes are tiny
and one geometry per mode mixes strides, dilation, groups and asymmetric
padding, so the count of tests stays small.
"""

import re

import numba
import numpy as np
import pytest

import lcnumba
from lcnumba import indexing, table, testing
from lcnumba.ops import conv_padded

from families import FAMILIES, families

MODES = ("reflect", "replicate", "circular")
NP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
modes = pytest.mark.parametrize("mode", MODES)

#: mode -> 2-D parameters (the 1-D forms take the last entry of each), input size and dtype.
#: Reflect pads up to size - 1 and circular up to the size, PyTorch's bounds; float32 rides on one mode.
CASES = {
    "reflect": dict(params=dict(stride=(2, 1), padding=((2, 1), (0, 3)), dilation=(1, 2), groups=2),
                    size=(5, 4), dtype=np.float64),
    "replicate": dict(params=dict(stride=(1, 2), padding=((3, 0), (2, 5)), dilation=1, groups=1),
                      size=(3, 4), dtype=np.float32),
    "circular": dict(params=dict(stride=1, padding=((3, 1), (4, 2)), dilation=(2, 1), groups=2),
                     size=(3, 4), dtype=np.float64),
}
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def spelled(fam, params):
    """2-D parameters for the family's rank: the 1-D forms take the last entry of each pair."""
    if fam.spatial == 2:
        return dict(params)
    return {key: value[-1] if isinstance(value, tuple) else value for key, value in params.items()}


class Case:
    """Arrays and keywords of one call of ``fam`` with ``padding_mode=mode``."""

    def __init__(self, fam, mode, *, n=2, c=4, f=4, kernel=(2, 3), tiles=(2, 3), seed=0, bias=True, **overrides):
        spec = CASES[mode]
        self.fam, self.mode = fam, mode
        self.params = dict(spelled(fam, dict(spec["params"], **overrides.pop("params", {}))), padding_mode=mode,
                           **fam.mode)
        dtype = overrides.pop("dtype", spec["dtype"])
        size = overrides.pop("size", spec["size"])
        assert not overrides, overrides
        rng = np.random.default_rng(seed)
        d = fam.spatial
        self.x = rng.standard_normal((n, c) + tuple(size[-d:])).astype(dtype)
        bank = (f, c // self.params["groups"]) + tuple(kernel[-d:])
        geo = {k: self.params[k] for k in ("stride", "padding", "dilation", "groups")}
        out = testing.conv.geometry(testing.conv.Family("conv", "shared", d), self.x.shape, bank, **geo).out
        grid = {"shared": (), "tiled": tuple(tiles[-d:]), "local": tuple(out)}[fam.sharing]
        self.w = rng.standard_normal(grid + bank).astype(dtype)
        self.b = rng.standard_normal((f,) + grid).astype(dtype) if bias else None
        self.dy = rng.standard_normal((n, f) + tuple(out)).astype(dtype)

    def op(self, part):
        return self.fam.op(part)

    def ref(self, part):
        return self.fam.ref(part)


def assert_close(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    rtol = RTOL[expected.dtype]
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def inner(a, b):
    return float(np.dot(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)))


# ---------------------------------------------------------------- the index maps


@pytest.mark.parametrize("mode", MODES)
def test_index_maps_are_np_pad(mode):
    """``pad_source`` is ``np.pad`` of the cell indices; ``fold_runs``/``fold_index`` list its preimages in order."""
    code = table.PADDING_MODES.index(mode)
    for size in range(1, 6):
        bound = {"reflect": size - 1, "replicate": size + 2, "circular": size}[mode]
        for before in range(bound + 1):
            for after in range(bound + 1):
                source = np.pad(np.arange(size), (before, after), mode=NP_MODES[mode])
                assert [indexing.pad_source(p, size, before, code) for p in range(source.size)] == list(source)
                for s in range(size):
                    lo, lo_n, hi, hi_n = indexing.fold_runs(s, size, before, after, code)
                    cells = [indexing.fold_index(r, s, before, lo, lo_n, hi) for r in range(lo_n + 1 + hi_n)]
                    assert cells == list(np.flatnonzero(source == s)), (size, before, after, s)


# ---------------------------------------------------------------- every pass against the references


@families
@modes
def test_passes_match_references_and_adjoints(fam, mode):
    case = Case(fam, mode)
    p, x, w, b, dy = case.params, case.x, case.w, case.b, case.dy
    y = case.op("forward")(x, w, b, **p)
    assert_close(y, case.ref("forward")(x, w, b, **p))
    dx = case.op("backward_input")(dy, w, x.shape, **p)
    assert_close(dx, case.ref("backward_input")(dy, w, x.shape, **p))
    dw = case.op("backward_weight")(dy, x, w.shape, **p)
    assert_close(dw, case.ref("backward_weight")(dy, x, w.shape, **p))
    for got, expected in zip(case.op("backward")(dy, x, w, b, **p), case.ref("backward")(dy, x, w, b, **p)):
        assert_close(got, expected)
    # <A x, dy> = <x, A^T dy> for the input map, and likewise for the weight map
    y0 = case.op("forward")(x, w, None, **p)
    lhs = inner(y0, dy)
    rtol = 1e-12 if x.dtype == np.float64 else 1e-4
    scale = inner(np.abs(y0), np.abs(dy))
    assert abs(lhs - inner(x, dx)) <= rtol * scale
    assert abs(lhs - inner(w, dw)) <= rtol * scale


@pytest.mark.parametrize("fam", [f for f in FAMILIES if f.name in ("conv2d", "local_conv1d") or
                                 f.name == "tiled_conv2d" and f.tile_mode == "block"], ids=str)
@modes
def test_gradcheck(fam, mode):
    case = Case(fam, mode, n=1, c=2, f=2, dtype=np.float64)
    p = case.params

    def analytic(dy, x, w, b):
        return (case.op("backward_input")(dy, w, x.shape, **p), case.op("backward_weight")(dy, x, w.shape, **p),
                case.op("backward_bias")(dy, b.shape, **fam.mode))

    assert testing.gradcheck(lambda x, w, b: case.op("forward")(x, w, b, **p), [case.x, case.w, case.b], analytic,
                             names=["x", "w", "b"], directions="all")
    assert testing.gradcheck(lambda x, w, b: case.op("forward")(x, w, b, **p), [case.x, case.w, case.b],
                             lambda dy, x, w, b: case.op("backward")(dy, x, w, b, **p), names=["x", "w", "b"],
                             directions=3)


@pytest.mark.parametrize("d", [1, 2])
@modes
def test_shared_matches_pytorch(d, mode):
    torch = pytest.importorskip("torch")
    fam = next(f for f in FAMILIES if f.sharing == "shared" and f.spatial == d)
    # PyTorch pads both sides of an axis alike (or "same")
    params = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2) if mode != "circular" else \
        dict(stride=1, padding="same", dilation=(2, 1), groups=2)
    case = Case(fam, mode, params=params, size=(4, 5), kernel=(3, 2))
    p = {k: case.params[k] for k in ("stride", "padding", "dilation", "groups")}
    layer = (torch.nn.Conv2d if d == 2 else torch.nn.Conv1d)(
        case.x.shape[1], case.w.shape[0], case.w.shape[2:], padding_mode=mode, dtype=torch.float64, **p)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(case.w, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(case.b, dtype=torch.float64))
    x = torch.tensor(case.x, dtype=torch.float64, requires_grad=True)
    expected = layer(x)
    dtype = case.x.dtype
    y = case.op("forward")(case.x, case.w, case.b, **case.params)
    np.testing.assert_allclose(y, expected.detach().numpy().astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * 10)
    expected.backward(torch.tensor(case.dy, dtype=torch.float64))
    dx, dw, db = case.op("backward")(case.dy, case.x, case.w, case.b, **case.params)
    for got, tensor in zip((dx, dw, db), (x, layer.weight, layer.bias)):
        np.testing.assert_allclose(got, tensor.grad.numpy().astype(dtype), rtol=RTOL[dtype], atol=RTOL[dtype] * 100)


# ---------------------------------------------------------------- chunks, threads, zeros


@pytest.mark.parametrize("fam", [f for f in FAMILIES if f.spatial == 2 and f.tile_mode != "block"], ids=str)
def test_chunks_of_one_sample_and_any_thread_count(fam, monkeypatch):
    """A batch padded one sample at a time matches the reference, and gives the same bits with 1 or more threads."""
    case = Case(fam, "reflect", n=3)
    p, x, w, b, dy = case.params, case.x, case.w, case.b, case.dy
    monkeypatch.setattr(conv_padded, "CHUNK_ELEMENTS", 1)

    def run():
        return [case.op("forward")(x, w, b, **p), case.op("backward_input")(dy, w, x.shape, **p),
                case.op("backward_weight")(dy, x, w.shape, **p), *case.op("backward")(dy, x, w, b, **p)]

    results = run()
    expected = [case.ref("forward")(x, w, b, **p), case.ref("backward_input")(dy, w, x.shape, **p),
                case.ref("backward_weight")(dy, x, w.shape, **p), *case.ref("backward")(dy, x, w, b, **p)]
    for got, ref in zip(results, expected):
        assert_close(got, ref)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        again = run()
    finally:
        numba.set_num_threads(threads)
    for first, second in zip(results, again):
        assert first.tobytes() == second.tobytes()


def test_zeros_runs_no_padded_copy(monkeypatch):
    """``"zeros"`` is today's path: the kernels pad, no chunk is copied."""
    case = Case(FAMILIES[0], "reflect")
    p = dict(case.params, padding_mode="zeros")

    def refuse(*args):
        raise AssertionError("a padded copy for padding_mode='zeros'")

    for name in ("forward", "backward_input", "backward_weight", "backward"):
        monkeypatch.setattr(conv_padded, name, refuse)
    y = lcnumba.conv2d_forward(case.x, case.w, case.b, **p)
    assert_close(y, testing.conv2d_forward(case.x, case.w, case.b, **p))
    lcnumba.conv2d_backward_input(y, case.w, case.x.shape, **p)
    lcnumba.conv2d_backward_weight(y, case.x, case.w.shape, **p)
    lcnumba.conv2d_backward(y, case.x, case.w, case.b, **p)


# ---------------------------------------------------------------- out=, accumulate=, empty batches


@pytest.mark.parametrize("fam", [f for f in FAMILIES if f.tile_mode != "block"], ids=str)
def test_out_and_accumulate(fam):
    case = Case(fam, "circular")
    p, x, w, b, dy = case.params, case.x, case.w, case.b, case.dy
    y = np.empty(dy.shape, x.dtype)
    assert case.op("forward")(x, w, b, out=y, **p) is y
    assert_close(y, case.ref("forward")(x, w, b, **p))
    dx = np.full(x.shape, np.nan, x.dtype)
    assert case.op("backward_input")(dy, w, x.shape, out=dx, **p) is dx
    assert_close(dx, case.ref("backward_input")(dy, w, x.shape, **p))
    dw = np.ones(w.shape, x.dtype)
    assert case.op("backward_weight")(dy, x, w.shape, out=dw, accumulate=True, **p) is dw
    assert_close(dw, case.ref("backward_weight")(dy, x, w.shape, **p) + 1)


@families
def test_empty_batch(fam):
    case = Case(fam, "replicate", n=0)
    p, x, w, b, dy = case.params, case.x, case.w, case.b, case.dy
    assert case.op("forward")(x, w, b, **p).shape == dy.shape
    assert case.op("backward_input")(dy, w, x.shape, **p).shape == x.shape
    np.testing.assert_array_equal(case.op("backward_weight")(dy, x, w.shape, **p), 0)
    dw = np.ones(w.shape, x.dtype)
    case.op("backward_weight")(dy, x, w.shape, out=dw, accumulate=True, **p)
    np.testing.assert_array_equal(dw, 1)
    dx, dw, db = case.op("backward")(dy, x, w, b, **p)
    assert dx.shape == x.shape and not dw.any() and not db.any()


# ---------------------------------------------------------------- errors


MESSAGE = re.compile(r"^(\w+): expected .+, got .+$", re.S)


def _raises(kind, name, call):
    with pytest.raises(kind) as info:
        call()
    match = MESSAGE.match(str(info.value))
    assert match and match.group(1) == name, str(info.value)
    return str(info.value)


@pytest.mark.parametrize("part", ["forward", "backward_input", "backward_weight", "backward"])
def test_bad_padding_mode(part):
    fam = FAMILIES[0]
    case = Case(fam, "reflect")
    x, w, b, dy = case.x, case.w, case.b, case.dy
    arguments = {"forward": (x, w, b), "backward_input": (dy, w, x.shape), "backward_weight": (dy, x, w.shape),
                 "backward": (dy, x, w, b)}[part]
    geo = {k: v for k, v in case.params.items() if k != "padding_mode"}
    text = _raises(ValueError, "padding_mode", lambda: case.op(part)(*arguments, **geo, padding_mode="mirror"))
    assert "'mirror'" in text and "'circular'" in text
    _raises(TypeError, "padding_mode", lambda: case.op(part)(*arguments, **geo, padding_mode=None))


@pytest.mark.parametrize("mode, spatial, padding, size, shown, accepted", [
    ("reflect", 2, ((0, 0), (0, 4)), (3, 4), "padding ((0, 0), (0, 4)) for the input size 3x4", ((0, 0), (0, 3))),
    ("reflect", 1, (4, 0), (3, 4), "padding (4, 0) for the input length 4", (3, 0)),
    ("circular", 2, ((4, 0), (0, 0)), (3, 4), "padding ((4, 0), (0, 0)) for the input size 3x4", ((3, 0), (0, 0))),
    ("replicate", 2, ((0, 0), (1, 0)), (3, 0), "padding ((0, 0), (1, 0)) for the input size 3x0", None),
])
def test_padding_beyond_the_modes_bound(mode, spatial, padding, size, shown, accepted):
    fam = next(f for f in FAMILIES if f.sharing == "shared" and f.spatial == spatial)
    x = np.zeros((1, 2) + size[-spatial:])
    w = np.zeros((2, 2) + (1,) * spatial)
    text = _raises(ValueError, "padding", lambda: fam.op("forward")(x, w, padding=padding, padding_mode=mode))
    assert f"padding_mode={mode!r}" in text and text.endswith(shown)
    with pytest.raises(ValueError, match="^padding: "):
        fam.ref("forward")(x, w, padding=padding, padding_mode=mode)
    # the bound is the mode's: zeros take the same padding, and the mode takes one cell less
    assert fam.op("forward")(x, w, padding=padding).shape[:2] == (1, 2)
    if accepted is not None:
        assert fam.op("forward")(x, w, padding=accepted, padding_mode=mode).shape[:2] == (1, 2)


@pytest.mark.parametrize("name", ["conv2d_transpose_forward", "local_conv1d_transpose_backward_weight"])
def test_transposed_ops_take_no_padding_mode(name):
    """PyTorch's ConvTranspose pads with zeros only, and so do the transposed ops: no such parameter."""
    with pytest.raises(TypeError, match="padding_mode"):
        getattr(lcnumba, name)(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), (1, 1, 1, 1), padding_mode="reflect")
