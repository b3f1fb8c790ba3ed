"""Huge sizes fail cleanly before anything is allocated; huge parameters do not overflow the kernels.

An output that would need more bytes than the machine's physical memory, or
whose byte count does not even fit in int64, is a ``ValueError`` naming
``out`` (``lcnumba.checks.output``) raised before any allocation, so the
process neither swaps nor gets killed, and the call returns at once.
Strides, paddings, dilations and kernel sizes are accepted up to
``checks.MAX_PARAMETER`` (2**31 - 1); at that limit the kernels' int64 index
arithmetic is still exact, which the last tests check against hand-computed
results.
"""

import os
import re
import time

import numpy as np
import pytest

import lcnumba
from lcnumba import checks

from test_leaks import rss_bytes

HUGE = re.compile(r"^out: expected an output of at most \d+ bytes \(the physical memory\), got shape .* "
                  r"which would need (\d+) bytes$")


def _rss():
    return rss_bytes() if os.path.exists("/proc/self/statm") else 0


def _refused_quickly(call, pattern=HUGE, exc=ValueError):
    before = _rss()
    start = time.perf_counter()
    with pytest.raises(exc) as info:
        call()
    assert time.perf_counter() - start < 1.0
    assert _rss() - before < 64 * 2**20, "memory was allocated before the refusal"
    match = pattern.match(str(info.value))
    assert match, str(info.value)
    return match


def test_output_larger_than_memory_is_refused():
    x, w = np.ones((1, 1, 1, 1)), np.ones((4, 1, 1, 1))
    match = _refused_quickly(lambda: lcnumba.conv2d_forward(x, w, padding=10**6))
    assert int(match.group(1)) == 4 * (2 * 10**6 + 1) ** 2 * 8 > checks.MAX_OUTPUT_BYTES


def test_output_just_over_memory_is_refused_and_just_under_is_checked_only():
    side = int((checks.MAX_OUTPUT_BYTES / 8) ** 0.5) + 2  # (1, 1, side, side) float64 is just over
    x, w = np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))
    pad = (side - 1) // 2
    _refused_quickly(lambda: lcnumba.conv2d_forward(x, w, padding=((pad, side - 1 - pad), (pad, side - 1 - pad))))
    assert lcnumba.conv2d_output_shape(x.shape, w.shape, padding=pad) == (1, 1, 2 * pad + 1, 2 * pad + 1)


def test_byte_count_beyond_int64_is_refused():
    dy, idx = np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64)
    match = _refused_quickly(lambda: lcnumba.max_pool2d_backward(dy, idx, (1, 1, 2**40, 2**40)))
    assert int(match.group(1)) == 2**80 * 8 > 2**63
    # a tiled weight gradient with 2**40 x 2**40 tiles
    x, dy = np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3))
    _refused_quickly(lambda: lcnumba.tiled_conv2d_backward_weight(dy, x, (2**40, 2**40, 1, 1, 1, 1)))
    _refused_quickly(lambda: lcnumba.tiled_conv2d_backward_bias(dy, (1, 2**40, 2**40)))


def test_empty_output_with_sizes_beyond_numpy_is_refused():
    """N = 0 needs no memory, but NumPy refuses a shape whose other sizes overflow: so do the checks, naming out."""
    dy, idx = np.ones((0, 1, 1, 5)), np.zeros((0, 1, 1, 5), np.int64)
    with pytest.raises(ValueError, match=r"^out: expected an output whose nonzero sizes multiply to at most"):
        lcnumba.max_pool2d_backward(dy, idx, (0, 1, 2**70, 7))
    assert lcnumba.max_pool2d_backward(dy, idx, (0, 1, 2**40, 7)).shape == (0, 1, 2**40, 7)


def test_initialisers_refuse_weights_larger_than_memory():
    pattern = re.compile(r"^weight_shape: expected a weight of at most \d+ bytes .*would need (\d+) bytes$")
    for init in (lcnumba.he_normal, lcnumba.glorot_uniform):
        _refused_quickly(lambda init=init: init((2**20, 2**20, 3, 3)), pattern)
    assert lcnumba.fans((2**40, 2**40, 2**40, 2**40)) == (2**120, 2**120)  # exact, no int64 wrap


def test_shape_queries_answer_in_python_ints():
    shape = lcnumba.conv2d_output_shape((2**62, 1, 2**62, 2**62), (1, 1, 1, 1))
    assert shape == (2**62, 1, 2**62, 2**62) and all(type(s) is int for s in shape)
    assert lcnumba.max_pool2d_output_shape((1, 1, 2**62, 8), 2) == (1, 1, 2**61, 4)


@pytest.mark.parametrize("name,value", [("stride", 2**31), ("dilation", 2**63), ("padding", 2**62)])
def test_parameters_beyond_the_limit_are_value_errors(name, value):
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1))
    with pytest.raises(ValueError, match=rf"^{name}: expected ints <= {checks.MAX_PARAMETER}, got"):
        lcnumba.conv2d_forward(x, w, **{name: value})
    if name != "padding":
        with pytest.raises(ValueError, match=rf"^{name}: expected ints <= {checks.MAX_PARAMETER}, got"):
            lcnumba.max_pool2d_forward(x, 1, **{name: value})


@pytest.mark.parametrize("family", ["conv2d", "tiled_conv2d", "local_conv2d"])
def test_largest_stride_and_padding_index_exactly(family):
    """Stride and padding 2**31 - 1 on a 3x3 input: output (i, j) reads x[i*S - P, j*S - P], only (1, 1) is inside."""
    big = checks.MAX_PARAMETER
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    grid = {"conv2d": (), "tiled_conv2d": (2, 2), "local_conv2d": (3, 3)}[family]
    w = np.full(grid + (1, 1, 1, 1), 2.0)
    params = dict(stride=big, padding=big)
    y = getattr(lcnumba, f"{family}_forward")(x, w, **params)
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 2.0 * x[0, 0, 0, 0]
    np.testing.assert_array_equal(y, expected)
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    dx = getattr(lcnumba, f"{family}_backward_input")(dy, w, x.shape, **params)
    np.testing.assert_array_equal(dx, np.where(np.arange(9).reshape(1, 1, 3, 3) == 0, 2.0 * dy[0, 0, 1, 1], 0.0))
    dw = getattr(lcnumba, f"{family}_backward_weight")(dy, x, w.shape, **params)
    assert dw.sum() == dy[0, 0, 1, 1] * x[0, 0, 0, 0]


def test_largest_pool_stride_and_dilation_index_exactly():
    big = checks.MAX_PARAMETER
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y, idx = lcnumba.max_pool2d_forward(x, 1, stride=big, dilation=big, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 1.0 and idx[0, 0, 0, 0] == 0
    # ceil_mode would add a second window, starting at 2**31 - 2: in the right padding, so dropped
    y, idx = lcnumba.max_pool2d_forward(x, 2, stride=big, padding=1, return_indices=True, ceil_mode=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 1.0 and idx[0, 0, 0, 0] == 0
    # a stride beyond the width costs nothing (it once allocated a buffer of stride rows per plane)
    for return_indices in (False, True):  # kernels compiled or loaded before the clock starts
        lcnumba.max_pool2d_forward(np.ones((1, 1, 3, 3)), 3, stride=2, padding=1, return_indices=return_indices)
    start = time.perf_counter()
    for return_indices in (False, True):
        lcnumba.max_pool2d_forward(np.ones((8, 4, 3, 3)), 1, stride=(1, big), return_indices=return_indices)
    assert time.perf_counter() - start < 1.0
