"""Plain-NumPy reference implementations and gradient checks.

These are slow, obviously-correct versions of every op, written
independently of the Numba kernels (loops, ``sliding_window_view`` and
``einsum``), for tests and for users checking their own layers.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import geometry

# ================================================================ convolution family
#
# One generic 2-D convolution with a filter bank per output position does the
# arithmetic for all three families: a family only decides which bank
# position (i, j) uses (``_position_weights``) and how per-position weight and
# bias gradients fold back onto the banks (``_fold_positions``). Everything is
# computed in float64 and cast to the dtype of the inputs at the end, so the
# float32 references are more accurate than float32 kernels can be.

_SHARINGS = ("shared", "tiled", "local")


def _float_result_dtype(*arrays):
    dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64 arrays, got dtype {dtype}")
    return dtype


def _require_ndim(array, name, ndim):
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    return array


def _require_shape(actual, expected, name, why=""):
    if tuple(actual) != tuple(expected):
        suffix = f" ({why})" if why else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{suffix}, got shape {tuple(actual)}")


def _bank_shape(w_shape, sharing):
    """``(F, C/groups, KH, KW)`` of one filter bank of a weight of ``w_shape``."""
    return tuple(w_shape[-4:]) if sharing != "shared" else tuple(w_shape)


def _geometry(x_shape, w_shape, sharing, stride, padding, dilation, groups):
    f, cg, kh, kw = _bank_shape(w_shape, sharing)
    g = geometry.conv_geometry(tuple(x_shape), f, (kh, kw), stride, padding, dilation, groups)
    if cg * g.groups != g.c:
        raise ValueError(
            f"w: expected {g.c // g.groups} input channels per group (C={g.c}, groups={g.groups}), got {cg}"
        )
    if sharing == "local":
        _require_shape(w_shape[:2], (g.oh, g.ow), "w", "the leading axes of a local weight are the output size")
    return g


def _tile_indices(size, tiles, tile_mode):
    """Tile of each of ``size`` output rows (or columns) for ``tiles`` tiles along the axis."""
    index = np.arange(size)
    if tile_mode == "periodic":
        return index % tiles
    if tile_mode == "block":
        return index * tiles // size
    raise ValueError(f"tile_mode: expected one of ('periodic', 'block'), got {tile_mode!r}")


def _tile_grid(oh, ow, tiles_hw, sharing, tile_mode):
    """Index arrays ``(rows, cols)``, both (OH, OW), selecting the bank of every output position."""
    if sharing == "shared":
        rows, cols = np.zeros(oh, dtype=np.intp), np.zeros(ow, dtype=np.intp)
    elif sharing == "local":
        rows, cols = np.arange(oh), np.arange(ow)
    else:
        rows, cols = _tile_indices(oh, tiles_hw[0], tile_mode), _tile_indices(ow, tiles_hw[1], tile_mode)
    return np.broadcast_to(rows[:, None], (oh, ow)), np.broadcast_to(cols[None, :], (oh, ow))


def _position_weights(w, g, sharing, tile_mode):
    """The weight as one bank per output position, ``(OH, OW, F, C/groups, KH, KW)``."""
    if sharing == "shared":
        return np.broadcast_to(w, (g.oh, g.ow) + w.shape)
    rows, cols = _tile_grid(g.oh, g.ow, w.shape[:2], sharing, tile_mode)
    return w[rows, cols]


def _position_bias(b, g, sharing, tile_mode):
    """The bias as one value per filter and output position, ``(F, OH, OW)``."""
    if sharing == "shared":
        return np.broadcast_to(b[:, None, None], (g.f, g.oh, g.ow))
    rows, cols = _tile_grid(g.oh, g.ow, b.shape[1:], sharing, tile_mode)
    return b[:, rows, cols]


def _fold_positions(per_position, bank_hw, sharing, tile_mode, axis):
    """Sum a per-position gradient onto the banks that the positions share.

    ``per_position`` has the output axes (OH, OW) at ``axis, axis + 1``; the
    result has ``bank_hw`` there (``(TH, TW)`` or ``(OH, OW)``) or, for a
    shared weight, neither.
    """
    if sharing == "shared":
        return per_position.sum(axis=(axis, axis + 1))
    if sharing == "local":
        return per_position
    moved = np.moveaxis(per_position, (axis, axis + 1), (0, 1))
    rows, cols = _tile_grid(moved.shape[0], moved.shape[1], bank_hw, sharing, tile_mode)
    folded = np.zeros(tuple(bank_hw) + moved.shape[2:], dtype=moved.dtype)
    # Positions that share a tile repeat in (rows, cols): an unbuffered add.
    np.add.at(folded, (rows, cols), moved)
    return np.moveaxis(folded, (0, 1), (axis, axis + 1))


def _windows(x, g):
    """The receptive fields of every output position, ``(N, C, OH, OW, KH, KW)`` (a view of a padded copy)."""
    padded = np.pad(x, ((0, 0), (0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right)))
    extent = (g.dilation_h * (g.kh - 1) + 1, g.dilation_w * (g.kw - 1) + 1)
    view = sliding_window_view(padded, extent, axis=(2, 3))
    view = view[:, :, :: g.stride_h, :: g.stride_w, :: g.dilation_h, :: g.dilation_w]
    return view[:, :, : g.oh, : g.ow]


def _grouped(array, axis, groups):
    """Split axis ``axis`` of ``array`` into ``(groups, size // groups)``."""
    shape = array.shape
    return array.reshape(shape[:axis] + (groups, shape[axis] // groups) + shape[axis + 1 :])


def _forward(x, w, b, g, sharing, tile_mode):
    wpos = _grouped(_position_weights(w.astype(np.float64), g, sharing, tile_mode), 2, g.groups)
    windows = _grouped(_windows(x.astype(np.float64), g), 1, g.groups)
    y = np.einsum("ngcijkl,ijgfckl->ngfij", windows, wpos, optimize=True)
    y = y.reshape(g.n, g.f, g.oh, g.ow)
    if b is not None:
        y = y + _position_bias(b.astype(np.float64), g, sharing, tile_mode)
    return y


def _backward_input(dy, w, g, sharing, tile_mode):
    # The explicit transpose of the forward: every output position scatters
    # w^T dy back over its receptive field, one kernel tap at a time (within a
    # tap the strided destinations are distinct, so a sliced += is exact).
    wpos = _grouped(_position_weights(w.astype(np.float64), g, sharing, tile_mode), 2, g.groups)
    dyg = _grouped(dy.astype(np.float64), 1, g.groups)
    hp, wp = g.h + g.pad_top + g.pad_bottom, g.w + g.pad_left + g.pad_right
    dx_padded = np.zeros((g.n, g.groups, g.c // g.groups, hp, wp))
    rows_end, cols_end = (g.oh - 1) * g.stride_h + 1, (g.ow - 1) * g.stride_w + 1
    for a in range(g.kh):
        for c in range(g.kw):
            r0, c0 = a * g.dilation_h, c * g.dilation_w
            contribution = np.einsum("ngfij,ijgfc->ngcij", dyg, wpos[..., a, c], optimize=True)
            dx_padded[..., r0 : r0 + rows_end : g.stride_h, c0 : c0 + cols_end : g.stride_w] += contribution
    dx_padded = dx_padded.reshape(g.n, g.c, hp, wp)
    return dx_padded[:, :, g.pad_top : g.pad_top + g.h, g.pad_left : g.pad_left + g.w]


def _backward_weight(dy, x, g, w_shape, sharing, tile_mode):
    windows = _grouped(_windows(x.astype(np.float64), g), 1, g.groups)
    dyg = _grouped(dy.astype(np.float64), 1, g.groups)
    if sharing == "shared":
        dw = np.einsum("ngfij,ngcijkl->gfckl", dyg, windows, optimize=True)
        return dw.reshape(w_shape)
    per_position = np.einsum("ngfij,ngcijkl->ijgfckl", dyg, windows, optimize=True)
    per_position = per_position.reshape((g.oh, g.ow) + tuple(w_shape[2:]))
    return _fold_positions(per_position, w_shape[:2], sharing, tile_mode, axis=0)


def _backward_bias(dy, bias_shape, sharing, tile_mode):
    dy = dy.astype(np.float64)
    n, f, oh, ow = dy.shape
    if sharing == "shared":
        _require_shape(bias_shape, (f,), "bias_shape")
        return dy.sum(axis=(0, 2, 3))
    if sharing == "local":
        _require_shape(bias_shape, (f, oh, ow), "bias_shape", "a local bias has the output size")
        return dy.sum(axis=0)
    if len(bias_shape) != 3 or bias_shape[0] != f:
        raise ValueError(f"bias_shape: expected (F={f}, TH, TW), got {tuple(bias_shape)}")
    return _fold_positions(dy.sum(axis=0), bias_shape[1:], sharing, tile_mode, axis=1)


def _check_bias(b, g, w_shape, sharing):
    if b is None:
        return None
    if sharing == "shared":
        expected = (g.f,)
    elif sharing == "tiled":
        expected = (g.f,) + tuple(w_shape[:2])
    else:
        expected = (g.f, g.oh, g.ow)
    b = np.asarray(b)
    _require_shape(b.shape, expected, "b")
    return b


def _check_tile_mode(tile_mode):
    if tile_mode not in geometry.TILE_MODES:
        raise ValueError(f"tile_mode: expected one of {geometry.TILE_MODES}, got {tile_mode!r}")
    return tile_mode


# ---------------------------------------------------------------- generic 2-D entry points


def _ref_forward(x, w, b, sharing, params, tile_mode="periodic"):
    x = _require_ndim(x, "x", 4)
    w = _require_ndim(w, "w", 4 if sharing == "shared" else 6)
    g = _geometry(x.shape, w.shape, sharing, *params)
    b = _check_bias(b, g, w.shape, sharing)
    return _forward(x, w, b, g, sharing, tile_mode).astype(_float_result_dtype(x, w, b))


def _ref_backward_input(dy, w, input_shape, sharing, params, tile_mode="periodic"):
    dy = _require_ndim(dy, "dy", 4)
    w = _require_ndim(w, "w", 4 if sharing == "shared" else 6)
    g = _geometry(input_shape, w.shape, sharing, *params)
    _require_shape(dy.shape, g.output_shape, "dy", "the forward output shape")
    return _backward_input(dy, w, g, sharing, tile_mode).astype(_float_result_dtype(dy, w))


def _ref_backward_weight(dy, x, weight_shape, sharing, params, tile_mode="periodic"):
    dy = _require_ndim(dy, "dy", 4)
    x = _require_ndim(x, "x", 4)
    weight_shape = tuple(weight_shape)
    g = _geometry(x.shape, weight_shape, sharing, *params)
    _require_shape(dy.shape, g.output_shape, "dy", "the forward output shape")
    return _backward_weight(dy, x, g, weight_shape, sharing, tile_mode).astype(_float_result_dtype(dy, x))


def _ref_backward_bias(dy, bias_shape, sharing, tile_mode="periodic"):
    dy = _require_ndim(dy, "dy", 4)
    return _backward_bias(dy, tuple(bias_shape), sharing, tile_mode).astype(_float_result_dtype(dy))


def _ref_backward(dy, x, w, b, sharing, params, tile_mode="periodic"):
    x = _require_ndim(x, "x", 4)
    w = _require_ndim(w, "w", 4 if sharing == "shared" else 6)
    dx = _ref_backward_input(dy, w, x.shape, sharing, params, tile_mode)
    dw = _ref_backward_weight(dy, x, w.shape, sharing, params, tile_mode)
    db = None if b is None else _ref_backward_bias(dy, np.shape(b), sharing, tile_mode)
    return dx, dw, db


# ---------------------------------------------------------------- conv2d


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference 2-D convolution (cross-correlation, as in PyTorch).

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    w : ndarray (F, C/groups, KH, KW)
    b : ndarray (F,) or None
    stride, dilation : int or pair of ints
    padding : int, pair, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``
    groups : int
        Filters ``g*F/groups .. (g+1)*F/groups - 1`` see channels
        ``g*C/groups .. (g+1)*C/groups - 1``.

    Returns
    -------
    y : ndarray (N, F, OH, OW)
        ``y[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] *
        xpad[n, g*C/groups + c, i*SH + p*DH, j*SW + q*DW]`` with ``g`` the
        group of ``f``; the dtype of the inputs.
    """
    return _ref_forward(x, w, b, "shared", (stride, padding, dilation, groups))


def conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``conv2d_forward`` with respect to ``x``.

    Computed as the explicit transpose of the forward (a scatter-add of
    ``w^T dy`` over the receptive fields), not by gathering.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    w : ndarray (F, C/groups, KH, KW)
    input_shape : tuple (N, C, H, W)

    Returns
    -------
    dx : ndarray (N, C, H, W)
    """
    return _ref_backward_input(dy, w, input_shape, "shared", (stride, padding, dilation, groups))


def conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``conv2d_forward`` with respect to ``w``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    x : ndarray (N, C, H, W)
    weight_shape : tuple (F, C/groups, KH, KW)

    Returns
    -------
    dw : ndarray (F, C/groups, KH, KW)
    """
    return _ref_backward_weight(dy, x, weight_shape, "shared", (stride, padding, dilation, groups))


def conv2d_backward_bias(dy, bias_shape):
    """Reference gradient of ``conv2d_forward`` with respect to ``b``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    bias_shape : tuple (F,)

    Returns
    -------
    db : ndarray (F,)
        ``dy`` summed over the batch and every output position.
    """
    return _ref_backward_bias(dy, bias_shape, "shared")


def conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradients of ``conv2d_forward``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    x, w, b
        The forward's inputs (``b`` may be None).

    Returns
    -------
    dx : ndarray (N, C, H, W)
    dw : ndarray (F, C/groups, KH, KW)
    db : ndarray (F,) or None
        None when ``b`` is None.
    """
    return _ref_backward(dy, x, w, b, "shared", (stride, padding, dilation, groups))


# ---------------------------------------------------------------- tiled_conv2d


def tiled_conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic"):
    """Reference tiled 2-D convolution (Ngiam et al. 2010).

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    w : ndarray (TH, TW, F, C/groups, KH, KW)
        ``TH x TW`` filter banks.
    b : ndarray (F, TH, TW) or None
    stride, padding, dilation, groups
        As in ``conv2d_forward``.
    tile_mode : {"periodic", "block"}
        ``"periodic"``: output ``(i, j)`` uses bank ``(i % TH, j % TW)``;
        ``"block"``: bank ``(i * TH // OH, j * TW // OW)``.

    Returns
    -------
    y : ndarray (N, F, OH, OW)
    """
    tile_mode = _check_tile_mode(tile_mode)
    return _ref_forward(x, w, b, "tiled", (stride, padding, dilation, groups), tile_mode)


def tiled_conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                tile_mode="periodic"):
    """Reference gradient of ``tiled_conv2d_forward`` with respect to ``x`` (explicit transpose).

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    w : ndarray (TH, TW, F, C/groups, KH, KW)
    input_shape : tuple (N, C, H, W)

    Returns
    -------
    dx : ndarray (N, C, H, W)
    """
    tile_mode = _check_tile_mode(tile_mode)
    return _ref_backward_input(dy, w, input_shape, "tiled", (stride, padding, dilation, groups), tile_mode)


def tiled_conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                 tile_mode="periodic"):
    """Reference gradient of ``tiled_conv2d_forward`` with respect to ``w``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    x : ndarray (N, C, H, W)
    weight_shape : tuple (TH, TW, F, C/groups, KH, KW)

    Returns
    -------
    dw : ndarray (TH, TW, F, C/groups, KH, KW)
        Per-position gradients summed over the positions of each tile; a
        tile that no output position uses gets zeros.
    """
    tile_mode = _check_tile_mode(tile_mode)
    return _ref_backward_weight(dy, x, weight_shape, "tiled", (stride, padding, dilation, groups), tile_mode)


def tiled_conv2d_backward_bias(dy, bias_shape, *, tile_mode="periodic"):
    """Reference gradient of ``tiled_conv2d_forward`` with respect to ``b``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    bias_shape : tuple (F, TH, TW)
    tile_mode : {"periodic", "block"}

    Returns
    -------
    db : ndarray (F, TH, TW)
        ``dy`` summed over the batch and the positions of each tile.
    """
    tile_mode = _check_tile_mode(tile_mode)
    return _ref_backward_bias(dy, bias_shape, "tiled", tile_mode)


def tiled_conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic"):
    """Reference gradients of ``tiled_conv2d_forward``.

    Returns
    -------
    dx : ndarray (N, C, H, W)
    dw : ndarray (TH, TW, F, C/groups, KH, KW)
    db : ndarray (F, TH, TW) or None
        None when ``b`` is None.
    """
    tile_mode = _check_tile_mode(tile_mode)
    return _ref_backward(dy, x, w, b, "tiled", (stride, padding, dilation, groups), tile_mode)


# ---------------------------------------------------------------- local_conv2d


def local_conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference locally connected 2-D layer (unshared weights, DeepFace L4-L6).

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    w : ndarray (OH, OW, F, C/groups, KH, KW)
        One filter bank per output position; ``(OH, OW)`` must be the output size.
    b : ndarray (F, OH, OW) or None
    stride, padding, dilation, groups
        As in ``conv2d_forward``.

    Returns
    -------
    y : ndarray (N, F, OH, OW)
    """
    return _ref_forward(x, w, b, "local", (stride, padding, dilation, groups))


def local_conv2d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``local_conv2d_forward`` with respect to ``x`` (explicit transpose).

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    w : ndarray (OH, OW, F, C/groups, KH, KW)
    input_shape : tuple (N, C, H, W)

    Returns
    -------
    dx : ndarray (N, C, H, W)
    """
    return _ref_backward_input(dy, w, input_shape, "local", (stride, padding, dilation, groups))


def local_conv2d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``local_conv2d_forward`` with respect to ``w``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    x : ndarray (N, C, H, W)
    weight_shape : tuple (OH, OW, F, C/groups, KH, KW)

    Returns
    -------
    dw : ndarray (OH, OW, F, C/groups, KH, KW)
    """
    return _ref_backward_weight(dy, x, weight_shape, "local", (stride, padding, dilation, groups))


def local_conv2d_backward_bias(dy, bias_shape):
    """Reference gradient of ``local_conv2d_forward`` with respect to ``b``.

    Parameters
    ----------
    dy : ndarray (N, F, OH, OW)
    bias_shape : tuple (F, OH, OW)

    Returns
    -------
    db : ndarray (F, OH, OW)
        ``dy`` summed over the batch.
    """
    return _ref_backward_bias(dy, bias_shape, "local")


def local_conv2d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradients of ``local_conv2d_forward``.

    Returns
    -------
    dx : ndarray (N, C, H, W)
    dw : ndarray (OH, OW, F, C/groups, KH, KW)
    db : ndarray (F, OH, OW) or None
        None when ``b`` is None.
    """
    return _ref_backward(dy, x, w, b, "local", (stride, padding, dilation, groups))


# ---------------------------------------------------------------- 1-D forms
#
# A 1-D convolution over (N, C, L) is the 2-D one over (N, C, 1, L) with a
# kernel of height 1; the banks of the tiled and local forms become a 1 x T
# (or 1 x OL) grid.


def _params1d(stride, padding, dilation, groups):
    return (
        (1, geometry.stride1d(stride, "stride")),
        geometry.padding1d(padding),
        (1, geometry.stride1d(dilation, "dilation")),
        groups,
    )


def _x2d(x, name="x"):
    return _require_ndim(x, name, 3)[:, :, None, :]


def _w2d(w, sharing):
    w = _require_ndim(w, "w", 3 if sharing == "shared" else 4)
    return w[:, :, None, :] if sharing == "shared" else w[None, :, :, :, None, :]


def _b2d(b, sharing):
    if b is None or sharing == "shared":
        return b
    return np.asarray(b)[:, None, :]


def _shape2d(shape, kind, sharing):
    shape = tuple(shape)
    if kind == "input":
        return shape[:2] + (1,) + shape[2:]
    if kind == "bias":
        return shape if sharing == "shared" else shape[:1] + (1,) + shape[1:]
    return shape[:2] + (1,) + shape[2:] if sharing == "shared" else (1,) + shape[:3] + (1,) + shape[3:]


def _w1d(w2d, sharing):
    return w2d[:, :, 0, :] if sharing == "shared" else w2d[0, :, :, :, 0, :]


def _b1d(b2d, sharing):
    if b2d is None or sharing == "shared":
        return b2d
    return b2d[:, 0, :]


def _ref1d_forward(x, w, b, sharing, params, tile_mode="periodic"):
    y = _ref_forward(_x2d(x), _w2d(w, sharing), _b2d(b, sharing), sharing, _params1d(*params), tile_mode)
    return y[:, :, 0, :]


def _ref1d_backward_input(dy, w, input_shape, sharing, params, tile_mode="periodic"):
    dx = _ref_backward_input(_x2d(dy, "dy"), _w2d(w, sharing), _shape2d(input_shape, "input", sharing),
                             sharing, _params1d(*params), tile_mode)
    return dx[:, :, 0, :]


def _ref1d_backward_weight(dy, x, weight_shape, sharing, params, tile_mode="periodic"):
    dw = _ref_backward_weight(_x2d(dy, "dy"), _x2d(x), _shape2d(weight_shape, "weight", sharing),
                              sharing, _params1d(*params), tile_mode)
    return _w1d(dw, sharing)


def _ref1d_backward_bias(dy, bias_shape, sharing, tile_mode="periodic"):
    db = _ref_backward_bias(_x2d(dy, "dy"), _shape2d(bias_shape, "bias", sharing), sharing, tile_mode)
    return _b1d(db, sharing)


def _ref1d_backward(dy, x, w, b, sharing, params, tile_mode="periodic"):
    dx, dw, db = _ref_backward(_x2d(dy, "dy"), _x2d(x), _w2d(w, sharing), _b2d(b, sharing), sharing,
                               _params1d(*params), tile_mode)
    return dx[:, :, 0, :], _w1d(dw, sharing), _b1d(db, sharing)


def conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference 1-D convolution.

    Parameters
    ----------
    x : ndarray (N, C, L)
    w : ndarray (F, C/groups, K)
    b : ndarray (F,) or None
    stride, dilation : int or 1-tuple
    padding : int, ``(left, right)``, ``"valid"`` or ``"same"``
    groups : int

    Returns
    -------
    y : ndarray (N, F, OL)
    """
    return _ref1d_forward(x, w, b, "shared", (stride, padding, dilation, groups))


def conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``conv1d_forward`` with respect to ``x``: dy (N, F, OL) -> dx (N, C, L)."""
    return _ref1d_backward_input(dy, w, input_shape, "shared", (stride, padding, dilation, groups))


def conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``conv1d_forward`` with respect to ``w``: -> dw (F, C/groups, K)."""
    return _ref1d_backward_weight(dy, x, weight_shape, "shared", (stride, padding, dilation, groups))


def conv1d_backward_bias(dy, bias_shape):
    """Reference gradient of ``conv1d_forward`` with respect to ``b``: dy (N, F, OL) -> db (F,)."""
    return _ref1d_backward_bias(dy, bias_shape, "shared")


def conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradients ``(dx, dw, db)`` of ``conv1d_forward``; ``db`` is None when ``b`` is None."""
    return _ref1d_backward(dy, x, w, b, "shared", (stride, padding, dilation, groups))


def tiled_conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic"):
    """Reference tiled 1-D convolution.

    Parameters
    ----------
    x : ndarray (N, C, L)
    w : ndarray (T, F, C/groups, K)
    b : ndarray (F, T) or None
    tile_mode : {"periodic", "block"}
        Output ``i`` uses bank ``i % T`` (periodic) or ``i * T // OL`` (block).

    Returns
    -------
    y : ndarray (N, F, OL)
    """
    tile_mode = _check_tile_mode(tile_mode)
    return _ref1d_forward(x, w, b, "tiled", (stride, padding, dilation, groups), tile_mode)


def tiled_conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                tile_mode="periodic"):
    """Reference gradient of ``tiled_conv1d_forward`` with respect to ``x``: -> dx (N, C, L)."""
    tile_mode = _check_tile_mode(tile_mode)
    return _ref1d_backward_input(dy, w, input_shape, "tiled", (stride, padding, dilation, groups), tile_mode)


def tiled_conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                                 tile_mode="periodic"):
    """Reference gradient of ``tiled_conv1d_forward`` with respect to ``w``: -> dw (T, F, C/groups, K)."""
    tile_mode = _check_tile_mode(tile_mode)
    return _ref1d_backward_weight(dy, x, weight_shape, "tiled", (stride, padding, dilation, groups), tile_mode)


def tiled_conv1d_backward_bias(dy, bias_shape, *, tile_mode="periodic"):
    """Reference gradient of ``tiled_conv1d_forward`` with respect to ``b``: -> db (F, T)."""
    tile_mode = _check_tile_mode(tile_mode)
    return _ref1d_backward_bias(dy, bias_shape, "tiled", tile_mode)


def tiled_conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic"):
    """Reference gradients ``(dx, dw, db)`` of ``tiled_conv1d_forward``; ``db`` is None when ``b`` is None."""
    tile_mode = _check_tile_mode(tile_mode)
    return _ref1d_backward(dy, x, w, b, "tiled", (stride, padding, dilation, groups), tile_mode)


def local_conv1d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference locally connected 1-D layer.

    Parameters
    ----------
    x : ndarray (N, C, L)
    w : ndarray (OL, F, C/groups, K)
        One bank per output position; ``OL`` must be the output length.
    b : ndarray (F, OL) or None

    Returns
    -------
    y : ndarray (N, F, OL)
    """
    return _ref1d_forward(x, w, b, "local", (stride, padding, dilation, groups))


def local_conv1d_backward_input(dy, w, input_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``local_conv1d_forward`` with respect to ``x``: -> dx (N, C, L)."""
    return _ref1d_backward_input(dy, w, input_shape, "local", (stride, padding, dilation, groups))


def local_conv1d_backward_weight(dy, x, weight_shape, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradient of ``local_conv1d_forward`` with respect to ``w``: -> dw (OL, F, C/groups, K)."""
    return _ref1d_backward_weight(dy, x, weight_shape, "local", (stride, padding, dilation, groups))


def local_conv1d_backward_bias(dy, bias_shape):
    """Reference gradient of ``local_conv1d_forward`` with respect to ``b``: -> db (F, OL)."""
    return _ref1d_backward_bias(dy, bias_shape, "local")


def local_conv1d_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradients ``(dx, dw, db)`` of ``local_conv1d_forward``; ``db`` is None when ``b`` is None."""
    return _ref1d_backward(dy, x, w, b, "local", (stride, padding, dilation, groups))


# ================================================================ max-pooling
#
# PyTorch's CPU max-pooling, transcribed: window cells are visited row-major
# and a cell replaces the running maximum when it is greater or NaN; the
# running maximum starts at -inf with the index of the window's first
# in-image cell. Vectorised over (N, C, OH, OW), looping over window cells.
# A window with no in-image cell (only possible with dilation) gives -inf
# and index -1, which the backward skips.


def _pool_pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or 2 ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's ``pooling_output_shape``."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = (span + stride - 1) // stride + 1
        if (out - 1) * stride >= size + pad:  # the last window would start in the right padding
            out -= 1
    else:
        out = span // stride + 1
    return out


def max_pool2d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """Reference max-pooling of ``x`` (N, C, H, W); PyTorch's ``F.max_pool2d``.

    Returns ``y`` (N, C, OH, OW), and with ``return_indices`` also int64
    indices ``h * W + w`` into the unpadded plane (-1 for a window without
    an in-image cell).
    """
    x = _require_ndim(x, "x", 4)
    kh, kw = _pool_pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else _pool_pair(stride, "stride")
    ph, pw = _pool_pair(padding, "padding")
    dh, dw = _pool_pair(dilation, "dilation")
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding: expected at most half the kernel size, got {(ph, pw)} for {(kh, kw)}")
    n, c, h, w = x.shape
    oh = _pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = _pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel_size: output size ({oh}, {ow}) is too small")
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    index = np.full((n, c, oh, ow), -1, dtype=np.int64)
    for r in range(kh):
        rows = np.arange(oh) * sh - ph + r * dh
        for q in range(kw):
            cols = np.arange(ow) * sw - pw + q * dw
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
            v = x[:, :, np.clip(rows, 0, h - 1)][:, :, :, np.clip(cols, 0, w - 1)]
            first = inside & (index < 0)
            take = (inside & ((v > y) | np.isnan(v))) | first
            y = np.where(take, v, y)
            index = np.where(take, rows[:, None] * w + cols[None, :], index)
    return (y, index) if return_indices else y


def max_pool2d_backward(dy, indices, input_shape):
    """Reference gradient ``dx`` (input_shape) of max-pooling: ``dx[n, c].flat[indices] += dy``.

    Contributions are added in output order; index -1 adds nothing.
    """
    dy = _require_ndim(dy, "dy", 4)
    indices = np.asarray(indices)
    _require_shape(indices.shape, dy.shape, "indices")
    n, c, h, w = (int(v) for v in input_shape)
    if (n, c) != dy.shape[:2]:
        raise ValueError(f"input_shape: expected N, C of dy {dy.shape[:2]}, got {(n, c)}")
    if indices.size and (indices.min() < -1 or indices.max() >= h * w):
        raise ValueError(f"indices: expected values in [-1, {h * w}), got [{indices.min()}, {indices.max()}]")
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    flat_dy = dy.reshape(n * c, -1)
    flat_index = indices.reshape(n * c, -1)
    planes = np.broadcast_to(np.arange(n * c)[:, None], flat_index.shape)
    keep = flat_index >= 0
    np.add.at(dx, (planes[keep], flat_index[keep]), flat_dy[keep])
    return dx.reshape(n, c, h, w)


def max_pool1d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """Reference 1-D max-pooling of ``x`` (N, C, L); indices are positions in L."""
    x = _require_ndim(x, "x", 3)

    def one(value):
        return (1, value) if value is not None else None

    result = max_pool2d_forward(x[:, :, None, :], one(kernel_size), stride=one(stride), padding=(0, padding),
                                dilation=(1, dilation), ceil_mode=ceil_mode, return_indices=return_indices)
    if return_indices:
        return result[0][:, :, 0, :], result[1][:, :, 0, :]
    return result[:, :, 0, :]


def max_pool1d_backward(dy, indices, input_shape):
    """Reference gradient ``dx`` (N, C, L) of 1-D max-pooling."""
    dy = _require_ndim(dy, "dy", 3)
    n, c, length = (int(v) for v in input_shape)
    return max_pool2d_backward(dy[:, :, None, :], np.asarray(indices)[:, :, None, :], (n, c, 1, length))[:, :, 0, :]


# ================================================================ NetVLAD
#
# The definition, stage by stage, in float64 with the (N, K, D, M) residual
# tensor formed explicitly. The backward is the chain rule through the same
# stages, each written as the textbook gradient of that stage alone.


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
    """Reference NetVLAD / GhostVLAD forward: ``y`` (N, K * D), cluster-major.

    ``x`` is (N, D, H, W) or (N, D, M); ``w`` (K + G, D), ``b`` (K + G,),
    ``centroids`` (K, D). Computed in float64, returned in the dtype of ``x``.
    """
    x = np.asarray(x)
    return _netvlad_stages(x, w, b, centroids, normalize_input, eps)["y"].astype(x.dtype)


def netvlad_backward(dy, x, w, b, centroids, *, normalize_input=True, eps=1e-12):
    """Reference gradients ``(dx, dw, db, dcentroids)`` of :func:`netvlad_forward`, stage by stage."""
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


# ================================================================ gradient checks

_ELEMENTWISE_LIMIT = 1024
_DEFAULT_DIRECTIONS = 8


def gradcheck(func, inputs, analytic, *, wrt=None, eps=1e-6, rtol=1e-5, atol=1e-7, directions=None, seed=0,
              names=None):
    """Check analytic gradients against float64 central differences.

    The scalar that is differentiated is ``L = <func(*inputs), dy>`` for a
    fixed random ``dy`` of the output's shape, so ``analytic`` is exercised
    as a vector-Jacobian product, exactly as a backward pass is called.

    Parameters
    ----------
    func : callable
        ``func(*inputs) -> y``, an ndarray of any shape.
    inputs : sequence
        The arguments of ``func``. The checked ones must be float64 ndarrays;
        the others (None, ints, shapes) are passed through untouched. The
        caller's arrays are never modified: perturbations go to copies.
    analytic : callable
        ``analytic(dy, *inputs) -> sequence`` with one gradient per input,
        each of its input's shape; entries of unchecked inputs may be None.
    wrt : sequence of int, optional
        Indices of the inputs to check; by default every ndarray input.
    eps : float
        Finite-difference step.
    rtol, atol : float
        A derivative passes when ``|numeric - analytic| <= atol + rtol * |analytic|``.
    directions : None, "all" or int
        ``"all"``: every element is perturbed in turn (two evaluations of
        ``func`` per element, as ``torch.autograd.gradcheck``). An int ``k``:
        ``k`` random unit directions ``v`` per input, each comparing
        ``(L(x + eps v) - L(x - eps v)) / (2 eps)`` with ``<g, v>`` (as
        ``jax.test_util.check_grads``), for inputs too large to perturb one
        element at a time. None: ``"all"`` for inputs of at most 1024
        elements, 8 directions for larger ones.
    seed : int
        Seed of ``dy`` and of the directions.
    names : sequence of str, optional
        Names of the inputs, for the failure message.

    Returns
    -------
    bool
        True (a failure raises).

    Raises
    ------
    TypeError
        A checked input that is not a float64 ndarray (float32 differences
        at any useful ``eps`` are dominated by rounding).
    ValueError
        An analytic gradient missing or of the wrong shape.
    AssertionError
        A derivative outside the tolerance; the message names the input, the
        worst element or direction, and both values.

    Notes
    -----
    For the linear and bilinear ops of the convolution family the central
    difference has no truncation error, so the only error is rounding,
    about ``1e-16 * sum|y * dy| / eps``; ``atol`` must cover it for large outputs.
    """
    args = list(inputs)
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    wrt = list(wrt)
    names = list(names) if names is not None else [f"inputs[{i}]" for i in range(len(args))]
    for i in wrt:
        if not isinstance(args[i], np.ndarray) or args[i].dtype != np.float64:
            raise TypeError(f"{names[i]}: expected a float64 numpy.ndarray to check, got {type(args[i]).__name__}"
                            f"{'' if not isinstance(args[i], np.ndarray) else ' of dtype ' + str(args[i].dtype)}")
        args[i] = np.array(args[i], dtype=np.float64, order="C", copy=True)

    rng = np.random.default_rng(seed)
    y = np.asarray(func(*args), dtype=np.float64)
    dy = rng.standard_normal(y.shape)

    def loss():
        return float(np.dot(np.asarray(func(*args), dtype=np.float64).ravel(), dy.ravel()))

    grads = list(analytic(dy.copy(), *[a.copy() if isinstance(a, np.ndarray) else a for a in args]))
    for i in wrt:
        if i >= len(grads) or grads[i] is None:
            raise ValueError(f"{names[i]}: analytic returned no gradient")
        grads[i] = np.asarray(grads[i], dtype=np.float64)
        if grads[i].shape != args[i].shape:
            raise ValueError(f"{names[i]}: expected a gradient of shape {args[i].shape}, got {grads[i].shape}")

    for i in wrt:
        x, g = args[i], grads[i]
        mode = directions
        if mode is None:
            mode = "all" if x.size <= _ELEMENTWISE_LIMIT else _DEFAULT_DIRECTIONS
        if isinstance(mode, str):
            if mode != "all":
                raise ValueError(f'directions: expected None, "all" or an int >= 1, got {mode!r}')
            _check_elementwise(loss, x, g, eps, rtol, atol, names[i])
        else:
            if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)) or mode < 1:
                raise ValueError(f'directions: expected None, "all" or an int >= 1, got {mode!r}')
            _check_directions(loss, x, g, eps, rtol, atol, names[i], int(mode), rng)
    return True


def _check_elementwise(loss, x, g, eps, rtol, atol, name):
    flat = x.reshape(-1)  # a view: perturbing it perturbs the argument func sees
    numeric = np.empty(flat.size)
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + eps
        plus = loss()
        flat[k] = original - eps
        minus = loss()
        flat[k] = original
        numeric[k] = (plus - minus) / (2 * eps)
    expected = g.reshape(-1)
    error = np.abs(numeric - expected)
    bad = error > atol + rtol * np.abs(expected)
    if bad.any():
        worst = int(np.argmax(np.where(bad, error, -1.0)))
        index = np.unravel_index(worst, x.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {flat.size} derivatives outside atol={atol}, rtol={rtol}; "
            f"worst at {tuple(int(v) for v in index)}: numeric {float(numeric[worst])!r}, "
            f"analytic {float(expected[worst])!r}"
        )


def _check_directions(loss, x, g, eps, rtol, atol, name, count, rng):
    original = x.copy()
    for d in range(count):
        v = rng.standard_normal(x.shape)
        norm = np.linalg.norm(v)
        v = v / norm if norm > 0 else v
        x[...] = original + eps * v
        plus = loss()
        x[...] = original - eps * v
        minus = loss()
        x[...] = original
        numeric = (plus - minus) / (2 * eps)
        expected = float(np.dot(g.ravel(), v.ravel()))
        if abs(numeric - expected) > atol + rtol * abs(expected):
            raise AssertionError(
                f"{name}: directional derivative {d} of {count} outside atol={atol}, rtol={rtol}: "
                f"numeric {numeric!r}, analytic {expected!r}"
            )
