"""The core of ``vlad_aggregate``: NetVLAD's aggregation and normalisation for a given soft-assignment.

For callers who compute the assignment themselves (a separate convolution,
a Sinkhorn dustbin as in SALAD), per sample::

    V_kd = sum_m a_km (x_dm - c_kd)
    V_k <- V_k / max(||V_k||, eps)             intra_normalize
    y    = vec(V) / max(||vec(V)||, eps)       final_normalize

The descriptors are used as given (no input normalisation). The backward
returns the gradients of ``x``, the assignment and the centroids; it is
derived in ``docs/derivations/netvlad.md``.
"""

from .. import checks
from .netvlad import descriptors


def _inputs(be, x, assignment, centroids, intra_normalize, final_normalize, eps, dy=None):
    """Check the arguments in signature order; return them C-contiguous, x as (N, D, M), assignment as (N, K, M)."""
    arrays = {} if dy is None else {"dy": be.float_array(dy, "dy", 2)}
    arrays["x"] = x = be.float_array(x, "x", (3, 4))
    arrays["assignment"] = assignment = be.float_array(assignment, "assignment", (3, 4))
    arrays["centroids"] = centroids = be.float_array(centroids, "centroids", 2)
    dtype = checks.common_dtype(arrays)
    checks.centroids_per_descriptor(tuple(centroids.shape), tuple(x.shape))
    checks.assignment_shape(tuple(assignment.shape), tuple(x.shape), tuple(centroids.shape))
    switches = (checks.flag(intra_normalize, "intra_normalize"), checks.flag(final_normalize, "final_normalize"))
    eps = checks.positive_float(eps, "eps")
    return arrays.get("dy"), descriptors(x), descriptors(assignment), centroids, switches, eps, dtype


def forward(fam, be, x, assignment, centroids, intra_normalize, final_normalize, eps, out):
    given = {"x": x, "assignment": assignment, "centroids": centroids}
    _, xd, ad, centroids, switches, eps, dtype = _inputs(be, x, assignment, centroids, intra_normalize,
                                                         final_normalize, eps)
    n, d = xd.shape[:2]
    y = be.output(out, "out", (n, centroids.shape[0] * d), dtype, given)
    if n:
        be.vlad_aggregate_forward(xd, ad, centroids, *switches, eps, y)
    return y


def backward(fam, be, dy, x, assignment, centroids, intra_normalize, final_normalize, eps):
    dy, xd, ad, centroids, switches, eps, dtype = _inputs(be, x, assignment, centroids, intra_normalize,
                                                          final_normalize, eps, dy)
    n, d = xd.shape[:2]
    checks.shape_equal(dy, "dy", (n, centroids.shape[0] * d), "the forward output (N, K * D) for x and centroids")
    dx, da, dc = be.vlad_aggregate_backward(dy, xd, ad, centroids, *switches, eps)
    return dx.reshape(tuple(x.shape)), da.reshape(tuple(assignment.shape)), dc
