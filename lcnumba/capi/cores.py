"""Validating cores of the C entry points: one C callback per operation and dtype.

Every public entry point (``lcnumba.capi.entry``) is a thin ``@cfunc`` that
maps its own arguments (a 1-D form, a family) onto one of the eight cores
below and calls it through its C address. A core

1. checks every argument in compiled code, in the order of
   ``lcnumba.capi.status`` (NULL pointers, sizes, parameters, flags, groups,
   shapes, geometry, overlapping buffers, pooling indices) and returns the
   first failing status before anything is written;
2. views the caller's buffers with ``numba.carray`` (C-contiguous, shapes
   computed from the checked dimensions);
3. calls the one compiled driver of ``lcnumba.cpu`` that the Python API
   calls for the same operation, with arguments of the same Numba types,
   so the results are bitwise the same and the kernels come from the same
   on-disk cache.

Output sizes are those of ``lcnumba.indexing``, compiled
(``lcnumba.cpu.indexing``), as the Python API computes them.

The cores are compiled lazily (``compiled``) and cached on disk. Numba keys
a cache entry on the core's own source file only, so the key is extended
(``lcnumba.cache``) with a digest of every source a core compiles in:
this file, the status codes and the ``COMPILES_IN`` of the kernel modules
it calls (``COMPILES_IN`` below). Editing any of them invalidates the cores
that compile it in.
The thin entry points hold the cores' addresses as constants and cannot be
cached on disk; they compile in a few tens of milliseconds.

Sizes and parameters are limited to ``2**31 - 1`` and buffers to ``2**59``
elements, so no index computation of a kernel can overflow ``int64``.
"""

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core.ccallback import CFunc
from numba.core.sigutils import normalize_signature
from numba.extending import intrinsic

from .. import cache
from ..cpu import conv as conv_kernels
from ..cpu import netvlad as netvlad_kernels
from ..cpu import pool as pool_kernels
from ..cpu.indexing import COMPILES_IN as _INDEXING
from ..cpu.indexing import conv_output_size, pool_output_size
from .status import Status

OK = int(Status.OK)
ERR_NULL = int(Status.ERR_NULL)
ERR_SIZE = int(Status.ERR_SIZE)
ERR_PARAMETER = int(Status.ERR_PARAMETER)
ERR_FLAG = int(Status.ERR_FLAG)
ERR_GROUPS = int(Status.ERR_GROUPS)
ERR_SHAPE = int(Status.ERR_SHAPE)
ERR_GEOMETRY = int(Status.ERR_GEOMETRY)
ERR_OVERLAP = int(Status.ERR_OVERLAP)
ERR_INDEX = int(Status.ERR_INDEX)
ERR_INTERNAL = int(Status.ERR_INTERNAL)

#: Largest size or parameter: products of two stay far inside int64.
MAX_DIM = 2**31 - 1
#: Largest buffer, in elements: its byte size and every flat index fit int64.
MAX_ELEMENTS = 2**59

#: Weight sharing of the convolution family: one bank, TH x TW banks, one per position.
CONV, TILED, LOCAL = 0, 1, 2


# ---------------------------------------------------------------- checks


@intrinsic
def _address(typingctx, ptr):
    """The address a C pointer holds, as an int64 (0 for NULL)."""
    if not isinstance(ptr, types.CPointer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], ir.IntType(64))

    return types.int64(ptr), codegen


@njit
def _null(ptr):
    return _address(ptr) == 0


@njit
def _all_in(values, lo):
    """Every value in ``[lo, MAX_DIM]``."""
    for v in values:
        if v < lo or v > MAX_DIM:
            return False
    return True


@njit
def _sizes_ok(sizes):
    """Every size in ``[1, MAX_DIM]``."""
    return _all_in(sizes, 1)


@njit
def _batch_ok(n):
    return 0 <= n <= MAX_DIM


@njit
def _pads_ok(pads):
    """Every padding in ``[0, MAX_DIM]``."""
    return _all_in(pads, 0)


@njit
def _flag_ok(value):
    return value == 0 or value == 1


@njit
def _elements_ok(dims):
    """Whether the product of ``dims`` (each in ``[0, MAX_DIM]``) is at most ``MAX_ELEMENTS``."""
    for d in dims:
        if d == 0:
            return True
    total = 1
    for d in dims:
        if total > MAX_ELEMENTS // d:
            return False
        total *= d
    return True


@njit
def _overlap(a, b):
    """Whether the memory of arrays ``a`` and ``b`` intersects (empty arrays never do)."""
    if a.size == 0 or b.size == 0:
        return False
    a0 = np.int64(a.ctypes.data)
    b0 = np.int64(b.ctypes.data)
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


@njit
def _conv_check(missing, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, family,
                tile_mode, accumulate):
    """Status and output size ``(status, oh, ow)`` of a convolution-family call, in status order.

    ``missing`` says whether a required pointer is NULL, the first status checked.
    """
    if missing:
        return ERR_NULL, 0, 0
    if not _batch_ok(n) or not _sizes_ok((c, h, w, th, tw, f, cg, kh, kw)):
        return ERR_SIZE, 0, 0
    if not _sizes_ok((sh, sw, dil_h, dil_w, groups)) or not _pads_ok((pt, pl, pb, pr)):
        return ERR_PARAMETER, 0, 0
    if not (_flag_ok(tile_mode) and _flag_ok(accumulate)):
        return ERR_FLAG, 0, 0
    if c % groups != 0 or f % groups != 0:
        return ERR_GROUPS, 0, 0
    if cg * groups != c:
        return ERR_SHAPE, 0, 0
    oh = conv_output_size(h, kh, sh, dil_h, pt, pb)
    ow = conv_output_size(w, kw, sw, dil_w, pl, pr)
    if oh < 1 or ow < 1:
        return ERR_GEOMETRY, 0, 0
    if family == LOCAL and (th != oh or tw != ow):
        return ERR_SHAPE, 0, 0
    if not (_elements_ok((n, c, h, w)) and _elements_ok((th, tw, f, cg, kh, kw)) and _elements_ok((n, f, oh, ow))
            and _sizes_ok((oh, ow))):
        return ERR_SIZE, 0, 0
    return OK, oh, ow


# ---------------------------------------------------------------- convolution family
#
# Dimensions are those of the 2-D forms; the 1-D entry points pass h = kh = 1.
# w (th * tw, f, cg * kh * kw) and b (f, th * tw) are the kernels' flat views
# of the public (th, tw, f, cg, kh, kw) and (f, th, tw) layouts. ``n_threads``
# is ``numba.get_num_threads()`` of the calling thread, read by the entry
# point: Numba reads it through a ctypes pointer, which would make a core
# impossible to cache on disk.


def conv_forward(x, weight, bias, y, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                 family, n_threads, tile_mode):
    missing = _null(x) or _null(weight) or _null(y)
    status, oh, ow = _conv_check(missing, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w,
                                 groups, family, tile_mode, 0)
    if status != OK:
        return status
    tiles = th * tw
    xa = carray(x, (n, c, h, w))
    wa = carray(weight, (tiles, f, cg * kh * kw))
    nb = 0 if _null(bias) else f  # a NULL bias is the kernels' (0, 0) "no bias"
    ba = carray(bias, (nb, tiles if nb else 0))
    ya = carray(y, (n, f, oh, ow))
    if _overlap(ya, xa) or _overlap(ya, wa) or _overlap(ya, ba):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        conv_kernels.forward(xa, wa, ba, th, tw, tile_mode == 0, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
                             n_threads, ya)
    except Exception:  # noqa: BLE001 - a workspace allocation failed
        return ERR_INTERNAL
    return OK


def conv_backward_input(dy, weight, dx, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                        family, n_threads, tile_mode):
    missing = _null(dy) or _null(weight) or _null(dx)
    status, oh, ow = _conv_check(missing, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w,
                                 groups, family, tile_mode, 0)
    if status != OK:
        return status
    dya = carray(dy, (n, f, oh, ow))
    wa = carray(weight, (th * tw, f, cg * kh * kw))
    dxa = carray(dx, (n, c, h, w))
    if _overlap(dxa, dya) or _overlap(dxa, wa):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        conv_kernels.backward_input(dya, wa, th, tw, tile_mode == 0, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
                                    n_threads, dxa)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def conv_backward_weight(dy, x, dweight, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w,
                         groups, family, n_threads, tile_mode, accumulate):
    missing = _null(dy) or _null(x) or _null(dweight)
    status, oh, ow = _conv_check(missing, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w,
                                 groups, family, tile_mode, accumulate)
    if status != OK:
        return status
    dya = carray(dy, (n, f, oh, ow))
    xa = carray(x, (n, c, h, w))
    dwa = carray(dweight, (th * tw, f, cg * kh * kw))
    if _overlap(dwa, dya) or _overlap(dwa, xa):
        return ERR_OVERLAP
    if n == 0:
        if accumulate == 0:
            dwa[:] = 0
        return OK
    try:
        conv_kernels.backward_weight(dya, xa, th, tw, tile_mode == 0, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
                                     n_threads, accumulate != 0, dwa)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def conv_backward_bias(dy, dbias, n, f, oh, ow, th, tw, tile_mode, accumulate):
    if _null(dy) or _null(dbias):
        return ERR_NULL
    if not _batch_ok(n) or not _sizes_ok((f, oh, ow, th, tw)):
        return ERR_SIZE
    if not (_flag_ok(tile_mode) and _flag_ok(accumulate)):
        return ERR_FLAG
    if not (_elements_ok((n, f, oh, ow)) and _elements_ok((f, th, tw))):
        return ERR_SIZE
    dya = carray(dy, (n, f, oh, ow))
    dba = carray(dbias, (f, th * tw))
    if _overlap(dba, dya):
        return ERR_OVERLAP
    try:
        conv_kernels.backward_bias(dya, th, tw, tile_mode == 0, accumulate != 0, dba)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


# ---------------------------------------------------------------- max-pooling
#
# The 1-D entry points pass h = kh = sh = dil_h = 1 and ph = 0.


def pool_forward(x, y, indices, n, c, h, w, kh, kw, sh, sw, ph, pw, dil_h, dil_w, ceil_mode, return_indices):
    if _null(x) or _null(y) or (return_indices == 1 and _null(indices)):
        return ERR_NULL
    if not _batch_ok(n) or not _sizes_ok((c, h, w, kh, kw)):
        return ERR_SIZE
    if not _sizes_ok((sh, sw, dil_h, dil_w)) or not _pads_ok((ph, pw)):
        return ERR_PARAMETER
    if not (_flag_ok(ceil_mode) and _flag_ok(return_indices)) or (return_indices == 0 and not _null(indices)):
        return ERR_FLAG
    if ph > kh // 2 or pw > kw // 2:
        return ERR_GEOMETRY
    oh = pool_output_size(h, kh, sh, ph, dil_h, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dil_w, ceil_mode)
    if oh < 1 or ow < 1:
        return ERR_GEOMETRY
    planes = n * c
    if not (_elements_ok((planes, h, w)) and _elements_ok((planes, oh, ow))):
        return ERR_SIZE
    xa = carray(x, (planes, h, w))
    ya = carray(y, (planes, oh, ow))
    ia = carray(indices, (planes if return_indices else 0, oh, ow))
    if _overlap(ya, xa) or _overlap(ia, xa) or _overlap(ia, ya):
        return ERR_OVERLAP
    if planes == 0:
        return OK
    try:
        if return_indices:
            pool_kernels.max_pool2d_fwd_indices(xa, ya, ia, kh, kw, sh, sw, ph, pw, dil_h, dil_w)
        else:
            pool_kernels.max_pool2d_fwd(xa, ya, kh, kw, sh, sw, ph, pw, dil_h, dil_w)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def pool_backward(dy, indices, dx, n, c, h, w, oh, ow):
    if _null(dy) or _null(indices) or _null(dx):
        return ERR_NULL
    if not _batch_ok(n) or not _sizes_ok((c, h, w, oh, ow)):
        return ERR_SIZE
    planes = n * c
    if not (_elements_ok((planes, h, w)) and _elements_ok((planes, oh, ow))):
        return ERR_SIZE
    dya = carray(dy, (planes, oh * ow))
    ia = carray(indices, (planes, oh * ow))
    dxa = carray(dx, (planes, h * w))
    if _overlap(dxa, dya) or _overlap(dxa, ia):
        return ERR_OVERLAP
    if planes == 0:
        return OK
    try:
        valid, _ = pool_kernels.backward(dya, ia, dxa)  # checks every index before it writes dx
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK if valid else ERR_INDEX


# ---------------------------------------------------------------- NetVLAD


@njit
def _netvlad_check(n, d, m, kg, k, normalize_input, eps):
    if not _batch_ok(n) or not _sizes_ok((d, m, kg, k)):
        return ERR_SIZE
    if not (np.isfinite(eps) and eps > 0.0):
        return ERR_PARAMETER
    if not _flag_ok(normalize_input):
        return ERR_FLAG
    if k > kg:
        return ERR_SHAPE
    if not (_elements_ok((n, d, m)) and _elements_ok((n, k, d)) and _elements_ok((n, kg, d))):
        return ERR_SIZE
    return OK


def netvlad_forward(x, weight, bias, centroids, y, n, d, m, kg, k, normalize_input, eps):
    if _null(x) or _null(weight) or _null(bias) or _null(centroids) or _null(y):
        return ERR_NULL
    status = _netvlad_check(n, d, m, kg, k, normalize_input, eps)
    if status != OK:
        return status
    xa = carray(x, (n, d, m))
    wa = carray(weight, (kg, d))
    ba = carray(bias, kg)
    ca = carray(centroids, (k, d))
    ya = carray(y, (n, k * d))
    if _overlap(ya, xa) or _overlap(ya, wa) or _overlap(ya, ba) or _overlap(ya, ca):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        netvlad_kernels.netvlad_fwd(xa, wa, ba, ca, normalize_input != 0, True, True, eps,
                                    np.empty((n, 0), np.uint8), ya)  # C callers: no mask
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def netvlad_backward(dy, x, weight, bias, centroids, dx, dweight, dbias, dcentroids, n, d, m, kg, k,
                     normalize_input, eps):
    if (_null(dy) or _null(x) or _null(weight) or _null(bias) or _null(centroids) or _null(dx) or _null(dweight)
            or _null(dbias) or _null(dcentroids)):
        return ERR_NULL
    status = _netvlad_check(n, d, m, kg, k, normalize_input, eps)
    if status != OK:
        return status
    dya = carray(dy, (n, k * d))
    xa = carray(x, (n, d, m))
    wa = carray(weight, (kg, d))
    ba = carray(bias, kg)
    ca = carray(centroids, (k, d))
    dxa = carray(dx, (n, d, m))
    dwa = carray(dweight, (kg, d))
    dba = carray(dbias, kg)
    dca = carray(dcentroids, (k, d))
    for out in (dxa.reshape(-1), dwa.reshape(-1), dba, dca.reshape(-1)):
        for other in (dya.reshape(-1), xa.reshape(-1), wa.reshape(-1), ba, ca.reshape(-1)):
            if _overlap(out, other):
                return ERR_OVERLAP
    if _overlap(dxa, dwa) or _overlap(dxa, dba) or _overlap(dxa, dca) or _overlap(dwa, dba) \
            or _overlap(dwa, dca) or _overlap(dba, dca):
        return ERR_OVERLAP
    try:
        netvlad_kernels.backward(dya, xa, wa, ba, ca, normalize_input != 0, True, True, eps,
                                 np.empty((n, 0), np.uint8), dxa, dwa, dba, dca)  # C callers: no mask
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


# ---------------------------------------------------------------- signatures and compilation

#: Argument kinds of each core: "f" a float buffer, "i" an int64 buffer,
#: "n" an int64 size or parameter, "b" an int32 flag, "e" a double.
KINDS = {
    "conv_forward": "ffff" + "n" * 21 + "b",
    "conv_backward_input": "fff" + "n" * 21 + "b",
    "conv_backward_weight": "fff" + "n" * 21 + "bb",
    "conv_backward_bias": "ff" + "n" * 6 + "bb",
    "pool_forward": "ffi" + "n" * 12 + "bb",
    "pool_backward": "fif" + "n" * 6,
    "netvlad_forward": "fffff" + "n" * 5 + "be",
    "netvlad_backward": "fffffffff" + "n" * 5 + "be",
}

DTYPES = {"f32": types.float32, "f64": types.float64}

_SCALARS = {"n": types.int64, "b": types.int32, "e": types.float64, "i": types.CPointer(types.int64)}


def signature(core, dtype):
    """The Numba signature of ``core`` for ``dtype`` (``"f32"`` or ``"f64"``)."""
    floats = types.CPointer(DTYPES[dtype])
    return types.int32(*[floats if kind == "f" else _SCALARS[kind] for kind in KINDS[core]])


#: The sources each family of cores compiles in (``lcnumba.cache``): this file, the status codes, the
#: compiled output sizes and the kernel modules the cores call, with everything those compile in.
_OWN = ("capi/cores.py", "capi/status.py")
COMPILES_IN = {
    "conv": cache.sources(_OWN, _INDEXING, conv_kernels.COMPILES_IN),
    "pool": cache.sources(_OWN, _INDEXING, pool_kernels.COMPILES_IN),
    "netvlad": cache.sources(_OWN, netvlad_kernels.COMPILES_IN),
}
for _names in COMPILES_IN.values():
    cache.digest(_names)  # now, with the code this process compiles: the cores themselves compile on first use

_compiled = {}
_lock = threading.Lock()


def compiled(core, dtype):
    """The compiled C callback of ``core`` for ``dtype``, compiled (or loaded from disk) on first use."""
    key = (core, dtype)
    with _lock:
        result = _compiled.get(key)
        if result is None:
            # Start Numba's threading layer, whose symbols the parallel kernels
            # link against: Numba restarts it when it loads a cached @njit
            # function with parallel loops, but not for a cached C callback.
            numba.get_num_threads()
            pyfunc = globals()[core]
            result = CFunc(pyfunc, normalize_signature(signature(core, dtype)), locals={}, options={})
            keyed = cache.source_keyed(pyfunc, COMPILES_IN[core.split("_")[0]])
            if keyed is not None:  # else no writable cache directory: compile in memory only
                result._cache = keyed
            result.compile()
            _compiled[key] = result
    return result
