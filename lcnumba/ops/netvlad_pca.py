"""PCA-whitening of NetVLAD vectors, as ``addPCA.m`` of the NetVLAD authors' code does.

``fit`` learns the layer from a sample of NetVLAD vectors; the forward and
backward cores run it and its gradients, so it can be fine-tuned::

    y_n = (P v_n + bias) / max(||P v_n + bias||, eps)

With ``mu`` the mean of the vectors, ``U`` (p, dim) the leading eigenvectors
of their covariance and ``lambda`` its eigenvalues, ``P = U^T`` (or
``diag(1 / sqrt(lambda + 1e-9)) U^T`` when whitening) and ``bias = -P mu``.
"""

import numpy as np

from .. import checks
from ..cpu.blas import serial_blas

#: Added to every eigenvalue before whitening, as addPCA.m does.
WHITEN_EPS = 1e-9


def netvlad_pca_fit(vectors, dim, whiten=True):
    """Learn the PCA-whitening layer of NetVLAD vectors, as ``addPCA.m`` does.

    Parameters
    ----------
    vectors : ndarray, shape (N, P)
        A sample of NetVLAD vectors (``netvlad_forward`` outputs), float32 or float64, finite.
    dim : int
        Output size, ``1 <= dim <= min(N - 1, P)``.
    whiten : bool
        Divide every principal direction by ``sqrt(eigenvalue + 1e-9)``.

    Returns
    -------
    projection : ndarray, shape (dim, P)
        Row ``j`` is the ``j``-th principal direction (largest eigenvalue first; its entry of
        largest magnitude made positive), scaled when whitening.
    bias : ndarray, shape (dim,)
        ``-projection @ mean(vectors)``; the layer is :func:`netvlad_pca_forward` with both.
        Both in the dtype of ``vectors``.

    Raises
    ------
    TypeError
        ``vectors`` not a float32/float64 ndarray, ``dim`` not an int, ``whiten`` not a bool.
    ValueError
        ``vectors`` not 2-D or not finite; ``dim`` out of range.

    Notes
    -----
    The eigenvalues are those of the sample covariance (divided by N - 1). With more dimensions
    than vectors (``P > N``, the usual case for NetVLAD) the eigenvectors come from the (N, N) Gram
    matrix of the centred vectors and are mapped back, as the authors' ``relja_PCA`` does. Runs on
    the CPU (SciPy's ``eigh``), with BLAS serial so the result does not depend on thread counts.
    """
    import scipy.linalg  # here, not at the top: importing it costs about 0.25 s, and only the fit needs it

    vectors = checks.float_array(vectors, "vectors", 2)
    dim = checks.pca_dim(dim, vectors.shape)
    whiten = checks.flag(whiten, "whiten")
    checks.finite("vectors", vectors)
    n, p = vectors.shape
    data = vectors.astype(np.float64)
    mu = data.mean(axis=0)
    centred = data - mu
    with serial_blas():  # LAPACK's sums in an order that depends on the shapes only
        if p <= n:
            lams, u = scipy.linalg.eigh(centred.T @ centred / (n - 1), subset_by_index=(p - dim, p - 1))
        else:
            # more dimensions than vectors: the eigenvectors of the (n, n) Gram matrix, mapped back
            lams, g = scipy.linalg.eigh(centred @ centred.T / (n - 1), subset_by_index=(n - dim, n - 1))
            u = centred.T @ g / np.sqrt(np.maximum(lams, WHITEN_EPS) * (n - 1))
    lams, u = lams[::-1], u[:, ::-1]  # largest first
    # an eigenvector's sign is arbitrary: its entry of largest magnitude is made positive
    u = u * np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(dim)])
    if whiten:
        u = u / np.sqrt(np.maximum(lams, 0.0) + WHITEN_EPS)
    projection = np.ascontiguousarray(u.T)
    return projection.astype(vectors.dtype), (-(projection @ mu)).astype(vectors.dtype)


def _inputs(be, v, projection, bias, eps, dy=None):
    arrays = {} if dy is None else {"dy": be.float_array(dy, "dy", 2)}
    arrays["v"] = v = be.float_array(v, "v", 2)
    arrays["projection"] = projection = be.float_array(projection, "projection", 2)
    arrays["bias"] = bias = be.float_array(bias, "bias", 1)
    dtype = checks.common_dtype(arrays)
    checks.pca_shapes(tuple(v.shape), tuple(projection.shape), tuple(bias.shape))
    eps = checks.positive_float(eps, "eps")
    return arrays.get("dy"), v, projection, bias, eps, dtype


def forward(fam, be, v, projection, bias, eps, out):
    given = {"v": v, "projection": projection, "bias": bias}
    _, v, projection, bias, eps, dtype = _inputs(be, v, projection, bias, eps)
    y = be.output(out, "out", (v.shape[0], projection.shape[0]), dtype, given)
    if v.shape[0]:
        be.netvlad_pca_forward(v, projection, bias, eps, y)
    return y


def backward(fam, be, dy, v, projection, bias, eps):
    dy, v, projection, bias, eps, dtype = _inputs(be, v, projection, bias, eps, dy)
    checks.shape_equal(dy, "dy", (v.shape[0], projection.shape[0]), "the forward output (N, dim)")
    return be.netvlad_pca_backward(dy, v, projection, bias, eps)
