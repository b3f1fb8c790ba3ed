"""The convolution family on CUDA arrays against the CPU functions and the NumPy references.

Runs on a GPU when there is one and on Numba's CUDA simulator otherwise
(the root ``conftest.py`` decides before Numba is imported). The
simulator runs every GPU thread as a Python thread, so shapes are tiny and
``THREADS_PER_BLOCK`` is patched down: the inputs still span several blocks
and every grid-stride and block-stride loop takes more than one turn.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from numba import cuda
from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

import lcnumba
from lcnumba import config, geometry, testing
from lcnumba.gpu import conv as gpu_conv
from lcnumba.gpu import gemm

from families import FAMILIES, FAMILIES_2D, Family, families

DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)




@dataclass
class Case:
    fam: Family
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    params: dict
    dy: np.ndarray

    @property
    def geo(self):
        return dict(self.params, **self.fam.mode)


def make_case(fam, *, dtype=np.float64, n=2, c=4, size=(4, 5), f=4, kernel=(3, 2), tiles=(2, 3), seed=0,
              **params):
    """A random case; local layers get no padding by default (a block per position makes them the slow ones)."""
    params = dict(dict(stride=1, padding=0 if fam.sharing == "local" else 1, dilation=1, groups=2), **params)
    rng = np.random.default_rng(seed)
    d = fam.spatial
    x_shape = (n, c) + tuple(size[-d:])
    cg = c // params["groups"]
    if d == 2:
        out = geometry.conv2d_output_shape(x_shape, (f, cg) + tuple(kernel), **params)
    else:
        out = geometry.conv1d_output_shape(x_shape, (f, cg, kernel[-1]), **params)
    grid = {"shared": (), "tiled": tuple(tiles[-d:]), "local": tuple(out[2:])}[fam.sharing]
    w = rng.standard_normal(grid + (f, cg) + tuple(kernel[-d:])).astype(dtype)
    b = rng.standard_normal((f,) + grid).astype(dtype)
    x = rng.standard_normal(x_shape).astype(dtype)
    dy = rng.standard_normal(out).astype(dtype)
    return Case(fam, x, w, b, params, dy)


def dev(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return None if a is None else a.copy_to_host()


def run(case, part, on_device, **kwargs):
    """Call ``part`` of the case's family on host arrays or on device copies of them."""
    conv = dev if on_device else (lambda a: a)
    fn = case.fam.op(part)
    if part == "forward":
        return fn(conv(case.x), conv(case.w), conv(case.b), **case.geo, **kwargs)
    if part == "backward_input":
        return fn(conv(case.dy), conv(case.w), case.x.shape, **case.geo, **kwargs)
    if part == "backward_weight":
        return fn(conv(case.dy), conv(case.x), case.w.shape, **case.geo, **kwargs)
    if part == "backward_bias":
        return fn(conv(case.dy), case.b.shape, **case.fam.mode, **kwargs)
    raise AssertionError(part)


PARTS = ("forward", "backward_input", "backward_weight", "backward_bias")


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=RTOL[np.dtype(dtype)], atol=RTOL[np.dtype(dtype)] * 10)


# ---------------------------------------------------------------- every function, both dtypes


@families
@dtypes
def test_every_part_matches_cpu_and_reference(fam, dtype):
    case = make_case(fam, dtype=dtype)
    for part in PARTS:
        got = run(case, part, True)
        assert is_cuda_ndarray(got)
        expected = run(case, part, False)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        close(host(got), expected, dtype)
    ref = fam.ref("forward")(case.x, case.w, case.b, **case.geo)
    close(host(run(case, "forward", True)), ref, dtype)


@families
def test_backward_all_at_once(fam):
    case = make_case(fam)
    backward = fam.op("backward")
    dx, dw, db = backward(dev(case.dy), dev(case.x), dev(case.w), dev(case.b), **case.geo)
    rx, rw, rb = reference_backward(case)
    close(host(dx), rx, np.float64)
    close(host(dw), rw, np.float64)
    close(host(db), rb, np.float64)
    dx, dw, db = backward(dev(case.dy), dev(case.x), dev(case.w), None, **case.geo)
    assert db is None and dx.shape == case.x.shape and dw.shape == case.w.shape


def reference_backward(case):
    return case.fam.ref("backward")(case.dy, case.x, case.w, case.b, **case.geo)


GEOMETRIES = [
    dict(stride=2, padding=0, dilation=1, groups=1),
    dict(stride=(1, 2), padding=((2, 0), (0, 1)), dilation=(2, 1), groups=4),
    dict(stride=1, padding="same", dilation=2, groups=2),
    dict(stride=3, padding=2, dilation=(1, 3), groups=1),
]


@pytest.mark.parametrize("fam", FAMILIES_2D, ids=str)
@pytest.mark.parametrize("params", GEOMETRIES, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_geometry(fam, params):
    case = make_case(fam, size=(6, 7), **params)
    for part in PARTS:
        close(host(run(case, part, True)), run(case, part, False), np.float64)


@pytest.mark.parametrize("fam", [FAMILIES[0], FAMILIES[3]], ids=str)
def test_adjoint_identity(fam):
    """``<conv(x), dy> == <x, conv_backward_input(dy)>`` on the device."""
    case = make_case(fam, stride=2, padding=1)
    y = host(fam.op("forward")(dev(case.x), dev(case.w), **case.geo))
    dx = host(run(case, "backward_input", True))
    assert np.isclose(np.vdot(y, case.dy), np.vdot(case.x, dx), rtol=1e-12)


# ---------------------------------------------------------------- out=, accumulate=, stream=


@families
def test_out_is_written_and_returned(fam):
    case = make_case(fam)
    shapes = {"forward": case.dy.shape, "backward_input": case.x.shape, "backward_weight": case.w.shape,
              "backward_bias": case.b.shape}
    for part in PARTS:
        out = cuda.device_array(shapes[part], dtype=np.float64)
        got = run(case, part, True, out=out)
        assert got is out
        close(host(out), run(case, part, False), np.float64)


@families
@pytest.mark.parametrize("part", ["backward_weight", "backward_bias"])
def test_accumulate_adds_into_out(fam, part):
    case = make_case(fam)
    start = np.random.default_rng(5).standard_normal(case.w.shape if part == "backward_weight" else case.b.shape)
    out = dev(start)
    run(case, part, True, out=out, accumulate=True)
    close(host(out), start + run(case, part, False), np.float64)


@pytest.mark.parametrize("fam", [FAMILIES[0], FAMILIES[1], FAMILIES[5]], ids=str)
def test_stream(fam):
    case = make_case(fam)
    stream = cuda.stream()
    y = fam.op("forward")(dev(case.x), dev(case.w), dev(case.b), **case.geo, stream=stream)
    dx, dw, db = fam.op("backward")(dev(case.dy), dev(case.x), dev(case.w), dev(case.b), **case.geo, stream=stream)
    stream.synchronize()
    close(host(y), run(case, "forward", False), np.float64)
    close(host(dw), run(case, "backward_weight", False), np.float64)
    close(host(db), run(case, "backward_bias", False), np.float64)
    close(host(dx), run(case, "backward_input", False), np.float64)


# ---------------------------------------------------------------- empty batch, strides, splits


@families
def test_empty_batch(fam):
    case = make_case(fam, n=0)
    y = run(case, "forward", True)
    assert y.shape == case.dy.shape and y.shape[0] == 0
    assert run(case, "backward_input", True).shape == case.x.shape
    dw = host(run(case, "backward_weight", True))
    assert dw.shape == case.w.shape and not dw.any()
    db = host(run(case, "backward_bias", True))
    assert db.shape == case.b.shape and not db.any()
    start = np.ones(case.w.shape)
    out = dev(start)
    run(case, "backward_weight", True, out=out, accumulate=True)
    assert np.array_equal(host(out), start)


@pytest.mark.parametrize("fam", [FAMILIES[0], FAMILIES[2], FAMILIES[3]], ids=str)
def test_non_contiguous_device_inputs(fam):
    case = make_case(fam)
    # real device arrays take no Ellipsis, so spell out every axis
    every_other = (slice(None),) * (case.x.ndim - 1) + (slice(None, None, 2),)
    wide = cuda.to_device(np.repeat(case.x, 2, axis=-1))[every_other]  # a strided view on the device
    assert not wide.is_c_contiguous()
    y = fam.op("forward")(wide, dev(case.w), dev(case.b), **case.geo)
    close(host(y), run(case, "forward", False), np.float64)
    # Real device arrays transpose only in 2-D: a strided slice makes the non-contiguous weights.
    every_other_w = (slice(None),) * (case.w.ndim - 1) + (slice(None, None, 2),)
    w_view = cuda.to_device(np.repeat(case.w, 2, axis=-1))[every_other_w]
    assert not w_view.is_c_contiguous()
    dx = fam.op("backward_input")(dev(case.dy), w_view, case.x.shape, **case.geo)
    close(host(dx), run(case, "backward_input", False), np.float64)


@pytest.mark.parametrize("fam", [FAMILIES[0], FAMILIES[1], FAMILIES[4]], ids=str)
@dtypes
def test_split_reductions(fam, dtype, monkeypatch):
    """Weight and bias gradients cut into column splits (summed in split order) still agree."""
    monkeypatch.setattr(gpu_conv, "MIN_COLUMNS_PER_SPLIT", 4)
    case = make_case(fam, dtype=dtype, n=3)
    for part in ("backward_weight", "backward_bias"):
        close(host(run(case, part, True)), run(case, part, False), dtype)
        start = np.ones(case.w.shape if part == "backward_weight" else case.b.shape, dtype)
        out = dev(start)
        run(case, part, True, out=out, accumulate=True)
        close(host(out), start + run(case, part, False), dtype)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("fam", [FAMILIES[0], FAMILIES[1], FAMILIES[3]], ids=str)
def test_bitwise_deterministic_and_independent_of_block_size(fam, monkeypatch):
    """Every sum runs in an order fixed by the shapes: two runs, and two block sizes, agree bitwise."""
    case = make_case(fam, dtype=np.float32, n=3)
    monkeypatch.setattr(gpu_conv, "MIN_COLUMNS_PER_SPLIT", 8)
    results = []
    for threads in (8, 8, 32):
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
        results.append([host(run(case, part, True)) for part in PARTS])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("fam", [FAMILIES[0], FAMILIES[3], FAMILIES[4]], ids=str)
def test_errors_match_the_cpu(fam):
    case = make_case(fam)
    bad_out = cuda.device_array((1,) + case.dy.shape[1:], dtype=np.float64)
    with pytest.raises(ValueError, match="^out: expected shape"):
        run(case, "forward", True, out=bad_out)
    with pytest.raises(TypeError, match="^out: expected dtype float64"):
        run(case, "forward", True, out=cuda.device_array(case.dy.shape, dtype=np.float32))
    with pytest.raises(TypeError, match=r"^w: expected one dtype .* got dtypes x float64, w float32"):
        fam.op("forward")(dev(case.x), dev(case.w.astype(np.float32)), **case.geo)
    with pytest.raises(ValueError, match="^out: expected an array to accumulate into"):
        run(case, "backward_weight", True, accumulate=True)
    with pytest.raises(ValueError, match="^groups: expected a divisor"):
        fam.op("forward")(dev(case.x), dev(case.w), **dict(case.geo, groups=3))
    with pytest.raises(TypeError, match="mixed with a NumPy array"):
        fam.op("forward")(dev(case.x), case.w, **case.geo)
    x = dev(case.x)
    flat = x.reshape(-1)
    alias = flat[: int(np.prod(case.dy.shape))].reshape(case.dy.shape) if flat.shape[0] >= np.prod(case.dy.shape) \
        else None
    if alias is not None:
        with pytest.raises(ValueError, match="^out: expected a buffer that does not overlap x"):
            fam.op("forward")(x, dev(case.w), **case.geo, out=alias)
    with pytest.raises(TypeError, match="^stream: expected 0 or a numba.cuda stream"):
        run(case, "forward", True, stream="default")


# ---------------------------------------------------------------- GEMM tiles and tables


@pytest.mark.parametrize("fam", FAMILIES_2D, ids=str)
def test_gemm_tiles_span_many_blocks(fam, monkeypatch):
    """Every pass at two block sizes: 1 thread (4 x 4 block tiles, one block per tile) and 64 threads.

    The GEMM's block tiles are capped at 4 x 8 (``gemm.GM``, ``gemm.GN`` patched down), so that a tiny case
    spans several filter, column and tap tiles at both sizes. Odd sizes, unequal strides, dilations and
    paddings, 3 groups of 6 filters, ``Kg = 18`` taps (several reduction chunks, so both shared-memory
    buffers), column splits. Locally connected layers run on kernels of their own (``gpu.local``, no GEMM
    tiles) whose 1-thread blocks are the slowest on the simulator: 3 groups of 1 channel and 3 filters
    (``Kg = 9``) there. Each agrees with the CPU kernels and the reference, and the two block sizes give the
    same bits.
    """
    monkeypatch.setattr(gpu_conv, "MIN_COLUMNS_PER_SPLIT", 4)
    monkeypatch.setattr(gemm, "GM", 4)
    monkeypatch.setattr(gemm, "GN", 8)
    c, f = (3, 9) if fam.sharing == "local" else (6, 18)
    case = make_case(fam, dtype=np.float32, n=2, c=c, size=(5, 7), f=f, kernel=(3, 3), tiles=(2, 2),
                     stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=3)
    expected = [run(case, part, False) for part in PARTS]
    reference = [fam.ref("forward")(case.x, case.w, case.b, **case.geo), *reference_backward(case)]
    results = []
    for threads in (1, 64):
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
        results.append([host(run(case, part, True)) for part in PARTS])
    for got in results:  # parts in the order of PARTS: y, dx, dw, db
        for a, b, r in zip(got, expected, reference):
            close(a, b, np.float32)
            close(a, r, np.float32)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_device_bank_arithmetic_is_the_index_math_of_the_cpu():
    """The kernels' 32-bit ``tile_span`` equals ``indexing.tile_span``, and ``positions_before`` sums its counts."""
    from lcnumba import indexing

    for size in range(1, 13):
        for tiles in range(1, size + 3):
            for periodic in (False, True):
                if tiles > size and not periodic:
                    continue  # block mode has at most a bank per position
                before = 0
                for tile in range(tiles):
                    assert gpu_conv.tile_span(tile, size, tiles, periodic) == \
                        indexing.tile_span(tile, size, tiles, periodic), (tile, size, tiles, periodic)
                    assert gpu_conv.positions_before(tile, size, tiles, periodic) == before
                    before += indexing.tile_span(tile, size, tiles, periodic)[2]


def test_gather_table_lists_exactly_the_taps_that_read_a_cell():
    """``_taps_reading``: first tap, count and first window, against the definition (every tap tried)."""
    for stride in (1, 2, 3):
        for dilation in (1, 2, 3):
            for pad in (0, 1, 3):
                for kernel in (1, 2, 3, 5):
                    size = 9
                    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
                    if out < 1:
                        continue
                    table = np.zeros(3 * size, np.int64)
                    g = np.gcd(stride, dilation)
                    for pos in range(size):
                        gpu_conv._taps_reading(pos, pad, kernel, stride, dilation, out, table, 0, size)
                        first, count, window = table[pos], table[size + pos], table[2 * size + pos]
                        listed = [(first + m * (stride // g), window - m * (dilation // g)) for m in range(count)]
                        taps = [(a, (pos + pad - a * dilation) // stride) for a in range(kernel)
                                if (pos + pad - a * dilation) % stride == 0 and
                                0 <= (pos + pad - a * dilation) // stride < out]
                        assert listed == taps, (pos, pad, kernel, stride, dilation)


def test_device_tile_of_is_the_index_math_of_the_cpu():
    """The input gradient's ``tile_of`` (32-bit divisions, a shortcut for local banks) equals ``indexing.tile_of``."""
    from lcnumba import indexing

    for size in range(1, 13):
        for tiles in range(1, size + 1):
            for periodic in (False, True):
                assert [gpu_conv.tile_of(i, size, tiles, periodic) for i in range(size)] == \
                    [indexing.tile_of(i, size, tiles, periodic) for i in range(size)], (size, tiles, periodic)
