"""CUDA kernels (``numba.cuda.jit``) of every op, and the device array backend the public functions run on.

Imported only when a public function is called with CUDA arrays, so that
``import lcnumba`` needs neither numba-cuda nor a driver. (The package is
not called ``cuda``: numba-cuda's import hook takes over every module whose
name contains ``numba.cuda``, which ``lcnumba.cuda`` would.) Modules:

``launch``    device arrays, argument checks and launch geometry
``indexing``  index arithmetic, plain Python compiled as device functions
``kernels``   strided copy, fill, fixed-order reduction of partial sums
``conv``      convolution family: forward, backward input, weight and bias
``pool``      max-pooling forward and backward
``netvlad``   NetVLAD forward and backward
``backend``   the device array backend of the cores in ``lcnumba.ops``
"""

from . import launch as _launch  # noqa: F401  (first, so that a missing numba-cuda raises the install hint)
