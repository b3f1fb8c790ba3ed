"""CUDA kernels of NetVLAD (and GhostVLAD), the math of ``lcnumba.cpu.netvlad``.

Layouts (``KG = K + G`` clusters, the last G ghosts), all C-contiguous::

    x          (N, D, M)    M descriptors of size D per sample
    w, b       (KG, D), (KG,)
    centroids  (K, D)
    y, dy      (N, K * D)   cluster-major, viewed as (N, K, D)

Per sample, with ``r_i = max(||x_i||, eps)`` (1 without input
normalisation)::

    S = (W X) diag(1/r) + b 1^T        (KG, M)   batched GEMM
    A = softmax over the KG rows of S
    V = (A_K diag(1/r)) X^T - s c      (K, D)    batched GEMM; s_k = sum_i A_ki

then intra- and global L2 normalisation with ``max(norm, eps)``. The
backward recomputes that forward and adds the GEMMs ``dV X``,
``dV^T A_K + W^T dS`` and ``(dS diag(1/r)) X^T``; the (K, D, M) residuals
are never formed, as on the CPU.

Every matrix product runs through the batched GEMM kernel of
``lcnumba.gpu.gemm`` (``gemm.batched``), the micro-kernel of the
convolution's implicit GEMMs: block tiles of up to 64 x 64, a register
tile per thread, double-buffered chunks staged along each operand's
contiguous axis (so transposed operands are read coalesced too), every
output summed by one thread in the order of the reduction index.
The small steps between the GEMMs (norms, softmax, per-cluster
normalisation) are grid-stride loops with a thread per descriptor or per
cluster, walking their rows in order; the two per-sample sums (the global
norm and the backward's projection ``<vn, dy>``) are block reductions
over a fixed set of lanes and a fixed tree, so their order, too, depends
on the shapes only. Per-sample weight, bias and
centroid gradients go to (N, ...) buffers and are summed over samples in
sample order (``kernels.reduce_splits``): no atomics, bitwise
reproducible. Scratch is O(N (K + G) (M + D)), taken from the stream's
reused scratch buffer (``launch.scratch``): a call allocates only the
outputs it returns.
"""

import math

from .gemm import batched
from .intmath import divmod32
from .jit import cuda, device_function, kernel
from .kernels import reduce_splits
from .launch import block_threads, blockwise, elementwise, fill, scratch


@kernel("void({f}[:, :, ::1], boolean, {f}, {f}[:, ::1], {f}[:, ::1])")
def descriptor_norms(x, normalize_input, eps, nrm, rinv):
    """``nrm[n, i] = ||x[n, :, i]||``, ``rinv = 1 / max(nrm, eps)`` (both 1 without normalisation)."""
    n_total, d_size, m = x.shape
    one = x.dtype.type(1)
    for e in range(cuda.grid(1), n_total * m, cuda.gridsize(1)):
        n, i = divmod32(e, m)
        if normalize_input:
            total = x.dtype.type(0)
            for d in range(d_size):
                v = x[n, d, i]
                total += v * v
            r = math.sqrt(total)
            nrm[n, i] = r
            rinv[n, i] = one / max(r, eps)
        else:
            nrm[n, i] = one
            rinv[n, i] = one


@kernel("void({f}[:, :, ::1], {f}[::1], {f}[:, ::1], int32, {f}[:, :, ::1], {f}[:, :, ::1])")
def softmax_assign(s, b, rinv, k_real, a, ar):
    """``a[n, :, i] = softmax(s[n, :, i] * rinv[n, i] + b)``; ``ar[n, k, i] = a[n, k, i] * rinv[n, i]`` for k < K.

    A thread per descriptor, ``i`` fastest (coalesced); ``a`` may be ``s``. The logits go to ``a`` first and
    the exponentials read them back: with ``s``, ``rinv`` and ``b`` out of the exponential's loop the float64
    kernel fits 64 registers without spilling (``math.exp`` of a double needs many).
    """
    n_total, kg, m = s.shape
    for e in range(cuda.grid(1), n_total * m, cuda.gridsize(1)):
        n, i = divmod32(e, m)
        ri = rinv[n, i]
        top = s[n, 0, i] * ri + b[0]
        for k in range(kg):
            logit = s[n, k, i] * ri + b[k]
            a[n, k, i] = logit
            top = max(top, logit)
        total = s.dtype.type(0)
        for k in range(kg):
            ex = math.exp(a[n, k, i] - top)
            a[n, k, i] = ex
            total += ex
        scale = s.dtype.type(1) / total
        for k in range(kg):
            v = a[n, k, i] * scale
            a[n, k, i] = v
            if k < k_real:
                ar[n, k, i] = v * ri


@kernel("void({f}[:, :, ::1], int32, {f}[:, ::1])")
def row_sums(a, rows, out):
    """``out[n, k] = sum_i a[n, k, i]`` for ``k < rows``, in order of ``i``."""
    n_total = a.shape[0]
    m = a.shape[2]
    for e in range(cuda.grid(1), n_total * rows, cuda.gridsize(1)):
        n, k = divmod32(e, rows)
        total = a.dtype.type(0)
        for i in range(m):
            total += a[n, k, i]
        out[n, k] = total


@kernel("void({f}[:, :, ::1], {f}[:, ::1], {f}[:, ::1], boolean, {f}, {f}[:, ::1])")
def center_and_normalize(v, mass, c, intra_normalize, eps, norms):
    """``v[n, k] -= mass[n, k] c[k]``, its norm to ``norms[n, k]``; ``intra_normalize``: divided by ``max(norm, eps)``.

    NetVLAD's intra-normalisation; with it off (an option, and the PCA layer's bias) the centring alone.
    """
    n_total, k_real, d_size = v.shape
    one = v.dtype.type(1)
    for e in range(cuda.grid(1), n_total * k_real, cuda.gridsize(1)):
        n, k = divmod32(e, k_real)
        s = mass[n, k]
        total = v.dtype.type(0)
        for d in range(d_size):
            val = v[n, k, d] - s * c[k, d]
            v[n, k, d] = val
            total += val * val
        r = math.sqrt(total)
        norms[n, k] = r
        if intra_normalize:
            scale = one / max(r, eps)
            for d in range(d_size):
                v[n, k, d] *= scale


#: Fixed partial sums of a block reduction: lane ``l`` sums terms ``l, l + LANES, ...`` in order, then the
#: lanes are added pairwise in a fixed tree, whatever the number of threads (they take lanes in turn).
LANES = 256


@device_function
def _lane_tree(part, tid, nt):
    """``part[0] = sum(part[:LANES])`` added pairwise in a fixed tree by the block's threads (barriers included)."""
    cuda.syncthreads()
    step = LANES // 2
    while step > 0:
        lane = tid
        while lane < step:
            part[lane] += part[lane + step]
            lane += nt
        cuda.syncthreads()
        step //= 2


@kernel("void({f}[:, ::1], {f}, {f}[::1])")
def global_norms(norms, eps, total):
    """``total[n] = ||vec(Vn)||`` from the intra-normalised rows: ``sum_k (norm_k / max(norm_k, eps))^2``.

    A block per sample, the sum a fixed-order block reduction over ``LANES`` lanes (as ``projection``).
    """
    n_total, k_real = norms.shape
    part = cuda.shared.array(LANES, norms.dtype)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for n in range(cuda.blockIdx.x, n_total, cuda.gridDim.x):
        lane = tid
        while lane < LANES:
            acc = norms.dtype.type(0)
            k = lane
            while k < k_real:
                r = norms[n, k] / max(norms[n, k], eps)
                acc += r * r
                k += LANES
            part[lane] = acc
            lane += nt
        _lane_tree(part, tid, nt)
        if tid == 0:
            total[n] = math.sqrt(part[0])
        cuda.syncthreads()  # the next sample overwrites the lanes


@kernel("void({f}[:, ::1], {f}[::1], {f})")
def scale_rows(y, total, eps):
    """``y[n, :] /= max(total[n], eps)``."""
    n_total, size = y.shape
    one = y.dtype.type(1)
    for e in range(cuda.grid(1), n_total * size, cuda.gridsize(1)):
        n, col = divmod32(e, size)
        y[n, col] *= one / max(total[n], eps)


@kernel("void({f}[:, ::1], {f}[:, ::1], {f}[::1], {f}, {f}[::1])")
def projection(vn, dy, total, eps, proj):
    """``proj[n] = <vn[n], dy[n]> / g^2`` with ``g = max(total, eps)`` when unclamped, else 0; vn, dy (N, K * D).

    A block per sample; the dot product is a fixed-order block reduction over ``LANES`` lanes, so the
    result depends on the shapes only (not on the block or grid size). Lanes read consecutive terms:
    coalesced.
    """
    n_total, size = vn.shape
    part = cuda.shared.array(LANES, vn.dtype)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    zero = vn.dtype.type(0)
    for n in range(cuda.blockIdx.x, n_total, cuda.gridDim.x):
        lane = tid
        while lane < LANES:
            acc = zero
            e = lane
            while e < size:
                acc += vn[n, e] * dy[n, e]
                e += LANES
            part[lane] = acc
            lane += nt
        _lane_tree(part, tid, nt)
        if tid == 0:
            acc = zero
            if total[n] >= eps:
                g = max(total[n], eps)
                acc = part[0] / (g * g)
            proj[n] = acc
        cuda.syncthreads()  # the next sample overwrites the lanes


@kernel("void({f}[::1], {f}[::1], {f}[::1], {f}[::1], {f}[::1], {f}[::1], {f}[::1], UniTuple(int32, 3), boolean, "
        "boolean, {f}, {f}[::1], {f}[::1], {f}[::1])")
def cluster_gradient(vn, dy, norms, total, proj, mass, c, shape, intra_normalize, final_normalize, eps, dv, q,
                     dc_part):
    """Back through the normalisations switched on, to ``dv`` (N, K, D); ``q[n, k] = dv_k . c_k``.

    ``dc_part = -mass dv``: the centroid gradient (the bias gradient of the PCA layer). ``shape = (N, K, D)``;
    the arrays flat: ``vn``, ``dy``, ``dv``, ``dc_part`` (N, K, D), ``norms``, ``mass``, ``q`` (N, K),
    ``total``, ``proj`` (N,), ``c`` (K, D). Flat, a thread's row is one offset: with three-dimensional
    arrays the float64 kernel spilled at 64 registers.
    """
    n_total, k_real, d_size = shape
    one = vn.dtype.type(1)
    for e in range(cuda.grid(1), n_total * k_real, cuda.gridsize(1)):  # e = n * K + k
        n, k = divmod32(e, k_real)
        g = max(total[n], eps)
        pr = proj[n]
        row = e * d_size
        along = vn.dtype.type(0)
        for d in range(d_size):
            val = dy[row + d]
            if final_normalize:
                val = (val - vn[row + d] * pr) / g
            dv[row + d] = val
            along += vn[row + d] * val
        if norms[e] < eps:
            along = vn.dtype.type(0)
        u = one / max(norms[e], eps)
        qk = vn.dtype.type(0)
        s = mass[e]
        c_row = k * d_size
        for d in range(d_size):
            val = dv[row + d]
            if intra_normalize:
                val = (val - vn[row + d] * along) * u
            dv[row + d] = val
            qk += val * c[c_row + d]
            dc_part[row + d] = -s * val
        q[e] = qk


@kernel("void({f}[:, :, ::1], {f}[:, :, ::1], {f}[:, ::1], {f}[:, ::1], int32, {f}[:, :, ::1])")
def logit_gradient(a, da, rinv, q, k_real, ds):
    """``ds[n, k, i] = a (dA - t)`` with ``dA = da * rinv - q`` (0 for ghosts), ``t_i = sum_k a dA``."""
    n_total, kg, m = a.shape
    for e in range(cuda.grid(1), n_total * m, cuda.gridsize(1)):
        n, i = divmod32(e, m)
        ri = rinv[n, i]
        t = a.dtype.type(0)
        for k in range(k_real):
            t += a[n, k, i] * (da[n, k, i] * ri - q[n, k])
        for k in range(kg):
            if k < k_real:
                ds[n, k, i] = a[n, k, i] * (da[n, k, i] * ri - q[n, k] - t)
            else:
                ds[n, k, i] = -a[n, k, i] * t


@kernel("void({f}[:, :, ::1], {f}[:, ::1])")
def scale_columns(a, rinv):
    """``a[n, k, i] *= rinv[n, i]``."""
    n_total, rows, m = a.shape
    for e in range(cuda.grid(1), n_total * rows * m, cuda.gridsize(1)):
        rest, i = divmod32(e, m)
        n, k = divmod32(rest, rows)
        a[n, k, i] *= rinv[n, i]


@kernel("void({f}[:, :, ::1], {f}[:, ::1], {f}[:, ::1], {f}, boolean, {f}[:, :, ::1])")
def input_normalization_gradient(x, nrm, rinv, eps, normalize_input, dx):
    """``dx_i = dxn_i / r_i - x_i (x_i . dxn_i) / r_i^3`` (the projection only if unclamped), in place."""
    n_total, d_size, m = x.shape
    for e in range(cuda.grid(1), n_total * m, cuda.gridsize(1)):
        n, i = divmod32(e, m)
        if not normalize_input:
            continue
        ri = rinv[n, i]
        dots = x.dtype.type(0)
        for d in range(d_size):
            dots += x[n, d, i] * dx[n, d, i]
        beta = ri * ri * ri * dots
        if nrm[n, i] < eps:
            beta = x.dtype.type(0)
        for d in range(d_size):
            dx[n, d, i] = dx[n, d, i] * ri - beta * x[n, d, i]


# ---------------------------------------------------------------- drivers


def flat(*arrays):
    """The C-contiguous device ``arrays`` as one-dimensional views, for kernels that take them flat."""
    return tuple(a.reshape(-1) for a in arrays)


def _encode_shapes(n, d, m, kg, k):
    """Shapes of ``_encode``'s intermediates: nrm, rinv (N, M), a (N, KG, M), ar (N, K, M), mass (N, K)."""
    return [(n, m), (n, m), (n, kg, m), (n, k, m), (n, k)]


def _encode(x, w, b, c, normalize_input, eps, nrm, rinv, a, ar, mass, stream):
    """The forward up to the soft-assignment and its mass, into the given buffers (``_encode_shapes``)."""
    n, d, m = x.shape
    kg = w.shape[0]
    k = c.shape[0]
    elementwise(descriptor_norms, n * m, stream, x, normalize_input, eps, nrm, rinv)
    batched(w.reshape(1, kg, d), False, x, False, d, False, a, stream)
    elementwise(softmax_assign, n * m, stream, a, b, rinv, k, a, ar)
    elementwise(row_sums, n * k, stream, a, k, mass)


def forward(x, w, b, c, normalize_input, eps, y, stream):
    """``y`` (N, K * D) from x (N, D, M)."""
    eps = x.dtype.type(eps)  # keep float32 kernels in float32
    n, d, m = x.shape
    kg = w.shape[0]
    k = c.shape[0]
    nrm, rinv, a, ar, mass, norms, total = scratch(_encode_shapes(n, d, m, kg, k) + [(n, k), (n,)], x.dtype, stream)
    _encode(x, w, b, c, normalize_input, eps, nrm, rinv, a, ar, mass, stream)
    v = y.reshape(n, k, d)
    batched(ar, False, x, True, m, False, v, stream)
    elementwise(center_and_normalize, n * k, stream, v, mass, c, True, eps, norms)
    blockwise(global_norms, n, block_threads(LANES), stream, norms, eps, total)
    elementwise(scale_rows, n * k * d, stream, y, total, eps)


def gradient_outputs(x, w, c, stream):
    """The backward's outputs ``(dx (N, D, M), dw (KG, D), db (KG,), dc (K, D))``; the sums zeroed when N = 0."""
    n, d, m = x.shape
    kg = w.shape[0]
    dtype = x.dtype
    dx = cuda.device_array((n, d, m), dtype=dtype, stream=stream)
    dw = cuda.device_array((kg, d), dtype=dtype, stream=stream)
    db = cuda.device_array(kg, dtype=dtype, stream=stream)
    dc = cuda.device_array(c.shape, dtype=dtype, stream=stream)
    if n == 0:
        for array in (dw, db, dc):
            fill(array, 0, stream)
    return dx, dw, db, dc


def backward(dy, x, w, b, c, normalize_input, eps, stream):
    """``(dx (N, D, M), dw, db, dcentroids)`` from dy (N, K * D)."""
    eps = x.dtype.type(eps)  # keep float32 kernels in float32
    n, d, m = x.shape
    kg = w.shape[0]
    k = c.shape[0]
    dtype = x.dtype
    dx, dw, db, dc = gradient_outputs(x, w, c, stream)
    if n == 0:
        return dx, dw, db, dc
    shapes = _encode_shapes(n, d, m, kg, k) + [
        (n, k, d), (n, k), (n,), (n,),  # vn, norms, total, proj
        (n, k, d), (n, k), (n, k, d),  # dv, q, dc_part
        (n, k, m), (n, kg, m), (n, kg), (n, kg, d),  # da, ds, db_part, dw_part
    ]
    (nrm, rinv, a, ar, mass, vn, norms, total, proj, dv, q, dc_part, da, ds, db_part,
     dw_part) = scratch(shapes, dtype, stream)
    _encode(x, w, b, c, normalize_input, eps, nrm, rinv, a, ar, mass, stream)
    batched(ar, False, x, True, m, False, vn, stream)
    elementwise(center_and_normalize, n * k, stream, vn, mass, c, True, eps, norms)
    blockwise(global_norms, n, block_threads(LANES), stream, norms, eps, total)
    # global and intra-normalisation, aggregation: dv, q_k = dv_k . c_k, and the centroid gradient
    blockwise(projection, n, block_threads(LANES), stream, vn.reshape(n, k * d), dy, total, eps, proj)
    elementwise(cluster_gradient, n * k, stream, *flat(vn, dy, norms, total, proj, mass, c), (n, k, d), True, True,
                eps, *flat(dv, q, dc_part))
    # soft-assignment: dA = (dv X) diag(1/r) - q 1^T, then through the softmax to dS
    batched(dv, False, x, False, d, False, da, stream)
    elementwise(logit_gradient, n * m, stream, a, da, rinv, q, k, ds)
    elementwise(row_sums, n * kg, stream, ds, kg, db_part)
    # dXn = dv^T A_K + W^T dS, then dW = (dS diag(1/r)) X^T
    batched(dv, True, a, False, k, False, dx, stream)
    batched(w.reshape(1, kg, d), True, ds, False, kg, True, dx, stream)
    elementwise(scale_columns, n * kg * m, stream, ds, rinv)
    batched(ds, False, x, True, m, False, dw_part, stream)
    # input normalisation
    elementwise(input_normalization_gradient, n * m, stream, x, nrm, rinv, eps, normalize_input, dx)
    # per-sample partials summed in sample order
    elementwise(reduce_splits, kg * d, stream, dw_part.reshape(n, kg * d), False, dw.reshape(kg * d))
    elementwise(reduce_splits, kg, stream, db_part, False, db)
    elementwise(reduce_splits, k * d, stream, dc_part.reshape(n, k * d), False, dc.reshape(k * d))
    return dx, dw, db, dc
