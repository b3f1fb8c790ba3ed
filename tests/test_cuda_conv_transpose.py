"""The transposed convolution family on CUDA arrays against the CPU functions and the scatter references.

Runs on a GPU when there is one and on Numba's CUDA simulator otherwise (the
root ``conftest.py`` decides); shapes are tiny and ``THREADS_PER_BLOCK`` is
patched down so that every grid-stride loop takes more than one turn.
"""

import numpy as np
import pytest
from numba import cuda
from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

from lcnumba import config

from families import TRANSPOSED, transposed
from test_conv_transpose import GEOMETRIES, make_case

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def close(actual, expected, dtype):
    assert is_cuda_ndarray(actual)
    np.testing.assert_allclose(actual.copy_to_host(), expected, rtol=RTOL[np.dtype(dtype)],
                               atol=RTOL[np.dtype(dtype)] * 10)


def tiny(fam, geo="mixed-groups", **kwargs):
    sizes = dict(n=2, c=2, size=(2, 3), fg=2, kernel=(2, 2), tiles=(2, 2))
    return make_case(fam, GEOMETRIES[geo], **dict(sizes, **kwargs))


@transposed
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_every_pass_matches_the_references(fam, dtype):
    case = tiny(fam, dtype=dtype)
    dy, p, mode = case.dy(), case.params, fam.mode
    close(fam.op("forward")(dev(case.x), dev(case.w), dev(case.b), **p),
          fam.ref("forward")(case.x, case.w, case.b, **p), dtype)
    close(fam.op("forward")(dev(case.x), dev(case.w), **p), fam.ref("forward")(case.x, case.w, **p), dtype)
    close(fam.op("backward_input")(dev(dy), dev(case.w), case.x.shape, **p),
          fam.ref("backward_input")(dy, case.w, case.x.shape, **p), dtype)
    close(fam.op("backward_weight")(dev(dy), dev(case.x), case.w.shape, **p),
          fam.ref("backward_weight")(dy, case.x, case.w.shape, **p), dtype)
    close(fam.op("backward_bias")(dev(dy), case.b.shape, **mode), fam.ref("backward_bias")(dy, case.b.shape, **mode),
          dtype)
    for got, expected in zip(fam.op("backward")(dev(dy), dev(case.x), dev(case.w), dev(case.b), **p),
                             fam.ref("backward")(dy, case.x, case.w, case.b, **p)):
        close(got, expected, dtype)


@pytest.mark.parametrize("fam", [f for f in TRANSPOSED if f.tile_mode != "periodic"], ids=str)
def test_out_accumulate_and_empty_batch(fam):
    case = tiny(fam, "stride2-pad1-outpad1")
    dy, p = case.dy(), case.params
    y = cuda.device_array(case.output_shape)
    assert fam.op("forward")(dev(case.x), dev(case.w), dev(case.b), out=y, **p) is y
    close(y, fam.ref("forward")(case.x, case.w, case.b, **p), np.float64)
    dw = dev(np.ones(case.w.shape))
    fam.op("backward_weight")(dev(dy), dev(case.x), case.w.shape, out=dw, accumulate=True, **p)
    close(dw, fam.ref("backward_weight")(dy, case.x, case.w.shape, **p) + 1, np.float64)
    empty = tiny(fam, "stride2-pad1-outpad1", n=0)
    y = fam.op("forward")(dev(empty.x), dev(empty.w), dev(empty.b), **p)
    assert y.shape == empty.output_shape
    close(fam.op("backward_weight")(dev(empty.dy()), dev(empty.x), empty.w.shape, **p), np.zeros(empty.w.shape),
          np.float64)


@pytest.mark.parametrize("fam", [TRANSPOSED[0], TRANSPOSED[-1]], ids=str)
def test_refusals_are_the_cpu_ones(fam):
    case = tiny(fam, "stride2-pad1-outpad1")
    with pytest.raises(ValueError, match="output_padding: expected each smaller"):
        fam.op("forward")(dev(case.x), dev(case.w), **dict(case.params, output_padding=2))
    with pytest.raises(TypeError, match="NumPy and CUDA|device"):
        fam.op("forward")(case.x, dev(case.w), **case.params)
