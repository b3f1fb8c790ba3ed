"""CUDA kernels of NetVLAD's options and parts, the math of ``lcnumba.cpu.netvlad`` and ``cpu.netvlad_pca``.

NetVLAD with a mask or with a normalisation switched off, the aggregation
core for a given soft-assignment (``vlad_aggregate``) and the PCA-whitening
layer, built from the kernels of ``lcnumba.gpu.netvlad`` (softmax, logit
and input-normalisation gradients), the batched GEMM of ``lcnumba.gpu.gemm``
and the option-aware steps here. NetVLAD with every option at its default
runs through ``gpu.netvlad`` unchanged. Layouts as there: x (N, D, M), assignment
(N, K, M), y (N, K * D), mask (N, M) (nonzero: valid).

A masked descriptor's column of the assignment is set to 0 right after the
softmax, so the aggregation and every gradient leave it out. The
normalisation chain, per sample: centre ``V = A X^T - mass c``, optionally
divide every row by ``max(||V_k||, eps)``, optionally divide the whole
``V`` by ``max(||V||, eps)``. Per-sample parameter gradients are summed in
sample order (``reduce_splits``): bitwise reproducible, no atomics.
"""

import math

from . import netvlad as nv
from .gemm import batched
from .jit import cuda, kernel
from .kernels import reduce_splits
from .launch import block_threads, blockwise, elementwise, fill


@kernel
def mask_columns(a, ar, mask):
    """``a[n, :, i] = 0`` and ``ar[n, :, i] = 0`` where ``mask[n, i]`` is 0."""
    n_total, kg, m = a.shape
    k_real = ar.shape[1]
    zero = a.dtype.type(0)
    for e in range(cuda.grid(1), n_total * m, cuda.gridsize(1)):
        n = e // m
        i = e - n * m
        if mask[n, i] == 0:
            for k in range(kg):
                a[n, k, i] = zero
            for k in range(k_real):
                ar[n, k, i] = zero


@kernel
def sample_norms(norms, intra_normalize, eps, total):
    """``total[n] = ||V[n]||`` from the row norms (each row divided by ``max(norm, eps)`` when intra-normalised)."""
    n_total, k_real = norms.shape
    for n in range(cuda.grid(1), n_total, cuda.gridsize(1)):
        acc = norms.dtype.type(0)
        for k in range(k_real):
            r = norms[n, k]
            if intra_normalize:
                r = r / max(r, eps)
            acc += r * r
        total[n] = math.sqrt(acc)


@kernel
def subtract_rows(da, q):
    """``da[n, k, i] -= q[n, k]``."""
    n_total, k_real, m = da.shape
    for e in range(cuda.grid(1), n_total * k_real * m, cuda.gridsize(1)):
        n = e // (k_real * m)
        k = (e // m) % k_real
        da[n, k, e % m] -= q[n, k]


# ---------------------------------------------------------------- drivers


def _chain(ar, x, mass, c, intra_normalize, final_normalize, eps, v, stream):
    """``v`` (N, K, D) = the chain of ``A X^T - mass c`` up to the final scaling; returns ``(norms, total)``."""
    n, k, d = v.shape
    batched(ar, False, x, True, x.shape[2], False, v, stream)
    norms = cuda.device_array((n, k), dtype=v.dtype, stream=stream)
    elementwise(nv.center_and_normalize, n * k, stream, v, mass, c, intra_normalize, eps, norms)
    total = cuda.device_array(n, dtype=v.dtype, stream=stream)
    elementwise(sample_norms, n, stream, norms, intra_normalize, eps, total)
    return norms, total


def _chain_backward(dy, vn, norms, total, mass, c, intra_normalize, final_normalize, eps, stream):
    """``(dv, q, dc_part)`` from ``dy`` back through the normalisations and the centroid term."""
    n, k, d = vn.shape
    proj = cuda.device_array(n, dtype=vn.dtype, stream=stream)
    blockwise(nv.projection, n, block_threads(nv.LANES), stream, vn.reshape(n, k * d), dy, total, eps, proj)
    dv = cuda.device_array((n, k, d), dtype=vn.dtype, stream=stream)
    q = cuda.device_array((n, k), dtype=vn.dtype, stream=stream)
    dc_part = cuda.device_array((n, k, d), dtype=vn.dtype, stream=stream)
    elementwise(nv.cluster_gradient, n * k, stream, *nv.flat(vn, dy, norms, total, proj, mass, c), (n, k, d),
                intra_normalize, final_normalize, eps, *nv.flat(dv, q, dc_part))
    return dv, q, dc_part


def _sum_samples(part, out, stream):
    size = out.size
    elementwise(reduce_splits, size, stream, part.reshape(part.shape[0], size), False, out.reshape(size))


def _encode(x, w, b, c, normalize_input, eps, mask, stream):
    n, d, m = x.shape
    buffers = [cuda.device_array(shape, dtype=x.dtype, stream=stream)
               for shape in nv._encode_shapes(n, d, m, w.shape[0], c.shape[0])]
    nrm, rinv, a, ar, mass = buffers
    nv._encode(x, w, b, c, normalize_input, eps, *buffers, stream)
    if mask is not None:
        n, m = mask.shape
        k = c.shape[0]
        elementwise(mask_columns, n * m, stream, a, ar, mask)
        elementwise(nv.row_sums, n * k, stream, a, k, mass)
    return nrm, rinv, a, ar, mass


def netvlad_forward(x, w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask, y, stream):
    """``y`` (N, K * D) from x (N, D, M) with the options."""
    eps = x.dtype.type(eps)  # keep float32 kernels in float32
    n, d, m = x.shape
    k = c.shape[0]
    _, _, _, ar, mass = _encode(x, w, b, c, normalize_input, eps, mask, stream)
    _, total = _chain(ar, x, mass, c, intra_normalize, final_normalize, eps, y.reshape(n, k, d), stream)
    if final_normalize:
        elementwise(nv.scale_rows, n * k * d, stream, y, total, eps)


def netvlad_backward(dy, x, w, b, c, normalize_input, intra_normalize, final_normalize, eps, mask, stream):
    """``(dx (N, D, M), dw, db, dcentroids)`` with the options."""
    eps = x.dtype.type(eps)
    n, d, m = x.shape
    kg = w.shape[0]
    k = c.shape[0]
    dtype = x.dtype
    dx, dw, db, dc = nv.gradient_outputs(x, w, c, stream)
    if n == 0:
        return dx, dw, db, dc
    nrm, rinv, a, ar, mass = _encode(x, w, b, c, normalize_input, eps, mask, stream)
    vn = cuda.device_array((n, k, d), dtype=dtype, stream=stream)
    norms, total = _chain(ar, x, mass, c, intra_normalize, final_normalize, eps, vn, stream)
    dv, q, dc_part = _chain_backward(dy, vn, norms, total, mass, c, intra_normalize, final_normalize, eps, stream)
    # soft-assignment (a masked column of A is 0, so is its dS): as gpu.netvlad's backward
    da = cuda.device_array((n, k, m), dtype=dtype, stream=stream)
    batched(dv, False, x, False, d, False, da, stream)
    ds = cuda.device_array((n, kg, m), dtype=dtype, stream=stream)
    elementwise(nv.logit_gradient, n * m, stream, a, da, rinv, q, k, ds)
    db_part = cuda.device_array((n, kg), dtype=dtype, stream=stream)
    elementwise(nv.row_sums, n * kg, stream, ds, kg, db_part)
    batched(dv, True, a, False, k, False, dx, stream)
    batched(w.reshape(1, kg, d), True, ds, False, kg, True, dx, stream)
    elementwise(nv.scale_columns, n * kg * m, stream, ds, rinv)
    dw_part = cuda.device_array((n, kg, d), dtype=dtype, stream=stream)
    batched(ds, False, x, True, m, False, dw_part, stream)
    elementwise(nv.input_normalization_gradient, n * m, stream, x, nrm, rinv, eps, normalize_input, dx)
    _sum_samples(dw_part, dw, stream)
    _sum_samples(db_part, db, stream)
    _sum_samples(dc_part, dc, stream)
    return dx, dw, db, dc


def aggregate_forward(x, a, c, intra_normalize, final_normalize, eps, y, stream):
    """``y`` (N, K * D) from x (N, D, M) and the assignment a (N, K, M)."""
    eps = x.dtype.type(eps)
    n, d, m = x.shape
    k = c.shape[0]
    mass = cuda.device_array((n, k), dtype=x.dtype, stream=stream)
    elementwise(nv.row_sums, n * k, stream, a, k, mass)
    _, total = _chain(a, x, mass, c, intra_normalize, final_normalize, eps, y.reshape(n, k, d), stream)
    if final_normalize:
        elementwise(nv.scale_rows, n * k * d, stream, y, total, eps)


def aggregate_backward(dy, x, a, c, intra_normalize, final_normalize, eps, stream):
    """``(dx (N, D, M), dassignment (N, K, M), dcentroids)``."""
    eps = x.dtype.type(eps)
    n, d, m = x.shape
    k = c.shape[0]
    dtype = x.dtype
    dx = cuda.device_array((n, d, m), dtype=dtype, stream=stream)
    da = cuda.device_array((n, k, m), dtype=dtype, stream=stream)
    dc = cuda.device_array((k, d), dtype=dtype, stream=stream)
    if n == 0:
        fill(dc, 0, stream)
        return dx, da, dc
    mass = cuda.device_array((n, k), dtype=dtype, stream=stream)
    elementwise(nv.row_sums, n * k, stream, a, k, mass)
    vn = cuda.device_array((n, k, d), dtype=dtype, stream=stream)
    norms, total = _chain(a, x, mass, c, intra_normalize, final_normalize, eps, vn, stream)
    dv, q, dc_part = _chain_backward(dy, vn, norms, total, mass, c, intra_normalize, final_normalize, eps, stream)
    batched(dv, False, x, False, d, False, da, stream)
    elementwise(subtract_rows, n * k * m, stream, da, q)
    batched(dv, True, a, False, k, False, dx, stream)
    _sum_samples(dc_part, dc, stream)
    return dx, da, dc


# ---------------------------------------------------------------- PCA-whitening


def _pca_project(v, projection, bias, eps, z, stream):
    """``z`` (N, Q) = rows of ``v projection^T + bias`` divided by their norms; returns ``(norms, mass)``.

    The bias and the row normalisation are ``gpu.netvlad.center_and_normalize`` on one "cluster"
    per sample with mass -1 and centroid ``bias``: ``z - (-1) bias`` is
    ``z + bias`` exactly.
    """
    n, p = v.shape
    q = projection.shape[0]
    batched(v.reshape(1, n, p), False, projection.reshape(1, q, p), True, p, False, z.reshape(1, n, q), stream)
    mass = cuda.device_array((n, 1), dtype=v.dtype, stream=stream)
    fill(mass, -1, stream)
    norms = cuda.device_array((n, 1), dtype=v.dtype, stream=stream)
    elementwise(nv.center_and_normalize, n, stream, z.reshape(n, 1, q), mass, bias.reshape(1, q), True, eps, norms)
    return norms, mass


def pca_forward(v, projection, bias, eps, y, stream):
    """The PCA layer's forward into ``y`` (N, Q)."""
    _pca_project(v, projection, bias, v.dtype.type(eps), y, stream)


def pca_backward(dy, v, projection, bias, eps, stream):
    """``(dv (N, P), dprojection (Q, P), dbias (Q,))``; the bias gradient is the centroid term of
    ``gpu.netvlad.cluster_gradient``."""
    eps = v.dtype.type(eps)
    n, p = v.shape
    q = projection.shape[0]
    dtype = v.dtype
    dv = cuda.device_array((n, p), dtype=dtype, stream=stream)
    dp = cuda.device_array((q, p), dtype=dtype, stream=stream)
    db = cuda.device_array(q, dtype=dtype, stream=stream)
    if n == 0:
        fill(dp, 0, stream)
        fill(db, 0, stream)
        return dv, dp, db
    z = cuda.device_array((n, q), dtype=dtype, stream=stream)
    norms, mass = _pca_project(v, projection, bias, eps, z, stream)
    zero = cuda.device_array(n, dtype=dtype, stream=stream)
    fill(zero, 0, stream)  # no final normalisation: total and projection unused
    dz = cuda.device_array((n, 1, q), dtype=dtype, stream=stream)
    scratch = cuda.device_array((n, 1), dtype=dtype, stream=stream)
    db_part = cuda.device_array((n, 1, q), dtype=dtype, stream=stream)  # -mass dz = dz
    elementwise(nv.cluster_gradient, n, stream, *nv.flat(z, dy, norms, zero, zero, mass, bias), (n, 1, q), True, False,
                eps, *nv.flat(dz, scratch, db_part))
    batched(dz.reshape(1, n, q), False, projection.reshape(1, q, p), False, q, False, dv.reshape(1, n, p), stream)
    batched(dz.reshape(1, n, q), True, v.reshape(1, n, p), False, n, False, dp.reshape(1, q, p), stream)
    _sum_samples(db_part, db, stream)
    return dv, dp, db
