"""lcnumba in PyTorch: custom operators with autograd, ``nn`` modules and functional forms (extra ``torch``).

``import lcnumba.torch`` registers every op family of the op table as
operators in the ``lcnumba`` namespace (``torch.ops.lcnumba.*``, see
``lcnumba.torch.library``) and offers them as

- modules (``lcnumba.torch.nn``): ``LocallyConnected2d``, ``LocallyConnected1d``,
  ``TiledConv2d``, ``TiledConv1d``, ``LocallyConnectedTranspose2d``,
  ``TiledConvTranspose2d``, ``NetVLAD``;
- functions (``lcnumba.torch.functional``): ``local_conv2d``, ``tiled_conv2d``,
  ``conv2d``, their transposes as PyTorch spells them (``local_conv_transpose2d``,
  ``tiled_conv_transpose2d``, ``conv_transpose2d``), ``max_pool2d``, ``netvlad``
  (with its mask and options), ``vlad_aggregate``, ``netvlad_pca`` and the 1-D forms.

CPU tensors reach the kernels without a copy, CUDA tensors through
``__cuda_array_interface__`` on PyTorch's current stream; gradients come
from lcnumba's hand-derived backward passes, and ``torch.compile`` traces
the operators without graph breaks. ``import lcnumba`` alone never imports
PyTorch.
"""

from . import functional, library, nn
from .nn import (LocallyConnected1d, LocallyConnected2d, LocallyConnectedTranspose2d, NetVLAD, TiledConv1d,
                 TiledConv2d, TiledConvTranspose2d)

__all__ = ["LocallyConnected1d", "LocallyConnected2d", "LocallyConnectedTranspose2d", "NetVLAD", "TiledConv1d",
           "TiledConv2d", "TiledConvTranspose2d", "functional", "library", "nn"]
