"""Matrix products with the batch in vector lanes: the inner loops of the local convolution.

In the interleaved layout of ``lcnumba.cpu.local`` a position's patch is a
``(Kg, lanes)`` matrix whose rows are runs of samples, and its filter bank
``w[p]`` an ``(F, Kg)`` matrix read once per pass. BLAS packs both operands
before it multiplies, so it reads the weights twice and never overlaps the
stream from memory with the arithmetic; with 8 samples a GEMM of that shape
ran at a third of the core's peak. These products instead keep one vector
of samples per filter in a register and multiply while they stream each
filter's row: one load of weights per fused multiply-add, no packing.

Numba cannot write the loop itself: LLVM's loop vectorizer does not split
loops of 8 iterations, and the SLP vectorizer, which would combine 8
unrolled lanes, is off in Numba (``NUMBA_SLP_VECTORIZE``); both forms ran
2-3x slower than BLAS. The loops are therefore emitted as LLVM IR with
explicit vector types (``_emit_rows_times_lanes``, ``_emit_rows_t_times_lanes``).

Every multiply-add is an ``llvm.fmuladd`` in the order the loops state, with
no fast-math flags for LLVM to reassociate them, so each sum's order is
fixed by the shapes alone. Lanes come ``lane_width(a)`` at a time: 8 for
float32, 4 for float64 (256-bit vectors; LLVM splits them on narrower
machines). Callers pad their lane count to a multiple of it.
"""

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import cache

COMPILES_IN = ("cpu/lanes.py",)

#: Bytes of one vector of lanes (AVX2): 8 float32 or 4 float64.
VECTOR_BYTES = 32

#: Filters (rows of the filter bank) whose accumulators stay in registers at once: 8 vectors of
#: accumulators, the shared operand and a broadcast fit the 16 vector registers of x86-64.
ROWS_PER_BLOCK = 8


def _operands(context, builder, signature, args):
    """The arrays' data pointers and row strides in elements, and the vector type of their dtype."""
    arrays = [context.make_array(ty)(context, builder, value)
              for ty, value in zip(signature.args, args) if isinstance(ty, types.Array)]
    dtype = context.get_data_type(signature.args[0].dtype)
    size = context.get_abi_sizeof(dtype)
    width = VECTOR_BYTES // size
    vector = ir.VectorType(dtype, width)
    itemsize = ir.Constant(ir.IntType(64), size)
    strides = [builder.sdiv(builder.extract_value(a.strides, 0), itemsize) for a in arrays]
    fmuladd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector] * 3),
        "llvm.fmuladd.v%d%s" % (width, "f32" if size == 4 else "f64"))
    return arrays, strides, vector, size, fmuladd


def _splat(builder, vector, value):
    """``value`` in every lane of ``vector``."""
    width = vector.count
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width))


def _vector_at(builder, vector, data, index):
    """Pointer to the vector that starts at element ``index`` of ``data``."""
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())


def _emit_rows_times_lanes(rows):
    """Intrinsic ``f(w, b, lane0, out)``: ``out[r, lane0:lane0+V] = sum_k w[r, k] * b[k, lane0:lane0+V]``, r < rows.

    w (rows, K), b (K, lanes), out (rows, lanes), each row contiguous. The sum
    runs over k in order; the ``rows`` accumulators stay in registers.
    """

    @intrinsic
    def rows_times_lanes(typingctx, w, b, lane0, out):
        def codegen(context, builder, signature, args):
            (wa, ba, oa), (w_row, b_row, o_row), vector, size, fmuladd = _operands(context, builder, signature, args)
            lane = args[2]
            n_k = builder.extract_value(wa.shape, 1)
            zero = ir.Constant(vector, [ir.Constant(vector.element, 0.0)] * vector.count)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(rows)]
            with cgutils.for_range(builder, n_k) as loop:
                k = loop.index
                shared = builder.load(_vector_at(builder, vector, ba.data, builder.add(builder.mul(k, b_row), lane)),
                                      align=size)
                for r in range(rows):
                    weight = builder.load(builder.gep(wa.data, [builder.add(builder.mul(
                        ir.Constant(k.type, r), w_row), k)]))
                    builder.store(builder.call(fmuladd, [_splat(builder, vector, weight), shared,
                                                         builder.load(accs[r])]), accs[r])
            for r in range(rows):
                dst = builder.add(builder.mul(ir.Constant(lane.type, r), o_row), lane)
                builder.store(builder.load(accs[r]), _vector_at(builder, vector, oa.data, dst), align=size)
            return context.get_dummy_value()

        return types.void(w, b, lane0, out), codegen

    return rows_times_lanes


def _emit_rows_t_times_lanes(rows):
    """Intrinsic ``f(w, b, lane0, add, out)``: ``out[k, lane0:lane0+V] (+)= sum_r w[r, k] * b[r, lane0:lane0+V]``.

    w (rows, K), b (rows, lanes), out (K, lanes), each row contiguous; ``add``
    false overwrites out. For each k the terms add in row order onto out's
    value (or zero); the ``rows`` vectors of b stay in registers.
    """

    @intrinsic
    def rows_t_times_lanes(typingctx, w, b, lane0, add, out):
        def codegen(context, builder, signature, args):
            (wa, ba, oa), (w_row, b_row, o_row), vector, size, fmuladd = _operands(context, builder, signature, args)
            lane, add_flag = args[2], args[3]
            n_k = builder.extract_value(wa.shape, 1)
            zero = ir.Constant(vector, [ir.Constant(vector.element, 0.0)] * vector.count)
            shared = [builder.load(_vector_at(builder, vector, ba.data, builder.add(builder.mul(
                ir.Constant(lane.type, r), b_row), lane)), align=size) for r in range(rows)]
            with cgutils.for_range(builder, n_k) as loop:
                k = loop.index
                dst = _vector_at(builder, vector, oa.data, builder.add(builder.mul(k, o_row), lane))
                acc = builder.select(add_flag, builder.load(dst, align=size), zero)
                for r in range(rows):
                    weight = builder.load(builder.gep(wa.data, [builder.add(builder.mul(
                        ir.Constant(k.type, r), w_row), k)]))
                    acc = builder.call(fmuladd, [_splat(builder, vector, weight), shared[r], acc])
                builder.store(acc, dst, align=size)
            return context.get_dummy_value()

        return types.void(w, b, lane0, add, out), codegen

    return rows_t_times_lanes


def _transpose_block(builder, rows):
    """The columns of the square block whose rows are the vectors ``rows`` (as many as lanes).

    log2(lanes) rounds, each interleaving vector ``i`` with vector ``i + lanes/2``
    (low halves, then high halves) into vectors ``2i`` and ``2i + 1``.
    """
    width = len(rows)
    half = width // 2
    masks = [ir.Constant(ir.VectorType(ir.IntType(32), width), [m for i in part for m in (i, width + i)])
             for part in (range(half), range(half, width))]
    rounds = width.bit_length() - 1
    for _ in range(rounds):
        rows = [builder.shuffle_vector(rows[i], rows[i + half], mask) for i in range(half) for mask in masks]
    return rows

def _emit_rows_times_lanes_t():
    """Intrinsic ``f(a, b, lane0, add, out)``: ``out[r, k] (+)= sum_l a[r, l] * b[k, l]`` over one vector of lanes.

    a (R, lanes), b (K, lanes), out (R, K), each row contiguous; l runs over
    ``lane0:lane0+V`` in order, k over the whole blocks of V (the caller adds
    the rest). ``add`` false overwrites out. A block of V rows of b is
    transposed in registers (``_transpose_block``), then every row of ``a`` is
    broadcast lane by lane against it: one vector store per V products of a row.
    """

    @intrinsic
    def rows_times_lanes_t(typingctx, a, b, lane0, add, out):
        def codegen(context, builder, signature, args):
            (aa, ba, oa), (a_row, b_row, o_row), vector, size, fmuladd = _operands(context, builder, signature, args)
            lane, add_flag = args[2], args[3]
            width = vector.count
            n_rows = builder.extract_value(aa.shape, 0)
            step = ir.Constant(lane.type, width)
            n_blocks = builder.sdiv(builder.extract_value(oa.shape, 1), step)
            zero = ir.Constant(vector, [ir.Constant(vector.element, 0.0)] * width)
            with cgutils.for_range(builder, n_blocks) as blocks:
                k0 = builder.mul(blocks.index, step)
                rows = [builder.load(_vector_at(builder, vector, ba.data, builder.add(builder.mul(
                    builder.add(k0, ir.Constant(k0.type, j)), b_row), lane)), align=size) for j in range(width)]
                columns = _transpose_block(builder, rows)
                with cgutils.for_range(builder, n_rows) as loop:
                    r = loop.index
                    dst = _vector_at(builder, vector, oa.data, builder.add(builder.mul(r, o_row), k0))
                    acc = builder.select(add_flag, builder.load(dst, align=size), zero)
                    base = builder.add(builder.mul(r, a_row), lane)
                    for m in range(width):
                        value = builder.load(builder.gep(aa.data, [builder.add(base, ir.Constant(base.type, m))]))
                        acc = builder.call(fmuladd, [_splat(builder, vector, value), columns[m], acc])
                    builder.store(acc, dst, align=size)
            return context.get_dummy_value()

        return types.void(a, b, lane0, add, out), codegen

    return rows_times_lanes_t


_rows_times_lanes_block = _emit_rows_times_lanes(ROWS_PER_BLOCK)
_rows_times_lanes_one = _emit_rows_times_lanes(1)
_rows_t_times_lanes_block = _emit_rows_t_times_lanes(ROWS_PER_BLOCK)
_rows_t_times_lanes_one = _emit_rows_t_times_lanes(1)
_rows_times_lanes_t = _emit_rows_times_lanes_t()


@njit(cache=True, inline="always")
def lane_width(a):
    """Lanes of one vector of ``a``'s dtype: the multiple every lane count must be."""
    return VECTOR_BYTES // a.itemsize


@njit(cache=True)
def matmul_lanes(w, b, out):
    """``out = w @ b``; w (R, K), b (K, L), out (R, L), L a multiple of ``lane_width``, rows contiguous.

    ``out[r, l]`` sums ``w[r, k] * b[k, l]`` over k in order.
    """
    rows = w.shape[0]
    for lane0 in range(0, b.shape[1], lane_width(b)):
        r = 0
        while r + ROWS_PER_BLOCK <= rows:
            _rows_times_lanes_block(w[r:r + ROWS_PER_BLOCK], b, lane0, out[r:r + ROWS_PER_BLOCK])
            r += ROWS_PER_BLOCK
        for r in range(r, rows):
            _rows_times_lanes_one(w[r:r + 1], b, lane0, out[r:r + 1])


@njit(cache=True)
def matmul_t_lanes(w, b, add, out):
    """``out (+)= w.T @ b``; w (R, K), b (R, L), out (K, L), L a multiple of ``lane_width``, rows contiguous.

    ``out[k, l]`` adds ``w[r, k] * b[r, l]`` over r in order onto its value (``add``) or onto 0.
    """
    rows = w.shape[0]
    for lane0 in range(0, b.shape[1], lane_width(b)):
        r = 0
        while r + ROWS_PER_BLOCK <= rows:
            _rows_t_times_lanes_block(w[r:r + ROWS_PER_BLOCK], b[r:r + ROWS_PER_BLOCK], lane0, add or r > 0, out)
            r += ROWS_PER_BLOCK
        for r in range(r, rows):
            _rows_t_times_lanes_one(w[r:r + 1], b[r:r + 1], lane0, add or r > 0, out)



@njit(cache=True)
def matmul_lanes_t(a, b, add, out):
    """``out (+)= a @ b.T``; a (R, L), b (K, L), out (R, K), L a multiple of ``lane_width``, rows contiguous.

    ``out[r, k]`` adds ``a[r, l] * b[k, l]`` over l in order onto its value (``add``) or onto 0.
    """
    width = lane_width(b)
    whole = b.shape[0] // width * width
    for lane0 in range(0, b.shape[1], width):
        _rows_times_lanes_t(a, b, lane0, add or lane0 > 0, out)
    zero = np.zeros(1, dtype=out.dtype)[0]  # in out's precision: a float64 0.0 would widen every sum
    for r in range(a.shape[0]):
        for k in range(whole, b.shape[0]):
            acc = out[r, k] if add else zero
            for lane in range(b.shape[1]):
                acc += a[r, lane] * b[k, lane]
            out[r, k] = acc


cache.key_kernels(globals())
