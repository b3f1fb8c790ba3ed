"""The convolution family on the CPU: conv2d, tiled_conv2d and local_conv2d.

Every timing calls one public function into a preallocated ``out=`` buffer,
so it measures the kernel and the argument checks, not the allocator.
``setup`` builds the inputs (cached, see ``common.inputs``), the output
buffers, and makes one warm call of every timed function, which loads the
kernels from Numba's cache (or compiles them on a cold cache) and faults in
the buffers' pages.
"""

import numpy as np

from .common import (
    BATCHES,
    CONV_WORKLOADS,
    DEFAULT_BATCH,
    DTYPES,
    LOCAL_WORKLOADS,
    check_affordable,
    function,
    inputs,
    tiny,
    workload,
)


class _ConvTimings:
    """Forward and the three backward passes of one convolution workload."""

    timeout = 240

    def _setup(self, name, dtype, batch):
        wl = workload(name, batch)
        op = wl.op
        self.forward = function(f"{op}_forward")
        self.backward_input = function(f"{op}_backward_input")
        self.backward_weight = function(f"{op}_backward_weight")
        self.backward_bias = function(f"{op}_backward_bias")
        self.kwargs = wl.conv_kwargs()
        self.bias_kwargs = {"tile_mode": wl.tile_mode} if op == "tiled_conv2d" else {}

        data = inputs(name, dtype, batch)
        self.x, self.w, self.b, self.dy = data["x"], data["w"], data["b"], data["dy"]
        self.y = np.empty(wl.output_shape, dtype=dtype)
        self.dx = np.empty_like(self.x)
        self.dw = np.empty_like(self.w)
        self.db = np.empty_like(self.b)

        self.time_forward()
        self.time_backward_input()
        self.time_backward_weight()
        self.time_backward_bias()

    def time_forward(self, *params):
        self.forward(self.x, self.w, self.b, out=self.y, **self.kwargs)

    def time_backward_input(self, *params):
        self.backward_input(self.dy, self.w, self.x.shape, out=self.dx, **self.kwargs)

    def time_backward_weight(self, *params):
        self.backward_weight(self.dy, self.x, self.w.shape, out=self.dw, **self.kwargs)

    def time_backward_bias(self, *params):
        self.backward_bias(self.dy, self.b.shape, out=self.db, **self.bias_kwargs)


class Conv(_ConvTimings):
    """Shared (conv2d) and tiled (tiled_conv2d) convolutions at the DESIGN batch, N = 8."""

    params = [list(CONV_WORKLOADS), list(DTYPES)]
    param_names = ["workload", "dtype"]

    def setup(self, name, dtype):
        self._setup(name, dtype, DEFAULT_BATCH)


class LocalConv(_ConvTimings):
    """Locally connected layers (DeepFace L4-L6) over the batch sizes N in 1, 8, 32.

    float64 runs at N = 8 only (``common.check_affordable``): the other
    float64 cases are reported as skipped (n/a).
    """

    params = [list(LOCAL_WORKLOADS), list(DTYPES), list(BATCHES)]
    param_names = ["workload", "dtype", "batch"]

    def setup(self, name, dtype, batch):
        check_affordable(dtype, batch)
        self._setup(name, dtype, batch)


class LocalConvPeakMem:
    """Peak resident memory of an allocating forward + backward of a local layer.

    asv reports the process's high-water mark: the interpreter, NumPy and
    Numba, the cached inputs, then what the measured call adds (the output,
    the three gradients and any workspace). ``setup`` loads the kernels on
    the tiny form of the workload, so that the first large allocations are
    the measured call's. Compare it between commits; with a cold Numba cache
    the compiler's own memory can dominate (run the timings, or
    ``python -m lcnumba warmup``, first).
    """

    params = [list(LOCAL_WORKLOADS), list(DTYPES), list(BATCHES)]
    param_names = ["workload", "dtype", "batch"]
    timeout = 240

    def setup(self, name, dtype, batch):
        check_affordable(dtype, batch)
        wl = workload(name, batch)
        self.forward = function("local_conv2d_forward")
        self.backward = function("local_conv2d_backward")
        self.kwargs = wl.conv_kwargs()
        small = tiny(wl).make_inputs(np.dtype(dtype))
        self.backward(small["dy"], small["x"], small["w"], small["b"], **self.kwargs)
        self.forward(small["x"], small["w"], small["b"], **self.kwargs)
        self.data = inputs(name, dtype, batch)

    def peakmem_forward_backward(self, name, dtype, batch):
        d = self.data
        y = self.forward(d["x"], d["w"], d["b"], **self.kwargs)
        grads = self.backward(d["dy"], d["x"], d["w"], d["b"], **self.kwargs)
        return y, grads
