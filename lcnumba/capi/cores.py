"""Validating cores of the C entry points: one C callback per operation and dtype.

Every public entry point (``lcnumba.capi.entry``) is a thin ``@cfunc`` that
maps its own arguments (a 1-D form, a family, NetVLAD without its options)
onto one of the cores below (``KINDS``) and calls it through its C address.
A core

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

from .. import cache, table
from ..cpu import conv as conv_kernels
from ..cpu import conv_padded as padded_kernels
from ..cpu import conv_transpose as transpose_kernels
from ..cpu import netvlad as netvlad_kernels
from ..cpu import netvlad_pca as pca_kernels
from ..cpu import pool as pool_kernels
from ..cpu.indexing import COMPILES_IN as _INDEXING
from ..cpu.indexing import conv_output_size, conv_transpose_output_size, pool_output_size
from ..cpu.twins import twin
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

#: The padding modes, indices into ``table.PADDING_MODES`` (0 zeros).
N_PADDING_MODES = len(table.PADDING_MODES)
REFLECT = table.PADDING_MODES.index("reflect")
CIRCULAR = table.PADDING_MODES.index("circular")


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


@intrinsic
def no_mask(typingctx):
    """A NULL ``uint8_t *``: the mask of an entry point without one (every descriptor valid)."""

    def codegen(context, builder, signature, args):
        return context.get_constant_null(signature.return_type)

    return types.CPointer(types.uint8)(), codegen


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
def _clash(outputs, inputs):
    """Whether an output overlaps an input or another output; flat views of one dtype."""
    for i in range(len(outputs)):
        for other in inputs:
            if _overlap(outputs[i], other):
                return True
        for j in range(i):
            if _overlap(outputs[i], outputs[j]):
                return True
    return False


@njit
def _mode_fits(mode, pads, sizes):
    """PyTorch's bounds on the padding of ``mode`` (``checks.padding_fits_mode``) on every padded side: reflect
    below the input size, circular at most the input size (replicate needs a cell to copy: every size is >= 1)."""
    for i in range(len(pads)):
        if pads[i] > 0 and ((mode == REFLECT and pads[i] >= sizes[i]) or (mode == CIRCULAR and pads[i] > sizes[i])):
            return False
    return True


@njit
def _conv_check(missing, n, c, h, w, th, tw, f, cg, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h, dil_w, groups,
                family, tile_mode, accumulate, mode):
    """Status and output ``(status, f, oh, ow)`` of a convolution-family call, in status order.

    ``missing`` says whether a required pointer is NULL, the first status checked. ``oph, opw`` (the
    transposed check's output padding) are 0; ``mode`` is the padding mode, an index into
    ``table.PADDING_MODES``.
    """
    if missing:
        return ERR_NULL, 0, 0, 0
    if not _batch_ok(n) or not _sizes_ok((c, h, w, th, tw, f, cg, kh, kw)):
        return ERR_SIZE, 0, 0, 0
    if not _sizes_ok((sh, sw, dil_h, dil_w, groups)) or not _pads_ok((pt, pl, pb, pr)):
        return ERR_PARAMETER, 0, 0, 0
    if not (_flag_ok(tile_mode) and _flag_ok(accumulate)) or mode < 0 or mode >= N_PADDING_MODES:
        return ERR_FLAG, 0, 0, 0
    if c % groups != 0 or f % groups != 0:
        return ERR_GROUPS, 0, 0, 0
    if cg * groups != c:
        return ERR_SHAPE, 0, 0, 0
    oh = conv_output_size(h, kh, sh, dil_h, pt, pb)
    ow = conv_output_size(w, kw, sw, dil_w, pl, pr)
    if oh < 1 or ow < 1 or not _mode_fits(mode, (pt, pb, pl, pr), (h, h, w, w)):
        return ERR_GEOMETRY, 0, 0, 0
    if family == LOCAL and (th != oh or tw != ow):
        return ERR_SHAPE, 0, 0, 0
    if not (_elements_ok((n, c, h, w)) and _elements_ok((th, tw, f, cg, kh, kw)) and _elements_ok((n, f, oh, ow))
            and _sizes_ok((oh, ow))):
        return ERR_SIZE, 0, 0, 0
    return OK, f, oh, ow


@njit
def _transpose_check(missing, n, c, h, w, th, tw, wc, fg, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h, dil_w,
                     groups, family, tile_mode, accumulate, mode):
    """Status and output ``(status, f, oh, ow)`` of a transposed convolution call, in status order.

    ``output_padding`` follows PyTorch's rule: below the stride or the dilation of its axis. ``mode`` is 0
    (a transposed op pads with zeros only, as PyTorch's ``ConvTranspose``).
    """
    if missing:
        return ERR_NULL, 0, 0, 0
    if not _batch_ok(n) or not _sizes_ok((c, h, w, th, tw, wc, fg, kh, kw)):
        return ERR_SIZE, 0, 0, 0
    if not _sizes_ok((sh, sw, dil_h, dil_w, groups)) or not _pads_ok((pt, pl, pb, pr, oph, opw)):
        return ERR_PARAMETER, 0, 0, 0
    if oph >= max(sh, dil_h) or opw >= max(sw, dil_w):
        return ERR_PARAMETER, 0, 0, 0
    if not (_flag_ok(tile_mode) and _flag_ok(accumulate)) or mode != 0:
        return ERR_FLAG, 0, 0, 0
    if c % groups != 0:
        return ERR_GROUPS, 0, 0, 0
    if wc != c:
        return ERR_SHAPE, 0, 0, 0
    oh = conv_transpose_output_size(h, kh, sh, dil_h, pt, pb, oph)
    ow = conv_transpose_output_size(w, kw, sw, dil_w, pl, pr, opw)
    if oh < 1 or ow < 1:
        return ERR_GEOMETRY, 0, 0, 0
    if family == LOCAL and (th != h or tw != w):
        return ERR_SHAPE, 0, 0, 0
    f = fg * groups
    if not (_elements_ok((n, c, h, w)) and _elements_ok((th, tw, c, fg, kh, kw)) and _sizes_ok((f, oh, ow))
            and _elements_ok((n, f, oh, ow))):
        return ERR_SIZE, 0, 0, 0
    return OK, f, oh, ow


# ---------------------------------------------------------------- convolution family and its transposed forms
#
# One core per pass, written once (``conv_forward``, ``conv_backward_input``, ``conv_backward_weight``): for
# the forward families it checks with ``_conv_check`` and calls the drivers of ``lcnumba.cpu.conv_padded``
# (which run ``lcnumba.cpu.conv``'s as they are for padding mode 0); its twin for the transposed families
# (``conv_transpose_*``, made by ``_transposed``) checks with ``_transpose_check`` and calls the drivers of
# ``lcnumba.cpu.conv_transpose``. The cores call the drivers through adapters (``_conv_forward``,
# ``_transpose_forward``, ...) that take every argument either family needs.
#
# Dimensions are those of the 2-D forms; the 1-D entry points pass h = kh = sh = dil_h = 1 and
# pt = pb = oph = 0. The input is x (n, c, h, w), the weight (th * tw, ca, cb * kh * kw), the output
# (n, f, oh, ow), with f and the output size from the check:
#
# - forward families: (ca, cb) = (f, cg), the flat view of the public (th, tw, f, cg, kh, kw);
#   oph = opw = 0; ``padding_mode`` an index into ``table.PADDING_MODES``;
# - transposed families: (ca, cb) = (wc, fg), the public (th, tw, wc, fg, kh, kw) with wc = c and
#   f = fg * groups, the output size lcn_conv_transpose_output_size(h, kh, sh, dil_h, pt, pb, oph); the
#   drivers take the arguments in the forward op's terms, as the Python API passes them: the tiles are the
#   forward op's (those of this op's input positions); ``padding_mode`` is 0.
#
# The bias (f, bth * btw) is tiled over the output positions: by the weight's tiles, or one tile per output
# position for a local family (for a forward family these are the weight's too). ``n_threads`` is
# ``numba.get_num_threads()`` of the calling thread, read by the entry point: Numba reads it through a
# ctypes pointer, which would make a core impossible to cache on disk.


def conv_forward(x, weight, bias, y, n, c, h, w, th, tw, ca, cb, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h,
                 dil_w, groups, family, n_threads, tile_mode, padding_mode):
    missing = _null(x) or _null(weight) or _null(y)
    status, f, oh, ow = _check(missing, n, c, h, w, th, tw, ca, cb, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h,
                               dil_w, groups, family, tile_mode, 0, padding_mode)
    if status != OK:
        return status
    xa = carray(x, (n, c, h, w))
    wa = carray(weight, (th * tw, ca, cb * kh * kw))
    bth = oh if family == LOCAL else th
    btw = ow if family == LOCAL else tw
    nb = 0 if _null(bias) else f  # a NULL bias is the drivers' (0, 0) "no bias"
    ba = carray(bias, (nb, bth * btw if nb else 0))
    ya = carray(y, (n, f, oh, ow))
    if _overlap(ya, xa) or _overlap(ya, wa) or _overlap(ya, ba):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        _forward(xa, wa, ba, th, tw, tile_mode == 0, bth, btw, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                 n_threads, padding_mode, ya)
    except Exception:  # noqa: BLE001 - a workspace allocation failed
        return ERR_INTERNAL
    return OK


def conv_backward_input(dy, weight, dx, n, c, h, w, th, tw, ca, cb, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h,
                        dil_w, groups, family, n_threads, tile_mode, padding_mode):
    missing = _null(dy) or _null(weight) or _null(dx)
    status, f, oh, ow = _check(missing, n, c, h, w, th, tw, ca, cb, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h,
                               dil_w, groups, family, tile_mode, 0, padding_mode)
    if status != OK:
        return status
    dya = carray(dy, (n, f, oh, ow))
    wa = carray(weight, (th * tw, ca, cb * kh * kw))
    dxa = carray(dx, (n, c, h, w))
    if _overlap(dxa, dya) or _overlap(dxa, wa):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        _backward_input(dya, wa, th, tw, tile_mode == 0, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                        n_threads, padding_mode, dxa)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def conv_backward_weight(dy, x, dweight, n, c, h, w, th, tw, ca, cb, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h,
                         dil_w, groups, family, n_threads, tile_mode, accumulate, padding_mode):
    missing = _null(dy) or _null(x) or _null(dweight)
    status, f, oh, ow = _check(missing, n, c, h, w, th, tw, ca, cb, kh, kw, sh, sw, pt, pl, pb, pr, oph, opw, dil_h,
                               dil_w, groups, family, tile_mode, accumulate, padding_mode)
    if status != OK:
        return status
    dya = carray(dy, (n, f, oh, ow))
    xa = carray(x, (n, c, h, w))
    dwa = carray(dweight, (th * tw, ca, cb * kh * kw))
    if _overlap(dwa, dya) or _overlap(dwa, xa):
        return ERR_OVERLAP
    if n == 0:
        if accumulate == 0:
            dwa[:] = 0
        return OK
    try:
        _backward_weight(dya, xa, th, tw, tile_mode == 0, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                         n_threads, padding_mode, accumulate != 0, dwa)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


@njit
def _chunk(shape, pt, pl, pb, pr):
    """Samples per padded chunk of an input of ``shape`` (n, c, h, w), as the Python API pads them."""
    n, c, h, w = shape
    return padded_kernels.compiled_samples_per_chunk(n, c, h + pt + pb, w + pl + pr, padded_kernels.CHUNK_ELEMENTS)


@njit
def _conv_forward(x, w, b, th, tw, periodic, bth, btw, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                  n_threads, mode, y):
    padded_kernels.forward(x, w, b, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, n_threads,
                           mode, _chunk(x.shape, pt, pl, pb, pr), y)


@njit
def _conv_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, n_threads,
                         mode, dx):
    padded_kernels.backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                                  n_threads, mode, _chunk(dx.shape, pt, pl, pb, pr), dx)


@njit
def _conv_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups, n_threads,
                          mode, accumulate, dw):
    padded_kernels.backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                                   n_threads, mode, _chunk(x.shape, pt, pl, pb, pr), accumulate, dw)


@njit
def _transpose_forward(x, w, b, th, tw, periodic, bth, btw, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                       n_threads, mode, y):
    transpose_kernels.forward(x, w, b, th, tw, periodic, bth, btw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w,
                              groups, n_threads, y)


@njit
def _transpose_backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                              n_threads, mode, dx):
    transpose_kernels.backward_input(dy, w, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
                                     n_threads, dx)


@njit
def _transpose_backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, pb, pr, dil_h, dil_w, groups,
                               n_threads, mode, accumulate, dw):
    transpose_kernels.backward_weight(dy, x, th, tw, periodic, kh, kw, sh, sw, pt, pl, dil_h, dil_w, groups,
                                      n_threads, accumulate, dw)


#: The forward families' checks and drivers, which the cores above read as written.
_check = _conv_check
_forward = _conv_forward
_backward_input = _conv_backward_input
_backward_weight = _conv_backward_weight


def _transposed(core):
    """``core`` for the transposed families: ``conv_transpose_<pass>``, with their check and drivers.

    The twin runs ``core``'s code where ``_check`` and the drivers are the transposed families'; its own
    name gives it its own entry in Numba's on-disk cache.
    """
    return twin(core, core.__name__.replace("conv_", "conv_transpose_", 1), _check=_transpose_check,
                _forward=_transpose_forward, _backward_input=_transpose_backward_input,
                _backward_weight=_transpose_backward_weight)


conv_transpose_forward = _transposed(conv_forward)
conv_transpose_backward_input = _transposed(conv_backward_input)
conv_transpose_backward_weight = _transposed(conv_backward_weight)


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


# ---------------------------------------------------------------- NetVLAD and its parts
#
# The switches are int32 flags; the kernels take them as booleans, as the Python API passes them. A NULL
# mask is the kernels' (n, 0) "every descriptor valid"; a mask value of 0 removes a descriptor (any other
# value keeps it, as the kernels read it).


@njit
def _eps_ok(eps):
    return np.isfinite(eps) and eps > 0.0


@njit
def _flags_ok(flags):
    for flag in flags:
        if not _flag_ok(flag):
            return False
    return True


@njit
def _netvlad_check(n, d, m, kg, k, normalize_input, intra_normalize, final_normalize, eps):
    if not _batch_ok(n) or not _sizes_ok((d, m, kg, k)):
        return ERR_SIZE
    if not _eps_ok(eps):
        return ERR_PARAMETER
    if not _flags_ok((normalize_input, intra_normalize, final_normalize)):
        return ERR_FLAG
    if k > kg:
        return ERR_SHAPE
    if not (_elements_ok((n, d, m)) and _elements_ok((n, k, d)) and _elements_ok((n, kg, d))):
        return ERR_SIZE
    return OK


def netvlad_forward(x, weight, bias, centroids, mask, y, n, d, m, kg, k, normalize_input, intra_normalize,
                    final_normalize, eps):
    if _null(x) or _null(weight) or _null(bias) or _null(centroids) or _null(y):
        return ERR_NULL
    status = _netvlad_check(n, d, m, kg, k, normalize_input, intra_normalize, final_normalize, eps)
    if status != OK:
        return status
    xa = carray(x, (n, d, m))
    wa = carray(weight, (kg, d))
    ba = carray(bias, kg)
    ca = carray(centroids, (k, d))
    ma = carray(mask, (n, 0 if _null(mask) else m))
    ya = carray(y, (n, k * d))
    if _clash((ya.reshape(-1),), (xa.reshape(-1), wa.reshape(-1), ba, ca.reshape(-1))) or _overlap(ya, ma):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        netvlad_kernels.netvlad_fwd(xa, wa, ba, ca, normalize_input != 0, intra_normalize != 0, final_normalize != 0,
                                    eps, ma, ya)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def netvlad_backward(dy, x, weight, bias, centroids, mask, dx, dweight, dbias, dcentroids, n, d, m, kg, k,
                     normalize_input, intra_normalize, final_normalize, eps):
    if (_null(dy) or _null(x) or _null(weight) or _null(bias) or _null(centroids) or _null(dx) or _null(dweight)
            or _null(dbias) or _null(dcentroids)):
        return ERR_NULL
    status = _netvlad_check(n, d, m, kg, k, normalize_input, intra_normalize, final_normalize, eps)
    if status != OK:
        return status
    dya = carray(dy, (n, k * d))
    xa = carray(x, (n, d, m))
    wa = carray(weight, (kg, d))
    ba = carray(bias, kg)
    ca = carray(centroids, (k, d))
    ma = carray(mask, (n, 0 if _null(mask) else m))
    dxa = carray(dx, (n, d, m))
    dwa = carray(dweight, (kg, d))
    dba = carray(dbias, kg)
    dca = carray(dcentroids, (k, d))
    outputs = (dxa.reshape(-1), dwa.reshape(-1), dba, dca.reshape(-1))
    if _clash(outputs, (dya.reshape(-1), xa.reshape(-1), wa.reshape(-1), ba, ca.reshape(-1))):
        return ERR_OVERLAP
    for out in outputs:
        if _overlap(out, ma):
            return ERR_OVERLAP
    try:
        netvlad_kernels.backward(dya, xa, wa, ba, ca, normalize_input != 0, intra_normalize != 0,
                                 final_normalize != 0, eps, ma, dxa, dwa, dba, dca)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


@njit
def _aggregate_check(n, d, m, k, intra_normalize, final_normalize, eps):
    if not _batch_ok(n) or not _sizes_ok((d, m, k)):
        return ERR_SIZE
    if not _eps_ok(eps):
        return ERR_PARAMETER
    if not _flags_ok((intra_normalize, final_normalize)):
        return ERR_FLAG
    if not (_elements_ok((n, d, m)) and _elements_ok((n, k, m)) and _elements_ok((n, k, d))):
        return ERR_SIZE
    return OK


def vlad_aggregate_forward(x, assignment, centroids, y, n, d, m, k, intra_normalize, final_normalize, eps):
    if _null(x) or _null(assignment) or _null(centroids) or _null(y):
        return ERR_NULL
    status = _aggregate_check(n, d, m, k, intra_normalize, final_normalize, eps)
    if status != OK:
        return status
    xa = carray(x, (n, d, m))
    aa = carray(assignment, (n, k, m))
    ca = carray(centroids, (k, d))
    ya = carray(y, (n, k * d))
    if _clash((ya.reshape(-1),), (xa.reshape(-1), aa.reshape(-1), ca.reshape(-1))):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        netvlad_kernels.aggregate_fwd(xa, aa, ca, intra_normalize != 0, final_normalize != 0, eps, ya)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def vlad_aggregate_backward(dy, x, assignment, centroids, dx, dassignment, dcentroids, n, d, m, k, intra_normalize,
                            final_normalize, eps):
    if (_null(dy) or _null(x) or _null(assignment) or _null(centroids) or _null(dx) or _null(dassignment)
            or _null(dcentroids)):
        return ERR_NULL
    status = _aggregate_check(n, d, m, k, intra_normalize, final_normalize, eps)
    if status != OK:
        return status
    dya = carray(dy, (n, k * d))
    xa = carray(x, (n, d, m))
    aa = carray(assignment, (n, k, m))
    ca = carray(centroids, (k, d))
    dxa = carray(dx, (n, d, m))
    daa = carray(dassignment, (n, k, m))
    dca = carray(dcentroids, (k, d))
    if _clash((dxa.reshape(-1), daa.reshape(-1), dca.reshape(-1)),
              (dya.reshape(-1), xa.reshape(-1), aa.reshape(-1), ca.reshape(-1))):
        return ERR_OVERLAP
    try:
        netvlad_kernels.aggregate_backward(dya, xa, aa, ca, intra_normalize != 0, final_normalize != 0, eps, dxa,
                                           daa, dca)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


@njit
def _pca_check(n, p, q, eps):
    if not _batch_ok(n) or not _sizes_ok((p, q)):
        return ERR_SIZE
    if not _eps_ok(eps):
        return ERR_PARAMETER
    if not (_elements_ok((n, p)) and _elements_ok((q, p)) and _elements_ok((n, q))):
        return ERR_SIZE
    return OK


def netvlad_pca_forward(v, projection, bias, y, n, p, q, eps):
    if _null(v) or _null(projection) or _null(bias) or _null(y):
        return ERR_NULL
    status = _pca_check(n, p, q, eps)
    if status != OK:
        return status
    va = carray(v, (n, p))
    pa = carray(projection, (q, p))
    ba = carray(bias, q)
    ya = carray(y, (n, q))
    if _clash((ya.reshape(-1),), (va.reshape(-1), pa.reshape(-1), ba)):
        return ERR_OVERLAP
    if n == 0:
        return OK
    try:
        pca_kernels.pca_forward(va, pa, ba, eps, ya)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


def netvlad_pca_backward(dy, v, projection, bias, dv, dprojection, dbias, n, p, q, eps):
    if (_null(dy) or _null(v) or _null(projection) or _null(bias) or _null(dv) or _null(dprojection)
            or _null(dbias)):
        return ERR_NULL
    status = _pca_check(n, p, q, eps)
    if status != OK:
        return status
    dya = carray(dy, (n, q))
    va = carray(v, (n, p))
    pa = carray(projection, (q, p))
    ba = carray(bias, q)
    dva = carray(dv, (n, p))
    dpa = carray(dprojection, (q, p))
    dba = carray(dbias, q)
    if _clash((dva.reshape(-1), dpa.reshape(-1), dba), (dya.reshape(-1), va.reshape(-1), pa.reshape(-1), ba)):
        return ERR_OVERLAP
    try:
        pca_kernels.pca_backward(dya, va, pa, ba, eps, dva, dpa, dba)
    except Exception:  # noqa: BLE001
        return ERR_INTERNAL
    return OK


# ---------------------------------------------------------------- signatures and compilation

#: Argument kinds of each core: "f" a float buffer, "i" an int64 buffer, "u" a uint8 buffer,
#: "n" an int64 size or parameter, "b" an int32 flag, "e" a double.
KINDS = {
    "conv_forward": "ffff" + "n" * 23 + "bb",
    "conv_backward_input": "fff" + "n" * 23 + "bb",
    "conv_backward_weight": "fff" + "n" * 23 + "bbb",
    "conv_backward_bias": "ff" + "n" * 6 + "bb",
    "conv_transpose_forward": "ffff" + "n" * 23 + "bb",
    "conv_transpose_backward_input": "fff" + "n" * 23 + "bb",
    "conv_transpose_backward_weight": "fff" + "n" * 23 + "bbb",
    "pool_forward": "ffi" + "n" * 12 + "bb",
    "pool_backward": "fif" + "n" * 6,
    "netvlad_forward": "ffffuf" + "n" * 5 + "bbbe",
    "netvlad_backward": "fffffuffff" + "n" * 5 + "bbbe",
    "vlad_aggregate_forward": "ffff" + "n" * 4 + "bbe",
    "vlad_aggregate_backward": "fffffff" + "n" * 4 + "bbe",
    "netvlad_pca_forward": "ffff" + "n" * 3 + "e",
    "netvlad_pca_backward": "fffffff" + "n" * 3 + "e",
}

DTYPES = {"f32": types.float32, "f64": types.float64}

_SCALARS = {"n": types.int64, "b": types.int32, "e": types.float64, "i": types.CPointer(types.int64),
            "u": types.CPointer(types.uint8)}


def signature(core, dtype):
    """The Numba signature of ``core`` for ``dtype`` (``"f32"`` or ``"f64"``)."""
    floats = types.CPointer(DTYPES[dtype])
    return types.int32(*[floats if kind == "f" else _SCALARS[kind] for kind in KINDS[core]])


#: The sources each kind of core compiles in (``lcnumba.cache``): this file, the status codes, the
#: compiled output sizes and the kernel modules the cores call, with everything those compile in; the
#: convolution cores also the table, whose padding modes they compile in as constants (``REFLECT``, ...).
_OWN = ("capi/cores.py", "capi/status.py")
_SOURCES = {
    "conv": cache.sources(_OWN, _INDEXING, "table.py", padded_kernels.COMPILES_IN),
    "conv_transpose": cache.sources(_OWN, _INDEXING, transpose_kernels.COMPILES_IN),
    "pool": cache.sources(_OWN, _INDEXING, pool_kernels.COMPILES_IN),
    "netvlad": cache.sources(_OWN, netvlad_kernels.COMPILES_IN),
    "netvlad_pca": cache.sources(_OWN, pca_kernels.COMPILES_IN),
    "vlad_aggregate": cache.sources(_OWN, netvlad_kernels.COMPILES_IN),
}
#: ``{core: the sources it compiles in}``: those of the longest kind its name starts with.
COMPILES_IN = {core: _SOURCES[max((kind for kind in _SOURCES if core.startswith(kind + "_")), key=len)]
               for core in KINDS}
for _names in _SOURCES.values():
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
            keyed = cache.source_keyed(pyfunc, COMPILES_IN[core])
            if keyed is not None:  # else no writable cache directory: compile in memory only
                result._cache = keyed
            result.compile()
            _compiled[key] = result
    return result
