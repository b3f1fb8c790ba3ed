"""lcnumba: Numba kernels for shared, tiled and locally connected convolution, max-pooling and NetVLAD."""

__version__ = "0.1.0"
