"""Parameter initialisers.

``he_normal``, ``he_uniform``, ``glorot_normal`` and ``glorot_uniform`` draw
weights for every convolution family (and a dense layer) from the fans of
one output position's filter bank, ``fan_in = Cg * KH * KW`` and
``fan_out = F * KH * KW``: an unshared or tiled layer is, at each output
position, an ordinary convolution with its own bank, so it gets the same
variance as ``conv2d`` (He et al. 2015; Glorot and Bengio 2010).

``netvlad_init`` follows the NetVLAD paper (Arandjelović et al. 2016, Section
3.1) and its reference implementations: k-means on L2-normalised local
descriptors gives the centroids, and the soft-assignment starts as the
softmax of ``-alpha ||x - c_k||^2``, whose expansion over unit vectors is
``w_k = 2 alpha c_k``, ``b_k = -alpha ||c_k||^2`` (the ``||x||^2`` term is the
same for every cluster and cancels in the softmax).
"""

import math
import warnings

import numpy as np

from . import checks, table

_TARGET_RATIO = 100.0  # largest / second-largest assignment, as pytorch-NetVlad's -log(0.01)
_GHOST_SCALE = 0.01  # ghost weights are this fraction of a real cluster's weight norm, spread over D
_NORM_EPS = 1e-12
_ALPHA_CHUNK = 65536  # descriptors per block when measuring the assignment margins


def _descriptor_matrix(descriptors):
    """Descriptors (M, D), or feature maps (N, D, H, W) / (N, D, M), as one float64 (M_total, D) matrix."""
    array = checks.float_array(descriptors, "descriptors", (2, 3, 4))
    dtype = array.dtype
    if array.ndim > 2:
        n, d = array.shape[:2]
        m = int(np.prod(array.shape[2:]))
        array = np.moveaxis(array.reshape(n, d, m), 1, 2).reshape(n * m, d)
    checks.descriptors_present(array.shape, descriptors.shape)
    checks.finite("descriptors", array)
    return np.asarray(array, dtype=np.float64), dtype


def _unit_rows(matrix):
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    return matrix / np.maximum(norms, _NORM_EPS)[:, None]


def _kmeans(data, k, rng):
    import scipy.cluster.vq  # here, not at the top: it takes about a second to import, and only netvlad_init needs it

    with warnings.catch_warnings():
        # an empty cluster keeps its previous centre; k-means++ seeding makes that rare
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        try:
            centres, _ = scipy.cluster.vq.kmeans2(data, k, minit="++", rng=rng)
        except TypeError:  # SciPy < 1.15 names the generator ``seed``
            centres, _ = scipy.cluster.vq.kmeans2(data, k, minit="++", seed=rng)
    return centres


def _mean_margin(unit_descriptors, unit_centroids):
    """Mean over descriptors of (largest - second-largest) cosine to the centroids."""
    total = 0.0
    for start in range(0, unit_descriptors.shape[0], _ALPHA_CHUNK):
        dots = unit_descriptors[start:start + _ALPHA_CHUNK] @ unit_centroids.T
        top2 = np.partition(dots, dots.shape[1] - 2, axis=1)[:, -2:]
        total += float(np.sum(top2[:, 1] - top2[:, 0]))
    return total / unit_descriptors.shape[0]


def netvlad_init(descriptors, num_clusters, *, num_ghost=0, alpha=None, seed=None):
    """Initial NetVLAD parameters from k-means on sample descriptors.

    The descriptors are L2-normalised and clustered with k-means (k-means++
    seeding, ``scipy.cluster.vq.kmeans2``). With ``c_k`` the unit-length
    centroid directions, the real clusters get ``w_k = 2 alpha c_k`` and
    ``b_k = -alpha ||c_k||^2 = -alpha``, so ``softmax_k(w_k . x + b_k)`` is the
    softmax of ``-alpha ||x - c_k||^2`` for unit ``x``.

    Parameters
    ----------
    descriptors : ndarray, shape (M, D), (N, D, M) or (N, D, H, W)
        Sample local descriptors, float32 or float64; feature maps are read as their
        ``N * M`` descriptors of size D. Never written.
    num_clusters : int
        K, the number of real clusters; at most the number of distinct descriptors (after
        normalisation).
    num_ghost : int
        G, the number of ghost clusters (GhostVLAD) appended after the real ones.
    alpha : float, optional
        Sharpness of the initial assignment. By default it is chosen so that the ratio of the
        largest to the second-largest assignment of a descriptor is 100 on average
        (geometric mean over ``descriptors``): ``alpha = log(100) / (2 mean(d1 - d2))`` with
        ``d1, d2`` the two largest cosines of a descriptor to the centroids (the rule of
        pytorch-NetVlad, ``-log(0.01) / mean(d1 - d2)``, for its weights ``alpha c_k``).
    seed : int, optional
        Seed of k-means and of the ghost weights; the result is deterministic for a given seed.

    Returns
    -------
    w : ndarray, shape (K + G, D)
        ``2 alpha c_k`` for the real clusters; small random rows (norm about 1% of a real
        row's) for the ghosts.
    b : ndarray, shape (K + G,)
        ``-alpha`` for every cluster: a ghost starts like a real cluster whose centroid is
        orthogonal to the descriptor, so it takes little mass until it is trained.
    centroids : ndarray, shape (K, D)
        The k-means centres of the normalised descriptors (cluster means, inside the unit ball),
        the anchors of the residuals ``x_i - c_k``.

    All three have the dtype of ``descriptors``.

    Raises
    ------
    TypeError
        ``descriptors`` not a float32/float64 ndarray; a non-int count or seed; a non-float alpha.
    ValueError
        ``descriptors`` empty or not finite; ``num_clusters`` < 1 or more than the distinct
        descriptors;
        ``num_ghost`` < 0; ``alpha`` not finite and > 0, or None with one cluster or with
        descriptors that every centroid fits equally well (no margin to calibrate on).

    Notes
    -----
    R. Arandjelović et al., "NetVLAD: CNN architecture for weakly supervised place
    recognition", CVPR 2016, Section 3.1; Y. Zhong et al., "GhostVLAD for set-based face
    recognition", ACCV 2018.
    """
    data, dtype = _descriptor_matrix(descriptors)
    k = checks.integer(num_clusters, "num_clusters", minimum=1)
    checks.at_most_count("num_clusters", k, data.shape[0], "descriptors given")
    g = checks.integer(num_ghost, "num_ghost", minimum=0)
    if alpha is not None:
        alpha = checks.positive_float(alpha, "alpha")
    if seed is not None:
        seed = checks.integer(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)

    unit = _unit_rows(data)
    distinct = len(np.unique(unit, axis=0))
    # k-means++ cannot seed more centres than there are distinct points
    checks.at_most_count("num_clusters", k, distinct, "distinct (normalised) descriptors")
    centroids = _kmeans(unit, k, rng)
    directions = _unit_rows(centroids)
    if alpha is None:
        checks.alpha_derivable(k)
        margin = _mean_margin(unit, directions)
        checks.descriptors_separable(margin)
        alpha = np.log(_TARGET_RATIO) / (2.0 * margin)

    d = data.shape[1]
    w = np.empty((k + g, d))
    w[:k] = 2.0 * alpha * directions
    w[k:] = rng.standard_normal((g, d)) * (_GHOST_SCALE * 2.0 * alpha / np.sqrt(d))
    b = np.full(k + g, -alpha)
    b[:k] = -alpha * np.einsum("kd,kd->k", directions, directions)
    return w.astype(dtype), b.astype(dtype), centroids.astype(dtype)


# ================================================================ he / glorot

_FAMILIES = {
    # family: (ndim of the weight, number of leading position/tile axes before (F, C/groups, kernel))
    **{fam.name: (fam.weight_ndim, fam.weight_ndim - 2 - fam.spatial) for fam in table.CONV_FAMILIES},
    "linear": (2, 0),
}
_FAMILY_NAMES = tuple(_FAMILIES)


# The parameters and errors every random initialiser documents, with the families of the op table.
_DRAW_PARAMETERS = """Parameters
    ----------
    weight_shape : tuple of int
        The weight's shape in the layout of ``family`` (see :func:`fans`).
    family : str
        {families} (``"conv2d"`` is the default).
    dtype : numpy dtype
        float32 (default) or float64.
    seed : int, optional
        Seed of ``numpy.random.default_rng``; the same seed gives the same array.
""".format(families=", ".join(f'``"{name}"``' for name in _FAMILY_NAMES))
_DRAW_RAISES = """Raises
    ------
    TypeError
        ``dtype`` not float32 or float64; a non-int seed or size.
    ValueError
        Unknown ``family``; ``weight_shape`` not of its layout; a negative seed.
"""


def _documented(function):
    """Fill the shared sections of an initialiser's docstring."""
    function.__doc__ = function.__doc__.format(parameters=_DRAW_PARAMETERS, raises=_DRAW_RAISES)
    return function


def fans(weight_shape, family="conv2d"):
    """Fan-in and fan-out of one output position of a weight of the given shape.

    Parameters
    ----------
    weight_shape : tuple of int
        The weight's shape in the layout of ``family``:

        ============  ===============================
        family        weight_shape
        ============  ===============================
        conv2d        (F, Cg, KH, KW)
        tiled_conv2d  (TH, TW, F, Cg, KH, KW)
        local_conv2d  (OH, OW, F, Cg, KH, KW)
        conv1d        (F, Cg, K)
        tiled_conv1d  (T, F, Cg, K)
        local_conv1d  (OL, F, Cg, K)
        linear        (F, D): ``y = w @ x``, D inputs, F outputs
        ============  ===============================

        ``Cg = C / groups`` is the number of input channels one filter sees.
    family : str
        One of ``"conv2d"``, ``"tiled_conv2d"``, ``"local_conv2d"``, ``"conv1d"``,
        ``"tiled_conv1d"``, ``"local_conv1d"``, ``"linear"``.

    Returns
    -------
    fan_in : int
        ``Cg * KH * KW`` (``Cg * K`` in 1-D, ``D`` for ``linear``): the inputs of one output.
    fan_out : int
        ``F * KH * KW`` (``F * K`` in 1-D, ``F`` for ``linear``). The leading tile or position
        axes of tiled and local weights count in neither: each output position has its own
        bank, so the fans are those of one bank, as for ``conv2d``.

    Raises
    ------
    TypeError
        ``weight_shape`` not a tuple or list of ints; ``family`` not a str.
    ValueError
        ``family`` unknown; ``weight_shape`` of the wrong length for ``family`` or with a
        size < 1.
    """
    family = checks.choice(family, "family", _FAMILY_NAMES)
    ndim, lead = _FAMILIES[family]
    shape = checks.shape_tuple(weight_shape, "weight_shape", ndim)
    checks.positive_dims(shape, "weight_shape")
    f, cg = shape[lead], shape[lead + 1]
    receptive = math.prod(shape[lead + 2:])  # Python ints: no overflow for any shape
    return cg * receptive, f * receptive


def _draw(weight_shape, family, dtype, seed, draw):
    fan_in, fan_out = fans(weight_shape, family)
    try:
        resolved = np.dtype(dtype) if isinstance(dtype, (type, str, np.dtype)) else None
    except TypeError:
        resolved = None
    checks.float_dtype_argument(dtype, resolved)
    if seed is not None:
        seed = checks.integer(seed, "seed", minimum=0)
    checks.fits_in_memory("weight_shape", weight_shape, np.float64, "a weight")  # drawn in float64, then cast
    rng = np.random.default_rng(seed)
    values = draw(rng, tuple(weight_shape), fan_in, fan_out)
    return np.ascontiguousarray(values, dtype=resolved)


@_documented
def he_normal(weight_shape, family="conv2d", *, dtype=np.float32, seed=None):
    """He (Kaiming) normal initialisation: ``N(0, 2 / fan_in)``.

    For layers followed by a ReLU: the variance of the activations is kept
    from layer to layer (He et al. 2015, Section 2.2), as PyTorch's
    ``kaiming_normal_`` with its defaults and Keras's ``he_normal`` without truncation.

    {parameters}
    Returns
    -------
    w : ndarray of ``weight_shape`` and ``dtype``, C-contiguous
        Independent draws with standard deviation ``sqrt(2 / fan_in)``.

    {raises}
    Notes
    -----
    K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers", ICCV 2015.

    Examples
    --------
    >>> w = he_normal((21, 21, 16, 16, 5, 5), "local_conv2d", seed=0)  # DeepFace L6
    >>> w.shape, w.dtype
    ((21, 21, 16, 16, 5, 5), dtype('float32'))
    """
    return _draw(weight_shape, family, dtype, seed,
                 lambda rng, shape, fan_in, fan_out: rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))


@_documented
def he_uniform(weight_shape, family="conv2d", *, dtype=np.float32, seed=None):
    """He (Kaiming) uniform initialisation: ``U(-sqrt(6 / fan_in), sqrt(6 / fan_in))``.

    The same variance, ``2 / fan_in``, as :func:`he_normal`.

    {parameters}
    Returns
    -------
    w : ndarray of ``weight_shape`` and ``dtype``, C-contiguous

    {raises}    """
    def draw(rng, shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape)

    return _draw(weight_shape, family, dtype, seed, draw)


@_documented
def glorot_normal(weight_shape, family="conv2d", *, dtype=np.float32, seed=None):
    """Glorot (Xavier) normal initialisation: ``N(0, 2 / (fan_in + fan_out))``.

    {parameters}
    Returns
    -------
    w : ndarray of ``weight_shape`` and ``dtype``, C-contiguous
        Independent draws with standard deviation ``sqrt(2 / (fan_in + fan_out))``.

    {raises}
    Notes
    -----
    X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS 2010, eq. 12.
    """
    return _draw(weight_shape, family, dtype, seed,
                 lambda rng, shape, fan_in, fan_out: rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out)))


@_documented
def glorot_uniform(weight_shape, family="conv2d", *, dtype=np.float32, seed=None):
    """Glorot (Xavier) uniform initialisation: ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``.

    The variance is ``2 / (fan_in + fan_out)``, as for :func:`glorot_normal`.

    {parameters}
    Returns
    -------
    w : ndarray of ``weight_shape`` and ``dtype``, C-contiguous

    {raises}
    Notes
    -----
    X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS 2010, eq. 16.
    """
    def draw(rng, shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)

    return _draw(weight_shape, family, dtype, seed, draw)
