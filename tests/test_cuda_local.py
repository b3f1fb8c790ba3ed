"""The streaming kernels of locally connected convolution on CUDA (``lcnumba.gpu.local``).

Against the CPU functions and ``lcnumba.testing`` (to a tolerance), and, on
Numba's CUDA simulator, bitwise against plain-NumPy sums written here in the
order ``lcnumba.gpu.local`` states (the simulator rounds every product and
sum as NumPy does; a GPU contracts them into fused multiply-adds). Threads
per block are patched down so that tiny inputs span many blocks; tiles of
several positions and filters, batches past the register batch ``NB``,
taps past one staged chunk, and the input gradient's sample chunks are all
reached.
"""

import numpy as np
import pytest
from numba import cuda

import lcnumba
from lcnumba import config, indexing, testing
from lcnumba.gpu import local as gpu_local
from lcnumba.gpu.jit import SIMULATOR

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}
PARTS = ("forward", "backward_input", "backward_weight")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def close(actual, expected, dtype):
    tol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * 10)


class Case:
    """A random local_conv2d call: x (N, C, H, W), w (OH, OW, F, C/groups, KH, KW), b, dy; explicit paddings."""

    def __init__(self, n=2, c=4, size=(5, 6), f=3, kernel=(2, 3), stride=(1, 1), pads=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, dtype=np.float32, seed=0):
        rng = np.random.default_rng(seed)
        self.kernel, self.stride, self.pads, self.dilation, self.groups = kernel, stride, pads, dilation, groups
        self.params = dict(stride=stride, padding=((pads[0], pads[2]), (pads[1], pads[3])), dilation=dilation,
                           groups=groups)
        self.out = tuple((size[d] + pads[d] + pads[d + 2] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
                         for d in range(2))
        self.x = rng.standard_normal((n, c) + tuple(size)).astype(dtype)
        self.w = rng.standard_normal(self.out + (f, c // groups) + tuple(kernel)).astype(dtype)
        self.b = rng.standard_normal((f,) + self.out).astype(dtype)
        self.dy = rng.standard_normal((n, f) + self.out).astype(dtype)

    def call(self, part, on_device, **kwargs):
        put = dev if on_device else (lambda a: a)
        if part == "forward":
            return lcnumba.local_conv2d_forward(put(self.x), put(self.w), put(self.b), **self.params, **kwargs)
        if part == "backward_input":
            return lcnumba.local_conv2d_backward_input(put(self.dy), put(self.w), self.x.shape, **self.params,
                                                       **kwargs)
        return lcnumba.local_conv2d_backward_weight(put(self.dy), put(self.x), self.w.shape, **self.params, **kwargs)

    def reference(self, part):
        if part == "forward":
            return testing.local_conv2d_forward(self.x, self.w, self.b, **self.params)
        if part == "backward_input":
            return testing.local_conv2d_backward_input(self.dy, self.w, self.x.shape, **self.params)
        return testing.local_conv2d_backward_weight(self.dy, self.x, self.w.shape, **self.params)

    # ------------------------------------------------------------ sums in the kernels' stated order

    def _padded_shape(self):
        n, c, h, w = self.x.shape
        return n, c, h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3]

    def _window(self, i, j):
        """Slices of the padded input read by window (i, j)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        return (slice(i * sh, i * sh + (kh - 1) * dh + 1, dh), slice(j * sw, j * sw + (kw - 1) * dw + 1, dw))

    def patches(self):
        """(N, P, C * KH * KW): window p's input values, channel-major."""
        n, c, hp, wp = self._padded_shape()
        xp = np.zeros((n, c, hp, wp), self.x.dtype)
        xp[:, :, self.pads[0]:self.pads[0] + self.x.shape[2], self.pads[1]:self.pads[1] + self.x.shape[3]] = self.x
        oh, ow = self.out
        return np.stack([xp[(slice(None), slice(None)) + self._window(i, j)].reshape(n, -1)
                         for i in range(oh) for j in range(ow)], axis=1)

    def _banks(self):
        """w as (P, F, Kg), and for every filter the first column of its group in a patch."""
        oh, ow, f = self.w.shape[:3]
        bank = self.w.reshape(oh * ow, f, -1)
        kg = bank.shape[2]
        first = (np.arange(f) // (f // self.groups)) * kg
        return bank, first, kg

    def ordered(self, part):
        bank, first, kg = self._banks()
        patch = self.patches()
        n, f = self.x.shape[0], bank.shape[1]
        zero = self.x.dtype.type(0)
        dy = self.dy.reshape(n, f, -1)
        if part == "forward":  # k ascending from zero, then the bias
            acc = np.full(dy.shape, zero)
            for k in range(kg):
                acc = acc + bank[:, :, k].T[None] * patch[:, :, first + k].transpose(0, 2, 1)
            return (acc + self.b.reshape(f, -1)[None]).reshape(self.dy.shape)
        if part == "backward_weight":  # samples ascending from zero
            acc = np.full(bank.shape, zero)
            cols = first[:, None] + np.arange(kg)[None]
            for s in range(n):
                acc = acc + dy[s].T[:, :, None] * patch[s][:, cols]
            return acc.reshape(self.w.shape)
        # dpatch: the group's filters ascending from zero; dx: windows in row-major order from zero
        fg = f // self.groups
        dpatch = np.full(patch.shape, zero)
        for g in range(self.groups):
            cols = slice(g * kg, (g + 1) * kg)
            for fl in range(fg):
                fi = g * fg + fl
                dpatch[:, :, cols] = dpatch[:, :, cols] + bank[None, :, fi, :] * dy[:, fi, :, None]
        n, c, hp, wp = self._padded_shape()
        dxp = np.full((n, c, hp, wp), zero)
        oh, ow = self.out
        for p in range(oh * ow):
            view = dxp[(slice(None), slice(None)) + self._window(*divmod(p, ow))]
            view += dpatch[:, p].reshape(view.shape)
        return dxp[:, :, self.pads[0]:self.pads[0] + self.x.shape[2], self.pads[1]:self.pads[1] + self.x.shape[3]]


CASES = {
    "odd-sizes": dict(n=3, c=3, size=(5, 7), f=5, kernel=(3, 2)),
    "stride-padding-dilation": dict(n=2, c=2, size=(7, 6), f=3, kernel=(2, 3), stride=(2, 1), pads=(1, 2, 0, 1),
                                    dilation=(2, 1)),
    "stride-past-dilation": dict(n=2, c=2, size=(8, 9), f=2, kernel=(3, 3), stride=(3, 2), pads=(2, 1, 2, 0),
                                 dilation=(2, 2)),
    "groups": dict(n=2, c=6, size=(4, 5), f=6, kernel=(2, 2), groups=3, pads=(1, 0, 0, 1)),
    "batch-past-registers": dict(n=gpu_local.NB + 3, c=2, size=(4, 4), f=2, kernel=(2, 2)),
    "taps-past-a-chunk": dict(n=2, c=4, size=(4, 4), f=2, kernel=(3, 3), pads=(1, 1, 1, 1)),
    "filters-past-a-tile": dict(n=1, c=1, size=(3, 3), f=gpu_local.FB + 2, kernel=(2, 2)),
}
cases = pytest.mark.parametrize("name", list(CASES))


@cases
@pytest.mark.parametrize("threads", [8, 64])
def test_matches_cpu_and_reference(name, threads, monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
    case = Case(**CASES[name], dtype=np.float64)
    for part in PARTS:
        got = case.call(part, True).copy_to_host()
        close(got, case.call(part, False), np.float64)
        close(got, case.reference(part), np.float64)


@pytest.mark.skipif(not SIMULATOR, reason="a GPU fuses multiply-adds, the NumPy sums here do not")
@cases
def test_bitwise_the_stated_order(name, monkeypatch):
    """Every pass equals, bit for bit, NumPy sums in the order the module states, whatever the block size."""
    case = Case(**CASES[name], dtype=np.float32, seed=1)
    for threads in (8, 32):
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
        for part in PARTS:
            assert np.array_equal(case.call(part, True).copy_to_host(), case.ordered(part)), (part, threads)


def test_bitwise_across_runs_and_block_sizes(monkeypatch):
    case = Case(**CASES["stride-padding-dilation"], dtype=np.float32, seed=2)
    results = []
    for threads in (8, 8, 16, 64, 256):
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
        results.append([case.call(part, True).copy_to_host() for part in PARTS])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_input_gradient_in_sample_chunks(monkeypatch):
    """A scratch too small for the batch: the input gradient runs in chunks of samples, with the same result."""
    case = Case(**CASES["batch-past-registers"], dtype=np.float32, seed=3)
    whole = case.call("backward_input", True).copy_to_host()
    per_sample = case.x.shape[1] * case.kernel[0] * case.kernel[1] * case.out[0] * case.out[1]
    monkeypatch.setattr(gpu_local, "SCRATCH_ELEMENTS", 2 * per_sample + 1)
    assert np.array_equal(case.call("backward_input", True).copy_to_host(), whole)
    close(whole, case.reference("backward_input"), np.float32)


def test_accumulate_and_out():
    case = Case(**CASES["groups"], dtype=np.float64)
    start = np.random.default_rng(4).standard_normal(case.w.shape)
    out = dev(start)
    assert case.call("backward_weight", True, out=out, accumulate=True) is out
    close(out.copy_to_host(), start + case.reference("backward_weight"), np.float64)
    y = cuda.device_array(case.dy.shape, np.float64)
    assert case.call("forward", True, out=y) is y
    close(y.copy_to_host(), case.reference("forward"), np.float64)


def test_empty_batch():
    case = Case(**dict(CASES["odd-sizes"], n=0), dtype=np.float64)
    assert case.call("forward", True).shape == case.dy.shape
    assert case.call("backward_input", True).shape == case.x.shape
    assert not case.call("backward_weight", True).copy_to_host().any()
    start = np.ones(case.w.shape)
    out = dev(start)
    case.call("backward_weight", True, out=out, accumulate=True)
    assert np.array_equal(out.copy_to_host(), start)


def test_without_bias_and_in_1d():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 9))
    w = rng.standard_normal((5, 3, 2, 3))  # (OW, F, C, KW): OW = (9 + 2 - 3) // 2 + 1
    geo = dict(stride=2, padding=1)
    y = lcnumba.local_conv1d_forward(dev(x), dev(w), None, **geo).copy_to_host()
    close(y, testing.local_conv1d_forward(x, w, None, **geo), np.float64)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = lcnumba.local_conv1d_backward(dev(dy), dev(x), dev(w), None, **geo)
    rx, rw, _ = testing.local_conv1d_backward(dy, x, w, None, **geo)
    assert db is None
    close(dx.copy_to_host(), rx, np.float64)
    close(dw.copy_to_host(), rw, np.float64)


def test_tiled_with_a_tile_per_position_uses_the_same_kernels():
    """A tiled layer with as many tiles as outputs is a local one: it runs on these kernels and agrees."""
    case = Case(**CASES["stride-padding-dilation"], dtype=np.float64)
    oh, ow = case.out
    w = case.w.reshape((oh, ow) + case.w.shape[2:])
    for mode in ("block", "periodic"):
        y = lcnumba.tiled_conv2d_forward(dev(case.x), dev(w), dev(case.b), **case.params, tile_mode=mode)
        close(y.copy_to_host(), case.reference("forward"), np.float64)


def test_window_taps_are_the_index_math_of_the_cpu():
    """``window_taps`` (32-bit divisions) gives ``indexing.tap_range``'s taps and the window of its last one."""
    from math import gcd

    for stride in range(1, 5):
        for dilation in range(1, 5):
            step = stride // gcd(stride, dilation)
            for kernel in range(1, 5):
                for out_size in range(1, 5):
                    for t in range(-2, (out_size - 1) * stride + (kernel - 1) * dilation + 3):
                        lo, hi, _ = indexing.tap_range(t, 0, kernel, stride, dilation, out_size)
                        taps = list(range(lo, hi, step))
                        got_lo, top, window = gpu_local.window_taps(t, kernel, stride, dilation, step, out_size)
                        assert list(range(got_lo, top + 1, step)) == taps, (t, kernel, stride, dilation, out_size)
                        if taps:
                            assert window * stride == t - top * dilation and 0 <= window < out_size
