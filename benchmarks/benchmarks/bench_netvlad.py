"""NetVLAD on the CPU: K = 64 clusters over VGG conv5 features (512 x 30 x 40), N in 1, 8, 32.

``time_forward`` writes into a preallocated ``out=``; ``netvlad_backward``
has no ``out=`` in the API (DESIGN section 3), so ``time_backward`` includes
allocating its four gradients. float64 runs at N = 8 only
(``common.check_affordable``).
"""

import numpy as np

from .common import BATCHES, DTYPES, NETVLAD_WORKLOADS, check_affordable, function, inputs, tiny, workload


class NetVLAD:
    params = [list(NETVLAD_WORKLOADS), list(DTYPES), list(BATCHES)]
    param_names = ["workload", "dtype", "batch"]
    timeout = 240

    def setup(self, name, dtype, batch):
        check_affordable(dtype, batch)
        wl = workload(name, batch)
        self.forward = function("netvlad_forward")
        self.backward = function("netvlad_backward")
        self.kwargs = dict(normalize_input=wl.normalize_input)

        data = inputs(name, dtype, batch)
        self.x, self.w, self.b, self.c, self.dy = data["x"], data["w"], data["b"], data["centroids"], data["dy"]
        self.y = np.empty(wl.output_shape, dtype=dtype)

        self.time_forward()
        self.time_backward()

    def time_forward(self, *params):
        self.forward(self.x, self.w, self.b, self.c, out=self.y, **self.kwargs)

    def time_backward(self, *params):
        self.backward(self.dy, self.x, self.w, self.b, self.c, **self.kwargs)


class NetVLADPeakMem:
    """Peak resident memory of an allocating forward + backward (see ``bench_conv.LocalConvPeakMem``)."""

    params = [list(NETVLAD_WORKLOADS), list(DTYPES), list(BATCHES)]
    param_names = ["workload", "dtype", "batch"]
    timeout = 240

    def setup(self, name, dtype, batch):
        check_affordable(dtype, batch)
        wl = workload(name, batch)
        self.forward = function("netvlad_forward")
        self.backward = function("netvlad_backward")
        self.kwargs = dict(normalize_input=wl.normalize_input)
        small = tiny(wl).make_inputs(np.dtype(dtype))
        self.forward(small["x"], small["w"], small["b"], small["centroids"], **self.kwargs)
        self.backward(small["dy"], small["x"], small["w"], small["b"], small["centroids"], **self.kwargs)
        self.data = inputs(name, dtype, batch)

    def peakmem_forward_backward(self, name, dtype, batch):
        d = self.data
        y = self.forward(d["x"], d["w"], d["b"], d["centroids"], **self.kwargs)
        grads = self.backward(d["dy"], d["x"], d["w"], d["b"], d["centroids"], **self.kwargs)
        return y, grads
