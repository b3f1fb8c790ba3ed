"""max_pool2d / max_pool1d: PyTorch semantics, backward, errors, properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lcnumba as lc
from lcnumba import testing

DTYPES = (np.float32, np.float64)

# (kernel_size, stride, padding, dilation, ceil_mode)
GEOMETRIES = [
    (2, None, 0, 1, False),
    (3, 2, 0, 1, False),  # deepface_m2: overlapping windows
    (3, 2, 1, 1, True),
    (3, 1, 1, 1, False),
    ((2, 3), (1, 2), (1, 1), (1, 1), True),
    (3, 2, 1, 2, False),
    ((3, 2), (2, 3), (0, 1), (2, 1), True),
    (1, 1, 0, 1, False),
    (4, 3, 2, 1, True),
]


def _random(shape, dtype, seed=0, *, levels=None):
    rng = np.random.default_rng(seed)
    if levels is not None:  # few distinct values: many ties
        return rng.integers(0, levels, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _kwargs(geometry):
    k, s, p, d, ceil = geometry
    return dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)


# ---------------------------------------------------------------- forward against the reference


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("levels", [None, 3])
def test_forward_matches_reference(geometry, dtype, levels):
    x = _random((2, 3, 9, 11), dtype, levels=levels)
    kw = _kwargs(geometry)
    y_ref, i_ref = testing.max_pool2d_forward(x, return_indices=True, **kw)
    y, i = lc.max_pool2d_forward(x, return_indices=True, **kw)
    y_only = lc.max_pool2d_forward(x, **kw)
    assert y.dtype == dtype and i.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)  # a maximum is exact: no tolerance
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(y_only, y_ref)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_backward_matches_reference(geometry):
    x = _random((2, 3, 9, 11), np.float32, levels=4)
    kw = _kwargs(geometry)
    y, i = lc.max_pool2d_forward(x, return_indices=True, **kw)
    dy = _random(y.shape, np.float32, seed=1)
    dx = lc.max_pool2d_backward(dy, i, x.shape)
    # the reference adds in the same (output) order, so even float32 is bitwise equal
    np.testing.assert_array_equal(dx, testing.max_pool2d_backward(dy, i, x.shape))
    # given the geometry, the backward checks dy against it; the result is the same, bitwise, and so is the
    # reference's with the gather's rule (the forward's indices all lie in their windows)
    np.testing.assert_array_equal(lc.max_pool2d_backward(dy, i, x.shape, **kw), dx)
    np.testing.assert_array_equal(testing.max_pool2d_backward(dy, i, x.shape, **kw), dx)


def test_known_values():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    y, i = lc.max_pool2d_forward(x, 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(i[0, 0], [[5, 7], [13, 15]])
    y, i = lc.max_pool2d_forward(-x, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[0, -1], [-4, -5]])
    np.testing.assert_array_equal(i[0, 0], [[0, 1], [4, 5]])


@pytest.mark.parametrize("length,kernel,stride,padding,expected", [
    (5, 2, 2, 0, 3),  # ceil adds the window starting at 4
    (5, 2, 2, 1, 3),  # ceil would add a window starting in the right padding: dropped
    (4, 2, 2, 1, 3),
    (6, 3, 2, 1, 4),
    (7, 3, 3, 0, 3),
])
def test_ceil_mode_sizes(length, kernel, stride, padding, expected):
    x = _random((1, 2, length), np.float64)
    y = lc.max_pool1d_forward(x, kernel, stride=stride, padding=padding, ceil_mode=True)
    assert y.shape == (1, 2, expected)
    assert lc.max_pool1d_output_shape(x.shape, kernel, stride=stride, padding=padding, ceil_mode=True) == y.shape
    np.testing.assert_array_equal(
        y, testing.max_pool1d_forward(x, kernel, stride=stride, padding=padding, ceil_mode=True))


def test_output_shape_queries():
    assert lc.max_pool2d_output_shape((8, 32, 142, 142), 3, stride=2) == (8, 32, 70, 70)
    assert lc.max_pool2d_output_shape((8, 64, 112, 112), 2) == (8, 64, 56, 56)
    assert lc.max_pool2d_output_shape((1, 1, 5, 5), 2, ceil_mode=True) == (1, 1, 3, 3)


# ---------------------------------------------------------------- edge cases of the maximum


def test_ties_take_the_first_cell():
    x = np.ones((1, 1, 6, 6), np.float32)
    y, i = lc.max_pool2d_forward(x, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(y, 1)
    # first in-image cell of each window, row-major
    np.testing.assert_array_equal(i[0, 0], [[0, 1, 3], [6, 7, 9], [18, 19, 21]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_wins_and_the_last_nan_is_reported(dtype):
    x = np.zeros((1, 1, 3, 3), dtype)
    x[0, 0, 0, 2] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 2, 2] = 5
    for with_index in (True, False):
        result = lc.max_pool2d_forward(x, 3, return_indices=with_index)
        y = result[0] if with_index else result
        assert np.isnan(y[0, 0, 0, 0])
    _, i = lc.max_pool2d_forward(x, 3, return_indices=True)
    assert i[0, 0, 0, 0] == 3  # PyTorch's CPU kernel: a NaN replaces the maximum, even a NaN


def test_nan_beats_infinity_and_matches_reference():
    x = _random((2, 2, 8, 8), np.float64, levels=3)
    rng = np.random.default_rng(3)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.15] = np.inf
    x[rng.random(x.shape) < 0.15] = -np.inf
    for geometry in GEOMETRIES:
        kw = _kwargs(geometry)
        y, i = lc.max_pool2d_forward(x, return_indices=True, **kw)
        y_ref, i_ref = testing.max_pool2d_forward(x, return_indices=True, **kw)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(i, i_ref)


def test_all_minus_infinity():
    x = np.full((1, 2, 5, 5), -np.inf, np.float32)
    y, i = lc.max_pool2d_forward(x, 3, stride=2, padding=1, return_indices=True)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(i[0, 0], [[0, 1, 3], [5, 6, 8], [15, 16, 18]])
    dx = lc.max_pool2d_backward(np.ones_like(y), i, x.shape)
    assert dx.sum() == y.size


def test_window_of_padding_only_gives_minus_inf_and_index_minus_one():
    # L = 1, kernel 2, padding 1, dilation 2: the one window covers positions -1 and 1
    x = np.array([[[7.0]]])
    y, i = lc.max_pool1d_forward(x, 2, stride=1, padding=1, dilation=2, return_indices=True)
    assert y.shape == (1, 1, 1) and y[0, 0, 0] == -np.inf and i[0, 0, 0] == -1
    dx = lc.max_pool1d_backward(np.ones_like(y), i, x.shape)
    np.testing.assert_array_equal(dx, 0)
    y_ref, i_ref = testing.max_pool1d_forward(x, 2, stride=1, padding=1, dilation=2, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(i, i_ref)


# ---------------------------------------------------------------- backward


def test_backward_overlapping_windows_is_deterministic():
    x = _random((2, 4, 15, 15), np.float32, levels=2)  # ties: one cell chosen by several windows
    y, i = lc.max_pool2d_forward(x, 3, stride=2, return_indices=True)
    dy = _random(y.shape, np.float32, seed=5)
    first = lc.max_pool2d_backward(dy, i, x.shape)
    for _ in range(3):
        np.testing.assert_array_equal(lc.max_pool2d_backward(dy, i, x.shape), first)
    assert np.count_nonzero(np.bincount(i[0, 0].ravel()) > 1)  # some cell really is shared


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_backward_is_the_adjoint_of_the_selection(geometry):
    x = _random((2, 2, 10, 9), np.float64)
    y, i = lc.max_pool2d_forward(x, return_indices=True, **_kwargs(geometry))
    y = np.where(np.isinf(y), 0, y)
    dy = _random(y.shape, np.float64, seed=7)
    dx = lc.max_pool2d_backward(dy, i, x.shape)
    assert np.isclose(np.vdot(dx, x), np.vdot(dy, y), rtol=1e-12)


def test_gradcheck():
    rng = np.random.default_rng(11)
    # distinct values far apart compared with eps: the max is locally linear
    x = rng.permutation(2 * 2 * 7 * 7).astype(np.float64).reshape(2, 2, 7, 7)

    def forward(x):
        return lc.max_pool2d_forward(x, 3, stride=2, padding=1)

    def backward(dy, x):
        _, i = lc.max_pool2d_forward(x, 3, stride=2, padding=1, return_indices=True)
        return (lc.max_pool2d_backward(dy, i, x.shape),)

    assert testing.gradcheck(forward, [x], backward, eps=1e-3, names=["x"])


def test_backward_accepts_indices_anywhere_in_the_plane():
    dy = np.arange(1, 5, dtype=np.float64).reshape(1, 1, 2, 2)
    indices = np.array([[[[24, 0], [24, -1]]]], dtype=np.int64)
    dx = lc.max_pool2d_backward(dy, indices, (1, 1, 5, 5))
    expected = np.zeros(25)
    expected[24] = 1 + 3
    expected[0] = 2
    np.testing.assert_array_equal(dx.ravel(), expected)


@pytest.mark.parametrize("bad", [25, 10**12, -2, np.iinfo(np.int64).min])
def test_backward_rejects_out_of_range_indices(bad):
    dy = np.ones((1, 2, 2, 2), np.float32)
    indices = np.zeros((1, 2, 2, 2), np.int64)
    indices[0, 1, 1, 0] = bad
    out = np.full((1, 2, 5, 5), 3.0, np.float32)
    with pytest.raises(ValueError, match="indices"):
        lc.max_pool2d_backward(dy, indices, (1, 2, 5, 5), out=out)
    np.testing.assert_array_equal(out, 3.0)  # validated before anything is written


@pytest.mark.parametrize("driver", ["host_backward", "backward"])
@pytest.mark.parametrize("bad", [25, 10**12, -2, np.iinfo(np.int64).min])
def test_backward_driver_checks_every_index_before_writing(bad, driver):
    """``lcnumba.cpu.pool.host_backward``, the driver Python runs, and ``backward``, it compiled for the C entry
    point: ``(valid, bad)`` with the offending index (the smallest when one is below -1), and dx untouched."""
    from lcnumba.cpu import pool

    run = getattr(pool, driver)
    dy = np.arange(1.0, 9.0).reshape(2, 4)
    indices = np.array([[0, 24, 24, -1], [3, 3, 7, 0]], np.int64)
    dx = np.full((2, 25), 5.0)
    indices[1, 2] = bad
    assert run(dy, indices, dx) == (False, bad)
    np.testing.assert_array_equal(dx, 5.0)
    indices[0, 0] = 25  # a second bad index, above the plane: one below -1 is reported first, else the largest
    assert run(dy, indices, dx) == (False, bad if bad < -1 else max(bad, 25))
    indices[0, 0], indices[1, 2] = 0, 24
    assert run(dy, indices, dx) == (True, -1)
    expected = np.zeros((2, 25))
    expected[0, 0], expected[0, 24] = 1, 2 + 3  # index -1 adds nothing
    expected[1, 3], expected[1, 24], expected[1, 0] = 5 + 6, 7, 8
    np.testing.assert_array_equal(dx, expected)


# ---------------------------------------------------------------- 1-D forms


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, None, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False),
                                          ((3,), (2,), (1,), (1,), True)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_1d_matches_reference(k, s, p, d, ceil, dtype):
    x = _random((2, 3, 13), dtype, levels=4)
    one = (lambda v: v[0] if isinstance(v, tuple) else v)
    y, i = lc.max_pool1d_forward(x, k, stride=s, padding=p, dilation=d, ceil_mode=ceil, return_indices=True)
    y_ref, i_ref = testing.max_pool1d_forward(x, one(k), stride=one(s), padding=one(p), dilation=one(d),
                                              ceil_mode=ceil, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(i, i_ref)
    dy = _random(y.shape, dtype, seed=2)
    dx_ref = testing.max_pool1d_backward(dy, i, x.shape)
    np.testing.assert_array_equal(lc.max_pool1d_backward(dy, i, x.shape), dx_ref)
    geometry = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    np.testing.assert_array_equal(lc.max_pool1d_backward(dy, i, x.shape, **geometry), dx_ref)
    np.testing.assert_array_equal(testing.max_pool1d_backward(dy, i, x.shape, **geometry), dx_ref)


def test_1d_out_buffers_are_returned():
    x = _random((2, 3, 10), np.float32)
    out = np.empty((2, 3, 5), np.float32)
    indices_out = np.empty((2, 3, 5), np.int64)
    y, i = lc.max_pool1d_forward(x, 2, return_indices=True, out=out, indices_out=indices_out)
    assert y is out and i is indices_out
    dx_out = np.empty_like(x)
    assert lc.max_pool1d_backward(np.ones_like(y), i, x.shape, out=dx_out) is dx_out
    np.testing.assert_array_equal(out, testing.max_pool1d_forward(x, 2))


# ---------------------------------------------------------------- buffers, strides, empty batches


def test_out_buffers_are_written_and_returned():
    x = _random((2, 3, 8, 8), np.float64)
    out = np.empty((2, 3, 4, 4))
    indices_out = np.empty((2, 3, 4, 4), np.int64)
    y, i = lc.max_pool2d_forward(x, 2, return_indices=True, out=out, indices_out=indices_out)
    assert y is out and i is indices_out
    assert lc.max_pool2d_forward(x, 2, out=out) is out
    dx_out = np.full(x.shape, np.nan)
    assert lc.max_pool2d_backward(np.ones_like(y), i, x.shape, out=dx_out) is dx_out
    assert dx_out.sum() == y.size
    dx_out[:] = np.nan
    assert lc.max_pool2d_backward(np.ones_like(y), i, x.shape, kernel_size=2, out=dx_out) is dx_out
    assert dx_out.sum() == y.size


def test_inputs_are_untouched_and_strides_accepted():
    base = _random((3, 2, 9, 8), np.float32)
    x = base.transpose(1, 0, 2, 3)  # not C-contiguous
    keep = x.copy()
    y, i = lc.max_pool2d_forward(x, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(x, keep)
    y_ref, i_ref = testing.max_pool2d_forward(np.ascontiguousarray(x), 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(i, i_ref)
    dy = _random(y.shape[::-1], np.float32).transpose(3, 2, 1, 0)
    dy_keep, i_keep = dy.copy(), i.copy()
    i_strided = np.asfortranarray(i)
    dx = lc.max_pool2d_backward(dy, i_strided, x.shape)
    np.testing.assert_array_equal(dy, dy_keep)
    np.testing.assert_array_equal(i_strided, i_keep)
    np.testing.assert_array_equal(dx, testing.max_pool2d_backward(dy, i, x.shape))


def test_empty_batch():
    x = np.empty((0, 3, 8, 8), np.float32)
    y, i = lc.max_pool2d_forward(x, 2, return_indices=True)
    assert y.shape == (0, 3, 4, 4) and i.shape == (0, 3, 4, 4) and i.dtype == np.int64
    dx = lc.max_pool2d_backward(y, i, x.shape)
    assert dx.shape == x.shape
    assert lc.max_pool2d_backward(y, i, x.shape, kernel_size=2).shape == x.shape
    y1 = lc.max_pool1d_forward(np.empty((0, 2, 9)), 3)
    assert y1.shape == (0, 2, 3)
    assert lc.max_pool1d_backward(y1, np.empty(y1.shape, np.int64), (0, 2, 9), kernel_size=3).shape == (0, 2, 9)


# ---------------------------------------------------------------- errors


def _x():
    return np.zeros((1, 2, 6, 6), np.float32)


@pytest.mark.parametrize("call,error,name", [
    (lambda: lc.max_pool2d_forward([[1.0]], 2), TypeError, "x"),
    (lambda: lc.max_pool2d_forward(np.zeros((1, 2, 6, 6), np.int32), 2), TypeError, "x"),
    (lambda: lc.max_pool2d_forward(np.zeros((2, 6, 6), np.float32), 2), ValueError, "x"),
    (lambda: lc.max_pool2d_forward(np.zeros((1, 2, 0, 6), np.float32), 1), ValueError, "x"),
    (lambda: lc.max_pool2d_forward(_x(), 2.0), TypeError, "kernel_size"),
    (lambda: lc.max_pool2d_forward(_x(), True), TypeError, "kernel_size"),
    (lambda: lc.max_pool2d_forward(_x(), 0), ValueError, "kernel_size"),
    (lambda: lc.max_pool2d_forward(_x(), (2, 2, 2)), ValueError, "kernel_size"),
    (lambda: lc.max_pool2d_forward(_x(), 7), ValueError, "kernel_size"),
    (lambda: lc.max_pool2d_forward(_x(), 3, dilation=3), ValueError, "kernel_size"),
    (lambda: lc.max_pool2d_forward(_x(), 2, stride=0), ValueError, "stride"),
    (lambda: lc.max_pool2d_forward(_x(), 2, stride="1"), TypeError, "stride"),
    (lambda: lc.max_pool2d_forward(_x(), 3, padding=2), ValueError, "padding"),
    (lambda: lc.max_pool2d_forward(_x(), (3, 2), padding=(1, 2)), ValueError, "padding"),
    (lambda: lc.max_pool2d_forward(_x(), 2, padding=-1), ValueError, "padding"),
    (lambda: lc.max_pool2d_forward(_x(), 2, padding="same"), TypeError, "padding"),
    (lambda: lc.max_pool2d_forward(_x(), 2, dilation=0), ValueError, "dilation"),
    (lambda: lc.max_pool2d_forward(_x(), 2, ceil_mode=1), TypeError, "ceil_mode"),
    (lambda: lc.max_pool2d_forward(_x(), 2, return_indices="yes"), TypeError, "return_indices"),
    (lambda: lc.max_pool2d_forward(_x(), 2, out=np.zeros((1, 2, 3, 3), np.float64)), TypeError, "out"),
    (lambda: lc.max_pool2d_forward(_x(), 2, out=np.zeros((1, 2, 3, 4), np.float32)), ValueError, "out"),
    (lambda: lc.max_pool2d_forward(_x(), 2, out=np.zeros((1, 2, 3, 6), np.float32)[..., ::2]), ValueError, "out"),
    (lambda: lc.max_pool2d_forward(_x(), 2, out=[0.0]), TypeError, "out"),
    (lambda: lc.max_pool2d_forward(_x(), 2, indices_out=np.zeros((1, 2, 3, 3), np.int64)), ValueError,
     "indices_out"),
    (lambda: lc.max_pool2d_forward(_x(), 2, return_indices=True, indices_out=np.zeros((1, 2, 3, 3), np.int32)),
     TypeError, "indices_out"),
    (lambda: lc.max_pool2d_forward(_x(), 2, return_indices=True, indices_out=np.zeros((1, 2, 3, 4), np.int64)),
     ValueError, "indices_out"),
    (lambda: lc.max_pool1d_forward(np.zeros((1, 2, 6)), (2, 2)), ValueError, "kernel_size"),
    (lambda: lc.max_pool1d_forward(np.zeros((1, 2, 6, 1)), 2), ValueError, "x"),
    (lambda: lc.max_pool1d_forward(np.zeros((1, 2, 6)), 3, padding=2), ValueError, "padding"),
    (lambda: lc.max_pool1d_forward(None, 3), TypeError, "x"),
])
def test_forward_errors(call, error, name):
    with pytest.raises(error, match=f"^{name}:"):
        call()


def test_out_overlapping_input_is_refused():
    buffer = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match="^out:.*overlap"):
        lc.max_pool2d_forward(buffer, 6, out=buffer.reshape(-1)[:2].reshape(1, 2, 1, 1))
    y = np.empty((1, 2, 3, 3), np.float64)
    with pytest.raises(ValueError, match="^indices_out:.*overlap"):
        lc.max_pool2d_forward(np.zeros((1, 2, 6, 6)), 2, return_indices=True, out=y, indices_out=y.view(np.int64))
    read_only = np.zeros((1, 2, 3, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="^out:.*writeable"):
        lc.max_pool2d_forward(buffer, 2, out=read_only)


def _dy():
    return np.ones((1, 2, 3, 3), np.float32)


def _ind():
    return np.zeros((1, 2, 3, 3), np.int64)


@pytest.mark.parametrize("call,error,name", [
    (lambda: lc.max_pool2d_backward(_dy().tolist(), _ind(), (1, 2, 6, 6)), TypeError, "dy"),
    (lambda: lc.max_pool2d_backward(_dy().astype(np.float16), _ind(), (1, 2, 6, 6)), TypeError, "dy"),
    (lambda: lc.max_pool2d_backward(_dy()[0], _ind(), (1, 2, 6, 6)), ValueError, "dy"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind().astype(np.int32), (1, 2, 6, 6)), TypeError, "indices"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind().astype(np.float64), (1, 2, 6, 6)), TypeError, "indices"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind()[..., :2], (1, 2, 6, 6)), ValueError, "indices"),
    (lambda: lc.max_pool2d_backward(_dy(), None, (1, 2, 6, 6)), TypeError, "indices"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6)), ValueError, "input_shape"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), 36), TypeError, "input_shape"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 3, 6, 6)), ValueError, "input_shape"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, -6, 6)), ValueError, "input_shape"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), out=np.zeros((1, 2, 6, 6))), TypeError, "out"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), out=np.zeros((1, 2, 6, 5), np.float32)),
     ValueError, "out"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), out=np.zeros((1, 2, 6, 12), np.float32)[..., ::2]),
     ValueError, "out"),
    (lambda: lc.max_pool1d_backward(np.ones((1, 2, 3)), np.zeros((1, 2, 3), np.int64), (1, 2)), ValueError,
     "input_shape"),
    (lambda: lc.max_pool1d_backward(np.ones((1, 2, 3)), np.zeros((1, 2, 3), np.int64), (1, 2, 0)), ValueError,
     "indices"),
    (lambda: lc.max_pool1d_backward(np.ones((1, 2, 3)), np.zeros((1, 2, 4), np.int64), (1, 2, 6)), ValueError,
     "indices"),
    # the geometry: checked after input_shape, against dy's shape (1, 2, 3, 3)
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), stride=2), ValueError, "stride"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), ceil_mode=False), ValueError, "ceil_mode"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=2.0), TypeError, "kernel_size"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=3, padding=2), ValueError, "padding"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=2, dilation=0), ValueError,
     "dilation"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=2, ceil_mode=1), TypeError,
     "ceil_mode"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=3), ValueError, "dy"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=2, stride=2, padding=1,
                                    dilation=1, ceil_mode=True), ValueError, "dy"),
    (lambda: lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 0, 6), kernel_size=2), ValueError, "input_shape"),
    (lambda: lc.max_pool1d_backward(np.ones((1, 2, 3)), np.zeros((1, 2, 3), np.int64), (1, 2, 6), kernel_size=3),
     ValueError, "dy"),
    (lambda: lc.max_pool1d_backward(np.ones((1, 2, 3)), np.zeros((1, 2, 3), np.int64), (1, 2, 6), kernel_size=2,
                                    stride=(2, 2)), ValueError, "stride"),
])
def test_backward_errors(call, error, name):
    with pytest.raises(error, match=f"^{name}:"):
        call()


def test_backward_geometry_messages():
    """A dy that does not fit the geometry is refused naming both shapes; a parameter without kernel_size says so."""
    with pytest.raises(ValueError, match=r"^dy: expected shape \(1, 2, 2, 2\), the output of the forward on "
                                         r"input_shape \(1, 2, 6, 6\).*got shape \(1, 2, 3, 3\)$"):
        lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), kernel_size=3)
    with pytest.raises(ValueError, match="^padding: expected None when kernel_size is None.*got int 1$"):
        lc.max_pool2d_backward(_dy(), _ind(), (1, 2, 6, 6), padding=1)


def test_backward_out_overlapping_dy_is_refused():
    buffer = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match="^out:.*overlap dy"):
        lc.max_pool2d_backward(buffer[:, :, :3, :3], _ind(), (1, 2, 6, 6), out=buffer)


# ---------------------------------------------------------------- properties


@st.composite
def _pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 12))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 12))
    ceil_mode = draw(st.booleans())
    levels = draw(st.sampled_from([None, 2, 5]))
    special = draw(st.sampled_from(["none", "nan", "inf"]))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil_mode, (h, w), levels, special, dtype, seed


@settings(max_examples=150, deadline=None)
@given(_pool_cases())
def test_property_matches_reference(case):
    k, s, p, d, ceil_mode, (h, w), levels, special, dtype, seed = case
    x = _random((2, 2, h, w), dtype, seed, levels=levels)
    rng = np.random.default_rng(seed + 1)
    if special == "nan":
        x[rng.random(x.shape) < 0.2] = np.nan
    elif special == "inf":
        x[rng.random(x.shape) < 0.3] = -np.inf
    kw = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
    y_ref, i_ref = testing.max_pool2d_forward(x, k, return_indices=True, **kw)
    y, i = lc.max_pool2d_forward(x, k, return_indices=True, **kw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(lc.max_pool2d_forward(x, k, **kw), y_ref)
    dy = _random(y.shape, dtype, seed + 2)
    np.testing.assert_array_equal(lc.max_pool2d_backward(dy, i, x.shape),
                                  testing.max_pool2d_backward(dy, i, x.shape))


# ---------------------------------------------------------------- PyTorch itself, when installed


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for geometry in GEOMETRIES:
        kw = _kwargs(geometry)
        x = rng.integers(0, 4, (2, 3, 9, 11)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = np.nan
        y, i = lc.max_pool2d_forward(x, return_indices=True, **kw)
        stride = kw["stride"] if kw["stride"] is not None else kw["kernel_size"]
        yt, it = F.max_pool2d(torch.from_numpy(x), kw["kernel_size"], stride, kw["padding"], kw["dilation"],
                              ceil_mode=kw["ceil_mode"], return_indices=True)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(i, it.numpy())


def test_read_only_inputs():
    x = _random((1, 2, 6, 6), np.float64)
    x.flags.writeable = False
    y, i = lc.max_pool2d_forward(x, 2, return_indices=True)
    for array in (y, i):
        array.flags.writeable = False
    np.testing.assert_array_equal(lc.max_pool2d_forward(x, 2), y)
    np.testing.assert_array_equal(lc.max_pool2d_backward(y, i, x.shape), testing.max_pool2d_backward(y, i, x.shape))
