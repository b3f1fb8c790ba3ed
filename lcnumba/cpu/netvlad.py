"""NetVLAD kernels on the CPU.

Layouts (``KG = K + G`` clusters, the last G of them ghosts)::

    x          (N, D, M)    M local descriptors of size D per sample, C-contiguous
    w, b       (KG, D), (KG,)
    centroids  (K, D)
    y, dy      (N, K * D)   cluster-major: index k * D + d
    dx         (N, D, M)
    dw, db     (KG, D), (KG,)
    dc         (K, D)       gradient of the centroids
    dw_part    (N, KG, D)   per-sample gradients, summed by ``reduce_samples``
    db_part    (N, KG)
    dc_part    (N, K, D)

Per sample, with ``r_i = max(||x_i||, eps)`` (1 without input
normalisation) and ``X`` the (D, M) matrix of that sample, the forward is

    S = (W X) diag(1/r) + b 1^T        (KG, M)   one GEMM
    A = softmax over the KG rows of S
    V = (A_K diag(1/r)) X^T - s c      (K, D)    one GEMM; s_k = sum_i A_ki

so the normalised descriptors and the (K, D, M) residuals are never formed:
the normalisation is a column scaling folded into the small (KG, M)
matrices. The backward (derived in ``docs/derivations/netvlad.md``)
recomputes that forward and adds three GEMMs: ``dV X``,
``[dV; W]^T [A_K; dS]`` (both input-gradient paths in one GEMM, twice the
size of the others) and ``(dS diag(1/r)) X^T``.

Every sample is independent and writes only its own rows of the outputs
and partials, so the drivers are a ``prange`` over samples and each GEMM is
a single-threaded BLAS call: the caller keeps BLAS serial for the call
(``lcnumba.cpu.blas.serial_blas``). A threaded BLAS inside the worker
threads oversubscribes the cores, and even alone, run sample after sample,
its spinning threads measured 20x slower than the ``prange`` on a loaded
2-core machine. The order of every floating-point operation is fixed and
the partials are summed over samples in sample order, so results are
bitwise reproducible.
"""

import numpy as np
from numba import njit, prange

from .. import cache
from ..config import FASTMATH
from . import runs
from .runs import copy_run

# Copies between arrays go through ``copy_run``: an array assigned to a slice (``v[:] = w``) makes Numba
# compile NumPy's shape-mismatch message, string formatting that took seconds of every first call.
COMPILES_IN = cache.sources("config.py", "cpu/netvlad.py", runs.COMPILES_IN)

# exp(x) = 2^k * exp(f), x = k ln2 + f, |f| <= ln2 / 2: a Cody-Waite split of
# ln2 and a degree-13 Taylor polynomial, in float64 (error about 1 ulp).
# Numba's own exp is a scalar libm call; this loop vectorises, which made
# the softmax about 5x faster.
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_EXP_MIN = -708.0  # below this 2^k is subnormal: the result is flushed to 0 (it is < 1e-307)

# Norms sum plain squares; a sum that overflowed (inf) or fell below float32's
# smallest normal number (squares may have been lost) is recomputed scaled.
_SQUARES_TINY = 1.1754943508222875e-38


@njit(cache=True)  # no fastmath: the division by the largest magnitude must stay a division
def _scaled_norm(values):
    """``||values||`` without overflow or underflow: the largest magnitude is factored out first.

    The kernels call it only for a sum of squares that overflowed or underflowed, as for
    float32 descriptors near 1e30 (their squares exceed float32's range).
    """
    largest = 0.0
    for i in range(values.shape[0]):
        largest = max(largest, abs(np.float64(values[i])))
    if largest == 0.0 or largest == np.inf:
        return largest
    total = 0.0
    for i in range(values.shape[0]):
        t = np.float64(values[i]) / largest
        total += t * t
    return largest * np.sqrt(total)


@njit(cache=True)  # no fastmath: reassociation would undo the Cody-Waite split
def _exp_nonpositive(src, shift, dst, poly, bits):
    """``dst[i] = exp(src[i] - shift[i])`` for arguments <= 0 (a softmax numerator).

    ``poly`` (float64) and ``bits`` (int64) are scratch rows of the same
    length; the scale ``2^k`` is built from its exponent bits in ``bits``.
    """
    n = src.shape[0]
    scale = bits.view(np.float64)
    for i in range(n):
        t = np.float64(src[i]) - np.float64(shift[i])
        t = max(t, _EXP_MIN)
        k = np.floor(t * _LOG2E + 0.5)
        f = (t - k * _LN2_HI) - k * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * f + 1.0 / 479001600.0
        p = p * f + 1.0 / 39916800.0
        p = p * f + 1.0 / 3628800.0
        p = p * f + 1.0 / 362880.0
        p = p * f + 1.0 / 40320.0
        p = p * f + 1.0 / 5040.0
        p = p * f + 1.0 / 720.0
        p = p * f + 1.0 / 120.0
        p = p * f + 1.0 / 24.0
        p = p * f + 1.0 / 6.0
        p = p * f + 0.5
        p = p * f + 1.0
        p = p * f + 1.0
        poly[i] = p
        bits[i] = (np.int64(k) + 1023) << 52
    for i in range(n):
        v = poly[i] * scale[i]
        t = np.float64(src[i]) - np.float64(shift[i])
        # below _EXP_MIN: 0; NaN (a NaN or infinite logit) stays NaN, so the softmax sum is never 0
        dst[i] = v if t > _EXP_MIN else (0.0 if t <= _EXP_MIN else t)


@njit(cache=True, fastmath=FASTMATH)
def _encode(xs, w, b, c, normalize_input, eps, valid, nrm, rinv, a, v, mass):
    """Forward of one sample up to the unnormalised VLAD matrix.

    xs (D, M); ``valid`` (M,) is 0 for a masked descriptor, or empty (no
    mask). Fills ``nrm`` (M,) descriptor norms, ``rinv`` (M,) their clamped
    inverses, ``a`` (KG, M) the soft-assignment (its columns 0 for masked
    descriptors), ``mass`` (K,) its row sums and ``v`` (K, D) =
    ``A_K Xn^T - mass c``.
    """
    d_size, m = xs.shape
    kg = w.shape[0]
    k_real = c.shape[0]
    if normalize_input:
        nrm[:] = 0
        for d in range(d_size):
            row = xs[d]
            for i in range(m):
                nrm[i] += row[i] * row[i]
        for i in range(m):
            if nrm[i] == np.inf or nrm[i] < _SQUARES_TINY:
                nrm[i] = _scaled_norm(xs[:, i])
            else:
                nrm[i] = np.sqrt(nrm[i])
            rinv[i] = 1.0 / max(nrm[i], eps)
    else:
        nrm[:] = 1
        rinv[:] = 1
    np.dot(w, xs, a)
    # logits and their column maximum, row by row so the loops run along M
    colmax = np.empty(m, a.dtype)
    for k in range(kg):
        row = a[k]
        bk = b[k]
        for i in range(m):
            row[i] = row[i] * rinv[i] + bk
        if k == 0:
            copy_run(row, colmax)
        else:
            for i in range(m):
                colmax[i] = max(colmax[i], row[i])
    colsum = np.zeros(m, np.float64)
    poly = np.empty(m, np.float64)
    bits = np.empty(m, np.int64)
    expd = np.empty(m, np.float64)
    for k in range(kg):
        row = a[k]
        _exp_nonpositive(row, colmax, expd, poly, bits)
        for i in range(m):
            colsum[i] += expd[i]
            row[i] = expd[i]
    for i in range(m):
        colsum[i] = 1.0 / colsum[i]
    # a masked descriptor's column of A becomes 0 with the softmax's own scaling: the mask costs
    # one pass over M, and every later step (mass, aggregation, gradients) sees an assignment of 0
    if valid.shape[0]:
        for i in range(m):
            if valid[i] == 0:
                colsum[i] = 0.0
    ar = np.empty((k_real, m), a.dtype)
    for k in range(kg):
        row = a[k]
        for i in range(m):
            row[i] = row[i] * colsum[i]
        if k < k_real:
            # The sum runs in a loop of its own: a loop that also stores gets a runtime overlap test
            # from LLVM and runs vectorised or scalar depending on where the allocator put the arrays,
            # and the two sum in different orders (reassoc): results would change with the heap.
            total = 0.0
            for i in range(m):
                total += row[i]
            mass[k] = total
            dst = ar[k]
            for i in range(m):
                dst[i] = row[i] * rinv[i]
    np.dot(ar, xs.T, v)
    _subtract_centroids(v, mass, c)


@njit(cache=True, fastmath=FASTMATH)
def _subtract_centroids(v, mass, c):
    """``v[k] -= mass[k] c[k]``: the centroid term of ``V = A X^T - mass c``."""
    for k in range(v.shape[0]):
        for d in range(v.shape[1]):
            v[k, d] -= mass[k] * c[k, d]


@njit(cache=True, fastmath=FASTMATH)
def _normalize_rows(v, eps, norms):
    """Intra-normalisation: ``v[k] /= max(||v[k]||, eps)``; the unclamped norms go to ``norms``."""
    for k in range(v.shape[0]):
        total = 0.0
        for d in range(v.shape[1]):
            total += v[k, d] * v[k, d]
        norms[k] = _scaled_norm(v[k]) if total == np.inf or total < _SQUARES_TINY else np.sqrt(total)
        scale = 1.0 / max(norms[k], eps)
        for d in range(v.shape[1]):
            v[k, d] *= scale


@njit(cache=True, fastmath=FASTMATH)
def _frobenius(v):
    total = 0.0
    for k in range(v.shape[0]):
        for d in range(v.shape[1]):
            total += v[k, d] * v[k, d]
    return np.sqrt(total)


@njit(cache=True, fastmath=FASTMATH)
def _chain_forward(v, intra_normalize, final_normalize, eps, norms):
    """The normalisation chain, in place on ``v`` (K, D); returns ``||v||`` before the final scaling.

    With ``intra_normalize`` every row is divided by ``max(||v_k||, eps)``
    (the unclamped row norms go to ``norms``); with ``final_normalize`` the
    whole matrix is then divided by ``max(||v||, eps)``.
    """
    if intra_normalize:
        _normalize_rows(v, eps, norms)
    total = _frobenius(v)
    if final_normalize:
        scale = 1.0 / max(total, eps)
        for k in range(v.shape[0]):
            for d in range(v.shape[1]):
                v[k, d] *= scale
    return total


@njit(cache=True, fastmath=FASTMATH)
def _chain_backward(dyk, vn, norms, total, intra_normalize, final_normalize, eps, dv):
    """``dv`` (K, D), the gradient of the unnormalised ``v``, from ``dyk`` (K, D) through ``_chain_forward``.

    ``vn``, ``norms`` and ``total`` are ``v``, its row norms and ``||v||``
    after ``_chain_forward(v, intra_normalize, False, ...)``.
    """
    k_real, d_size = vn.shape
    g = max(total, eps)
    if final_normalize:
        # y = vn / g: dvn = (dy - y (y . dy)) / g, the projection only if unclamped
        proj = 0.0
        if total >= eps:
            for k in range(k_real):
                for d in range(d_size):
                    proj += vn[k, d] * dyk[k, d]
            proj /= g * g
        for k in range(k_real):
            for d in range(d_size):
                dv[k, d] = (dyk[k, d] - vn[k, d] * proj) / g
    else:
        for k in range(k_real):
            copy_run(dyk[k], dv[k])
    if intra_normalize:
        # vn_k = v_k / u_k: dv_k = (dvn_k - vn_k (vn_k . dvn_k)) / u_k
        for k in range(k_real):
            u = max(norms[k], eps)
            along = 0.0
            if norms[k] >= eps:
                for d in range(d_size):
                    along += vn[k, d] * dv[k, d]
            for d in range(d_size):
                dv[k, d] = (dv[k, d] - vn[k, d] * along) / u


@njit(cache=True, fastmath=FASTMATH)
def _aggregation_backward(dv, xs, c, mass, rinv, da, dcn):
    """Back through ``V = A (X diag(1/r))^T - mass c``: ``da`` (K, M) = ``(dV X) diag(1/r) - q 1^T`` and ``dcn``.

    ``q_k = dv_k . c_k``; the centroid gradient is ``dcn = -mass dV``.
    """
    k_real, d_size = dv.shape
    for k in range(k_real):
        for d in range(d_size):
            dcn[k, d] = -mass[k] * dv[k, d]
    np.dot(dv, xs, da)
    for k in range(k_real):
        q = 0.0
        for d in range(d_size):
            q += dv[k, d] * c[k, d]
        row = da[k]
        for i in range(row.shape[0]):
            row[i] = row[i] * rinv[i] - q


@njit(cache=True, fastmath=FASTMATH)
def _forward_sample(xs, w, b, c, normalize_input, intra_normalize, final_normalize, eps, valid, yn):
    d_size, m = xs.shape
    kg = w.shape[0]
    k_real = c.shape[0]
    nrm = np.empty(m, xs.dtype)
    rinv = np.empty(m, xs.dtype)
    a = np.empty((kg, m), xs.dtype)
    mass = np.empty(k_real, xs.dtype)
    v = yn.reshape((k_real, d_size))
    _encode(xs, w, b, c, normalize_input, eps, valid, nrm, rinv, a, v, mass)
    norms = np.empty(k_real, xs.dtype)
    _chain_forward(v, intra_normalize, final_normalize, eps, norms)


@njit(cache=True, fastmath=FASTMATH)
def _column_dots(p, q, out):
    """``out[i] = sum_r p[r, i] q[r, i]``, added row by row: a fixed order, contiguous rows."""
    out[:] = 0
    for r in range(p.shape[0]):
        pr = p[r]
        qr = q[r]
        for i in range(out.shape[0]):
            out[i] += pr[i] * qr[i]


@njit(cache=True, fastmath=FASTMATH)
def _backward_sample(dyn, xs, w, b, c, normalize_input, intra_normalize, final_normalize, eps, valid, dxn, dwn,
                     dbn, dcn):
    """Gradients of one sample: ``dxn`` (D, M) and its partials ``dwn`` (KG, D), ``dbn`` (KG,), ``dcn`` (K, D)."""
    d_size, m = xs.shape
    kg = w.shape[0]
    k_real = c.shape[0]
    nrm = np.empty(m, xs.dtype)
    rinv = np.empty(m, xs.dtype)
    # rows [0, K) of ``big`` hold A_K, rows [K, K + KG) first the full
    # assignment A, later the logit gradient dS: [A_K; dS] is the right
    # factor of the fused input-gradient GEMM
    big = np.empty((k_real + kg, m), xs.dtype)
    a = big[k_real:]
    mass = np.empty(k_real, xs.dtype)
    # rows [0, K) of ``left`` hold dV, rows [K, K + KG) hold W
    left = np.empty((k_real + kg, d_size), xs.dtype)
    vn = np.empty((k_real, d_size), xs.dtype)
    _encode(xs, w, b, c, normalize_input, eps, valid, nrm, rinv, a, vn, mass)
    norms = np.empty(k_real, xs.dtype)
    total = _chain_forward(vn, intra_normalize, False, eps, norms)
    dv = left[:k_real]
    _chain_backward(dyn.reshape((k_real, d_size)), vn, norms, total, intra_normalize, final_normalize, eps, dv)
    for k in range(kg):
        copy_run(w[k], left[k_real + k])
    # dA_ki = dv_k . xn_i - dv_k . c_k = (dv X)_ki / r_i - q_k
    da = np.empty((k_real, m), xs.dtype)
    _aggregation_backward(dv, xs, c, mass, rinv, da, dcn)
    for k in range(k_real):
        copy_run(a[k], big[k])
    t = np.empty(m, xs.dtype)
    _column_dots(big[:k_real], da, t)
    # softmax over all KG rows (ghost rows have dA = 0): dS_ki = a_ki (dA_ki - t_i)
    for k in range(kg):
        row = a[k]
        if k < k_real:
            dak = da[k]
            for i in range(m):
                row[i] = row[i] * (dak[i] - t[i])
        else:
            for i in range(m):
                row[i] = -row[i] * t[i]
        total_k = 0.0
        for i in range(m):
            total_k += row[i]
        dbn[k] = total_k
    # dXn = dv^T A_K + W^T dS, one GEMM, written straight into dx
    np.dot(left.T, big, dxn)
    # dW = dS Xn^T = (dS diag(1/r)) X^T
    for k in range(kg):
        row = a[k]
        for i in range(m):
            row[i] *= rinv[i]
    np.dot(a, xs.T, dwn)
    if normalize_input:
        # xn_i = x_i / r_i: dx_i = dxn_i / r_i - x_i (x_i . dxn_i) / r_i^3, the projection only if unclamped
        dots = np.empty(m, xs.dtype)
        _column_dots(xs, dxn, dots)
        # as (dxn_i - xn_i (xn_i . dxn_i)) / r_i: r_i^-3 would underflow for large descriptors
        for i in range(m):
            dots[i] = dots[i] * rinv[i] if nrm[i] >= eps else 0.0
        for d in range(d_size):
            gx = dxn[d]
            xr = xs[d]
            for i in range(m):
                gx[i] = (gx[i] - dots[i] * (xr[i] * rinv[i])) * rinv[i]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def netvlad_fwd(x, w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask, y):
    """NetVLAD forward of every sample, one sample per ``prange`` iteration; ``mask`` (N, M) or (N, 0) for none."""
    for n in prange(x.shape[0]):
        _forward_sample(x[n], w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask[n], y[n])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def netvlad_bwd(dy, x, w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask, dx, dw_part, db_part,
                dc_part):
    """NetVLAD backward of every sample into ``dx`` and the per-sample partials."""
    for n in prange(x.shape[0]):
        _backward_sample(dy[n], x[n], w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask[n], dx[n],
                         dw_part[n], db_part[n], dc_part[n])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def reduce_samples(part, out):
    """``out[j] = sum_n part[n, j]`` in sample order; ``part`` (N, J), ``out`` (J,)."""
    samples, size = part.shape
    for j in prange(size):
        total = part[0, j]
        for n in range(1, samples):
            total += part[n, j]
        out[j] = total


def host_backward(dy, x, w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask, dx, dw, db, dc):
    """NetVLAD backward: ``dx`` (N, D, M) and the sums over samples ``dw`` (KG, D), ``db`` (KG,), ``dc`` (K, D).

    The per-sample partials (O(N KG D) scratch, allocated here) are summed in
    sample order by ``reduce_samples``; with no samples the three sums are 0.
    BLAS must be serial for the call (the module notes). ``mask`` is (N, M),
    0 for a masked descriptor, or (N, 0) for none.
    """
    n = x.shape[0]
    kg, d = w.shape
    k = c.shape[0]
    if n == 0:
        dw[:] = 0
        db[:] = 0
        dc[:] = 0
        return
    dw_part = np.empty((n, kg, d), x.dtype)
    db_part = np.empty((n, kg), x.dtype)
    dc_part = np.empty((n, k, d), x.dtype)
    netvlad_bwd(dy, x, w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask, dx, dw_part, db_part,
                dc_part)
    reduce_samples(dw_part.reshape((n, kg * d)), dw.reshape(kg * d))
    reduce_samples(db_part, db)
    reduce_samples(dc_part.reshape((n, k * d)), dc.reshape(k * d))


# ---------------------------------------------------------------- the aggregation core alone


@njit(cache=True, fastmath=FASTMATH)
def _aggregate(xs, a, c, mass, v):
    """``v`` (K, D) = ``A X^T - mass c`` for a given assignment ``a`` (K, M); ``mass`` (K,) its row sums."""
    for k in range(a.shape[0]):
        total = 0.0  # a loop of its own: the module's note in _encode
        row = a[k]
        for i in range(row.shape[0]):
            total += row[i]
        mass[k] = total
    np.dot(a, xs.T, v)
    _subtract_centroids(v, mass, c)


@njit(cache=True, fastmath=FASTMATH)
def _aggregate_forward_sample(xs, a, c, intra_normalize, final_normalize, eps, yn):
    k_real, d_size = c.shape
    mass = np.empty(k_real, xs.dtype)
    v = yn.reshape((k_real, d_size))
    _aggregate(xs, a, c, mass, v)
    norms = np.empty(k_real, xs.dtype)
    _chain_forward(v, intra_normalize, final_normalize, eps, norms)


@njit(cache=True, fastmath=FASTMATH)
def _aggregate_backward_sample(dyn, xs, a, c, intra_normalize, final_normalize, eps, dxn, dan, dcn):
    """Gradients of one sample: ``dxn`` (D, M) = ``dV^T A``, ``dan`` (K, M) and the partial ``dcn`` (K, D)."""
    k_real, d_size = c.shape
    mass = np.empty(k_real, xs.dtype)
    vn = np.empty((k_real, d_size), xs.dtype)
    _aggregate(xs, a, c, mass, vn)
    norms = np.empty(k_real, xs.dtype)
    total = _chain_forward(vn, intra_normalize, False, eps, norms)
    dv = np.empty((k_real, d_size), xs.dtype)
    _chain_backward(dyn.reshape((k_real, d_size)), vn, norms, total, intra_normalize, final_normalize, eps, dv)
    _aggregation_backward(dv, xs, c, mass, np.ones(xs.shape[1], xs.dtype), dan, dcn)
    np.dot(dv.T, a, dxn)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def aggregate_fwd(x, a, c, intra_normalize, final_normalize, eps, y):
    """VLAD aggregation of every sample: x (N, D, M), a (N, K, M) -> y (N, K * D)."""
    for n in prange(x.shape[0]):
        _aggregate_forward_sample(x[n], a[n], c, intra_normalize, final_normalize, eps, y[n])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _aggregate_bwd(dy, x, a, c, intra_normalize, final_normalize, eps, dx, da, dc_part):
    for n in prange(x.shape[0]):
        _aggregate_backward_sample(dy[n], x[n], a[n], c, intra_normalize, final_normalize, eps, dx[n], da[n],
                                   dc_part[n])


@njit(cache=True)
def aggregate_backward(dy, x, a, c, intra_normalize, final_normalize, eps, dx, da, dc):
    """Gradients of ``aggregate_fwd``: ``dx`` (N, D, M), ``da`` (N, K, M) and ``dc`` (K, D), summed in sample order."""
    n = x.shape[0]
    k, d = c.shape
    if n == 0:
        dc[:] = 0
        return
    dc_part = np.empty((n, k, d), x.dtype)
    _aggregate_bwd(dy, x, a, c, intra_normalize, final_normalize, eps, dx, da, dc_part)
    reduce_samples(dc_part.reshape((n, k * d)), dc.reshape(k * d))


#: ``host_backward`` compiled, for the C entry points. Python runs the plain
#: function, so a first call compiles each kernel once, on its own (a compiled
#: driver compiles its kernels again into its own machine code).
backward = njit(cache=True)(host_backward)

cache.key_kernels(globals())
