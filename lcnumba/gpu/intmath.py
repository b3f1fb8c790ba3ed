"""32-bit integer division for the kernels' index math.

Numba types every integer operation in 64 bits (``int32 * int32`` is
``int64``), so ``e // n`` in a kernel is a 64-bit division: a long
software sequence on a GPU (the compiler adds a run-time test for
operands that fit in 32 bits, but the 64-bit sequence stays in the code
and the operands in register pairs). ``divmod32`` divides in 32 bits: it
takes the low 32 bits of both operands, so it is exact only for
``0 <= a < 2**31`` and ``0 < b < 2**31``, which the host guarantees by
refusing arrays past ``2**31 - 1`` elements (``launch.check_int32``)
before any kernel is launched. The simulator runs the plain Python
operators.
"""

from .jit import SIMULATOR

if SIMULATOR:

    def divmod32(a, b):
        """``(a // b, a % b)`` for ``0 <= a < 2**31``, ``0 < b < 2**31``."""
        return a // b, a % b

    def div32(a, b):
        """``a // b`` for ``0 <= a < 2**31``, ``0 < b < 2**31``."""
        return a // b

else:
    from llvmlite import ir
    from numba.cuda import types
    from numba.cuda.extending import intrinsic

    def _low32(builder, value):
        i32 = ir.IntType(32)
        return builder.trunc(value, i32) if value.type.width > 32 else builder.zext(value, i32)

    @intrinsic
    def divmod32(typingctx, a, b):
        """``(a // b, a % b)`` for ``0 <= a < 2**31``, ``0 < b < 2**31``, as ``int64`` (one ``div.u32``)."""
        sig = types.UniTuple(types.int64, 2)(a, b)

        def codegen(context, builder, signature, args):
            x, y = _low32(builder, args[0]), _low32(builder, args[1])
            q = builder.udiv(x, y)
            r = builder.sub(x, builder.mul(q, y))
            i64 = ir.IntType(64)
            return context.make_tuple(builder, signature.return_type, [builder.zext(q, i64), builder.zext(r, i64)])

        return sig, codegen

    @intrinsic
    def div32(typingctx, a, b):
        """``a // b`` for ``0 <= a < 2**31``, ``0 < b < 2**31``, as ``int64`` (one ``div.u32``)."""
        sig = types.int64(a, b)

        def codegen(context, builder, signature, args):
            return builder.zext(builder.udiv(_low32(builder, args[0]), _low32(builder, args[1])), ir.IntType(64))

        return sig, codegen
