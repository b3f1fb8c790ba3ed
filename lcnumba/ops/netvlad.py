"""NetVLAD's cores (Arandjelović et al. 2016) with GhostVLAD ghost clusters.

With ``x_i`` the M local descriptors of a sample (L2-normalised first when
``normalize_input``), ``K`` real and ``G = w.shape[0] - K`` ghost clusters::

    a_ik = softmax_k(w_k . x_i + b_k)          over all K + G clusters; 0 for a masked x_i
    V_kd = sum_i a_ik (x_id - c_kd)            real clusters only
    V_k <- V_k / max(||V_k||, eps)             intra-normalisation (intra_normalize)
    y    = vec(V) / max(||vec(V)||, eps)       final normalisation (final_normalize), shape (K * D,)

Each core checks its arguments in signature order (``checks``), allocates or
checks its outputs and calls the backend's kernels. The backward is derived
in ``docs/derivations/netvlad.md``.
"""

import numpy as np

from .. import checks


def _inputs(be, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps, dy=None):
    """Check the arguments in signature order; return them C-contiguous, x as (N, D, M), mask as (N, M) or None."""
    arrays = {} if dy is None else {"dy": be.float_array(dy, "dy", 2)}
    arrays["x"] = x = be.float_array(x, "x", (3, 4))
    arrays["w"] = w = be.float_array(w, "w", 2)
    arrays["b"] = b = be.float_array(b, "b", 1)
    arrays["centroids"] = centroids = be.float_array(centroids, "centroids", 2)
    dtype = checks.common_dtype(arrays)
    checks.netvlad_shapes(tuple(x.shape), tuple(w.shape), tuple(b.shape), tuple(centroids.shape))
    switches = (checks.flag(normalize_input, "normalize_input"), checks.flag(intra_normalize, "intra_normalize"),
                checks.flag(final_normalize, "final_normalize"))
    if mask is not None:
        mask = be.mask_array(mask, "mask", tuple(x.shape))
    eps = checks.positive_float(eps, "eps")
    return arrays.get("dy"), descriptors(x), w, b, centroids, switches, mask, eps, dtype


def descriptors(x):
    """x (N, D, H, W) or (N, D, M) as (N, D, M), a view."""
    return x.reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:])))


def forward(fam, be, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps, out):
    given = {"x": x, "w": w, "b": b, "centroids": centroids}
    _, xd, w, b, centroids, switches, mask, eps, dtype = _inputs(
        be, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps)
    n, d = xd.shape[:2]
    y = be.output(out, "out", (n, centroids.shape[0] * d), dtype, given)
    if n:
        be.netvlad_forward(xd, w, b, centroids, *switches, eps, mask, y)
    return y


def backward(fam, be, dy, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps):
    dy, xd, w, b, centroids, switches, mask, eps, dtype = _inputs(
        be, x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps, dy)
    n, d = xd.shape[:2]
    checks.shape_equal(dy, "dy", (n, centroids.shape[0] * d), "the forward output (N, K * D) for x and centroids")
    dx, dw, db, dc = be.netvlad_backward(dy, xd, w, b, centroids, *switches, eps, mask)
    return dx.reshape(tuple(x.shape)), dw, db, dc
