"""lcnumba: Numba kernels for shared, tiled and locally connected convolution, max-pooling and NetVLAD.

Every op is a flat function of arrays and integers with a hand-derived
backward pass, on NumPy arrays (CPU) and CUDA arrays (GPU). The op functions
are generated from the op table (``lcnumba.table``) by ``lcnumba.ops.public``.
"""

from .geometry import (
    conv1d_output_shape,
    conv1d_transpose_output_shape,
    conv2d_output_shape,
    conv2d_transpose_output_shape,
    local_conv1d_output_shape,
    local_conv1d_transpose_output_shape,
    local_conv2d_output_shape,
    local_conv2d_transpose_output_shape,
    max_pool1d_output_shape,
    max_pool2d_output_shape,
    tiled_conv1d_output_shape,
    tiled_conv1d_transpose_output_shape,
    tiled_conv2d_output_shape,
    tiled_conv2d_transpose_output_shape,
)
from .init import fans, glorot_normal, glorot_uniform, he_normal, he_uniform, netvlad_init
from .ops.netvlad_pca import netvlad_pca_fit
from .ops.public import FUNCTIONS as _FUNCTIONS

globals().update(_FUNCTIONS)

__all__ = sorted(
    ["conv1d_output_shape", "conv2d_output_shape", "local_conv1d_output_shape", "local_conv2d_output_shape",
     "max_pool1d_output_shape", "max_pool2d_output_shape", "tiled_conv1d_output_shape", "tiled_conv2d_output_shape",
     "conv1d_transpose_output_shape", "conv2d_transpose_output_shape", "local_conv1d_transpose_output_shape",
     "local_conv2d_transpose_output_shape", "tiled_conv1d_transpose_output_shape",
     "tiled_conv2d_transpose_output_shape",
     "fans", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "netvlad_init",
     "netvlad_pca_fit"] + list(_FUNCTIONS))

__version__ = "0.1.0"
