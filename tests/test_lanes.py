"""The vector-lane products of ``lcnumba.cpu.lanes`` against float64 NumPy products.

The three products are the inner loops of the local convolution; here they
are checked alone, on shapes that exercise whole blocks of rows, the rows
past the last block, several vectors of lanes and (for ``matmul_lanes_t``)
the columns past the last whole vector, so a wrong stride, mask or tail
shows up as a wrong entry rather than as a convolution slightly off.
"""

import numpy as np
import pytest

from lcnumba.cpu import lanes

DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

# (rows, inner size, lane vectors): a whole block, block + tail rows, a lone row, wide lanes.
SHAPES = ((8, 40, 1), (19, 37, 2), (1, 3, 1), (3, 1296, 4))

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
shapes = pytest.mark.parametrize("rows, inner, vectors", SHAPES)


def _operands(dtype, *shapes):
    rng = np.random.default_rng(sum(map(sum, shapes)))
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def _assert_close(got, want):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL[got.dtype] * scale * 10)


# name: (operand shapes from (rows, inner, lanes), out's shape, the product in float64)
PRODUCTS = {
    "matmul_lanes": (lambda r, k, n: ((r, k), (k, n)), lambda r, k, n: (r, n), lambda w, b: w.astype(np.float64) @ b),
    "matmul_t_lanes": (lambda r, k, n: ((r, k), (r, n)), lambda r, k, n: (k, n),
                       lambda w, b: w.T.astype(np.float64) @ b),
    "matmul_lanes_t": (lambda r, k, n: ((r, n), (k, n)), lambda r, k, n: (r, k),
                       lambda a, b: a.astype(np.float64) @ b.T),
}


@dtypes
@shapes
@pytest.mark.parametrize("name, add", [("matmul_lanes", None)] + [
    (name, add) for name in ("matmul_t_lanes", "matmul_lanes_t") for add in (False, True)])
def test_product_against_float64(dtype, rows, inner, vectors, name, add):
    """Each product, overwriting out (NaN before) or adding onto it where it can."""
    n_lanes = vectors * lanes.VECTOR_BYTES // np.dtype(dtype).itemsize
    operand_shapes, out_shape, product = PRODUCTS[name]
    first, second, start = _operands(dtype, *operand_shapes(rows, inner, n_lanes), out_shape(rows, inner, n_lanes))
    out = start.copy() if add else np.full(start.shape, np.nan, dtype)
    args = (first, second, out) if add is None else (first, second, add, out)
    getattr(lanes, name)(*args)
    _assert_close(out, product(first, second) + (start if add else 0))


# (rows, inner size) of a lone sample (one lane): row blocks and their tails, inner sizes past whole
# vectors of taps and past the blocks of vectors, a single one.
LONE_SHAPES = ((8, 40), (19, 37), (1, 3), (17, 1299), (33, 67), (2, 1))


@dtypes
@pytest.mark.parametrize("rows, inner", LONE_SHAPES)
@pytest.mark.parametrize("name, add", [("matmul_lanes", None)] + [
    (name, add) for name in ("matmul_t_lanes", "matmul_lanes_t") for add in (False, True)])
def test_lone_sample_against_float64(dtype, rows, inner, name, add):
    """One lane, which the products run along the taps instead: every entry, the tails past whole vectors too."""
    operand_shapes, out_shape, product = PRODUCTS[name]
    first, second, start = _operands(dtype, *operand_shapes(rows, inner, 1), out_shape(rows, inner, 1))
    out = start.copy() if add else np.full(start.shape, np.nan, dtype)
    args = (first, second, out) if add is None else (first, second, add, out)
    getattr(lanes, name)(*args)
    _assert_close(out, product(first, second) + (start if add else 0))


def _in_lane_zero(a, width):
    """``a`` (rows, 1) as the first lane of (rows, width), the other lanes zero."""
    wide = np.zeros((a.shape[0], width), a.dtype)
    wide[:, :1] = a
    return wide


@dtypes
@pytest.mark.parametrize("add", [False, True])
def test_lone_sample_sums_in_the_lanes_order(dtype, add):
    """The gradients' products of one lane give the bits of lane 0 of the vector form, the other lanes zero."""
    rows, inner = 19, 1299
    width = lanes.VECTOR_BYTES // np.dtype(dtype).itemsize
    w, b, start = _operands(dtype, (rows, inner), (rows, 1), (inner, 1))
    lone, wide = start.copy(), np.repeat(start, width, axis=1)
    lanes.matmul_t_lanes(w, b, add, lone)
    lanes.matmul_t_lanes(w, _in_lane_zero(b, width), add, wide)
    assert wide[:, :1].tobytes() == lone.tobytes()
    a, b, start = _operands(dtype, (rows, 1), (inner, 1), (rows, inner))
    lone, wide = start.copy(), start.copy()
    lanes.matmul_lanes_t(a, b, add, lone)
    lanes.matmul_lanes_t(_in_lane_zero(a, width), _in_lane_zero(b, width), add, wide)
    assert wide.tobytes() == lone.tobytes()


def test_products_on_strided_views_read_only_their_rows():
    """Row strides come from the views (a slice of a filter bank, every other row of a plane)."""
    w, b, a = _operands(np.float32, (16, 50), (50, 8), (5, 8))
    bank = w[3:11, 7:47]  # rows strided by 50, columns offset
    out = np.zeros((40, 16), np.float32)
    lanes.matmul_t_lanes(bank, b[:8], True, out[::1, :8])
    _assert_close(out[:, :8], bank.T.astype(np.float64) @ b[:8])
    assert not out[:, 8:].any()
    wide = np.zeros((5, 100), np.float32)
    lanes.matmul_lanes_t(a, b[::2][:24], False, wide[:, 10:34])
    _assert_close(wide[:, 10:34], a.astype(np.float64) @ b[::2][:24].T)
    assert not wide[:, :10].any() and not wide[:, 34:].any()
