"""NetVLAD's options, the aggregation core and the PCA layer on CUDA arrays against the NumPy references.

Runs on the simulator without a GPU; shapes are tiny.
"""

import numpy as np
import pytest
from numba import cuda

import lcnumba as lc
from lcnumba import config, testing

TOL = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
dtypes = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def _close(got, want, dtype, name=""):
    got = got.copy_to_host()
    scale = max(np.abs(want).max(), 1e-30)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * scale, err_msg=name)


@pytest.mark.parametrize("intra,final,masked", [(True, True, True), (False, True, False), (True, False, True),
                                                (False, False, True)])
@dtypes
def test_netvlad_options_match_reference(intra, final, masked, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    w = rng.standard_normal((3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    c = (0.3 * rng.standard_normal((2, 3))).astype(dtype)
    mask = np.array([[1, 0, 1, 1], [1, 1, 0, 0]], bool) if masked else None
    kw = dict(intra_normalize=intra, final_normalize=final)
    y = lc.netvlad_forward(dev(x), dev(w), dev(b), dev(c), mask=None if mask is None else dev(mask), **kw)
    _close(y, testing.netvlad_forward(x, w, b, c, mask=mask, **kw), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = lc.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c), mask=None if mask is None else dev(mask), **kw)
    for name, g, r in zip(("dx", "dw", "db", "dc"), got, testing.netvlad_backward(dy, x, w, b, c, mask=mask, **kw)):
        _close(g, r, dtype, name)


@pytest.mark.parametrize("intra,final", [(True, True), (False, False)])
@dtypes
def test_aggregate_matches_reference(intra, final, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    a = rng.random((2, 2, 4)).astype(dtype)
    c = (0.3 * rng.standard_normal((2, 3))).astype(dtype)
    kw = dict(intra_normalize=intra, final_normalize=final)
    y = lc.vlad_aggregate_forward(dev(x), dev(a), dev(c), **kw)
    _close(y, testing.vlad_aggregate_forward(x, a, c, **kw), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = lc.vlad_aggregate_backward(dev(dy), dev(x), dev(a), dev(c), **kw)
    for name, g, r in zip(("dx", "da", "dc"), got, testing.vlad_aggregate_backward(dy, x, a, c, **kw)):
        _close(g, r, dtype, name)


@dtypes
def test_pca_layer_matches_reference(dtype):
    rng = np.random.default_rng(2)
    v, proj, bias = (rng.standard_normal(s).astype(dtype) for s in ((3, 5), (2, 5), (2,)))
    _close(lc.netvlad_pca_forward(dev(v), dev(proj), dev(bias)), testing.netvlad_pca_forward(v, proj, bias), dtype)
    dy = rng.standard_normal((3, 2)).astype(dtype)
    got = lc.netvlad_pca_backward(dev(dy), dev(v), dev(proj), dev(bias))
    for name, g, r in zip(("dv", "dprojection", "dbias"), got, testing.netvlad_pca_backward(dy, v, proj, bias)):
        _close(g, r, dtype, name)


def test_out_empty_batches_and_errors():
    rng = np.random.default_rng(3)
    x, a, c = rng.standard_normal((2, 3, 4)), rng.random((2, 2, 4)), rng.standard_normal((2, 3))
    out = cuda.device_array((2, 6))
    assert lc.vlad_aggregate_forward(dev(x), dev(a), dev(c), out=out) is out
    _close(out, testing.vlad_aggregate_forward(x, a, c), np.float64)
    dx, da, dc = lc.vlad_aggregate_backward(dev(np.ones((0, 6))), dev(x[:0]), dev(a[:0]), dev(c))
    assert dx.shape == (0, 3, 4) and not dc.copy_to_host().any()
    v, proj, bias = rng.standard_normal((3, 5)), rng.standard_normal((2, 5)), rng.standard_normal(2)
    dv, dp, db = lc.netvlad_pca_backward(dev(np.ones((0, 2))), dev(v[:0]), dev(proj), dev(bias))
    assert dv.shape == (0, 5) and not dp.copy_to_host().any() and not db.copy_to_host().any()
    w, b = rng.standard_normal((2, 3)), rng.standard_normal(2)
    with pytest.raises(TypeError, match="mask: expected an array of bool or integers"):
        lc.netvlad_forward(dev(x), dev(w), dev(b), dev(c), mask=dev(np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 4\)"):
        lc.netvlad_forward(dev(x), dev(w), dev(b), dev(c), mask=dev(np.ones((2, 5), bool)))
    with pytest.raises(ValueError, match=r"assignment: expected shape \(2, 2, 4\)"):
        lc.vlad_aggregate_forward(dev(x), dev(a[:, :, :3]), dev(c))
