"""lcnumba: Numba kernels for shared, tiled and locally connected convolution, max-pooling and NetVLAD.

Every op is a flat function of arrays and integers with a hand-derived
backward pass, on NumPy arrays (CPU) and CUDA arrays (GPU).
"""

from .geometry import (
    conv1d_output_shape,
    conv2d_output_shape,
    local_conv1d_output_shape,
    local_conv2d_output_shape,
    tiled_conv1d_output_shape,
    tiled_conv2d_output_shape,
)
from .ops.conv import (
    conv1d_backward,
    conv1d_backward_bias,
    conv1d_backward_input,
    conv1d_backward_weight,
    conv1d_forward,
    conv2d_backward,
    conv2d_backward_bias,
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
    local_conv1d_backward,
    local_conv1d_backward_bias,
    local_conv1d_backward_input,
    local_conv1d_backward_weight,
    local_conv1d_forward,
    local_conv2d_backward,
    local_conv2d_backward_bias,
    local_conv2d_backward_input,
    local_conv2d_backward_weight,
    local_conv2d_forward,
    tiled_conv1d_backward,
    tiled_conv1d_backward_bias,
    tiled_conv1d_backward_input,
    tiled_conv1d_backward_weight,
    tiled_conv1d_forward,
    tiled_conv2d_backward,
    tiled_conv2d_backward_bias,
    tiled_conv2d_backward_input,
    tiled_conv2d_backward_weight,
    tiled_conv2d_forward,
)
from .ops.pool import (
    max_pool1d_backward,
    max_pool1d_forward,
    max_pool1d_output_shape,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool2d_output_shape,
)
from .init import fans, glorot_normal, glorot_uniform, he_normal, he_uniform, netvlad_init
from .ops.netvlad import netvlad_backward, netvlad_forward

__version__ = "0.1.0"
