"""CPU kernels of the PCA-whitening layer on NetVLAD vectors.

Layouts::

    v, dv          (N, P)   NetVLAD vectors
    projection     (Q, P)   one row per output dimension
    bias           (Q,)
    y, dy          (N, Q)   y_n = (P v_n + bias) / max(||P v_n + bias||, eps)

The products are whole-batch GEMMs; the row normalisation and its gradient
are NetVLAD's normalisation chain (``lcnumba.cpu.netvlad``) on a single
"cluster" per sample. BLAS must be serial for the call (the order of its
sums then depends on the shapes only), and the bias gradient is summed over
samples in sample order, so results are bitwise reproducible.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from .netvlad import COMPILES_IN as _NETVLAD
from .netvlad import _chain_backward, _chain_forward, reduce_samples

COMPILES_IN = cache.sources("cpu/netvlad_pca.py", _NETVLAD)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _project(v, projection, bias, eps, z, norms):
    """``z = v projection^T + bias``, each row divided by ``max(norm, eps)``; the unclamped norms to ``norms``."""
    np.dot(v, projection.T, z)
    for n in prange(z.shape[0]):
        row = z[n]
        for q in range(row.shape[0]):
            row[q] += bias[q]
        _chain_forward(z[n:n + 1], True, False, eps, norms[n:n + 1])


@njit(cache=True)
def pca_forward(v, projection, bias, eps, y):
    """The PCA layer's forward into ``y`` (N, Q)."""
    _project(v, projection, bias, eps, y, np.empty(v.shape[0], v.dtype))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _normalization_gradient(dy, z, norms, eps, dz):
    for n in prange(z.shape[0]):
        _chain_backward(dy[n:n + 1], z[n:n + 1], norms[n:n + 1], norms[n], True, False, eps, dz[n:n + 1])


@njit(cache=True)
def pca_backward(dy, v, projection, bias, eps, dv, dprojection, dbias):
    """Gradients of ``pca_forward``: ``dv`` (N, P), ``dprojection`` (Q, P), ``dbias`` (Q,); 0 sums with no samples."""
    n = v.shape[0]
    if n == 0:
        dprojection[:] = 0
        dbias[:] = 0
        return
    z = np.empty(dy.shape, v.dtype)
    norms = np.empty(n, v.dtype)
    _project(v, projection, bias, eps, z, norms)
    dz = np.empty(dy.shape, v.dtype)
    _normalization_gradient(dy, z, norms, eps, dz)
    np.dot(dz, projection, dv)
    np.dot(dz.T, v, dprojection)
    reduce_samples(dz, dbias)


cache.key_kernels(globals())
