"""Plain-NumPy reference implementations of every op, and gradient checks.

Slow, obviously-correct versions of every public op, written independently of
the kernels and of the library's parameter handling (loops,
``sliding_window_view`` and ``einsum``; each reference normalises its own
parameters and computes its own output size), for the tests and for users
checking layers of their own:

- ``lcnumba.testing.conv``: ``conv2d``, ``tiled_conv2d`` and ``local_conv2d``
  and their 1-D forms, ``*_forward``, ``*_backward_input``,
  ``*_backward_weight``, ``*_backward_bias`` and ``*_backward``;
- ``lcnumba.testing.conv_transpose``: their transposes ``conv2d_transpose``,
  ``tiled_conv2d_transpose``, ``local_conv2d_transpose`` and the 1-D forms, the
  same five passes, in scatter form;
- ``lcnumba.testing.pool``: ``max_pool2d`` and ``max_pool1d``;
- ``lcnumba.testing.netvlad``: ``netvlad_forward`` and ``netvlad_backward``,
  ``vlad_aggregate_*``, ``netvlad_pca_*`` and ``netvlad_pca_fit``;
- :func:`gradcheck`: analytic gradients against float64 central differences.

Every function is also here, as ``lcnumba.testing.<name>``, with the
signature of the public op of the same name less ``out=``, ``accumulate=``
and ``stream=``.
"""

from . import conv, conv_transpose, netvlad, pool
from .conv import *  # noqa: F403 - the generated references, listed in conv.__all__
from .conv_transpose import *  # noqa: F403 - listed in conv_transpose.__all__
from .gradcheck import gradcheck  # the function: it hides the module of the same name here
from .netvlad import (netvlad_backward, netvlad_forward, netvlad_pca_backward, netvlad_pca_fit, netvlad_pca_forward,
                      vlad_aggregate_backward, vlad_aggregate_forward)
from .pool import max_pool1d_backward, max_pool1d_forward, max_pool2d_backward, max_pool2d_forward

__all__ = conv.__all__ + conv_transpose.__all__ + pool.__all__ + netvlad.__all__ + ["gradcheck"]
