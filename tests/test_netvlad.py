"""NetVLAD / GhostVLAD forward, hand-derived backward, errors, and netvlad_init."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lcnumba as lc
from lcnumba import testing

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}


def _params(x_shape, k, g, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    d = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k + g, d)).astype(dtype)
    b = (0.5 * rng.standard_normal(k + g)).astype(dtype)
    c = (0.3 * rng.standard_normal((k, d))).astype(dtype)
    return x, w, b, c


CASES = [  # (x shape, K, G)
    ((3, 5, 4, 3), 4, 0),
    ((2, 6, 7), 3, 2),
    ((1, 4, 2, 5), 2, 1),
    ((4, 3, 6), 1, 0),
    ((2, 8, 3, 3), 5, 3),
]


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("shape,k,g", CASES)
@pytest.mark.parametrize("normalize_input", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_reference(shape, k, g, normalize_input, dtype):
    x, w, b, c = _params(shape, k, g, dtype)
    y = lc.netvlad_forward(x, w, b, c, normalize_input=normalize_input)
    assert y.shape == (shape[0], k * shape[1]) and y.dtype == dtype
    np.testing.assert_allclose(y, testing.netvlad_forward(x, w, b, c, normalize_input=normalize_input),
                               **TOL[dtype])
    np.testing.assert_allclose(np.linalg.norm(y.astype(np.float64), axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("shape,k,g", CASES)
@pytest.mark.parametrize("normalize_input", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(shape, k, g, normalize_input, dtype):
    x, w, b, c = _params(shape, k, g, dtype)
    dy = np.random.default_rng(1).standard_normal((shape[0], k * shape[1])).astype(dtype)
    grads = lc.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)
    expected = testing.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)
    for name, got, want, like in zip(("dx", "dw", "db", "dcentroids"), grads, expected, (x, w, b, c)):
        assert got.shape == like.shape and got.dtype == dtype, name
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * scale,
                                   err_msg=name)


@pytest.mark.parametrize("shape,k,g", [((2, 4, 3, 2), 3, 0), ((2, 3, 5), 2, 2), ((1, 3, 2, 2), 2, 1)])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_gradcheck(shape, k, g, normalize_input):
    x, w, b, c = _params(shape, k, g, seed=4)

    def forward(x, w, b, c):
        return lc.netvlad_forward(x, w, b, c, normalize_input=normalize_input)

    def backward(dy, x, w, b, c):
        return lc.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)

    assert testing.gradcheck(forward, [x, w, b, c], backward, rtol=1e-5, atol=1e-8,
                             names=["x", "w", "b", "centroids"])


@pytest.mark.parametrize("normalize_input", [True, False])
def test_reference_backward_gradcheck(normalize_input):
    x, w, b, c = _params((2, 3, 2, 2), 2, 1, seed=6)

    def forward(x, w, b, c):
        return testing.netvlad_forward(x, w, b, c, normalize_input=normalize_input)

    def backward(dy, x, w, b, c):
        return testing.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)

    assert testing.gradcheck(forward, [x, w, b, c], backward, rtol=1e-5, atol=1e-8)


def test_three_and_four_dimensional_inputs_agree():
    x, w, b, c = _params((2, 5, 3, 4), 3, 1)
    dy = np.random.default_rng(2).standard_normal((2, 15))
    np.testing.assert_array_equal(lc.netvlad_forward(x, w, b, c), lc.netvlad_forward(x.reshape(2, 5, 12), w, b, c))
    g4 = lc.netvlad_backward(dy, x, w, b, c)
    g3 = lc.netvlad_backward(dy, x.reshape(2, 5, 12), w, b, c)
    assert g4[0].shape == x.shape and g3[0].shape == (2, 5, 12)
    for a, b_ in zip(g4, g3):
        np.testing.assert_array_equal(a.reshape(b_.shape), b_)


def test_ghost_clusters_change_the_assignment_but_not_the_output_size():
    x, w, b, c = _params((2, 4, 6), 3, 0)
    ghost_w = np.vstack([w, np.ones((2, 4))])
    ghost_b = np.concatenate([b, [2.0, 2.0]])
    y = lc.netvlad_forward(x, w, b, c)
    y_ghost = lc.netvlad_forward(x, ghost_w, ghost_b, c)
    assert y_ghost.shape == y.shape
    assert not np.allclose(y, y_ghost)
    # a ghost that never receives mass changes nothing
    silent = lc.netvlad_forward(x, np.vstack([w, np.zeros((1, 4))]), np.concatenate([b, [-1e4]]), c)
    np.testing.assert_allclose(silent, y, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- clamped norms stay finite


@pytest.mark.parametrize("dtype", DTYPES)
def test_cluster_without_assignment_mass_has_finite_gradients(dtype):
    x, w, b, c = _params((2, 4, 5), 3, 1, dtype)
    b[1] = -1e4  # exp underflows to exactly 0: cluster 1 gets no mass, its V row is all zero
    dy = np.random.default_rng(3).standard_normal((2, 12)).astype(dtype)
    y = lc.netvlad_forward(x, w, b, c)
    np.testing.assert_array_equal(y[:, 4:8], 0)
    grads = lc.netvlad_backward(dy, x, w, b, c)
    for name, grad in zip(("dx", "dw", "db", "dcentroids"), grads):
        assert np.all(np.isfinite(grad)), name
    np.testing.assert_array_equal(grads[3][1], 0)
    if dtype == np.float64:
        for got, want in zip(grads, testing.netvlad_backward(dy, x, w, b, c)):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_zero_descriptors_and_all_zero_vlad_have_finite_gradients():
    x, w, b, c = _params((2, 3, 4), 2, 0)
    x[0, :, 1] = 0  # one descriptor of norm 0: the input normalisation clamps
    grads = lc.netvlad_backward(np.ones((2, 6)), x, w, b, c)
    assert all(np.all(np.isfinite(grad)) for grad in grads)
    for got, want in zip(grads, testing.netvlad_backward(np.ones((2, 6)), x, w, b, c)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    # every residual zero: x_i = c_k for all i, k; both normalisations clamp
    x0 = np.zeros((1, 3, 4))
    y = lc.netvlad_forward(x0, w, b, np.zeros((2, 3)), normalize_input=False)
    np.testing.assert_array_equal(y, 0)
    grads = lc.netvlad_backward(np.ones((1, 6)), x0, w, b, np.zeros((2, 3)), normalize_input=False)
    assert all(np.all(np.isfinite(grad)) for grad in grads)


# ---------------------------------------------------------------- buffers, strides, empty inputs


def test_out_is_written_and_returned():
    x, w, b, c = _params((2, 4, 6), 3, 1, np.float32)
    out = np.full((2, 12), np.nan, np.float32)
    assert lc.netvlad_forward(x, w, b, c, out=out) is out
    np.testing.assert_allclose(out, testing.netvlad_forward(x, w, b, c), rtol=1e-5, atol=1e-6)


def test_inputs_untouched_strides_accepted_and_deterministic():
    x, w, b, c = _params((3, 4, 2, 5), 3, 2)
    xs = np.asfortranarray(x)
    ws = np.asfortranarray(w)
    bs = np.repeat(b, 2)[::2]
    cs = np.asfortranarray(c)
    keep = [a.copy() for a in (xs, ws, bs, cs)]
    dy = np.random.default_rng(9).standard_normal((3, 12))[:, ::-1]
    y = lc.netvlad_forward(xs, ws, bs, cs)
    grads = lc.netvlad_backward(dy, xs, ws, bs, cs)
    for before, after in zip(keep, (xs, ws, bs, cs)):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(y, lc.netvlad_forward(x, w, b, c))
    again = lc.netvlad_backward(np.ascontiguousarray(dy), x, w, b, c)
    for first, second in zip(grads, again):
        np.testing.assert_array_equal(first, second)  # bitwise: fixed summation order


def test_empty_batch_and_empty_descriptor_sets():
    _, w, b, c = _params((1, 4, 3), 2, 1)
    y = lc.netvlad_forward(np.empty((0, 4, 3, 3)), w, b, c)
    assert y.shape == (0, 8)
    dx, dw, db, dc = lc.netvlad_backward(y, np.empty((0, 4, 3, 3)), w, b, c)
    assert dx.shape == (0, 4, 3, 3)
    assert not dw.any() and not db.any() and not dc.any()
    y = lc.netvlad_forward(np.empty((2, 4, 0)), w, b, c)  # no descriptors: every residual is zero
    np.testing.assert_array_equal(y, 0)
    dx, dw, db, dc = lc.netvlad_backward(np.ones((2, 8)), np.empty((2, 4, 0)), w, b, c)
    assert dx.shape == (2, 4, 0) and not dw.any() and not db.any() and not dc.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_driver_sums_the_samples_in_order(dtype):
    """``lcnumba.cpu.netvlad.backward``, the one compiled backward of the Python function and the C entry point:
    its weight, bias and centroid gradients are the per-sample gradients (each sample's own call) added in sample
    order, to the bit; no samples give zeros."""
    from lcnumba.cpu import netvlad

    x, w, b, c = _params((4, 5, 6), 3, 2, dtype)
    dy = np.random.default_rng(3).standard_normal((4, 15)).astype(dtype)
    dx = np.empty_like(x)
    sums = [np.full_like(w, np.nan), np.full_like(b, np.nan), np.full_like(c, np.nan)]
    netvlad.backward(dy, x, w, b, c, True, True, True, 1e-12, np.empty((4, 0), np.uint8), dx, *sums)
    parts = [lc.netvlad_backward(dy[n:n + 1], x[n:n + 1], w, b, c) for n in range(4)]
    np.testing.assert_array_equal(dx, np.concatenate([part[0] for part in parts]))
    for which, got in enumerate(sums, start=1):
        want = parts[0][which].copy()
        for part in parts[1:]:
            want += part[which]
        np.testing.assert_array_equal(got, want)
    netvlad.backward(dy[:0], x[:0], w, b, c, True, True, True, 1e-12, np.empty((0, 0), np.uint8), dx[:0], *sums)
    assert not any(part.any() for part in sums)


# ---------------------------------------------------------------- errors


def _args(dtype=np.float64):
    x, w, b, c = _params((2, 4, 3), 3, 1, dtype)
    return x, w, b, c


def _with(**changes):
    names = ("x", "w", "b", "centroids")
    values = dict(zip(names, _args()))
    values.update({k: v for k, v in changes.items() if k in names})
    kwargs = {k: v for k, v in changes.items() if k not in names}
    return [values[n] for n in names], kwargs


@pytest.mark.parametrize("changes,error,name", [
    (dict(x=[[1.0]]), TypeError, "x"),
    (dict(x=np.zeros((2, 4, 3), np.int64)), TypeError, "x"),
    (dict(x=np.zeros((2, 4))), ValueError, "x"),
    (dict(x=np.zeros((2, 4, 3, 1, 1))), ValueError, "x"),
    (dict(x=np.zeros((2, 0, 3))), ValueError, "x"),
    (dict(w=np.zeros((4, 5))), ValueError, "w"),
    (dict(w=np.zeros(4)), ValueError, "w"),
    (dict(w=np.zeros((4, 4), np.float32)), TypeError, "w"),
    (dict(b=np.zeros(3)), ValueError, "b"),
    (dict(b=np.zeros((4, 1))), ValueError, "b"),
    (dict(b=None), TypeError, "b"),
    (dict(centroids=np.zeros((3, 5))), ValueError, "centroids"),
    (dict(centroids=np.zeros((5, 4))), ValueError, "centroids"),
    (dict(centroids=np.zeros((0, 4))), ValueError, "centroids"),
    (dict(centroids=np.zeros((3, 4), np.float32)), TypeError, "centroids"),
    (dict(normalize_input=1), TypeError, "normalize_input"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps="1e-12"), TypeError, "eps"),
])
def test_errors(changes, error, name):
    args, kwargs = _with(**changes)
    with pytest.raises(error, match=f"^{name}:"):
        lc.netvlad_forward(*args, **kwargs)
    dy = np.ones((2, 12))
    with pytest.raises(error, match=f"^{name}:"):
        lc.netvlad_backward(dy, *args, **kwargs)


@pytest.mark.parametrize("out,error", [
    (np.zeros((2, 12), np.float32), TypeError),
    (np.zeros((2, 11)), ValueError),
    (np.zeros((2, 24))[:, ::2], ValueError),
    ([0.0], TypeError),
])
def test_out_errors(out, error):
    with pytest.raises(error, match="^out:"):
        lc.netvlad_forward(*_args(), out=out)


def test_out_overlapping_an_input_or_read_only_is_refused():
    x, w, b, c = _args()
    buffer = np.zeros(24 + 12)
    x_in = buffer[:24].reshape(2, 4, 3)
    x_in[...] = x
    with pytest.raises(ValueError, match="^out:.*overlap x"):
        lc.netvlad_forward(x_in, w, b, c, out=buffer[12:36].reshape(2, 12))
    read_only = np.zeros((2, 12))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="^out:.*writeable"):
        lc.netvlad_forward(x, w, b, c, out=read_only)


def test_backward_dy_errors():
    x, w, b, c = _args()
    with pytest.raises(ValueError, match="^dy:"):
        lc.netvlad_backward(np.ones((2, 11)), x, w, b, c)
    with pytest.raises(ValueError, match="^dy:"):
        lc.netvlad_backward(np.ones((2, 4, 3)), x, w, b, c)
    with pytest.raises(TypeError, match="^dy:"):
        lc.netvlad_backward(np.ones((2, 12), np.int32), x, w, b, c)
    with pytest.raises(TypeError, match="^dy: expected dtype float64 like x, w, b and centroids"):
        lc.netvlad_backward(np.ones((2, 12), np.float32), x, w, b, c)  # dy differs from the other four


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), d=st.integers(1, 6), m=st.integers(1, 7), k=st.integers(1, 4), g=st.integers(0, 3),
       normalize_input=st.booleans(), four_d=st.booleans(), seed=st.integers(0, 2**16))
def test_property_matches_reference(n, d, m, k, g, normalize_input, four_d, seed):
    shape = (n, d, 1, m) if four_d else (n, d, m)
    x, w, b, c = _params(shape, k, g, seed=seed)
    y = lc.netvlad_forward(x, w, b, c, normalize_input=normalize_input)
    np.testing.assert_allclose(y, testing.netvlad_forward(x, w, b, c, normalize_input=normalize_input),
                               rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    for got, want in zip(lc.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input),
                         testing.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9 * max(1.0, np.abs(want).max()))


# ---------------------------------------------------------------- PyTorch's bmm form, when installed


def test_against_pytorch_bmm_form():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, c = _params((2, 6, 3, 4), 3, 2)
    k = c.shape[0]
    xt, wt, bt, ct = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b, c))
    xn = F.normalize(xt.flatten(2), p=2, dim=1)
    a = F.softmax(torch.einsum("kd,ndm->nkm", wt, xn) + bt[None, :, None], dim=1)[:, :k]
    v = torch.bmm(a, xn.transpose(1, 2)) - a.sum(2).unsqueeze(2) * ct
    yt = F.normalize(F.normalize(v, p=2, dim=2).flatten(1), p=2, dim=1)
    dy = np.random.default_rng(0).standard_normal(yt.shape)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(lc.netvlad_forward(x, w, b, c), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(lc.netvlad_backward(dy, x, w, b, c), (xt.grad, wt.grad, bt.grad, ct.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- netvlad_init


def _clustered_descriptors(seed=0, per_cluster=60, k=5, d=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    points = np.repeat(centres, per_cluster, axis=0) + 0.3 * rng.standard_normal((k * per_cluster, d))
    return points[rng.permutation(len(points))]


def _assignment(descriptors, w, b):
    unit = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    logits = unit @ w.T.astype(np.float64) + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_init_shapes_dtype_and_determinism(dtype):
    desc = _clustered_descriptors().astype(dtype)
    w, b, c = lc.netvlad_init(desc, 5, num_ghost=2, seed=7)
    assert (w.shape, b.shape, c.shape) == ((7, 8), (7,), (5, 8))
    assert w.dtype == b.dtype == c.dtype == dtype
    again = lc.netvlad_init(desc, 5, num_ghost=2, seed=7)
    for first, second in zip((w, b, c), again):
        np.testing.assert_array_equal(first, second)
    other = lc.netvlad_init(desc, 5, num_ghost=2, seed=8)
    assert not np.array_equal(other[2], c) or not np.array_equal(other[0][5:], w[5:])


def test_init_assignment_ratio_is_about_100():
    desc = _clustered_descriptors(seed=1)
    w, b, c = lc.netvlad_init(desc, 5, seed=0)
    a = np.sort(_assignment(desc, w, b), axis=1)
    ratio = np.exp(np.mean(np.log(a[:, -1] / a[:, -2])))
    assert ratio == pytest.approx(100, rel=1e-6)
    # the paper's form: w_k = 2 alpha c_k / |c_k|, b_k = -alpha
    alpha = -b[0]
    directions = c / np.linalg.norm(c, axis=1, keepdims=True)
    np.testing.assert_allclose(w, 2 * alpha * directions, rtol=1e-12)
    np.testing.assert_allclose(b, -alpha, rtol=1e-12)
    # the centroids are cluster means of the unit descriptors
    assert np.all(np.linalg.norm(c, axis=1) <= 1 + 1e-12)


def test_init_ghosts_are_small_and_alpha_is_honoured():
    desc = _clustered_descriptors(seed=2)
    w, b, c = lc.netvlad_init(desc, 5, num_ghost=3, alpha=4.0, seed=0)
    np.testing.assert_allclose(b, -4.0)
    np.testing.assert_allclose(np.linalg.norm(w[:5], axis=1), 8.0)
    assert np.all(np.linalg.norm(w[5:], axis=1) < 0.5)
    # ghosts take part in the forward: the shapes fit netvlad_forward
    x = desc.T[None, :, :40]
    assert lc.netvlad_forward(x, w, b, c).shape == (1, 5 * 8)


def test_init_accepts_feature_maps():
    rng = np.random.default_rng(5)
    maps = rng.standard_normal((3, 6, 4, 5))
    flat = np.moveaxis(maps.reshape(3, 6, 20), 1, 2).reshape(60, 6)
    for first, second in zip(lc.netvlad_init(maps, 4, seed=1), lc.netvlad_init(flat, 4, seed=1)):
        np.testing.assert_array_equal(first, second)
    for first, second in zip(lc.netvlad_init(maps.reshape(3, 6, 20), 4, seed=1), lc.netvlad_init(flat, 4, seed=1)):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("call,error,name", [
    (lambda d: lc.netvlad_init(d.tolist(), 3), TypeError, "descriptors"),
    (lambda d: lc.netvlad_init(d.astype(np.int64), 3), TypeError, "descriptors"),
    (lambda d: lc.netvlad_init(d[0], 3), ValueError, "descriptors"),
    (lambda d: lc.netvlad_init(d[:0], 3), ValueError, "descriptors"),
    (lambda d: lc.netvlad_init(np.where(d > 1, np.nan, d), 3), ValueError, "descriptors"),
    (lambda d: lc.netvlad_init(d, 0), ValueError, "num_clusters"),
    (lambda d: lc.netvlad_init(d, 2.0), TypeError, "num_clusters"),
    (lambda d: lc.netvlad_init(d, len(d) + 1), ValueError, "num_clusters"),
    (lambda d: lc.netvlad_init(d, 3, num_ghost=-1), ValueError, "num_ghost"),
    (lambda d: lc.netvlad_init(d, 3, alpha=0.0), ValueError, "alpha"),
    (lambda d: lc.netvlad_init(d, 3, alpha="big"), TypeError, "alpha"),
    (lambda d: lc.netvlad_init(d, 1), ValueError, "alpha"),
    (lambda d: lc.netvlad_init(d, 3, seed=1.5), TypeError, "seed"),
    (lambda d: lc.netvlad_init(np.ones((10, 4)), 3, seed=0), ValueError, "num_clusters"),
])
def test_init_errors(call, error, name):
    with pytest.raises(error, match=f"^{name}:"):
        call(_clustered_descriptors(k=3, per_cluster=10))


def test_init_with_one_cluster_and_given_alpha():
    w, b, c = lc.netvlad_init(_clustered_descriptors(), 1, alpha=2.0, seed=0)
    assert w.shape == (1, 8) and np.allclose(b, -2.0)


def test_read_only_inputs():
    x, w, b, c = _params((2, 4, 5), 2, 1)
    dy = np.random.default_rng(0).standard_normal((2, 8))
    y = lc.netvlad_forward(x, w, b, c)
    expected = lc.netvlad_backward(dy, x, w, b, c)
    for array in (x, w, b, c, dy):
        array.flags.writeable = False
    np.testing.assert_array_equal(lc.netvlad_forward(x, w, b, c), y)
    for got, want in zip(lc.netvlad_backward(dy, x, w, b, c), expected):
        np.testing.assert_array_equal(got, want)
