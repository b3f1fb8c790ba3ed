"""NetVLAD / GhostVLAD on CUDA arrays against the CPU functions and the NumPy references.

Runs on the simulator without a GPU; shapes are tiny.
"""

import numpy as np
import pytest
from numba import cuda

import lcnumba
from lcnumba import config, testing
from test_cuda_dispatch import count_host_path

TOL = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}
dtypes = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def params(x_shape, k, g, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    d = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k + g, d)).astype(dtype)
    b = (0.5 * rng.standard_normal(k + g)).astype(dtype)
    c = (0.3 * rng.standard_normal((k, d))).astype(dtype)
    return x, w, b, c


CASES = [((2, 5, 3, 2), 3, 0), ((2, 4, 5), 2, 2), ((1, 3, 4), 1, 1)]


@pytest.mark.parametrize("shape,k,g", CASES, ids=str)
@pytest.mark.parametrize("normalize_input", [True, False])
@dtypes
def test_forward_and_backward_match_cpu_and_reference(shape, k, g, normalize_input, dtype):
    x, w, b, c = params(shape, k, g, dtype)
    y = lcnumba.netvlad_forward(dev(x), dev(w), dev(b), dev(c), normalize_input=normalize_input)
    assert y.shape == (shape[0], k * shape[1]) and y.dtype == dtype
    np.testing.assert_allclose(y.copy_to_host(), lcnumba.netvlad_forward(x, w, b, c, normalize_input=normalize_input),
                               **TOL[dtype])
    np.testing.assert_allclose(y.copy_to_host(), testing.netvlad_forward(x, w, b, c, normalize_input=normalize_input),
                               **TOL[dtype])
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    got = lcnumba.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c), normalize_input=normalize_input)
    cpu = lcnumba.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)
    ref = testing.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)
    for name, a, e, r in zip(("dx", "dw", "db", "dc"), got, cpu, ref):
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a.copy_to_host(), e, **TOL[dtype], err_msg=name)
        np.testing.assert_allclose(a.copy_to_host(), r, **TOL[dtype], err_msg=name)


def test_empty_cluster_and_zero_descriptor_stay_finite():
    """A zero descriptor (norm clamped to eps) and a cluster with no mass: finite, equal to the CPU."""
    x, w, b, c = params((2, 3, 4), 2, 1)
    x[0, :, 1] = 0
    b[1] = -60.0  # cluster 1 receives (almost) no assignment
    dy = np.random.default_rng(2).standard_normal((2, 6))
    got = lcnumba.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c))
    for a, e in zip(got, lcnumba.netvlad_backward(dy, x, w, b, c)):
        assert np.isfinite(a.copy_to_host()).all()
        np.testing.assert_allclose(a.copy_to_host(), e, rtol=1e-9, atol=1e-12)


def test_out_stream_empty_batch_and_determinism():
    x, w, b, c = params((2, 4, 3), 2, 1, np.float32)
    stream = cuda.stream()
    out = cuda.device_array((2, 8), np.float32, stream=stream)
    assert lcnumba.netvlad_forward(dev(x), dev(w), dev(b), dev(c), out=out, stream=stream) is out
    dy = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    first = [a.copy_to_host() for a in lcnumba.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c),
                                                                   stream=stream)]
    stream.synchronize()
    np.testing.assert_allclose(out.copy_to_host(), lcnumba.netvlad_forward(x, w, b, c), **TOL[np.float32])
    second = [a.copy_to_host() for a in lcnumba.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c))]
    for a, b2 in zip(first, second):
        assert np.array_equal(a, b2)
    empty = lcnumba.netvlad_forward(dev(x[:0]), dev(w), dev(b), dev(c))
    assert empty.shape == (0, 8)
    dx, dw, db, dc = lcnumba.netvlad_backward(dev(dy[:0]), dev(x[:0]), dev(w), dev(b), dev(c))
    assert dx.shape == (0, 4, 3) and not dw.copy_to_host().any() and not dc.copy_to_host().any()


def test_errors_match_the_cpu():
    x, w, b, c = params((2, 4, 3), 2, 1)
    with pytest.raises(ValueError, match="^w: expected shape"):
        lcnumba.netvlad_forward(dev(x), dev(w[:, :3]), dev(b), dev(c))
    with pytest.raises(TypeError, match="^b: expected dtype float64"):
        lcnumba.netvlad_forward(dev(x), dev(w), dev(b.astype(np.float32)), dev(c))
    with pytest.raises(ValueError, match="^eps: expected a finite float > 0"):
        lcnumba.netvlad_forward(dev(x), dev(w), dev(b), dev(c), eps=0.0)
    with pytest.raises(TypeError, match="mixed with a NumPy array"):
        lcnumba.netvlad_forward(dev(x), w, dev(b), dev(c))
    with pytest.raises(ValueError, match="^dy: expected shape"):
        lcnumba.netvlad_backward(dev(np.zeros((2, 7))), dev(x), dev(w), dev(b), dev(c))


def test_scratch_is_reused_across_calls_and_shapes(monkeypatch):
    """Intermediates come from the stream's scratch buffer: a second forward with ``out=`` allocates nothing, a
    backward only its four outputs; a larger call then a smaller one on the same stream stay exact."""
    stream = cuda.stream()
    small, large = params((2, 4, 5), 2, 1), params((3, 4, 7), 3, 1, seed=1)
    for x, w, b, c in (large, small):  # the small call reuses the large call's buffer
        args = [dev(a) for a in (x, w, b, c)]
        out = cuda.device_array((x.shape[0], c.shape[0] * x.shape[1]))
        lcnumba.netvlad_forward(*args, out=out, stream=stream)
        dy = np.ones(out.shape)
        got = lcnumba.netvlad_backward(dev(dy), *args, stream=stream)
        np.testing.assert_allclose(out.copy_to_host(), testing.netvlad_forward(x, w, b, c), **TOL[np.float64])
        for a, r in zip(got, testing.netvlad_backward(dy, x, w, b, c)):
            np.testing.assert_allclose(a.copy_to_host(), r, **TOL[np.float64])
    dy = dev(np.ones(out.shape))
    counts = count_host_path(monkeypatch, stream)
    lcnumba.netvlad_forward(*args, out=out, stream=stream)
    assert counts["alloc"] == 0 and counts["sync"] == 0
    lcnumba.netvlad_backward(dy, *args, stream=stream)
    assert counts["alloc"] == 4 and counts["sync"] == 0


def test_block_reductions_are_bitwise_independent_of_the_block_size(monkeypatch):
    """K * D = 300 terms over 256 lanes: every lane count path, the same bits at 8, 32 and 256 threads a block."""
    x, w, b, c = params((2, 100, 3), 3, 1, np.float32)
    dy = np.random.default_rng(2).standard_normal((2, 300)).astype(np.float32)
    results = []
    for threads in (8, 32, 256):
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
        got = lcnumba.netvlad_backward(dev(dy), *(dev(a) for a in (x, w, b, c)))
        results.append([a.copy_to_host() for a in got])
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)
    for a, r in zip(results[0], testing.netvlad_backward(dy, x, w, b, c)):
        np.testing.assert_allclose(a, r, **TOL[np.float32])
