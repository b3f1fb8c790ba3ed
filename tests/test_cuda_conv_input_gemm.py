"""The input gradient of shared convolution at stride 1 as an implicit GEMM (``gpu.conv.conv_backward_input_gemm``).

Against the CPU functions, on Numba's CUDA simulator (or a GPU). The GEMM's block tiles are capped at 4 x 8
(``gemm.GM``, ``gemm.GN`` patched down), so that tiny cases span several channel and column tiles, and every
case runs at 1 and 64 threads per block, which must give the same bits: each ``dx`` cell is summed by one
thread in an order fixed by the shapes. Which kernel the launcher picks is checked by recording the launches.
"""

import numpy as np
import pytest
from numba import cuda

import lcnumba
from lcnumba import config
from lcnumba.gpu import conv as gpu_conv  # imported before any test patches gemm.GN, which conv takes at import
from lcnumba.gpu import gemm, jit

DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
GEMM = {gpu_conv.conv_backward_input_gemm.__name__, gpu_conv.conv_backward_input_gemm_rt2.__name__}
GATHER = gpu_conv.conv_backward_input.__name__

#: (name, x shape, w shape, geometry): each reaches the GEMM (one bank, stride 1).
CASES = [
    # 45 reduction indices (5 filters x 3 x 3 taps: not a multiple of GK), 3 channels, 40 columns (5 tiles)
    ("groups1-pad0", (2, 3, 4, 5), (5, 3, 3, 3), dict(padding=0, dilation=1, groups=1)),
    # 5 channels a group (two channel tiles), dilated, a padding on one side of each axis only
    ("groups2-dilation2-asymmetric", (2, 10, 5, 4), (4, 5, 2, 3), dict(padding=((2, 0), (0, 1)), dilation=2,
                                                                       groups=2)),
    # "same" with an even kernel height pads one side more than the other
    ("groups2-same", (1, 4, 5, 6), (6, 2, 2, 3), dict(padding="same", dilation=(1, 2), groups=2)),
    # more padding than the kernel reaches: output rows and columns no input cell is read by
    ("padding-past-the-kernel", (2, 2, 3, 3), (3, 2, 2, 2), dict(padding=3, groups=1)),
]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels launched from now on, in order."""
    names = []
    getitem = jit.Kernel.__getitem__

    def recording(self, launch_config):
        names.append(self.__name__)
        return getitem(self, launch_config)

    monkeypatch.setattr(jit.Kernel, "__getitem__", recording)
    return names


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def _check_every_block_size(op, dy, w, x_shape, geometry, monkeypatch, launched):
    """``op`` on the device at 1 and 64 threads per block against the CPU; both sizes give the same bits."""
    monkeypatch.setattr(gemm, "GM", 4)
    monkeypatch.setattr(gemm, "GN", 8)
    expected = op(dy, w, x_shape, **geometry)
    results = []
    for threads in (1, 64):
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
        del launched[:]
        results.append(op(dev(dy), dev(w), x_shape, **geometry).copy_to_host())
        assert GEMM & set(launched) and GATHER not in launched, launched
        tol = TOL[dy.dtype]
        np.testing.assert_allclose(results[-1], expected, rtol=tol, atol=tol, err_msg=f"{threads} threads")
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, x_shape, w_shape, geometry", CASES, ids=[case[0] for case in CASES])
def test_conv2d_matches_cpu_at_every_block_size(name, x_shape, w_shape, geometry, dtype, monkeypatch, launched):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape).astype(dtype)
    y_shape = lcnumba.conv2d_output_shape(x_shape, w_shape, **geometry)
    dy = rng.standard_normal(y_shape).astype(dtype)
    _check_every_block_size(lcnumba.conv2d_backward_input, dy, w, x_shape, geometry, monkeypatch, launched)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv1d_runs_on_the_same_kernel(dtype, monkeypatch, launched):
    """A 1-D convolution is the 2-D one of height 1."""
    rng = np.random.default_rng(1)
    x_shape, w_shape, geometry = (2, 4, 7), (6, 2, 3), dict(padding="same", dilation=2, groups=2)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(lcnumba.conv1d_output_shape(x_shape, w_shape, **geometry)).astype(dtype)
    _check_every_block_size(lcnumba.conv1d_backward_input, dy, w, x_shape, geometry, monkeypatch, launched)


def test_empty_batch_launches_nothing(launched):
    dx = lcnumba.conv2d_backward_input(dev(np.ones((0, 3, 4, 4))), dev(np.ones((3, 2, 3, 3))), (0, 2, 6, 6))
    assert dx.shape == (0, 2, 6, 6) and not set(launched) & (GEMM | {GATHER})


@pytest.mark.parametrize("family, w_shape, geometry, kernel", [
    ("conv2d", (3, 2, 3, 3), dict(padding=1), "conv_backward_input_gemm_rt2"),
    ("conv2d", (3, 2, 3, 3), dict(stride=2), GATHER),
    ("conv2d", (3, 2, 3, 3), dict(stride=(1, 2)), GATHER),
    ("tiled_conv2d", (2, 2, 3, 2, 3, 3), dict(padding=1), GATHER),
    ("local_conv2d", (4, 4, 3, 2, 3, 3), {}, "local_gather_input"),
], ids=["shared-stride1", "shared-stride2", "shared-stride1x2", "tiled", "local"])
def test_the_launcher_takes_the_gemm_for_one_bank_at_stride_1_only(family, w_shape, geometry, kernel, launched):
    """The GEMM for shared convolution at stride 1; the gather for a stride past 1 and for tiled weights (local
    convolution keeps kernels of its own). Results agree with the CPU whichever runs."""
    rng = np.random.default_rng(2)
    x_shape = (2, 2, 6, 6)
    w = rng.standard_normal(w_shape)
    dy = rng.standard_normal(getattr(lcnumba, f"{family}_forward")(np.zeros(x_shape), w, **geometry).shape)
    op = getattr(lcnumba, f"{family}_backward_input")
    got = op(dev(dy), dev(w), x_shape, **geometry).copy_to_host()
    assert kernel in launched and (kernel in GEMM) == bool(GEMM & set(launched)), launched
    np.testing.assert_allclose(got, op(dy, w, x_shape, **geometry), rtol=1e-12, atol=1e-12)
