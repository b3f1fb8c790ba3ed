"""Keep BLAS single-threaded while a parallel kernel runs.

The kernels call BLAS (``np.dot`` inside Numba uses SciPy's BLAS) from every
worker thread. A threaded BLAS would then start its own threads inside each
worker: on a 2-core machine that oversubscription made ``vgg_conv3`` 3x
slower. ``serial_blas()`` sets every loaded BLAS library to one thread for
the duration of a call and restores it afterwards; nested and concurrent
calls share one counter, so the first entrant saves and the last leaver
restores.
"""

import contextlib
import threading

_lock = threading.Lock()
_depth = 0
_saved = []
_libraries = None


def _blas_libraries():
    global _libraries
    if _libraries is None:
        # Numba's np.dot calls SciPy's BLAS, which is loaded lazily: load it
        # now so that the controller sees it.
        import scipy.linalg.cython_blas  # noqa: F401

        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # without threadpoolctl BLAS keeps its threads: slower, still correct
            _libraries = []
        else:
            _libraries = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return _libraries


@contextlib.contextmanager
def serial_blas():
    """Context in which every loaded BLAS library runs on the calling thread only."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = []
            for lib in _blas_libraries():
                threads = lib.num_threads
                if threads != 1:
                    _saved.append((lib, threads))
                    lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, threads in _saved:
                    lib.set_num_threads(threads)
                _saved = []
