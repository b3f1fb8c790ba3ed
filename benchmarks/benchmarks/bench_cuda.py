"""The same workloads on CUDA; every benchmark is skipped without a real GPU.

``setup`` raises ``NotImplementedError`` (asv's skip, reported as n/a) when
Numba finds no GPU or the CUDA simulator is enabled (``common.require_cuda``),
and when this build of lcnumba cannot import its CUDA backend (the first
call raises ``ImportError``). Otherwise it copies the cached inputs to the
device, allocates the ``out=`` buffers there, creates a stream and makes one
warm call of each timed function. Each timing launches
on that stream and synchronises it before returning, so it measures the
kernels' completion, not their asynchronous launch.

float64 is measured at every batch size here: the GPU has the memory, and
the timings are short.
"""

import numpy as np

from .common import (
    BATCHES,
    CONV_WORKLOADS,
    DEFAULT_BATCH,
    DTYPES,
    LOCAL_WORKLOADS,
    NETVLAD_WORKLOADS,
    POOL_WORKLOADS,
    function,
    inputs,
    require_cuda,
    workload,
)


class _Cuda:
    timeout = 240

    def _start(self, name, dtype, batch):
        """Check the GPU, create the stream and copy the workload's inputs; return (workload, device inputs)."""
        self.cuda = require_cuda()
        self.stream = self.cuda.stream()
        wl = workload(name, batch)
        host = inputs(name, dtype, batch)
        device = {key: self.cuda.to_device(value, stream=self.stream) for key, value in host.items()}
        return wl, device

    def _empty(self, shape, dtype):
        return self.cuda.device_array(shape, dtype=np.dtype(dtype), stream=self.stream)

    def _sync(self):
        self.stream.synchronize()

    def _warm_up(self, *timings):
        """One call of each timing (compiles or loads the kernels); a skip if lcnumba has no CUDA backend."""
        try:
            for timing in timings:
                timing()
        except ImportError as exc:
            raise NotImplementedError(f"this build of lcnumba has no CUDA backend: {exc}") from None


class _CudaConvTimings(_Cuda):
    def _setup(self, name, dtype, batch):
        wl, d = self._start(name, dtype, batch)
        op = wl.op
        self.forward = function(f"{op}_forward")
        self.backward_input = function(f"{op}_backward_input")
        self.backward_weight = function(f"{op}_backward_weight")
        self.backward_bias = function(f"{op}_backward_bias")
        self.kwargs = dict(wl.conv_kwargs(), stream=self.stream)
        self.bias_kwargs = {"tile_mode": wl.tile_mode} if op == "tiled_conv2d" else {}
        self.bias_kwargs["stream"] = self.stream

        self.x, self.w, self.b, self.dy = d["x"], d["w"], d["b"], d["dy"]
        self.y = self._empty(wl.output_shape, dtype)
        self.dx = self._empty(self.x.shape, dtype)
        self.dw = self._empty(self.w.shape, dtype)
        self.db = self._empty(self.b.shape, dtype)

        self._warm_up(self.time_forward, self.time_backward_input, self.time_backward_weight,
                      self.time_backward_bias)

    def time_forward(self, *params):
        self.forward(self.x, self.w, self.b, out=self.y, **self.kwargs)
        self._sync()

    def time_backward_input(self, *params):
        self.backward_input(self.dy, self.w, self.x.shape, out=self.dx, **self.kwargs)
        self._sync()

    def time_backward_weight(self, *params):
        self.backward_weight(self.dy, self.x, self.w.shape, out=self.dw, **self.kwargs)
        self._sync()

    def time_backward_bias(self, *params):
        self.backward_bias(self.dy, self.b.shape, out=self.db, **self.bias_kwargs)
        self._sync()


class CudaConv(_CudaConvTimings):
    """conv2d and tiled_conv2d on CUDA at N = 8."""

    params = [list(CONV_WORKLOADS), list(DTYPES)]
    param_names = ["workload", "dtype"]

    def setup(self, name, dtype):
        self._setup(name, dtype, DEFAULT_BATCH)


class CudaLocalConv(_CudaConvTimings):
    """local_conv2d (DeepFace L4-L6) on CUDA, N in 1, 8, 32."""

    params = [list(LOCAL_WORKLOADS), list(DTYPES), list(BATCHES)]
    param_names = ["workload", "dtype", "batch"]

    def setup(self, name, dtype, batch):
        self._setup(name, dtype, batch)


class CudaMaxPool2d(_Cuda):
    """max_pool2d on CUDA at N = 8: forward with and without indices, backward."""

    params = [list(POOL_WORKLOADS), list(DTYPES)]
    param_names = ["workload", "dtype"]

    def setup(self, name, dtype):
        wl, d = self._start(name, dtype, DEFAULT_BATCH)
        self.forward = function("max_pool2d_forward")
        self.backward = function("max_pool2d_backward")
        self.kernel = wl.kernel
        self.kwargs = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation, stream=self.stream)
        self.x, self.dy = d["x"], d["dy"]
        self.y = self._empty(wl.output_shape, dtype)
        self.indices = self._empty(wl.output_shape, np.int64)
        self.dx = self._empty(self.x.shape, dtype)

        # The forward with indices leaves valid indices for the backward.
        self._warm_up(self.time_forward_no_indices, self.time_forward, self.time_backward)

    def time_forward(self, *params):
        self.forward(self.x, self.kernel, return_indices=True, out=self.y, indices_out=self.indices,
                     **self.kwargs)
        self._sync()

    def time_forward_no_indices(self, *params):
        self.forward(self.x, self.kernel, out=self.y, **self.kwargs)
        self._sync()

    def time_backward(self, *params):
        self.backward(self.dy, self.indices, self.x.shape, out=self.dx, stream=self.stream)
        self._sync()


class CudaNetVLAD(_Cuda):
    """NetVLAD on CUDA, N in 1, 8, 32; the backward allocates its gradients (no ``out=`` in the API)."""

    params = [list(NETVLAD_WORKLOADS), list(DTYPES), list(BATCHES)]
    param_names = ["workload", "dtype", "batch"]

    def setup(self, name, dtype, batch):
        wl, d = self._start(name, dtype, batch)
        self.forward = function("netvlad_forward")
        self.backward = function("netvlad_backward")
        self.kwargs = dict(normalize_input=wl.normalize_input, stream=self.stream)
        self.x, self.w, self.b, self.c, self.dy = d["x"], d["w"], d["b"], d["centroids"], d["dy"]
        self.y = self._empty(wl.output_shape, dtype)

        self._warm_up(self.time_forward, self.time_backward)

    def time_forward(self, *params):
        self.forward(self.x, self.w, self.b, self.c, out=self.y, **self.kwargs)
        self._sync()

    def time_backward(self, *params):
        self.backward(self.dy, self.x, self.w, self.b, self.c, **self.kwargs)
        self._sync()
