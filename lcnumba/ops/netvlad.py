"""Public functions of NetVLAD (Arandjelović et al. 2016) with GhostVLAD ghost clusters.

With ``x_i`` the M local descriptors of a sample (L2-normalised first when
``normalize_input``), ``K`` real and ``G = w.shape[0] - K`` ghost clusters::

    a_ik = softmax_k(w_k . x_i + b_k)          over all K + G clusters
    V_kd = sum_i a_ik (x_id - c_kd)            real clusters only
    V_k <- V_k / max(||V_k||, eps)             intra-normalisation
    y    = vec(V) / max(||vec(V)||, eps)       cluster-major, shape (K * D,)

Each function checks its arguments in signature order (``checks``),
allocates or checks its outputs and calls the kernels of
``lcnumba.cpu.netvlad``. The backward is derived in
``docs/derivations/netvlad.md``.
"""

import numpy as np

from .. import checks
from ..cpu import netvlad as kernels
from ..cpu.blas import serial_blas
from ..cpu.guard import kernel_guard


class _Shapes:
    """Sizes of one call, after the checks."""

    def __init__(self, x, w, centroids):
        self.n, self.d = x.shape[0], x.shape[1]
        self.m = int(np.prod(x.shape[2:]))
        self.kg = w.shape[0]
        self.k = centroids.shape[0]


def _check_inputs(x, w, b, centroids, normalize_input, eps, dtype=None, float_array=checks.float_array):
    """Check ``x, w, b, centroids, normalize_input, eps`` in order; return them C-contiguous, x as (N, D, M).

    ``float_array`` checks and converts one array (the CUDA path passes its device twin).
    """
    x = float_array(x, "x", (3, 4), dtype=dtype)
    dtype = x.dtype
    if x.shape[1] < 1:
        raise checks.value_error("x", "descriptors of size D >= 1, (N, D, H, W) or (N, D, M)", f"shape {x.shape}")
    d = x.shape[1]
    w = float_array(w, "w", 2, dtype=dtype)
    if w.shape[1] != d:
        raise checks.value_error("w", f"shape (K + G, {d}): one row of D = {d} weights per cluster",
                                 f"shape {w.shape}")
    b = float_array(b, "b", 1, dtype=dtype)
    checks.shape_equal(b, "b", (w.shape[0],), "one bias per row of w")
    centroids = float_array(centroids, "centroids", 2, dtype=dtype)
    k = centroids.shape[0]
    if k < 1 or centroids.shape[1] != d or k > w.shape[0]:
        raise checks.value_error("centroids", f"shape (K, {d}) with 1 <= K <= {w.shape[0]} (the rows of w)",
                                 f"shape {centroids.shape}")
    normalize_input = checks.flag(normalize_input, "normalize_input")
    eps = checks.positive_float(eps, "eps")
    x3 = x.reshape(x.shape[0], d, int(np.prod(x.shape[2:])))
    return x3, w, b, centroids, normalize_input, eps


def netvlad_forward(x, w, b, centroids, *, normalize_input=True, eps=1e-12, out=None, stream=0):
    """NetVLAD (and GhostVLAD) pooling forward.

    ``a_ik = softmax_k(w_k . x_i + b_k)`` over all K + G clusters,
    ``V_kd = sum_i a_ik (x_id - c_kd)`` over the K real clusters, each ``V_k``
    L2-normalised, then the flattened ``V`` L2-normalised. The (N, K, D, M)
    residuals are never formed: ``V = A^T X - (sum_i A) c`` as one GEMM per sample.

    Parameters
    ----------
    x : ndarray, shape (N, D, H, W) or (N, D, M)
        Local descriptors of size D (a feature map, or M descriptors per sample), float32 or
        float64. Never written.
    w : ndarray, shape (K + G, D)
        Soft-assignment weights of the K real clusters, then of the G ghost clusters.
    b : ndarray, shape (K + G,)
        Soft-assignment biases.
    centroids : ndarray, shape (K, D)
        Cluster centres of the real clusters; ``G = w.shape[0] - K``.
    normalize_input : bool
        L2-normalise every descriptor ``x_i`` (over D) first, as the paper does.
    eps : float
        Every norm is ``max(||v||, eps)``.
    out : ndarray, shape (N, K * D), optional
        C-contiguous buffer of the input dtype; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, K * D)
        Cluster-major: ``y[n, k * D + d]``. Unit norm unless every residual is zero.

    Raises
    ------
    TypeError
        An argument that is not a float32/float64 ndarray, arrays of mixed dtypes, a non-bool
        ``normalize_input``, a non-float ``eps``, ``out`` of the wrong dtype.
    ValueError
        Wrong ranks or shapes (D of ``w`` and ``centroids`` must match ``x``; ``b`` one per row of
        ``w``; 1 <= K <= rows of ``w``); ``eps`` not finite and > 0; ``out`` of the wrong shape,
        not contiguous, read-only or overlapping an input.

    Notes
    -----
    R. Arandjelović, P. Gronat, A. Torii, T. Pajdla, J. Sivic, "NetVLAD: CNN architecture for
    weakly supervised place recognition", CVPR 2016, Sections 3.1-3.2; Y. Zhong, R. Arandjelović,
    A. Zisserman, "GhostVLAD for set-based face recognition", ACCV 2018 (ghost clusters).
    """
    if checks.device_of({"x": x, "w": w, "b": b, "centroids": centroids, "out": out}) == "cuda":
        return _cuda().netvlad_forward(x, w, b, centroids, normalize_input=normalize_input, eps=eps, out=out, stream=stream)
    inputs = {"x": x, "w": w, "b": b, "centroids": centroids}
    x, w, b, centroids, normalize_input, eps = _check_inputs(x, w, b, centroids, normalize_input, eps)
    s = _Shapes(x, w, centroids)
    y = checks.output(out, "out", (s.n, s.k * s.d), x.dtype, inputs)
    if s.n == 0:
        return y
    with kernel_guard(), serial_blas():
        kernels.netvlad_fwd(x, w, b, centroids, normalize_input, eps, y)
    return y


def netvlad_backward(dy, x, w, b, centroids, *, normalize_input=True, eps=1e-12, stream=0):
    """Gradients of :func:`netvlad_forward` with respect to every input.

    The forward is recomputed per sample (nothing is saved between the calls); the backward
    then runs through the global normalisation, the intra-normalisation, the aggregation, the
    softmax and the input normalisation, as derived in ``docs/derivations/netvlad.md``. Extra
    memory is O(N (K + G) D) for the per-sample weight gradients (summed in sample order, so
    results are bitwise reproducible) plus O((K + G) M) per thread.

    Parameters
    ----------
    dy : ndarray, shape (N, K * D)
        Gradient of the output, float32 or float64.
    x, w, b, centroids, normalize_input, eps
        As passed to :func:`netvlad_forward`.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (K + G, D)
    db : ndarray, shape (K + G,)
    dcentroids : ndarray, shape (K, D)

    Raises
    ------
    TypeError, ValueError
        As :func:`netvlad_forward`; ``dy`` must be (N, K * D) of the same dtype.

    Notes
    -----
    A cluster that receives no assignment mass has ``V_k = 0``; its norm is then clamped to
    ``eps`` and every gradient stays finite.
    """
    if checks.device_of({"dy": dy, "x": x, "w": w, "b": b, "centroids": centroids}) == "cuda":
        return _cuda().netvlad_backward(dy, x, w, b, centroids, normalize_input=normalize_input, eps=eps, stream=stream)
    dy = checks.float_array(dy, "dy", 2)
    x_shape = x.shape if isinstance(x, np.ndarray) else None
    x, w, b, centroids, normalize_input, eps = _check_inputs(x, w, b, centroids, normalize_input, eps,
                                                             dtype=dy.dtype)
    s = _Shapes(x, w, centroids)
    checks.shape_equal(dy, "dy", (s.n, s.k * s.d), "the forward output (N, K * D) for x and centroids")
    dtype = x.dtype
    dx = np.empty((s.n, s.d, s.m), dtype)
    dw = np.zeros((s.kg, s.d), dtype)
    db = np.zeros((s.kg,), dtype)
    dc = np.zeros((s.k, s.d), dtype)
    if s.n == 0:
        return dx.reshape(x_shape), dw, db, dc
    dw_part = np.empty((s.n, s.kg, s.d), dtype)
    db_part = np.empty((s.n, s.kg), dtype)
    dc_part = np.empty((s.n, s.k, s.d), dtype)
    with kernel_guard():
        with serial_blas():
            kernels.netvlad_bwd(dy, x, w, b, centroids, normalize_input, eps, dx, dw_part, db_part, dc_part)
        kernels.reduce_samples(dw_part.reshape(s.n, -1), dw.reshape(-1))
        kernels.reduce_samples(db_part, db)
        kernels.reduce_samples(dc_part.reshape(s.n, -1), dc.reshape(-1))
    return dx.reshape(x_shape), dw, db, dc


def _cuda():
    """The CUDA implementations, imported on first use so that ``import lcnumba`` needs no CUDA."""
    from ..gpu import ops as cuda_ops

    return cuda_ops
