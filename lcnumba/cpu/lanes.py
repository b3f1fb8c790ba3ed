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
machines). Callers pad their lane count to a multiple of it, or pass one lane.

One lane (a lone sample) is not padded: a vector of lanes holding one
sample would spend ``lane_width`` multiply-adds per useful one, and a batch
of one ran as slowly as a batch of eight. The products then run along the
other operand's contiguous axis instead, the taps ``k`` of the filter bank
(``_emit_rows_dot``, ``_emit_columns_t``, ``_emit_outer``), and read every
weight once as whole vectors. Their orders are fixed by the shapes too, and
two of them are the lanes' orders: ``matmul_t_lanes`` still sums each entry
over the rows in order, and ``matmul_lanes_t`` still adds one product per
entry. ``matmul_lanes`` sums a row as ``lane_width`` partial sums instead
(taps ``k`` of one residue modulo the width, each in order, halved
pairwise), then the taps past the last whole vector in order.
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

#: The lone sample's ``matmul_t_lanes`` sums ``COLUMN_VECTORS`` vectors of taps at once (independent
#: chains of multiply-adds: one would wait on each add's latency) over ``COLUMN_ROWS`` rows of the
#: bank (weight rows streamed from memory side by side), carrying each sum through out from one block
#: of rows to the next. Measured on the DeepFace L4/L5 banks (F = 16): 16 rows of 4 vectors read the
#: weights about 10% faster than BLAS's matrix-vector product; 8 rows or 8 vectors ran slower.
COLUMN_VECTORS = 4
COLUMN_ROWS = 16


def _operands(context, builder, signature, args, scalar=False):
    """The arrays' data pointers and row strides in elements, and the vector type of their dtype.

    ``scalar``: the element type itself in place of the vector (the tails past the last whole vector).
    """
    arrays = [context.make_array(ty)(context, builder, value)
              for ty, value in zip(signature.args, args) if isinstance(ty, types.Array)]
    dtype = context.get_data_type(signature.args[0].dtype)
    size = context.get_abi_sizeof(dtype)
    width = VECTOR_BYTES // size
    vector = dtype if scalar else ir.VectorType(dtype, width)
    itemsize = ir.Constant(ir.IntType(64), size)
    strides = [builder.sdiv(builder.extract_value(a.strides, 0), itemsize) for a in arrays]
    return arrays, strides, vector, size, _fmuladd(builder, vector)


def _fmuladd(builder, ty):
    """``llvm.fmuladd`` of ``ty``, a float vector or scalar type: ``a * b + c``, fused where the machine can."""
    element = ty.element if isinstance(ty, ir.VectorType) else ty
    name = "llvm.fmuladd.%s%s" % ("v%d" % ty.count if isinstance(ty, ir.VectorType) else "",
                                  "f32" if isinstance(element, ir.FloatType) else "f64")
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)


def _fused(fmuladd):
    """``f(builder, a, b, c)``: ``a * b + c`` by the intrinsic ``fmuladd`` (``_fmuladd``)."""
    return lambda builder, a, b, c: builder.call(fmuladd, [a, b, c])


def _unfused(builder, a, b, c):
    """``a * b + c``, the product rounded before the add: plain code compiled without fast-math."""
    return builder.fadd(builder.fmul(a, b), c)


def _zero(vector):
    """0.0 in every lane of ``vector`` (a vector or a scalar type)."""
    if isinstance(vector, ir.VectorType):
        return ir.Constant(vector, [ir.Constant(vector.element, 0.0)] * vector.count)
    return ir.Constant(vector, 0.0)


def _splat(builder, vector, value):
    """``value`` in every lane of ``vector`` (``value`` itself for a scalar type)."""
    if not isinstance(vector, ir.VectorType):
        return value
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
            zero = _zero(vector)
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
            zero = _zero(vector)
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
            zero = _zero(vector)
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


def _sum_lanes(builder, vector):
    """The lanes of ``vector`` summed pairwise: lane j plus lane j + V/2, halving until one is left."""
    width = vector.type.count
    while width > 1:
        half = width // 2
        low, high = (builder.shuffle_vector(vector, ir.Constant(vector.type, ir.Undefined), ir.Constant(
            ir.VectorType(ir.IntType(32), half), list(part))) for part in (range(half), range(half, width)))
        vector, width = builder.fadd(low, high), half
    return builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))


def _emit_rows_dot(rows):
    """Intrinsic ``f(w, b, out)``: ``out[r, 0] = sum_k w[r, k] * b[k, 0]``, r < rows: one sample, vectors along k.

    w (rows, K) rows contiguous, b (K, 1) and out (rows, 1) contiguous. A row
    sums in ``V`` partial sums, one per residue of k modulo V over the whole
    vectors (each in order from zero), adds them pairwise (``_sum_lanes``),
    then the taps past the last whole vector in order. The ``rows`` vector
    accumulators stay in registers, each weight is read once.
    """

    @intrinsic
    def rows_dot(typingctx, w, b, out):
        def codegen(context, builder, signature, args):
            (wa, ba, oa), (w_row, b_row, o_row), vector, size, fmuladd = _operands(context, builder, signature, args)
            n_k = builder.extract_value(wa.shape, 1)
            width = ir.Constant(n_k.type, vector.count)
            accs = [cgutils.alloca_once_value(builder, _zero(vector)) for _ in range(rows)]
            with cgutils.for_range(builder, builder.sdiv(n_k, width)) as loop:
                k = builder.mul(loop.index, width)
                shared = builder.load(_vector_at(builder, vector, ba.data, k), align=size)
                for r in range(rows):
                    weight = builder.load(_vector_at(builder, vector, wa.data, builder.add(builder.mul(
                        ir.Constant(k.type, r), w_row), k)), align=size)
                    builder.store(builder.call(fmuladd, [weight, shared, builder.load(accs[r])]), accs[r])
            scalar = vector.element
            fmuladd_one = _fmuladd(builder, scalar)
            sums = [cgutils.alloca_once_value(builder, _sum_lanes(builder, builder.load(acc))) for acc in accs]
            whole = builder.mul(builder.sdiv(n_k, width), width)
            with cgutils.for_range(builder, n_k, start=whole) as loop:
                k = loop.index
                shared = builder.load(builder.gep(ba.data, [builder.mul(k, b_row)]))
                for r in range(rows):
                    weight = builder.load(builder.gep(wa.data, [builder.add(builder.mul(ir.Constant(k.type, r), w_row),
                                                                            k)]))
                    builder.store(builder.call(fmuladd_one, [weight, shared, builder.load(sums[r])]), sums[r])
            for r in range(rows):
                builder.store(builder.load(sums[r]), builder.gep(oa.data, [builder.mul(ir.Constant(o_row.type, r),
                                                                                      o_row)]))
            return context.get_dummy_value()

        return types.void(w, b, out), codegen

    return rows_dot


def _emit_columns_t(vectors, scalar=False):
    """Intrinsic ``f(w, b, k0, add, out)``: ``out[k, 0] (+)= sum_r w[r, k] * b[r, 0]``, one sample, vectors along k.

    For the ``vectors`` whole vectors of k from ``k0`` (single entries if
    ``scalar``); w (R, K) rows contiguous, b (R, 1) and out (K, 1) contiguous;
    ``add`` false overwrites out. Each entry adds its terms in row order onto
    out's value (or zero), whichever form computes it: the order of
    ``_emit_rows_t_times_lanes`` for every lane.
    """

    @intrinsic
    def columns_t(typingctx, w, b, k0, add, out):
        def codegen(context, builder, signature, args):
            (wa, ba, oa), (w_row, b_row, o_row), vector, size, fmuladd = _operands(context, builder, signature, args,
                                                                                  scalar)
            k0, add_flag = args[2], args[3]
            width = 1 if scalar else vector.count
            starts = [builder.add(k0, ir.Constant(k0.type, m * width)) for m in range(vectors)]
            dsts = [_vector_at(builder, vector, oa.data, builder.mul(k, o_row)) for k in starts]
            accs = [cgutils.alloca_once_value(builder, builder.select(add_flag, builder.load(dst, align=size),
                                                                      _zero(vector))) for dst in dsts]
            with cgutils.for_range(builder, builder.extract_value(wa.shape, 0)) as loop:
                r = loop.index
                value = _splat(builder, vector, builder.load(builder.gep(ba.data, [builder.mul(r, b_row)])))
                row = builder.mul(r, w_row)
                for start, acc in zip(starts, accs):
                    weight = builder.load(_vector_at(builder, vector, wa.data, builder.add(row, start)), align=size)
                    builder.store(builder.call(fmuladd, [value, weight, builder.load(acc)]), acc)
            for dst, acc in zip(dsts, accs):
                builder.store(builder.load(acc), dst, align=size)
            return context.get_dummy_value()

        return types.void(w, b, k0, add, out), codegen

    return columns_t


def _emit_outer():
    """Intrinsic ``f(a, b, add, out)``: ``out[r, k] (+)= a[r, 0] * b[k, 0]``, one sample, vectors along k.

    a (R, 1) and b (K, 1) contiguous, out (R, K) rows contiguous; ``add``
    false overwrites out. One multiply-add per entry, the bits of lane 0 of
    the vector form: fused over the whole vectors of k, as
    ``_emit_rows_times_lanes_t``, then a product rounded and added past them,
    as ``matmul_lanes_t``'s plain loop over the columns it leaves.
    """

    @intrinsic
    def outer(typingctx, a, b, add, out):
        def codegen(context, builder, signature, args):
            (aa, ba, oa), (a_row, b_row, o_row), vector, size, fmuladd = _operands(context, builder, signature, args)
            add_flag = args[2]
            n_k = builder.extract_value(oa.shape, 1)
            width = ir.Constant(n_k.type, vector.count)
            n_vectors = builder.sdiv(n_k, width)
            whole = builder.mul(n_vectors, width)
            one = ir.Constant(n_k.type, 1)
            with cgutils.for_range(builder, builder.extract_value(oa.shape, 0)) as rows:
                value = builder.load(builder.gep(aa.data, [builder.mul(rows.index, a_row)]))
                row = builder.mul(rows.index, o_row)
                # (type, its multiply-add, first and last index, elements per index, stride of b)
                for ty, fn, start, stop, step, b_step in ((vector, _fused(fmuladd), None, n_vectors, width, one),
                                                          (vector.element, _unfused, whole, n_k, one, b_row)):
                    scaled = _splat(builder, ty, value)
                    with cgutils.for_range(builder, stop, start=start) as loop:
                        k = builder.mul(loop.index, step)
                        dst = _vector_at(builder, ty, oa.data, builder.add(row, k))
                        acc = builder.select(add_flag, builder.load(dst, align=size), _zero(ty))
                        shared = builder.load(_vector_at(builder, ty, ba.data, builder.mul(k, b_step)), align=size)
                        builder.store(fn(builder, scaled, shared, acc), dst, align=size)
            return context.get_dummy_value()

        return types.void(a, b, add, out), codegen

    return outer


_rows_times_lanes_block = _emit_rows_times_lanes(ROWS_PER_BLOCK)
_rows_times_lanes_one = _emit_rows_times_lanes(1)
_rows_t_times_lanes_block = _emit_rows_t_times_lanes(ROWS_PER_BLOCK)
_rows_t_times_lanes_one = _emit_rows_t_times_lanes(1)
_rows_times_lanes_t = _emit_rows_times_lanes_t()
_rows_dot_block = _emit_rows_dot(ROWS_PER_BLOCK)
_rows_dot_one = _emit_rows_dot(1)
_columns_t_block = _emit_columns_t(COLUMN_VECTORS)
_columns_t_one = _emit_columns_t(1)
_columns_t_scalar = _emit_columns_t(1, scalar=True)
_outer = _emit_outer()


@njit(cache=True, inline="always")
def lane_width(a):
    """Lanes of one vector of ``a``'s dtype: the multiple every lane count must be."""
    return VECTOR_BYTES // a.itemsize


@njit(cache=True)
def matmul_lanes(w, b, out):
    """``out = w @ b``; w (R, K), b (K, L), out (R, L), L 1 or a multiple of ``lane_width``, rows contiguous.

    ``out[r, l]`` sums ``w[r, k] * b[k, l]`` over k in order. With ``L == 1``
    (b and out contiguous) the sum runs in ``lane_width`` partial sums instead
    (``_emit_rows_dot``).
    """
    rows = w.shape[0]
    if b.shape[1] == 1:
        r = 0
        while r + ROWS_PER_BLOCK <= rows:
            _rows_dot_block(w[r:r + ROWS_PER_BLOCK], b, out[r:r + ROWS_PER_BLOCK])
            r += ROWS_PER_BLOCK
        for r in range(r, rows):
            _rows_dot_one(w[r:r + 1], b, out[r:r + 1])
        return
    for lane0 in range(0, b.shape[1], lane_width(b)):
        r = 0
        while r + ROWS_PER_BLOCK <= rows:
            _rows_times_lanes_block(w[r:r + ROWS_PER_BLOCK], b, lane0, out[r:r + ROWS_PER_BLOCK])
            r += ROWS_PER_BLOCK
        for r in range(r, rows):
            _rows_times_lanes_one(w[r:r + 1], b, lane0, out[r:r + 1])


@njit(cache=True)
def matmul_t_lanes(w, b, add, out):
    """``out (+)= w.T @ b``; w (R, K), b (R, L), out (K, L), L 1 or a multiple of ``lane_width``, rows contiguous.

    ``out[k, l]`` adds ``w[r, k] * b[r, l]`` over r in order onto its value (``add``) or onto 0.
    ``L == 1`` (b and out contiguous) runs along k instead, in the same order (``_emit_columns_t``).
    """
    if b.shape[1] == 1:
        n_k = w.shape[1]
        width = lane_width(b)
        for r0 in range(0, w.shape[0], COLUMN_ROWS):
            rows_w, rows_b, onto = w[r0:r0 + COLUMN_ROWS], b[r0:r0 + COLUMN_ROWS], add or r0 > 0
            k0 = 0
            while k0 + COLUMN_VECTORS * width <= n_k:
                _columns_t_block(rows_w, rows_b, k0, onto, out)
                k0 += COLUMN_VECTORS * width
            while k0 + width <= n_k:
                _columns_t_one(rows_w, rows_b, k0, onto, out)
                k0 += width
            for k in range(k0, n_k):
                _columns_t_scalar(rows_w, rows_b, k, onto, out)
        return
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
    """``out (+)= a @ b.T``; a (R, L), b (K, L), out (R, K), L 1 or a multiple of ``lane_width``, rows contiguous.

    ``out[r, k]`` adds ``a[r, l] * b[k, l]`` over l in order onto its value (``add``) or onto 0.
    ``L == 1`` (a and b contiguous) is one multiply-add per entry along k (``_emit_outer``).
    """
    if b.shape[1] == 1:
        _outer(a, b, add, out)
        return
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
