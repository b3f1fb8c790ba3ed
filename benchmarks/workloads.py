"""The named benchmark workloads of DESIGN.md section 6, in one place.

Both ``benchmarks/compare.py`` and the asv suite import this module, so a
workload means the same shapes, parameters and input data everywhere. It
depends on NumPy alone (not on lcnumba), so that it can describe a workload
whose kernel has not been written yet, and so that the peers in
``compare.py`` see exactly the inputs lcnumba sees.

Each workload knows its shapes, its FLOP count and how to build
deterministic inputs, including an upstream gradient ``dy`` for the
backward passes::

    from workloads import WORKLOADS
    wl = WORKLOADS["deepface_l4"].with_batch(1)
    inputs = wl.make_inputs(np.float32)   # {"x", "w", "b", "dy"}
"""

import dataclasses
from typing import Optional

import numpy as np

CONV_OPS = ("conv2d", "tiled_conv2d", "local_conv2d")
#: The transposed locally connected layer: input (N, C, H, W) -> (N, F, OH, OW), a bank per input position.
TRANSPOSE_OP = "local_conv2d_transpose"
OPS = CONV_OPS + ("max_pool2d", "netvlad", TRANSPOSE_OP)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _out_size(size, kernel, stride, dilation, pad):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark case: an op, an input shape and the op's parameters.

    Attributes
    ----------
    name : str
        The name used on the command line and in asv ``params``.
    op : str
        One of ``conv2d``, ``tiled_conv2d``, ``local_conv2d``, ``max_pool2d``, ``netvlad``,
        ``local_conv2d_transpose`` (whose input is the output of the ``local_conv2d`` it transposes).
    input_shape : tuple of ints
        ``(N, C, H, W)``; for NetVLAD ``(N, D, H, W)``.
    filters : int, optional
        Number of filters ``F`` (convolutions).
    kernel : pair of ints, optional
        ``(KH, KW)`` (convolutions and pooling).
    stride, padding, dilation : pair of ints
        Symmetric padding only: every section 6 workload is symmetric.
    tile : pair of ints, optional
        ``(TH, TW)`` of ``tiled_conv2d``.
    tile_mode : str
        ``"periodic"`` or ``"block"`` (``tiled_conv2d``).
    clusters, ghosts : int
        NetVLAD ``K`` and ``G``.
    normalize_input : bool
        NetVLAD: L2-normalise descriptors before assignment.
    roofline_ms : float, optional
        DESIGN section 6 lower bound for fwd+bwd, float32, on the 2-core
        development machine; only meaningful there.
    """

    name: str
    op: str
    input_shape: tuple
    filters: Optional[int] = None
    kernel: Optional[tuple] = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    tile: Optional[tuple] = None
    tile_mode: str = "periodic"
    clusters: int = 0
    ghosts: int = 0
    normalize_input: bool = True
    roofline_ms: Optional[float] = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op: expected one of {OPS}, got {self.op!r}")
        # Normalise the scalar spellings once so every consumer sees pairs.
        for field in ("kernel", "stride", "padding", "dilation", "tile"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _pair(value))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))

    # ------------------------------------------------------------ shapes

    @property
    def batch(self):
        return self.input_shape[0]

    def with_batch(self, n):
        """The same workload with batch size ``n`` (the batch-size sweep uses this)."""
        return dataclasses.replace(self, input_shape=(n,) + self.input_shape[1:])

    @property
    def output_hw(self):
        """``(OH, OW)`` of the convolution or pooling (floor mode), or of the transposed convolution."""
        _, _, h, w = self.input_shape
        if self.op == TRANSPOSE_OP:
            return tuple((size - 1) * s - 2 * p + d * (k - 1) + 1
                         for size, k, s, d, p in zip((h, w), self.kernel, self.stride, self.dilation, self.padding))
        return tuple(
            _out_size(size, k, s, d, p)
            for size, k, s, d, p in zip((h, w), self.kernel, self.stride, self.dilation, self.padding)
        )

    @property
    def output_shape(self):
        n, c = self.input_shape[:2]
        if self.op == "netvlad":
            return (n, self.clusters * c)
        if self.op == "max_pool2d":
            return (n, c) + self.output_hw
        return (n, self.filters) + self.output_hw

    @property
    def weight_shape(self):
        """Shape of ``w`` in lcnumba's layout (DESIGN section 3), or None for pooling."""
        c = self.input_shape[1]
        if self.op == "conv2d":
            return (self.filters, c) + self.kernel
        if self.op == "tiled_conv2d":
            return self.tile + (self.filters, c) + self.kernel
        if self.op == "local_conv2d":
            return self.output_hw + (self.filters, c) + self.kernel
        if self.op == TRANSPOSE_OP:
            return self.input_shape[2:] + (c, self.filters) + self.kernel
        if self.op == "netvlad":
            return (self.clusters + self.ghosts, c)
        return None

    @property
    def bias_shape(self):
        if self.op == "conv2d":
            return (self.filters,)
        if self.op == "tiled_conv2d":
            return (self.filters,) + self.tile
        if self.op in ("local_conv2d", TRANSPOSE_OP):
            return (self.filters,) + self.output_hw
        if self.op == "netvlad":
            return (self.clusters + self.ghosts,)
        return None

    @property
    def centroids_shape(self):
        return (self.clusters, self.input_shape[1]) if self.op == "netvlad" else None

    def conv_kwargs(self):
        """Keyword arguments shared by every lcnumba call of this convolution."""
        kwargs = dict(stride=self.stride, padding=self.padding, dilation=self.dilation)
        if self.op == "tiled_conv2d":
            kwargs["tile_mode"] = self.tile_mode
        return kwargs

    # ------------------------------------------------------------ cost

    def flops(self, backward=True):
        """Multiply-adds times two of the forward (and, by default, the backward too).

        The backward of a convolution is two more products of the forward's
        size (input and weight gradients); the NetVLAD count is its two
        matrix products (assignment logits and aggregation), likewise tripled.
        Pooling does no arithmetic worth counting: None.
        """
        n, c, h, w = self.input_shape
        if self.op in CONV_OPS:
            kh, kw = self.kernel
            oh, ow = self.output_hw
            forward = 2 * n * self.filters * oh * ow * c * kh * kw
        elif self.op == TRANSPOSE_OP:  # every input position scatters C x F x KH x KW products
            kh, kw = self.kernel
            forward = 2 * n * c * h * w * self.filters * kh * kw
        elif self.op == "netvlad":
            forward = 2 * n * h * w * c * (2 * self.clusters + self.ghosts)
        else:
            return None
        return 3 * forward if backward else forward

    def nbytes(self, dtype=np.float32):
        """Bytes of the arrays an allocating fwd+bwd must hold: inputs, outputs and gradients."""
        size = np.dtype(dtype).itemsize
        shapes = [self.input_shape, self.output_shape, self.weight_shape, self.bias_shape, self.centroids_shape]
        # Every array appears twice: the value and its gradient.
        return 2 * size * sum(int(np.prod(s)) for s in shapes if s is not None)

    # ------------------------------------------------------------ data

    def make_inputs(self, dtype=np.float32, seed=0):
        """Deterministic inputs: ``x``, ``dy`` and, as the op needs, ``w``, ``b``, ``centroids``.

        Weights are He-scaled so activations stay O(1) whatever the kernel
        size; that keeps a float32 comparison between implementations
        meaningful with one relative tolerance.
        """
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype)

        def normal(shape, scale=1.0):
            return (rng.standard_normal(shape) * scale).astype(dtype)

        inputs = {"x": normal(self.input_shape)}
        c = self.input_shape[1]
        if self.op in CONV_OPS + (TRANSPOSE_OP,):
            fan_in = c * self.kernel[0] * self.kernel[1]
            inputs["w"] = normal(self.weight_shape, np.sqrt(2.0 / fan_in))
            inputs["b"] = normal(self.bias_shape, 0.1)
        elif self.op == "netvlad":
            # The paper's initialisation around unit centroids (alpha = 10), so
            # the soft assignment is neither uniform nor one-hot.
            alpha = 10.0
            centroids = rng.standard_normal((self.clusters + self.ghosts, c))
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
            inputs["w"] = (2 * alpha * centroids).astype(dtype)
            inputs["b"] = (-alpha * np.ones(self.clusters + self.ghosts)).astype(dtype)
            inputs["centroids"] = centroids[: self.clusters].astype(dtype)
        inputs["dy"] = normal(self.output_shape)
        return inputs


# The workloads of DESIGN.md section 6 (batch 8).
WORKLOADS = {
    wl.name: wl
    for wl in (
        Workload("deepface_c1", "conv2d", (8, 3, 152, 152), filters=32, kernel=11, roofline_ms=52),
        Workload("deepface_m2", "max_pool2d", (8, 32, 142, 142), kernel=3, stride=2, roofline_ms=1.0),
        Workload("deepface_l4", "local_conv2d", (8, 16, 63, 63), filters=16, kernel=9, roofline_ms=14),
        Workload("deepface_l5", "local_conv2d", (8, 16, 55, 55), filters=16, kernel=7, stride=2, roofline_ms=1.7),
        Workload("deepface_l6", "local_conv2d", (8, 16, 25, 25), filters=16, kernel=5, roofline_ms=0.6),
        # L4 reversed: its 55x55 output back to its 63x63 input, with its weight (55, 55, 16, 16, 9, 9).
        Workload("deepface_l4_transpose", TRANSPOSE_OP, (8, 16, 55, 55), filters=16, kernel=9),
        Workload("tiled_k2", "tiled_conv2d", (8, 32, 32, 32), filters=32, kernel=5, padding=2, tile=2,
                 roofline_ms=5.8),
        Workload("vgg_conv3", "conv2d", (8, 64, 56, 56), filters=64, kernel=3, padding=1, roofline_ms=26),
        Workload("vgg_pool", "max_pool2d", (8, 64, 112, 112), kernel=2, stride=2, roofline_ms=1.3),
        Workload("netvlad_vgg", "netvlad", (8, 512, 30, 40), clusters=64, ghosts=0, roofline_ms=18),
    )
}
