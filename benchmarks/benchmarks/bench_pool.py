"""max_pool2d on the CPU: the DeepFace M2 and VGG pooling layers at N = 8.

Two forwards, because lcnumba runs a separate kernel for each: with indices
(the training path, whose indices feed the backward) and without (inference).
All timings write into preallocated ``out=`` / ``indices_out=`` buffers.
"""

import numpy as np

from .common import DEFAULT_BATCH, DTYPES, POOL_WORKLOADS, function, inputs, workload


class MaxPool2d:
    params = [list(POOL_WORKLOADS), list(DTYPES)]
    param_names = ["workload", "dtype"]
    timeout = 120

    def setup(self, name, dtype):
        wl = workload(name, DEFAULT_BATCH)
        self.forward = function("max_pool2d_forward")
        self.backward = function("max_pool2d_backward")
        self.kernel = wl.kernel
        self.kwargs = dict(stride=wl.stride, padding=wl.padding, dilation=wl.dilation)

        data = inputs(name, dtype, DEFAULT_BATCH)
        self.x, self.dy = data["x"], data["dy"]
        self.y = np.empty(wl.output_shape, dtype=dtype)
        self.indices = np.empty(wl.output_shape, dtype=np.int64)
        self.dx = np.empty_like(self.x)

        # The warm calls also leave valid indices for the backward.
        self.time_forward_no_indices()
        self.time_forward()
        self.time_backward()

    def time_forward(self, *params):
        self.forward(self.x, self.kernel, return_indices=True, out=self.y, indices_out=self.indices,
                     **self.kwargs)

    def time_forward_no_indices(self, *params):
        self.forward(self.x, self.kernel, out=self.y, **self.kwargs)

    def time_backward(self, *params):
        self.backward(self.dy, self.indices, self.x.shape, out=self.dx)
