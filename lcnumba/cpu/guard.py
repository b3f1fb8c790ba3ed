"""Run the CPU kernels one at a time when Numba's threading layer cannot run them concurrently.

Numba runs a ``parallel=True`` kernel on one of three threading layers:
``tbb`` and ``omp`` accept parallel regions launched from several Python
threads at once; ``workqueue`` does not, and aborts the whole process
("Concurrent access has been detected") when two threads launch a kernel
at the same time. Numba picks ``tbb``, then ``omp``, then ``workqueue``
(unless ``NUMBA_THREADING_LAYER`` says otherwise), so ``workqueue`` runs
only where neither TBB nor OpenMP is available, or when asked for.

Every public CPU function calls its kernels inside ``kernel_guard()``. On a
thread-safe layer the guard does nothing; on ``workqueue`` it is a process
wide lock, so concurrent calls from several threads wait for one another
instead of aborting (each call still uses every worker thread). The guard
starts Numba's threading layer (which chooses it) on first use.

Calls from C (``lcnumba.capi``) and parallel Numba code of the caller's own
do not pass through the guard: with ``workqueue`` they must not overlap
lcnumba calls.
"""

import contextlib
import threading

import numba

_lock = threading.RLock()
_layer = None


def threading_layer():
    """The threading layer Numba runs parallel kernels on, started if it was not yet.

    Starting it here also matters on its own: a kernel that calls parallel
    kernels and was loaded from the cache without them (compiled in a process
    that had loaded them from the cache in turn) does not start the layer, and
    crashed when it ran first.
    """
    global _layer
    if _layer is None:
        numba.get_num_threads()  # starts the threading layer, choosing it
        _layer = numba.threading_layer()
    return _layer


def serialised():
    """Whether kernel calls are serialised: on ``workqueue``."""
    return threading_layer() == "workqueue"


_FREE = contextlib.nullcontext()


def kernel_guard():
    """Context for one call of the parallel CPU kernels: a lock on ``workqueue``, nothing otherwise.

    The threading layer is running inside it. A plain context object, not a generator: a tiny call
    pays for this on every kernel.
    """
    return _lock if serialised() else _FREE
