"""Example of docs/concepts.rst (devices): the same functions on CUDA arrays.

Runs on a GPU, or on Numba's CUDA simulator when the test session enables it
(``NUMBA_ENABLE_CUDASIM=1``); skipped otherwise.
"""

import numpy as np
import pytest


def test_cuda_arrays():
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("no CUDA GPU, and Numba's CUDA simulator is not enabled")
    # magictoken.devices.begin
    import numpy as np
    from numba import cuda
    import lcnumba

    x_host = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)
    w_host = lcnumba.he_normal((4, 3, 3, 3), seed=0)
    x, w = cuda.to_device(x_host), cuda.to_device(w_host)   # or CuPy arrays, PyTorch CUDA tensors

    y = lcnumba.conv2d_forward(x, w, padding=1)      # runs on the GPU, returns a device array
    dx, dw, db = lcnumba.conv2d_backward(y, x, w, padding=1)
    y_host = y.copy_to_host()
    # magictoken.devices.end
    np.testing.assert_allclose(y_host, lcnumba.conv2d_forward(x_host, w_host, padding=1), rtol=1e-4, atol=1e-4)
    assert dx.copy_to_host().shape == x_host.shape and db is None
