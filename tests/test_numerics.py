"""Numerics: NaN and inf propagation, NetVLAD's degenerate inputs, float32 against float64.

- NaN and inf propagate as IEEE arithmetic does: a convolution output is NaN
  or infinite exactly where its receptive field holds a NaN or an infinity
  (the weights being finite and non-zero), and so are the gradients that
  read them; max-pooling lets NaN win and treats +-inf as ordinary values; a
  NaN or inf descriptor makes its NetVLAD sample NaN and leaves the other
  samples alone.
- NetVLAD stays finite with empty clusters (no assignment mass), all-zero
  inputs and float32 descriptors near 1e30 (or 1e-30), where the squares in
  a norm leave float32's range (the kernels then rescale: see
  ``lcnumba.cpu.netvlad._scaled_norm``).
- float32 results stay within the tolerances of ``docs/reliability.md`` of
  float64 results on the DESIGN section 6 workloads, scaled down to a batch
  of 1 or 2 (and the 63x63 input of deepface_l4 cropped to 23x23, which
  keeps its 9x9 filters but not its 0.25 GB weight).
"""

import numpy as np
import pytest

import lcnumba
from lcnumba import testing

# ---------------------------------------------------------------- NaN and inf: max-pooling


@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_nan_wins_inf_is_a_value(return_indices, dtype):
    x = np.zeros((1, 1, 4, 6), dtype)
    x[0, 0, 0, 0] = np.nan  # window (0, 0)
    x[0, 0, 0, 3] = np.inf  # window (0, 1)
    x[0, 0, 1, 2] = np.nan  # window (0, 1): NaN beats +inf
    x[0, 0, 2:, :2] = -np.inf  # window (1, 0): all -inf
    x[0, 0, 3, 4] = np.inf  # window (1, 2)
    result = lcnumba.max_pool2d_forward(x, 2, return_indices=return_indices)
    y = result[0] if return_indices else result
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 0, 1])
    assert y[0, 0, 1, 0] == -np.inf and y[0, 0, 1, 2] == np.inf and y[0, 0, 0, 2] == 0
    if return_indices:
        np.testing.assert_array_equal(result[1], testing.max_pool2d_forward(x, 2, return_indices=True)[1])
        assert result[1][0, 0, 0, 1] == 1 * 6 + 2 and result[1][0, 0, 1, 0] == 2 * 6 + 0


def test_max_pool_backward_sends_nan_gradient_to_the_argmax_only():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, indices = lcnumba.max_pool2d_forward(x, 2, return_indices=True)
    dy = np.ones_like(y)
    dy[0, 0, 0, 1] = np.nan
    dx = lcnumba.max_pool2d_backward(dy, indices, x.shape)
    assert np.argwhere(np.isnan(dx)).tolist() == [[0, 0, 1, 3]]


# ---------------------------------------------------------------- NaN and inf: convolutions


def _conv_case(family, rng):
    x = rng.standard_normal((2, 2, 7, 8))
    if family == "conv2d":
        w, params = rng.standard_normal((3, 2, 3, 2)), dict(stride=(2, 1), padding=1, dilation=(1, 2))
    elif family == "tiled_conv2d":
        w, params = rng.standard_normal((2, 2, 3, 2, 3, 2)), dict(stride=(2, 1), padding=1, dilation=(1, 2))
    else:
        w, params = rng.standard_normal((4, 8, 3, 2, 3, 2)), dict(stride=(2, 1), padding=1, dilation=(1, 2))
    return x, w + np.sign(w) * 0.1, params  # no zero weight: inf * 0 would be NaN anywhere


def _reads(family, x_mask, w, params):
    """Where an output reads a marked input cell (a forward of indicators with positive weights)."""
    return getattr(testing, f"{family}_forward")(x_mask.astype(float), np.abs(w), **params) > 0


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's inf - inf
@pytest.mark.parametrize("family", ["conv2d", "tiled_conv2d", "local_conv2d"])
def test_non_finite_inputs_reach_exactly_their_receptive_field(family):
    rng = np.random.default_rng(0)
    x, w, params = _conv_case(family, rng)
    nan_at = np.zeros(x.shape, bool)
    nan_at[1, 0, 3, 4] = True
    inf_at = np.zeros(x.shape, bool)
    inf_at[0, 1, 0, 0] = True
    x[nan_at], x[inf_at] = np.nan, np.inf
    y = getattr(lcnumba, f"{family}_forward")(x, w, **params)
    np.testing.assert_array_equal(np.isnan(y) & _reads(family, nan_at, w, params), _reads(family, nan_at, w, params))
    np.testing.assert_array_equal(~np.isfinite(y), _reads(family, nan_at | inf_at, w, params))
    # the weight gradient is NaN exactly at the taps that read the NaN (dy finite)
    dy = rng.standard_normal(y.shape)
    dw = getattr(lcnumba, f"{family}_backward_weight")(dy, x, w.shape, **params)
    expected = getattr(testing, f"{family}_backward_weight")(dy, x, w.shape, **params)
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(expected))
    assert np.isnan(dw).any() and not np.isnan(dw).all()
    # a NaN output gradient reaches exactly the inputs under its window
    dy_nan = np.zeros(y.shape, bool)
    dy_nan[1, 0, 1, 2] = True
    dy[dy_nan] = np.nan
    dx = getattr(lcnumba, f"{family}_backward_input")(dy, w, x.shape, **params)
    expected = getattr(testing, f"{family}_backward_input")(dy, w, x.shape, **params)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(expected))
    assert 0 < np.isnan(dx).sum() < dx.size


# ---------------------------------------------------------------- NaN and inf: NetVLAD


def _netvlad_params(rng, n=3, d=6, m=5, k=3, g=1, dtype=np.float64, scale=1.0):
    x = (scale * rng.standard_normal((n, d, m))).astype(dtype)
    w = rng.standard_normal((k + g, d)).astype(dtype)
    b = rng.standard_normal(k + g).astype(dtype)
    c = (0.5 * rng.standard_normal((k, d))).astype(dtype)
    return x, w, b, c


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_netvlad_non_finite_descriptor_spoils_only_its_sample(bad, normalize_input):
    rng = np.random.default_rng(1)
    x, w, b, c = _netvlad_params(rng)
    clean = lcnumba.netvlad_forward(x, w, b, c, normalize_input=normalize_input)
    x[1, 2, 3] = bad
    y = lcnumba.netvlad_forward(x, w, b, c, normalize_input=normalize_input)
    assert np.isnan(y[1]).all()
    np.testing.assert_array_equal(y[[0, 2]], clean[[0, 2]])
    dy = rng.standard_normal(y.shape)
    dx, dw, db, dc = lcnumba.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)
    assert np.isnan(dx[1]).all() and np.isfinite(dx[[0, 2]]).all()
    assert np.isnan(dw).all() and np.isnan(db).all() and np.isnan(dc).all()  # sums over the samples


# ---------------------------------------------------------------- NetVLAD: degenerate but finite


def _assert_finite_and_close(x, w, b, c, *, normalize_input=True, eps=1e-12, rtol=1e-9):
    y = lcnumba.netvlad_forward(x, w, b, c, normalize_input=normalize_input, eps=eps)
    dy = np.random.default_rng(5).standard_normal(y.shape).astype(x.dtype)
    grads = lcnumba.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input, eps=eps)
    expected = (testing.netvlad_forward(x, w, b, c, normalize_input=normalize_input, eps=eps),) + \
        testing.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input, eps=eps)
    for name, got, want in zip(("y", "dx", "dw", "db", "dc"), (y,) + grads, expected):
        assert np.isfinite(got).all(), name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()), err_msg=name)
    return y


@pytest.mark.parametrize("normalize_input", [True, False])
def test_netvlad_empty_clusters_stay_finite(normalize_input):
    rng = np.random.default_rng(2)
    x, w, b, c = _netvlad_params(rng, g=1)
    b[0] = -1e4  # real cluster 0 receives no mass: V_0 = 0, its norm is clamped to eps
    y = _assert_finite_and_close(x, w, b, c, normalize_input=normalize_input)
    assert np.all(y.reshape(3, 3, 6)[:, 0] == 0)
    b[:] = -1e4
    b[-1] = 50.0  # the ghost takes everything: every real cluster is empty, y = 0
    y = _assert_finite_and_close(x, w, b, c, normalize_input=normalize_input)
    assert np.all(y == 0)


@pytest.mark.parametrize("normalize_input", [True, False])
@pytest.mark.parametrize("zero_centroids", [False, True])
def test_netvlad_all_zero_inputs_stay_finite(normalize_input, zero_centroids):
    rng = np.random.default_rng(3)
    x, w, b, c = _netvlad_params(rng)
    x[:] = 0
    if zero_centroids:
        c[:] = 0  # every residual is 0: V = 0 and every norm is clamped
    y = _assert_finite_and_close(x, w, b, c, normalize_input=normalize_input)
    assert (np.all(y == 0)) == zero_centroids


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e36, 1e-30])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_netvlad_float32_at_extreme_scales(scale, normalize_input):
    """Squares of such float32 values leave float32's range; results must match float64's."""
    rng = np.random.default_rng(4)
    x, w, b, c = _netvlad_params(rng, n=2, d=8, m=12, k=4, g=1, dtype=np.float32)
    x = (x.astype(np.float64) * scale).astype(np.float32)
    if not normalize_input:  # keep the logits and the residuals of the order of the data
        w = (w.astype(np.float64) / scale).astype(np.float32)
        c = (c.astype(np.float64) * scale).astype(np.float32)
    eps = 1e-12 if scale > 1 else 1e-45
    dy = rng.standard_normal((2, 32)).astype(np.float32)
    y = lcnumba.netvlad_forward(x, w, b, c, normalize_input=normalize_input, eps=eps)
    grads = lcnumba.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input, eps=eps)
    wide = [a.astype(np.float64) for a in (dy, x, w, b, c)]
    y64 = lcnumba.netvlad_forward(*wide[1:], normalize_input=normalize_input, eps=eps)
    grads64 = lcnumba.netvlad_backward(*wide, normalize_input=normalize_input, eps=eps)
    for name, got, want in zip(("y", "dx", "dw", "db", "dc"), (y,) + grads, (y64,) + grads64):
        assert np.isfinite(got).all(), name
        assert np.abs(want).max() > 0, name
        assert _relative(got, want) < 2e-5, f"{name}: {_relative(got, want):.2g}"
    np.testing.assert_allclose(np.linalg.norm(y.astype(np.float64), axis=1), 1, rtol=1e-5)


# ---------------------------------------------------------------- float32 against float64 (DESIGN section 6)


def _relative(got, want):
    """Normwise relative error: the largest deviation over the largest magnitude."""
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


#: documented in docs/reliability.md; measured values are 5 to 20 times smaller
CONV_TOL = 1e-5
NETVLAD_TOL = {"y": 2e-5, "dx": 2e-5, "dw": 2e-5, "db": 5e-3, "dcentroids": 2e-5}

CONV_WORKLOADS = {  # name: (family, x shape, w shape, params); batch scaled down from 8
    "deepface_c1": ("conv2d", (1, 3, 152, 152), (32, 3, 11, 11), {}),
    "deepface_l4": ("local_conv2d", (2, 16, 23, 23), (15, 15, 16, 16, 9, 9), {}),
    "deepface_l5": ("local_conv2d", (2, 16, 55, 55), (25, 25, 16, 16, 7, 7), dict(stride=2)),
    "deepface_l6": ("local_conv2d", (2, 16, 25, 25), (21, 21, 16, 16, 5, 5), {}),
    "tiled_k2": ("tiled_conv2d", (2, 32, 32, 32), (2, 2, 32, 32, 5, 5), dict(padding=2)),
    "vgg_conv3": ("conv2d", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
}


def _float32_inputs(*arrays):
    """Inputs rounded to float32 once, so both precisions compute from the same values."""
    narrow = [a.astype(np.float32) for a in arrays]
    return narrow, [a.astype(np.float64) for a in narrow]


@pytest.mark.parametrize("name", list(CONV_WORKLOADS))
def test_conv_workloads_float32_within_tolerance(name):
    family, x_shape, w_shape, params = CONV_WORKLOADS[name]
    rng = np.random.default_rng(6)
    bias_shape = (w_shape[0],) if family == "conv2d" else (w_shape[2], w_shape[0], w_shape[1])
    x = rng.standard_normal(x_shape)
    w = lcnumba.he_normal(w_shape, family, dtype=np.float64, seed=7)
    b = 0.1 * rng.standard_normal(bias_shape)
    forward = getattr(lcnumba, f"{family}_forward")
    backward = getattr(lcnumba, f"{family}_backward")
    y_shape = forward(x[:1], w, b, **params).shape[1:]
    dy = rng.standard_normal((x_shape[0],) + y_shape)
    (x32, w32, b32, dy32), (x64, w64, b64, dy64) = _float32_inputs(x, w, b, dy)
    got = (forward(x32, w32, b32, **params),) + backward(dy32, x32, w32, b32, **params)
    want = (forward(x64, w64, b64, **params),) + backward(dy64, x64, w64, b64, **params)
    errors = {part: _relative(g, e) for part, g, e in zip(("y", "dx", "dw", "db"), got, want)}
    print(f"\n{name}: " + ", ".join(f"{part} {err:.1e}" for part, err in errors.items()))
    assert all(err < CONV_TOL for err in errors.values()), errors


@pytest.mark.parametrize("name,shape,kernel,stride", [("deepface_m2", (1, 32, 142, 142), 3, 2),
                                                       ("vgg_pool", (1, 64, 112, 112), 2, 2)])
def test_pool_workloads_float32_exact(name, shape, kernel, stride):
    """A maximum is exact: float32 pooling of float32 values is float64 pooling of the same values.

    So is the backward of non-overlapping windows; where windows overlap (deepface_m2) a cell sums
    the gradients of up to four windows, rounded once per addition in float32.
    """
    (x32,), (x64,) = _float32_inputs(np.random.default_rng(8).standard_normal(shape))
    y32, i32 = lcnumba.max_pool2d_forward(x32, kernel, stride=stride, return_indices=True)
    y64, i64 = lcnumba.max_pool2d_forward(x64, kernel, stride=stride, return_indices=True)
    np.testing.assert_array_equal(y32, y64)
    np.testing.assert_array_equal(i32, i64)
    dy = np.random.default_rng(9).standard_normal(y32.shape)
    (dy32,), (dy64,) = _float32_inputs(dy)
    dx32 = lcnumba.max_pool2d_backward(dy32, i32, shape)
    dx64 = lcnumba.max_pool2d_backward(dy64, i64, shape)
    if kernel <= stride:
        np.testing.assert_array_equal(dx32, dx64)
    else:
        assert _relative(dx32, dx64) < 1e-6


def test_netvlad_workload_float32_within_tolerance():
    """netvlad_vgg with N = 1: (1, 512, 30, 40) ReLU features, K = 64."""
    rng = np.random.default_rng(10)
    x = np.maximum(rng.standard_normal((1, 512, 30, 40)), 0)
    w, b, c = 0.05 * rng.standard_normal((64, 512)), 0.1 * rng.standard_normal(64), 0.05 * rng.standard_normal((64, 512))
    dy = rng.standard_normal((1, 64 * 512))
    (x32, w32, b32, c32, dy32), (x64, w64, b64, c64, dy64) = _float32_inputs(x, w, b, c, dy)
    got = (lcnumba.netvlad_forward(x32, w32, b32, c32),) + lcnumba.netvlad_backward(dy32, x32, w32, b32, c32)
    want = (lcnumba.netvlad_forward(x64, w64, b64, c64),) + lcnumba.netvlad_backward(dy64, x64, w64, b64, c64)
    errors = {part: _relative(g, e) for part, g, e in zip(NETVLAD_TOL, got, want)}
    print("\nnetvlad_vgg: " + ", ".join(f"{part} {err:.1e}" for part, err in errors.items()))
    assert all(errors[part] < NETVLAD_TOL[part] for part in errors), errors
