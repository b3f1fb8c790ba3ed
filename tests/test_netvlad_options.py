"""NetVLAD's options (normalisation switches, mask), the aggregation core and the PCA-whitening layer on the CPU."""

import numpy as np
import pytest

import lcnumba as lc
from lcnumba import testing

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}
SWITCHES = [(True, True), (True, False), (False, True), (False, False)]


def _params(x_shape, k, g, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    d = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k + g, d)).astype(dtype)
    b = (0.5 * rng.standard_normal(k + g)).astype(dtype)
    c = (0.3 * rng.standard_normal((k, d))).astype(dtype)
    return x, w, b, c


def _mask(n, m, seed=1):
    mask = np.random.default_rng(seed).random((n, m)) < 0.6
    mask[:, 0] = True
    return mask


def _close(got, want, dtype, name=""):
    scale = max(np.abs(want).max(), 1e-30)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * scale, err_msg=name)


# ---------------------------------------------------------------- switches and mask, against the reference


@pytest.mark.parametrize("intra,final", SWITCHES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_netvlad_options_match_reference(intra, final, masked, dtype):
    x, w, b, c = _params((3, 5, 2, 3), 3, 1, dtype)
    kw = dict(intra_normalize=intra, final_normalize=final, mask=_mask(3, 6) if masked else None)
    y = lc.netvlad_forward(x, w, b, c, **kw)
    _close(y, testing.netvlad_forward(x, w, b, c, **kw), dtype)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    got = lc.netvlad_backward(dy, x, w, b, c, **kw)
    want = testing.netvlad_backward(dy, x, w, b, c, **kw)
    for name, g, r in zip(("dx", "dw", "db", "dc"), got, want):
        assert g.dtype == dtype
        _close(g, r, dtype, name)


def test_defaults_are_todays_netvlad():
    x, w, b, c = _params((2, 4, 5), 3, 1)
    dy = np.random.default_rng(5).standard_normal((2, 12))
    np.testing.assert_array_equal(lc.netvlad_forward(x, w, b, c),
                                  lc.netvlad_forward(x, w, b, c, intra_normalize=True, final_normalize=True))
    all_valid = np.ones((2, 5), bool)
    np.testing.assert_array_equal(lc.netvlad_forward(x, w, b, c), lc.netvlad_forward(x, w, b, c, mask=all_valid))
    for a, b_ in zip(lc.netvlad_backward(dy, x, w, b, c), lc.netvlad_backward(dy, x, w, b, c, mask=all_valid)):
        np.testing.assert_array_equal(a, b_)


def test_masked_descriptors_are_removed():
    """Masking is the same as leaving the descriptors out: a shorter sample gives the same vector and gradients."""
    x, w, b, c = _params((2, 4, 6), 3, 2)
    mask = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0]], np.int32)
    x[1, :, 3:] = 0  # padding
    dy = np.random.default_rng(3).standard_normal((2, 12))
    y = lc.netvlad_forward(x, w, b, c, mask=mask)
    dx, dw, db, dc = lc.netvlad_backward(dy, x, w, b, c, mask=mask)
    for n in range(2):
        keep = mask[n] != 0
        xn = x[n:n + 1][:, :, keep]
        np.testing.assert_allclose(y[n:n + 1], lc.netvlad_forward(xn, w, b, c), rtol=1e-12, atol=1e-14)
        dxn = lc.netvlad_backward(dy[n:n + 1], xn, w, b, c)[0]
        np.testing.assert_allclose(dx[n][:, keep], dxn[0], rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(dx[n][:, ~keep], 0)
    whole = [lc.netvlad_backward(dy[n:n + 1], x[n:n + 1][:, :, mask[n] != 0], w, b, c) for n in range(2)]
    for which, got in ((1, dw), (2, db), (3, dc)):
        np.testing.assert_allclose(got, whole[0][which] + whole[1][which], rtol=1e-10, atol=1e-13)


def test_mask_of_feature_map_shape_and_bool_and_int_agree():
    x, w, b, c = _params((2, 3, 2, 3), 2, 0)
    mask = _mask(2, 6)
    y = lc.netvlad_forward(x, w, b, c, mask=mask)
    np.testing.assert_array_equal(y, lc.netvlad_forward(x, w, b, c, mask=mask.reshape(2, 2, 3)))
    np.testing.assert_array_equal(y, lc.netvlad_forward(x, w, b, c, mask=mask.astype(np.int64) * 7))


@pytest.mark.parametrize("intra,final", SWITCHES)
@pytest.mark.parametrize("masked", [False, True])
def test_netvlad_options_gradcheck(intra, final, masked):
    x, w, b, c = _params((2, 3, 5), 2, 1, seed=4)
    kw = dict(intra_normalize=intra, final_normalize=final, mask=_mask(2, 5) if masked else None)
    assert testing.gradcheck(lambda x, w, b, c: lc.netvlad_forward(x, w, b, c, **kw), [x, w, b, c],
                             lambda dy, x, w, b, c: lc.netvlad_backward(dy, x, w, b, c, **kw), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("masked", [False, True])
def test_reference_options_gradcheck(masked):
    x, w, b, c = _params((2, 3, 4), 2, 1, seed=6)
    kw = dict(intra_normalize=False, mask=_mask(2, 4) if masked else None)
    assert testing.gradcheck(lambda x, w, b, c: testing.netvlad_forward(x, w, b, c, **kw), [x, w, b, c],
                             lambda dy, x, w, b, c: testing.netvlad_backward(dy, x, w, b, c, **kw),
                             rtol=1e-5, atol=1e-8)


def test_masked_everything_gives_zero_and_finite_gradients():
    x, w, b, c = _params((2, 3, 4), 2, 1)
    mask = np.zeros((2, 4), bool)
    np.testing.assert_array_equal(lc.netvlad_forward(x, w, b, c, mask=mask), 0)
    for grad in lc.netvlad_backward(np.ones((2, 6)), x, w, b, c, mask=mask):
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad, 0)


# ---------------------------------------------------------------- vlad_aggregate


def _aggregate_params(x_shape, k, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    a = rng.random((x_shape[0], k) + x_shape[2:]).astype(dtype)
    c = (0.3 * rng.standard_normal((k, x_shape[1]))).astype(dtype)
    return x, a, c


@pytest.mark.parametrize("intra,final", SWITCHES)
@pytest.mark.parametrize("shape", [(2, 4, 5), (3, 3, 2, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_aggregate_matches_reference(intra, final, shape, dtype):
    x, a, c = _aggregate_params(shape, 3, dtype)
    kw = dict(intra_normalize=intra, final_normalize=final)
    y = lc.vlad_aggregate_forward(x, a, c, **kw)
    _close(y, testing.vlad_aggregate_forward(x, a, c, **kw), dtype)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    got = lc.vlad_aggregate_backward(dy, x, a, c, **kw)
    for name, g, r, like in zip(("dx", "da", "dc"), got, testing.vlad_aggregate_backward(dy, x, a, c, **kw), (x, a, c)):
        assert g.shape == like.shape and g.dtype == dtype
        _close(g, r, dtype, name)


def test_aggregate_of_netvlads_assignment_is_netvlad():
    """NetVLAD = softmax assignment (computed here in NumPy) + the aggregation core."""
    x, w, b, c = _params((2, 4, 6), 3, 1)
    logits = np.einsum("kd,ndm->nkm", w, x) + b[:, None]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    a = (e / e.sum(axis=1, keepdims=True))[:, :3]
    np.testing.assert_allclose(lc.vlad_aggregate_forward(x, a, c),
                               lc.netvlad_forward(x, w, b, c, normalize_input=False), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("intra,final", SWITCHES)
def test_aggregate_gradcheck(intra, final):
    x, a, c = _aggregate_params((2, 3, 4), 2, seed=3)
    kw = dict(intra_normalize=intra, final_normalize=final)
    assert testing.gradcheck(lambda x, a, c: lc.vlad_aggregate_forward(x, a, c, **kw), [x, a, c],
                             lambda dy, x, a, c: lc.vlad_aggregate_backward(dy, x, a, c, **kw), rtol=1e-5, atol=1e-8)
    assert testing.gradcheck(lambda x, a, c: testing.vlad_aggregate_forward(x, a, c, **kw), [x, a, c],
                             lambda dy, x, a, c: testing.vlad_aggregate_backward(dy, x, a, c, **kw),
                             rtol=1e-5, atol=1e-8)


def test_aggregate_out_empty_batch_and_determinism():
    x, a, c = _aggregate_params((3, 4, 5), 2, np.float32)
    out = np.full((3, 8), np.nan, np.float32)
    assert lc.vlad_aggregate_forward(x, a, c, out=out) is out
    np.testing.assert_array_equal(out, lc.vlad_aggregate_forward(x, a, c))
    dy = np.ones((3, 8), np.float32)
    first, second = lc.vlad_aggregate_backward(dy, x, a, c), lc.vlad_aggregate_backward(dy, x, a, c)
    for f, s in zip(first, second):
        np.testing.assert_array_equal(f, s)
    y = lc.vlad_aggregate_forward(x[:0], a[:0], c)
    assert y.shape == (0, 8)
    dx, da, dc = lc.vlad_aggregate_backward(y, x[:0], a[:0], c)
    assert dx.shape == (0, 4, 5) and da.shape == (0, 2, 5) and not dc.any()


# ---------------------------------------------------------------- PCA-whitening


@pytest.mark.parametrize("n,p,dim", [(12, 5, 3), (6, 10, 4)])  # covariance, and the Gram matrix (P > N)
@pytest.mark.parametrize("whiten", [True, False])
def test_pca_fit_matches_reference(n, p, dim, whiten):
    v = np.random.default_rng(0).standard_normal((n, p)) @ np.diag(np.arange(p, 0, -1.0))
    proj, bias = lc.netvlad_pca_fit(v, dim, whiten=whiten)
    want_p, want_b = testing.netvlad_pca_fit(v, dim, whiten=whiten)
    np.testing.assert_allclose(proj, want_p, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bias, want_b, rtol=1e-8, atol=1e-10)
    z = v @ proj.T + bias  # the fitted projection of the training vectors
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-10)
    if whiten:  # whitened: unit covariance
        np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(dim), atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pca_layer_matches_reference(dtype):
    rng = np.random.default_rng(1)
    v, proj, bias = (rng.standard_normal(s).astype(dtype) for s in ((4, 6), (3, 6), (3,)))
    y = lc.netvlad_pca_forward(v, proj, bias)
    _close(y, testing.netvlad_pca_forward(v, proj, bias), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    for name, g, r in zip(("dv", "dprojection", "dbias"), lc.netvlad_pca_backward(dy, v, proj, bias),
                          testing.netvlad_pca_backward(dy, v, proj, bias)):
        assert g.dtype == dtype
        _close(g, r, dtype, name)


def test_pca_layer_gradcheck_out_and_empty_batch():
    rng = np.random.default_rng(2)
    v, proj, bias = (rng.standard_normal(s) for s in ((3, 5), (2, 5), (2,)))
    assert testing.gradcheck(lc.netvlad_pca_forward, [v, proj, bias], lc.netvlad_pca_backward, rtol=1e-5, atol=1e-8)
    assert testing.gradcheck(testing.netvlad_pca_forward, [v, proj, bias], testing.netvlad_pca_backward,
                             rtol=1e-5, atol=1e-8)
    out = np.full((3, 2), np.nan)
    assert lc.netvlad_pca_forward(v, proj, bias, out=out) is out
    y = lc.netvlad_pca_forward(v[:0], proj, bias)
    assert y.shape == (0, 2)
    dv, dp, db = lc.netvlad_pca_backward(y, v[:0], proj, bias)
    assert dv.shape == (0, 5) and not dp.any() and not db.any()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(intra_normalize=1), TypeError, "intra_normalize: expected a bool"),
    (dict(final_normalize="yes"), TypeError, "final_normalize: expected a bool"),
    (dict(mask=np.ones((2, 3), np.float32)), TypeError, "mask: expected an array of bool or integers"),
    (dict(mask=np.ones((2, 4), bool)), ValueError, "mask: expected shape (2, 3)"),
    (dict(mask=[[1, 1, 1], [1, 1, 1]]), TypeError, "mask: expected a numpy.ndarray"),
])
def test_netvlad_option_errors(kwargs, error, words):
    x, w, b, c = _params((2, 4, 3), 3, 1)
    for call in (lambda: lc.netvlad_forward(x, w, b, c, **kwargs),
                 lambda: lc.netvlad_backward(np.ones((2, 12)), x, w, b, c, **kwargs)):
        with pytest.raises(error) as info:
            call()
        assert words in str(info.value)


@pytest.mark.parametrize("change,error,words", [
    (dict(assignment=np.ones((2, 3, 4))), ValueError, "assignment: expected shape (2, 2, 5)"),
    (dict(assignment=np.ones((2, 2, 5), np.float32)), TypeError, "float64"),
    (dict(centroids=np.ones((2, 3))), ValueError, "centroids: expected shape (K, 4)"),
    (dict(x=np.ones((2, 0, 5)), centroids=np.ones((2, 0))), ValueError, "x: expected descriptors of size D >= 1"),
    (dict(intra_normalize=None), TypeError, "intra_normalize: expected a bool"),
    (dict(eps=0.0), ValueError, "eps: expected a finite float > 0"),
])
def test_aggregate_errors(change, error, words):
    args = dict(zip(("x", "assignment", "centroids"), _aggregate_params((2, 4, 5), 2)))
    args.update(change)
    with pytest.raises(error) as info:
        lc.vlad_aggregate_forward(**args)
    assert words in str(info.value)
    with pytest.raises(ValueError, match="dy: expected shape"):
        lc.vlad_aggregate_backward(np.ones((2, 7)), *_aggregate_params((2, 4, 5), 2))


def test_pca_errors():
    v = np.ones((4, 6))
    with pytest.raises(ValueError, match=r"projection: expected shape \(dim, 6\)"):
        lc.netvlad_pca_forward(v, np.ones((2, 5)), np.ones(2))
    with pytest.raises(ValueError, match=r"bias: expected shape \(2,\)"):
        lc.netvlad_pca_forward(v, np.ones((2, 6)), np.ones(3))
    with pytest.raises(ValueError, match=r"dy: expected shape \(4, 2\)"):
        lc.netvlad_pca_backward(np.ones((4, 3)), v, np.ones((2, 6)), np.ones(2))
    with pytest.raises(ValueError, match=r"dim: expected an int in \[1, 3\]"):
        lc.netvlad_pca_fit(np.random.default_rng(0).standard_normal((4, 6)), 4)
    with pytest.raises(TypeError, match="dim: expected an int, got float 2.0"):
        lc.netvlad_pca_fit(v, 2.0)
    with pytest.raises(TypeError, match="whiten: expected a bool"):
        lc.netvlad_pca_fit(v, 2, whiten=1)
    with pytest.raises(ValueError, match="vectors: expected finite values"):
        lc.netvlad_pca_fit(np.full((4, 6), np.nan), 2)
