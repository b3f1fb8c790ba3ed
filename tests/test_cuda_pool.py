"""Max-pooling on CUDA arrays: bitwise equal to the CPU functions, PyTorch's semantics included.

The CUDA kernels make the same choices as the CPU ones (NaN wins, ties
take the first cell, ``-inf`` padding, ``ceil_mode``, index -1 for a window
with no cell) and the backward adds in output order, so results are
compared for exact equality. Runs on the simulator without a GPU.
"""

import numpy as np
import pytest
from numba import cuda

import lcnumba
from lcnumba import config, testing
from test_cuda_dispatch import count_host_path

DTYPES = (np.float32, np.float64)
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def tricky_input(shape, dtype, seed=0):
    """Random values with NaNs, ties and infinities where windows see them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 15), replace=False)] = np.nan
    flat[rng.choice(flat.size, max(1, flat.size // 20), replace=False)] = -np.inf
    return x


POOLS_2D = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), dilation=(3, 2), padding=(1, 1)),  # windows of padding only
    dict(kernel_size=(2, 2), stride=1, dilation=2),
]
pools_2d = pytest.mark.parametrize("params", POOLS_2D, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))


@pools_2d
@dtypes
def test_forward_and_backward_2d_equal_the_cpu(params, dtype):
    x = tricky_input((2, 3, 7, 8), dtype)
    y, idx = lcnumba.max_pool2d_forward(x, return_indices=True, **params)
    yd, idxd = lcnumba.max_pool2d_forward(dev(x), return_indices=True, **params)
    assert yd.dtype == y.dtype and idxd.dtype == np.int64
    np.testing.assert_array_equal(yd.copy_to_host(), y)
    np.testing.assert_array_equal(idxd.copy_to_host(), idx)
    np.testing.assert_array_equal(lcnumba.max_pool2d_forward(dev(x), **params).copy_to_host(), y)
    ref_y, ref_idx = testing.max_pool2d_forward(x, return_indices=True, **params)
    np.testing.assert_array_equal(yd.copy_to_host(), ref_y)
    np.testing.assert_array_equal(idxd.copy_to_host(), ref_idx)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    dx = lcnumba.max_pool2d_backward(dev(dy), idxd, x.shape)
    dx_cpu = lcnumba.max_pool2d_backward(dy, idx, x.shape)
    np.testing.assert_array_equal(dx.copy_to_host(), dx_cpu)
    # the gather (a thread per input cell) adds in output order too: bitwise the scatter and the reference
    gathered = lcnumba.max_pool2d_backward(dev(dy), idxd, x.shape, **params).copy_to_host()
    np.testing.assert_array_equal(gathered, dx_cpu)
    np.testing.assert_array_equal(gathered, testing.max_pool2d_backward(dy, ref_idx, x.shape))


@dtypes
def test_1d_equal_the_cpu(dtype):
    x = tricky_input((2, 3, 11), dtype)
    for params in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=3, ceil_mode=True)):
        y, idx = lcnumba.max_pool1d_forward(x, return_indices=True, **params)
        yd, idxd = lcnumba.max_pool1d_forward(dev(x), return_indices=True, **params)
        assert yd.shape == y.shape and idxd.shape == idx.shape
        np.testing.assert_array_equal(yd.copy_to_host(), y)
        np.testing.assert_array_equal(idxd.copy_to_host(), idx)
        np.testing.assert_array_equal(lcnumba.max_pool1d_forward(dev(x), **params).copy_to_host(), y)
        dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        dx = lcnumba.max_pool1d_backward(dev(dy), idxd, x.shape)
        assert dx.shape == x.shape
        dx_cpu = lcnumba.max_pool1d_backward(dy, idx, x.shape)
        np.testing.assert_array_equal(dx.copy_to_host(), dx_cpu)
        gathered = lcnumba.max_pool1d_backward(dev(dy), idxd, x.shape, **params)
        assert gathered.shape == x.shape
        np.testing.assert_array_equal(gathered.copy_to_host(), dx_cpu)


def test_backward_accepts_any_index_of_the_plane():
    """The backward needs no geometry: arbitrary indices, repeated ones summed in output order, -1 skipped."""
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((2, 2, 4, 5))
    idx = rng.integers(-1, 6 * 7, size=dy.shape)
    idx[0, 0, :, :] = 5  # every output of a plane onto one cell
    dx = lcnumba.max_pool2d_backward(dev(dy), dev(idx), (2, 2, 6, 7))
    np.testing.assert_array_equal(dx.copy_to_host(), lcnumba.max_pool2d_backward(dy, idx, (2, 2, 6, 7)))


def test_windows_of_a_cell_are_those_that_read_it():
    """The gather's window range per axis (32-bit on a GPU) against enumeration and against indexing.tap_range."""
    import itertools
    import math

    from lcnumba import indexing
    from lcnumba.gpu.pool import windows

    for size, kernel, stride, dilation, ceil_mode in itertools.product(range(1, 8), range(1, 5), range(1, 4),
                                                                       range(1, 4), (False, True)):
        step = dilation // math.gcd(stride, dilation)
        for pad in range(kernel // 2 + 1):
            out = indexing.pool_output_size(size, kernel, stride, pad, dilation, ceil_mode)
            for pos in range(size):
                want = [i for i in range(max(out, 0)) if any(i * stride - pad + a * dilation == pos
                                                              for a in range(kernel))]
                lo, hi, tap_step = indexing.tap_range(pos, pad, kernel, stride, dilation, max(out, 0))
                assert sorted((pos + pad - a * dilation) // stride for a in range(lo, hi, tap_step)) == want
                first, count = windows(pos, pad, kernel, stride, dilation, step, max(out, 0))
                assert [first + u * step for u in range(count)] == want, (size, kernel, stride, dilation, pad, pos)


def _in_window(k, i, j, height, width, params):
    """Whether flat cell ``k`` is one of window ``(i, j)``'s cells inside the plane, by listing them."""
    kh, kw = params["kernel_size"]
    (sh, sw), (ph, pw), (dh, dw) = params["stride"], params["padding"], params["dilation"]
    rows = [r for r in (i * sh - ph + a * dh for a in range(kh)) if 0 <= r < height]
    cols = [c for c in (j * sw - pw + b * dw for b in range(kw)) if 0 <= c < width]
    return k in {r * width + c for r in rows for c in cols}


def test_gather_adds_an_index_only_in_its_window():
    """With the geometry an index counts only where its window can read it: -1, or cells of other windows (inside
    the plane), add nothing; the rest add as the reference's scatter does."""
    params = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    rng = np.random.default_rng(5)
    x_shape = (2, 2, 7, 6)
    dy_shape = lcnumba.max_pool2d_output_shape(x_shape, **params)
    dy = rng.standard_normal(dy_shape)
    idx = rng.integers(-1, 7 * 6, size=dy_shape)  # any cell of the plane: most outside their window
    kept = idx.copy()
    for n, c, i, j in np.ndindex(dy_shape):
        if not _in_window(idx[n, c, i, j], i, j, 7, 6, params):
            kept[n, c, i, j] = -1
    assert 0 < (kept >= 0).sum() < (idx >= 0).sum()
    got = lcnumba.max_pool2d_backward(dev(dy), dev(idx), x_shape, **params).copy_to_host()
    np.testing.assert_array_equal(got, testing.max_pool2d_backward(dy, kept, x_shape))
    np.testing.assert_array_equal(got, testing.max_pool2d_backward(dy, idx, x_shape, **params))


def test_gather_reports_an_index_outside_the_plane():
    x = tricky_input((1, 2, 6, 6), np.float64)
    y, idx = lcnumba.max_pool2d_forward(x, 2, return_indices=True)
    idx[0, 1, 2, 0] = 36
    with pytest.raises(ValueError, match=r"^indices: expected flat positions in \[0, 36\).*got index 36$"):
        lcnumba.max_pool2d_backward(dev(np.ones_like(y)), dev(idx), x.shape, kernel_size=2)
    with pytest.raises(ValueError, match="got index 36$"):  # the CPU refuses it alike
        lcnumba.max_pool2d_backward(np.ones_like(y), idx, x.shape, kernel_size=2)


@pytest.mark.parametrize("where", [(0, 0, 0, 0), (2, 1, 8, 10), (1, 0, 4, 5)])
@pytest.mark.parametrize("bad", [-5, 20 * 21])
def test_index_check_finds_one_bad_index_anywhere(where, bad):
    """The kernel's check sees every index: one bad value in any plane, at any offset, is reported."""
    rng = np.random.default_rng(7)
    dy = rng.standard_normal((3, 2, 9, 11))
    idx = rng.integers(-1, 20 * 21, size=dy.shape)
    idx[where] = bad
    with pytest.raises(ValueError, match=f"got index {bad}$"):
        lcnumba.max_pool2d_backward(dev(dy), dev(idx), (3, 2, 20, 21))


def test_backward_rejects_indices_outside_the_plane():
    dy = np.ones((1, 1, 2, 2))
    idx = np.zeros((1, 1, 2, 2), np.int64)
    idx[0, 0, 1, 1] = 12
    with pytest.raises(ValueError, match=r"^indices: expected flat positions in \[0, 12\).*got index 12"):
        lcnumba.max_pool2d_backward(dev(dy), dev(idx), (1, 1, 3, 4))
    idx[0, 0, 1, 1] = -2
    with pytest.raises(ValueError, match="got index -2"):
        lcnumba.max_pool2d_backward(dev(dy), dev(idx), (1, 1, 3, 4))
    with pytest.raises(TypeError, match="^indices: expected dtype int64"):
        lcnumba.max_pool2d_backward(dev(dy), dev(idx.astype(np.int32)), (1, 1, 3, 4))


def test_an_earlier_calls_bad_index_surfaces_at_the_next_backward():
    """On a GPU the check's result may arrive after its call returned: the next backward reports it, then clears it."""
    from lcnumba.gpu import pool as gpu_pool

    slot = gpu_pool.error_slot()
    slot[0], slot[1] = 99, 12  # as the kernel of an earlier call with planes of 12 cells leaves it
    dy, idx = dev(np.ones((1, 1, 2, 2))), dev(np.zeros((1, 1, 2, 2), np.int64))
    with pytest.raises(ValueError, match=r"^indices: expected flat positions in \[0, 12\).*got index 99$"):
        lcnumba.max_pool2d_backward(dy, idx, (1, 1, 3, 3))
    assert int(slot[0]) == 0 and int(slot[1]) == 0
    np.testing.assert_array_equal(lcnumba.max_pool2d_backward(dy, idx, (1, 1, 3, 3)).copy_to_host().ravel(),
                                  [4, 0, 0, 0, 0, 0, 0, 0, 0])


def test_no_allocation_and_no_synchronisation_with_out_buffers(monkeypatch):
    """Forward with ``out=`` (with or without indices) and backward with ``out=`` (scatter or gather): one launch,
    nothing allocated or copied back, the stream never waited for."""
    x = tricky_input((2, 3, 7, 7), np.float32)
    y, idx = lcnumba.max_pool2d_forward(x, 3, stride=2, padding=1, return_indices=True)
    stream = cuda.stream()
    xd, dyd, idxd = dev(x), dev(np.ones_like(y)), dev(idx)
    out, idx_out, dx = (cuda.device_array(a.shape, a.dtype) for a in (y, idx, x))
    calls = [
        lambda: lcnumba.max_pool2d_forward(xd, 3, stride=2, padding=1, out=out, stream=stream),
        lambda: lcnumba.max_pool2d_forward(xd, 3, stride=2, padding=1, return_indices=True, out=out,
                                           indices_out=idx_out, stream=stream),
        lambda: lcnumba.max_pool2d_backward(dyd, idxd, x.shape, out=dx, stream=stream),
        lambda: lcnumba.max_pool2d_backward(dyd, idxd, x.shape, kernel_size=3, stride=2, padding=1, out=dx,
                                            stream=stream),
    ]
    for call in calls:
        call()  # the first backward makes the device's error buffer, once
    counts = count_host_path(monkeypatch, stream)
    for call in calls:
        call()
        assert counts == {"launch": 1, "alloc": 0, "sync": 0}
        counts.update(launch=0)
    np.testing.assert_array_equal(out.copy_to_host(), y)


def test_out_buffers_and_stream():
    x = tricky_input((2, 2, 6, 6), np.float64)
    y, idx = lcnumba.max_pool2d_forward(x, 3, stride=2, padding=1, return_indices=True)
    stream = cuda.stream()
    out = cuda.device_array(y.shape, np.float64, stream=stream)
    indices_out = cuda.device_array(y.shape, np.int64, stream=stream)
    got = lcnumba.max_pool2d_forward(dev(x), 3, stride=2, padding=1, return_indices=True, out=out,
                                     indices_out=indices_out, stream=stream)
    assert got[0] is out and got[1] is indices_out
    dx_out = cuda.device_array(x.shape, np.float64, stream=stream)
    dy = np.ones(y.shape)
    assert lcnumba.max_pool2d_backward(dev(dy), indices_out, x.shape, out=dx_out, stream=stream) is dx_out
    stream.synchronize()
    np.testing.assert_array_equal(out.copy_to_host(), y)
    np.testing.assert_array_equal(indices_out.copy_to_host(), idx)
    np.testing.assert_array_equal(dx_out.copy_to_host(), lcnumba.max_pool2d_backward(dy, idx, x.shape))
    gather_out = cuda.to_device(np.full(x.shape, np.nan))  # every cell written, none read
    assert lcnumba.max_pool2d_backward(dev(dy), indices_out, x.shape, kernel_size=3, stride=2, padding=1,
                                       out=gather_out, stream=stream) is gather_out
    stream.synchronize()
    np.testing.assert_array_equal(gather_out.copy_to_host(), dx_out.copy_to_host())
    x1 = x[:, :, 0, :]
    out1 = cuda.device_array((2, 2, 3), np.float64)
    assert lcnumba.max_pool1d_forward(dev(x1), 2, out=out1) is out1
    np.testing.assert_array_equal(out1.copy_to_host(), lcnumba.max_pool1d_forward(x1, 2))


def test_empty_batch_and_errors():
    y = lcnumba.max_pool2d_forward(dev(np.zeros((0, 3, 4, 4))), 2)
    assert y.shape == (0, 3, 2, 2)
    dx = lcnumba.max_pool2d_backward(dev(np.zeros((0, 3, 2, 2))), dev(np.zeros((0, 3, 2, 2), np.int64)), (0, 3, 4, 4))
    assert dx.shape == (0, 3, 4, 4)
    dx = lcnumba.max_pool2d_backward(dev(np.zeros((0, 3, 2, 2))), dev(np.zeros((0, 3, 2, 2), np.int64)), (0, 3, 4, 4),
                                     kernel_size=2)
    assert dx.shape == (0, 3, 4, 4)
    with pytest.raises(ValueError, match=r"^dy: expected shape \(1, 1, 1, 1\), the output of the forward"):
        lcnumba.max_pool2d_backward(dev(np.zeros((1, 1, 2, 2))), dev(np.zeros((1, 1, 2, 2), np.int64)), (1, 1, 4, 4),
                                    kernel_size=3)
    x = dev(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="^padding: expected at most half the kernel size"):
        lcnumba.max_pool2d_forward(x, 2, padding=2)
    with pytest.raises(ValueError, match="^indices_out: expected None when return_indices is False"):
        lcnumba.max_pool2d_forward(x, 2, indices_out=cuda.device_array((1, 1, 2, 2), np.int64))
    with pytest.raises(ValueError, match="^out: expected shape"):
        lcnumba.max_pool2d_forward(x, 2, out=cuda.device_array((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="mixed with a NumPy array"):
        lcnumba.max_pool2d_forward(x, 2, out=np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="^x: expected a 3-D array"):
        lcnumba.max_pool1d_forward(x, 2)


def test_deterministic():
    x = tricky_input((2, 2, 6, 7), np.float32)
    dy = dev(np.random.default_rng(4).standard_normal((2, 2, 3, 4)).astype(np.float32))
    runs = []
    for _ in range(2):
        y, idx = lcnumba.max_pool2d_forward(dev(x), 3, stride=2, padding=1, return_indices=True)
        runs.append((y.copy_to_host(), lcnumba.max_pool2d_backward(dy, idx, x.shape).copy_to_host()))
    for a, b in zip(*runs):
        assert np.array_equal(a, b, equal_nan=True)
