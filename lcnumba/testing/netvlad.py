"""Reference NetVLAD and GhostVLAD (Arandjelovic et al. 2016; Zhong et al. 2018): forward and backward.

The definition, stage by stage, in float64 with the (N, K, D, M) residual
tensor formed explicitly. The backward is the chain rule through the same
stages, each written as the textbook gradient of that stage alone.
"""

import numpy as np

__all__ = ["netvlad_forward", "netvlad_backward"]


def _l2_normalize(v, axis, eps):
    """``v / max(||v||, eps)`` along ``axis``, and the unclamped norms."""
    norm = np.sqrt(np.sum(v * v, axis=axis, keepdims=True))
    return v / np.maximum(norm, eps), norm


def _l2_normalize_backward(g, v_normalized, norm, eps, axis):
    """Gradient through ``u = v / max(||v||, eps)``: ``(g - u (u . g)) / ||v||``, or ``g / eps`` when clamped."""
    along = np.sum(v_normalized * g, axis=axis, keepdims=True)
    unclamped = norm >= eps
    return np.where(unclamped, (g - v_normalized * along) / np.maximum(norm, eps), g / eps)


def _netvlad_stages(x, w, b, centroids, normalize_input, eps):
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
    a = e / e.sum(axis=1, keepdims=True)  # (N, K + G, M)
    residual = xn[:, None, :, :] - c[None, :, :, None]  # (N, K, D, M)
    v = np.einsum("nkm,nkdm->nkd", a[:, :k], residual)
    vn, v_norm = _l2_normalize(v, 2, eps)
    y, y_norm = _l2_normalize(vn.reshape(n, -1), 1, eps)
    return dict(x=x, w=w, c=c, xn=xn, x_norm=x_norm, a=a, residual=residual, vn=vn, v_norm=v_norm,
                y=y, y_norm=y_norm, k=k)


def netvlad_forward(x, w, b, centroids, *, normalize_input=True, eps=1e-12):
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
    eps : float
        Norms are ``max(||v||, eps)``.

    Returns
    -------
    y : ndarray (N, K * D)
        Cluster-major (index ``k * D + d``); computed in float64, returned in
        the dtype of ``x``.
    """
    x = np.asarray(x)
    return _netvlad_stages(x, w, b, centroids, normalize_input, eps)["y"].astype(x.dtype)


def netvlad_backward(dy, x, w, b, centroids, *, normalize_input=True, eps=1e-12):
    """Reference gradients of ``netvlad_forward``, stage by stage.

    Parameters
    ----------
    dy : ndarray (N, K * D)
    x, w, b, centroids, normalize_input, eps
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
    s = _netvlad_stages(x, w, b, centroids, normalize_input, eps)
    n, k = s["x"].shape[0], s["k"]
    dy = np.asarray(dy, dtype=np.float64).reshape(s["y"].shape)
    # global normalisation y = vec(vn) / max(||vec(vn)||, eps)
    dvn = _l2_normalize_backward(dy, s["y"], s["y_norm"], eps, 1).reshape(s["vn"].shape)
    # intra-normalisation vn_k = v_k / max(||v_k||, eps)
    dv = _l2_normalize_backward(dvn, s["vn"], s["v_norm"], eps, 2)
    # aggregation v_kd = sum_m a_km (xn_dm - c_kd)
    a_real = s["a"][:, :k]
    da_real = np.einsum("nkd,nkdm->nkm", dv, s["residual"])
    dxn = np.einsum("nkd,nkm->ndm", dv, a_real)
    dc = -np.einsum("nkd,nkm->kd", dv, a_real)
    # softmax over all K + G clusters; ghosts are not aggregated, their dA is 0
    da = np.zeros_like(s["a"])
    da[:, :k] = da_real
    dlogits = s["a"] * (da - np.sum(s["a"] * da, axis=1, keepdims=True))
    # logits = w xn + b
    dw = np.einsum("nkm,ndm->kd", dlogits, s["xn"])
    db = dlogits.sum(axis=(0, 2))
    dxn = dxn + np.einsum("kd,nkm->ndm", s["w"], dlogits)
    # input normalisation xn_m = x_m / max(||x_m||, eps)
    dx = _l2_normalize_backward(dxn, s["xn"], s["x_norm"], eps, 1) if normalize_input else dxn
    dtype = x.dtype
    return dx.reshape(x.shape).astype(dtype), dw.astype(dtype), db.astype(dtype), dc.astype(dtype)
