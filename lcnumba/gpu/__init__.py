"""CUDA kernels (``numba.cuda.jit``) of every op, and the device array backend the public functions run on.

Imported only when a public function is called with CUDA arrays, so that
``import lcnumba`` needs neither numba-cuda nor a driver. (The package is
not called ``cuda``: numba-cuda's import hook takes over every module whose
name contains ``numba.cuda``, which ``lcnumba.cuda`` would.) Modules:

``jit``       the import of numba-cuda; kernels compiled per dtype for declared signatures
``intmath``   32-bit division for the kernels' index math
``launch``    device arrays, argument checks, the stream's scratch buffers and launch geometry
``kernels``   strided copy, fill, fixed-order reduction of partial sums
``conv``      convolution family: forward, backward input, weight and bias
``local``     locally connected convolution (a bank per output position): forward, backward input and weight
``pool``      max-pooling forward and backward
``netvlad``   NetVLAD forward and backward
``backend``   the device array backend of the cores in ``lcnumba.ops``
"""

from . import jit as _jit  # noqa: F401  (first, so that a missing numba-cuda raises the install hint)
