"""``padding_mode`` of the convolution family on CUDA arrays, against the NumPy references.

Runs on a GPU when there is one and on Numba's CUDA simulator otherwise;
shapes are tiny and ``THREADS_PER_BLOCK`` is patched down so the pad and
fold kernels' grid-stride loops take several turns. The cases (one
geometry per mode) are those of ``test_padding_modes``.
"""

import numpy as np
import pytest
from numba import cuda
from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

import lcnumba
from lcnumba import config
from lcnumba.ops import conv_padded

from families import FAMILIES
from test_padding_modes import MODES, RTOL, Case

modes = pytest.mark.parametrize("mode", MODES)
SOME = [f for f in FAMILIES if f.name in ("conv2d", "local_conv2d", "conv1d")
        or f.name == "tiled_conv2d" and f.tile_mode == "block"]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def close(actual, expected):
    assert is_cuda_ndarray(actual)
    rtol = RTOL[expected.dtype]
    np.testing.assert_allclose(actual.copy_to_host(), expected, rtol=rtol, atol=rtol * 10)


def small(fam, mode, **kwargs):
    return Case(fam, mode, **dict(dict(n=2, c=2, f=2), **kwargs))


def passes(case, on_device):
    """forward, backward_input, backward_weight and backward's (dx, dw, db), on device copies or the references."""
    p, x, w, b, dy = case.params, case.x, case.w, case.b, case.dy
    fn, arr = (case.op, dev) if on_device else (case.ref, lambda a: a)
    return [fn("forward")(arr(x), arr(w), arr(b), **p), fn("backward_input")(arr(dy), arr(w), x.shape, **p),
            fn("backward_weight")(arr(dy), arr(x), w.shape, **p), *fn("backward")(arr(dy), arr(x), arr(w), arr(b), **p)]


@pytest.mark.parametrize("fam", SOME, ids=str)
@modes
def test_passes_match_references(fam, mode):
    case = small(fam, mode)
    for got, expected in zip(passes(case, True), passes(case, False)):
        close(got, expected)


def test_chunks_and_block_size_change_no_bit(monkeypatch):
    case = small(FAMILIES[0], "reflect", n=3)
    first = [a.copy_to_host() for a in passes(case, True)]
    for got, expected in zip(first, passes(case, False)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(conv_padded, "CHUNK_ELEMENTS", 1)  # one sample a chunk
    chunked = [a.copy_to_host() for a in passes(case, True)]
    for got, expected in zip(chunked, passes(case, False)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 32)
    for a, b in zip(chunked, (a.copy_to_host() for a in passes(case, True))):
        assert a.tobytes() == b.tobytes()


def test_out_accumulate_and_empty_batch():
    case = small(FAMILIES[0], "circular")
    p, x, w, dy = case.params, case.x, case.w, case.dy
    y = dev(np.empty(dy.shape))
    assert lcnumba.conv2d_forward(dev(x), dev(w), dev(case.b), out=y, **p) is y
    close(y, case.ref("forward")(x, w, case.b, **p))
    dw = dev(np.ones(w.shape))
    lcnumba.conv2d_backward_weight(dev(dy), dev(x), w.shape, out=dw, accumulate=True, **p)
    close(dw, case.ref("backward_weight")(dy, x, w.shape, **p) + 1)
    empty = small(FAMILIES[0], "replicate", n=0)
    assert lcnumba.conv2d_forward(dev(empty.x), dev(empty.w), None, **empty.params).shape == empty.dy.shape
    dw = lcnumba.conv2d_backward_weight(dev(empty.dy), dev(empty.x), empty.w.shape, **empty.params)
    assert not dw.copy_to_host().any()


def test_errors_match_the_cpu():
    case = small(FAMILIES[0], "reflect")
    for params in (dict(case.params, padding_mode="mirror"), dict(case.params, padding=((0, 0), (0, 4)))):
        with pytest.raises(ValueError) as on_host:
            lcnumba.conv2d_forward(case.x, case.w, **params)
        with pytest.raises(ValueError) as on_device:
            lcnumba.conv2d_forward(dev(case.x), dev(case.w), **params)
        assert str(on_device.value) == str(on_host.value)
