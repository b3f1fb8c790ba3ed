"""Settings shared by every kernel.

``FASTMATH`` is the one fastmath flag set of the project. It deliberately
leaves out ``nnan`` and ``ninf``: max-pooling lets NaN win and pads with
``-inf``, and both must survive compilation.

``THREADS_PER_BLOCK`` sizes every CUDA launch; tests patch it down so that
tiny simulator inputs still span several blocks.

Kernels compile ``FASTMATH`` in: every CPU module of kernels lists this file
in its ``COMPILES_IN`` (``lcnumba.cache``).
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: ``FASTMATH`` less ``reassoc``, for plain sums whose order must be the loop's: with ``reassoc``
#: LLVM may split a sum into vector partial sums, and the code it generates in one process and the
#: code loaded from the on-disk cache in another were seen to sum the local bias gradient
#: differently (tests/test_determinism.py, cold cache).
FASTMATH_ORDERED = FASTMATH - {"reassoc"}

THREADS_PER_BLOCK = 256
