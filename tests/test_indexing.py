"""The index arithmetic of ``lcnumba.indexing`` against brute force, as Python and compiled.

Every function runs twice: as the plain Python that ``lcnumba.geometry``
calls, and compiled with ``numba.njit`` (as ``lcnumba.cpu.indexing`` and
``lcnumba.gpu`` compile it), and each result is compared with a count or a
list made by enumerating windows, taps or positions one by one. The CUDA
device functions are the same source; ``test_cuda_*`` run them on the
simulator.
"""

import ast
import itertools
import pathlib

import pytest
from numba import njit

import lcnumba
from lcnumba import geometry, indexing
from lcnumba.cpu import indexing as compiled_indexing

MODES = [False, True]
MODE_IDS = ["python", "njit"]


def _function(name, compiled):
    python = getattr(indexing, name)
    return njit(python) if compiled else python


def _fitting_windows(padded, extent, stride):
    """Windows ``i = 0, 1, ...`` whose taps ``i * stride + [0, extent)`` all lie in ``[0, padded)``."""
    return sum(1 for i in range(padded + 1) if i * stride + extent <= padded)


def test_indexing_imports_nothing():
    """Plain Python that every device compiles: no import (not even Numba's), so any compiler takes it."""
    tree = ast.parse(pathlib.Path(indexing.__file__).read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("compiled", MODES, ids=MODE_IDS)
def test_kernel_extent_and_conv_output_size(compiled):
    extent = _function("kernel_extent", compiled)
    output_size = _function("conv_output_size", compiled)
    for size, kernel, stride, dilation, before, after in itertools.product(
            range(1, 9), range(1, 5), range(1, 4), range(1, 4), range(3), range(3)):
        taps = [a * dilation for a in range(kernel)]
        assert extent(kernel, dilation) == taps[-1] - taps[0] + 1
        got = output_size(size, kernel, stride, dilation, before, after)
        want = _fitting_windows(size + before + after, extent(kernel, dilation), stride)
        assert got == want if want else got < 1  # no window: any size below 1 (the callers raise)


def _pool_windows(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's windows by enumeration: those that fit in the padded input; with ``ceil_mode``, when the last of
    them ends before the padded input does, one more (running past the end) to reach those cells, unless it would
    start in the right padding (at or after ``size + pad``)."""
    padded = size + 2 * pad
    extent = dilation * (kernel - 1) + 1
    count = _fitting_windows(padded, extent, stride)
    if ceil_mode and (count - 1) * stride + extent < padded and count * stride < size + pad:
        count += 1
    return count


@pytest.mark.parametrize("compiled", MODES, ids=MODE_IDS)
def test_pool_output_size(compiled):
    output_size = _function("pool_output_size", compiled)
    for size, kernel, stride, dilation in itertools.product(range(1, 10), range(1, 5), range(1, 5), range(1, 3)):
        for pad, ceil_mode in itertools.product(range(kernel // 2 + 1), (False, True)):
            got = output_size(size, kernel, stride, pad, dilation, ceil_mode)
            want = _pool_windows(size, kernel, stride, pad, dilation, ceil_mode)
            assert got == want if want else got < 1  # no window: any size below 1 (the callers raise)
    # kernel 2, stride 2 on 5 cells: ceil_mode rounds 2.5 windows up to 3; with padding 1 a fourth window would
    # start in the right padding and is dropped; a kernel of 3 on 2 cells, stride 2, overhangs by less than a stride
    assert output_size(2, 3, 2, 0, 1, False) < 1 and output_size(2, 3, 2, 0, 1, True) == 1
    assert output_size(5, 2, 2, 0, 1, False) == 2 and output_size(5, 2, 2, 0, 1, True) == 3
    assert output_size(5, 2, 2, 1, 1, False) == 3 and output_size(5, 2, 2, 1, 1, True) == 3


@pytest.mark.parametrize("compiled", MODES, ids=MODE_IDS)
def test_taps_inside(compiled):
    taps_inside = _function("taps_inside", compiled)
    for start, step, count, size in itertools.product(range(-9, 10), range(1, 5), range(0, 7), range(1, 8)):
        inside = [m for m in range(count) if 0 <= start + m * step < size]
        lo, hi = taps_inside(start, step, count, size)
        assert 0 <= lo <= hi <= count
        assert list(range(lo, hi)) == inside, (start, step, count, size)


def _brute_taps(pos, pad, kernel, stride, dilation, out_size):
    return [a for a in range(kernel) for i in range(out_size) if i * stride - pad + a * dilation == pos]


@pytest.mark.parametrize("compiled", MODES, ids=MODE_IDS)
def test_tap_range_is_exact(compiled):
    tap_range = _function("tap_range", compiled)
    for kernel in (1, 2, 3, 5):
        for stride in (1, 2, 3, 4):
            for dilation in (1, 2, 3, 6):
                for pad in (0, 1, 3):
                    size = 9
                    out_size = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
                    if out_size < 1:
                        continue
                    for pos in range(size):
                        lo, hi, step = tap_range(pos, pad, kernel, stride, dilation, out_size)
                        assert list(range(lo, hi, step)) == _brute_taps(pos, pad, kernel, stride, dilation, out_size)


def _tile(index, size, tiles, periodic):
    """The tile rules as stated: Ngiam et al.'s periodic tiles, or ``tiles`` contiguous blocks in order."""
    if periodic:
        return index % tiles
    return index * tiles // size


@pytest.mark.parametrize("compiled", MODES, ids=MODE_IDS)
def test_tile_span_and_tile_of(compiled):
    span = _function("tile_span", compiled)
    tile_of = _function("tile_of", compiled)
    for size, tiles in itertools.product(range(1, 9), range(1, 10)):
        for mode in geometry.TILE_MODES:
            periodic = mode == "periodic"
            seen = []
            for t in range(tiles):
                start, step, count = span(t, size, tiles, periodic)
                members = [start + u * step for u in range(count)]
                assert members == [i for i in range(size) if _tile(i, size, tiles, periodic) == t]
                assert all(tile_of(i, size, tiles, periodic) == t for i in members)
                assert all(geometry.tile_of(i, size, tiles, mode) == t for i in members)
                assert count <= indexing.span_count(size, tiles)
                seen += members
            assert sorted(seen) == list(range(size))
        # span_count is reached by some tile: the largest run, not a bound that could be loose
        assert max(span(t, size, tiles, p)[2] for t in range(tiles) for p in (False, True)) == \
            indexing.span_count(size, tiles)


def test_compiled_copies_are_the_python_functions():
    """``lcnumba.cpu.indexing`` compiles exactly these functions, so the C entry points and kernels size as Python."""
    for name in ("conv_output_size", "pool_output_size", "tile_of", "tile_span", "taps_inside"):
        assert getattr(compiled_indexing, name).py_func is getattr(indexing, name)
    for args in itertools.product(range(1, 6), range(1, 4), range(1, 3), range(1, 3), range(2), range(2)):
        assert compiled_indexing.conv_output_size(*args) == geometry.output_size(*args)
    assert lcnumba.conv2d_output_shape((1, 1, 9, 7), (1, 1, 3, 2), stride=2, dilation=(1, 3))[2:] == (
        compiled_indexing.conv_output_size(9, 3, 2, 1, 0, 0), compiled_indexing.conv_output_size(7, 2, 2, 3, 0, 0))
