"""Plain-NumPy reference implementations and gradient checks.

These are slow, obviously-correct versions of every op, written
independently of the Numba kernels (loops, ``sliding_window_view`` and
``einsum``), for tests and for users checking their own layers.
"""

import numpy as np

# ================================================================ convolution family

# ================================================================ max-pooling

# ================================================================ NetVLAD

# ================================================================ gradient checks
