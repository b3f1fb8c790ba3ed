"""Reference NetVLAD and GhostVLAD (Arandjelovic et al. 2016; Zhong et al. 2018): forward and backward.

The definition, stage by stage, in float64 with the (N, K, D, M) residual
tensor formed explicitly. The backward is the chain rule through the same
stages, each written as the textbook gradient of that stage alone. The
same stages make the references of NetVLAD's parts: ``vlad_aggregate_*``
(the aggregation and normalisations for a given assignment) and
``netvlad_pca_*`` (the PCA-whitening layer), with ``netvlad_pca_fit`` as the
plain definition of addPCA.m's fit (eigenvectors of the covariance matrix).
"""

import numpy as np

__all__ = ["netvlad_forward", "netvlad_backward", "vlad_aggregate_forward", "vlad_aggregate_backward",
           "netvlad_pca_fit", "netvlad_pca_forward", "netvlad_pca_backward"]


def _l2_normalize(v, axis, eps):
    """``v / max(||v||, eps)`` along ``axis``, and the unclamped norms."""
    norm = np.sqrt(np.sum(v * v, axis=axis, keepdims=True))
    return v / np.maximum(norm, eps), norm


def _l2_normalize_backward(g, v_normalized, norm, eps, axis):
    """Gradient through ``u = v / max(||v||, eps)``: ``(g - u (u . g)) / ||v||``, or ``g / eps`` when clamped."""
    along = np.sum(v_normalized * g, axis=axis, keepdims=True)
    unclamped = norm >= eps
    return np.where(unclamped, (g - v_normalized * along) / np.maximum(norm, eps), g / eps)


def _aggregate_stages(xn, a_real, c, intra_normalize, final_normalize, eps):
    """V = sum_m a_km (xn_m - c_k), then the optional intra- and final normalisations."""
    n = xn.shape[0]
    residual = xn[:, None, :, :] - c[None, :, :, None]  # (N, K, D, M)
    v = np.einsum("nkm,nkdm->nkd", a_real, residual)
    vn, v_norm = _l2_normalize(v, 2, eps) if intra_normalize else (v, None)
    y, y_norm = _l2_normalize(vn.reshape(n, -1), 1, eps) if final_normalize else (vn.reshape(n, -1), None)
    return dict(residual=residual, vn=vn, v_norm=v_norm, y=y, y_norm=y_norm)


def _aggregate_backward(dy, s, a_real, intra_normalize, final_normalize, eps):
    """``(dxn, da_real, dc)`` from dy through the normalisations and the aggregation."""
    dy = np.asarray(dy, dtype=np.float64).reshape(s["y"].shape)
    dvn = _l2_normalize_backward(dy, s["y"], s["y_norm"], eps, 1) if final_normalize else dy
    dvn = dvn.reshape(s["vn"].shape)
    dv = _l2_normalize_backward(dvn, s["vn"], s["v_norm"], eps, 2) if intra_normalize else dvn
    # aggregation v_kd = sum_m a_km (xn_dm - c_kd)
    da_real = np.einsum("nkd,nkdm->nkm", dv, s["residual"])
    dxn = np.einsum("nkd,nkm->ndm", dv, a_real)
    dc = -np.einsum("nkd,nkm->kd", dv, a_real)
    return dxn, da_real, dc


def _valid(mask, n, m):
    """The mask as float64 (N, 1, M): 1 for a valid descriptor, 0 for a masked one."""
    if mask is None:
        return np.ones((n, 1, m))
    return (np.asarray(mask).reshape(n, 1, m) != 0).astype(np.float64)


def _netvlad_stages(x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps):
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape[:2]
    x = x.reshape(n, d, -1)
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    k = c.shape[0]
    if w.shape[1] != d or c.shape[1] != d or b.shape != (w.shape[0],) or not 1 <= k <= w.shape[0]:
        raise ValueError(f"shapes: x {x.shape}, w {w.shape}, b {b.shape}, centroids {c.shape} do not fit")
    if normalize_input:
        xn, x_norm = _l2_normalize(x, 1, eps)
    else:
        xn, x_norm = x, None
    logits = np.einsum("kd,ndm->nkm", w, xn) + b[None, :, None]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    valid = _valid(mask, n, x.shape[2])
    a = valid * e / e.sum(axis=1, keepdims=True)  # (N, K + G, M); masked descriptors are assigned nowhere
    s = _aggregate_stages(xn, a[:, :k], c, intra_normalize, final_normalize, eps)
    return dict(s, x=x, w=w, c=c, xn=xn, x_norm=x_norm, a=a, valid=valid, k=k)


def netvlad_forward(x, w, b, centroids, *, normalize_input=True, intra_normalize=True, final_normalize=True,
                    mask=None, eps=1e-12):
    """Reference NetVLAD / GhostVLAD forward.

    Parameters
    ----------
    x : ndarray (N, D, H, W) or (N, D, M)
        M = H * W local descriptors of size D.
    w : ndarray (K + G, D)
        Soft-assignment weights of the K real and G ghost clusters.
    b : ndarray (K + G,)
    centroids : ndarray (K, D)
    normalize_input : bool
        L2-normalise each descriptor first.
    intra_normalize, final_normalize : bool
        L2-normalise each cluster's row of V; then the flattened V.
    mask : ndarray (N, M) or (N, H, W), optional
        Nonzero for a valid descriptor; a masked one has assignment 0.
    eps : float
        Norms are ``max(||v||, eps)``.

    Returns
    -------
    y : ndarray (N, K * D)
        Cluster-major (index ``k * D + d``); computed in float64, returned in
        the dtype of ``x``.
    """
    x = np.asarray(x)
    return _netvlad_stages(x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask,
                           eps)["y"].astype(x.dtype)


def netvlad_backward(dy, x, w, b, centroids, *, normalize_input=True, intra_normalize=True, final_normalize=True,
                     mask=None, eps=1e-12):
    """Reference gradients of ``netvlad_forward``, stage by stage.

    Parameters
    ----------
    dy : ndarray (N, K * D)
    x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps
        As in ``netvlad_forward``.

    Returns
    -------
    dx : ndarray of the shape of ``x``
    dw : ndarray (K + G, D)
    db : ndarray (K + G,)
    dcentroids : ndarray (K, D)
        All in the dtype of ``x``.
    """
    x = np.asarray(x)
    s = _netvlad_stages(x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps)
    k = s["k"]
    dxn, da_real, dc = _aggregate_backward(dy, s, s["a"][:, :k], intra_normalize, final_normalize, eps)
    # softmax over all K + G clusters, times the mask; ghosts are not aggregated, their dA is 0
    da = np.zeros_like(s["a"])
    da[:, :k] = da_real
    softmax = s["a"]  # the masked softmax: valid * p, so a * (da - sum(a da)) is valid * p * (da - sum(p da))
    dlogits = softmax * (da - np.sum(softmax * da, axis=1, keepdims=True))
    # logits = w xn + b
    dw = np.einsum("nkm,ndm->kd", dlogits, s["xn"])
    db = dlogits.sum(axis=(0, 2))
    dxn = dxn + np.einsum("kd,nkm->ndm", s["w"], dlogits)
    # input normalisation xn_m = x_m / max(||x_m||, eps)
    dx = _l2_normalize_backward(dxn, s["xn"], s["x_norm"], eps, 1) if normalize_input else dxn
    dtype = x.dtype
    return dx.reshape(x.shape).astype(dtype), dw.astype(dtype), db.astype(dtype), dc.astype(dtype)


# ---------------------------------------------------------------- the aggregation core alone


def _aggregate_inputs(x, assignment, centroids):
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape[:2]
    c = np.asarray(centroids, dtype=np.float64)
    a = np.asarray(assignment, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != d or a.shape != (n, c.shape[0]) + x.shape[2:]:
        raise ValueError(f"shapes: x {x.shape}, assignment {a.shape}, centroids {c.shape} do not fit")
    return x.reshape(n, d, -1), a.reshape(n, c.shape[0], -1), c


def vlad_aggregate_forward(x, assignment, centroids, *, intra_normalize=True, final_normalize=True, eps=1e-12):
    """Reference VLAD aggregation of a given assignment: ``V_kd = sum_m a_km (x_dm - c_kd)``, then the normalisations.

    Parameters
    ----------
    x : ndarray (N, D, H, W) or (N, D, M)
    assignment : ndarray (N, K, H, W) or (N, K, M)
    centroids : ndarray (K, D)
    intra_normalize, final_normalize, eps
        As in ``netvlad_forward``.

    Returns
    -------
    y : ndarray (N, K * D)
        In the dtype of ``x``.
    """
    xs, a, c = _aggregate_inputs(x, assignment, centroids)
    return _aggregate_stages(xs, a, c, intra_normalize, final_normalize, eps)["y"].astype(np.asarray(x).dtype)


def vlad_aggregate_backward(dy, x, assignment, centroids, *, intra_normalize=True, final_normalize=True, eps=1e-12):
    """Reference gradients of ``vlad_aggregate_forward``.

    Parameters
    ----------
    dy : ndarray (N, K * D)
        Gradient of the loss with respect to ``y``.
    x, assignment, centroids, intra_normalize, final_normalize, eps
        As given to the forward.

    Returns
    -------
    dx, dassignment, dcentroids : ndarray
        Shaped as ``x``, ``assignment`` and ``centroids``, in the dtype of ``x``.
    """
    xs, a, c = _aggregate_inputs(x, assignment, centroids)
    s = _aggregate_stages(xs, a, c, intra_normalize, final_normalize, eps)
    dx, da, dc = _aggregate_backward(dy, s, a, intra_normalize, final_normalize, eps)
    dtype = np.asarray(x).dtype
    return (dx.reshape(np.shape(x)).astype(dtype), da.reshape(np.shape(assignment)).astype(dtype),
            dc.astype(dtype))


# ---------------------------------------------------------------- PCA-whitening


def netvlad_pca_fit(vectors, dim, whiten=True):
    """Reference PCA-whitening fit (addPCA.m): the leading eigenvectors of the covariance, largest first.

    Parameters
    ----------
    vectors : ndarray (N, P)
    dim : int
    whiten : bool
        Divide each direction by ``sqrt(eigenvalue + 1e-9)``.

    Returns
    -------
    projection : ndarray (dim, P)
        Each row's entry of largest magnitude positive (an eigenvector's sign is arbitrary).
    bias : ndarray (dim,)
        ``-projection @ mean``.
    """
    v = np.asarray(vectors, dtype=np.float64)
    mu = v.mean(axis=0)
    covariance = np.cov(v, rowvar=False, ddof=1).reshape(v.shape[1], v.shape[1])
    lams, u = np.linalg.eigh(covariance)
    order = np.argsort(lams)[::-1][:dim]
    lams, u = lams[order], u[:, order]
    u = u * np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(dim)])
    if whiten:
        u = u / np.sqrt(np.maximum(lams, 0) + 1e-9)
    dtype = np.asarray(vectors).dtype
    return u.T.astype(dtype), (-(u.T @ mu)).astype(dtype)


def netvlad_pca_forward(v, projection, bias, *, eps=1e-12):
    """Reference PCA layer: ``y_n = (projection v_n + bias) / max(||.||, eps)``.

    Parameters
    ----------
    v : ndarray (N, P)
        NetVLAD vectors.
    projection : ndarray (dim, P)
    bias : ndarray (dim,)
    eps : float
        Floor of the norm divided by.

    Returns
    -------
    y : ndarray (N, dim)
        In the dtype of ``v``.
    """
    z = np.asarray(v, dtype=np.float64) @ np.asarray(projection, dtype=np.float64).T + np.asarray(bias, np.float64)
    return _l2_normalize(z, 1, eps)[0].astype(np.asarray(v).dtype)


def netvlad_pca_backward(dy, v, projection, bias, *, eps=1e-12):
    """Reference gradients of ``netvlad_pca_forward``.

    Parameters
    ----------
    dy : ndarray (N, dim)
        Gradient of the loss with respect to ``y``.
    v, projection, bias, eps
        As given to the forward.

    Returns
    -------
    dv, dprojection, dbias : ndarray
        Shaped as ``v``, ``projection`` and ``bias``, in the dtype of ``v``.
    """
    v64 = np.asarray(v, dtype=np.float64)
    p = np.asarray(projection, dtype=np.float64)
    z = v64 @ p.T + np.asarray(bias, np.float64)
    y, norm = _l2_normalize(z, 1, eps)
    dz = _l2_normalize_backward(np.asarray(dy, dtype=np.float64), y, norm, eps, 1)
    dtype = np.asarray(v).dtype
    return (dz @ p).astype(dtype), (dz.T @ v64).astype(dtype), dz.sum(axis=0).astype(dtype)
