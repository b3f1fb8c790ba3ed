"""Settings shared by every kernel.

``FASTMATH`` is the one fastmath flag set of the project. It deliberately
leaves out ``nnan`` and ``ninf``: max-pooling lets NaN win and pads with
``-inf``, and both must survive compilation.

``THREADS_PER_BLOCK`` sizes every CUDA launch; tests patch it down so that
tiny simulator inputs still span several blocks.

Importing this module (``lcnumba.geometry`` does, before the first kernel
is defined) makes sure Numba has somewhere to cache kernels: see
``ensure_kernel_cache``.
"""

import atexit
import os
import shutil
import tempfile
import warnings

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

THREADS_PER_BLOCK = 256


def _cache_probe():
    """Stands for a kernel: Numba looks for its cache directory as for any ``cache=True`` function."""


def ensure_kernel_cache():
    """Give Numba a writable cache directory for the kernels when it finds none of its own.

    ``cache=True`` makes Numba look for a writable directory when a kernel is
    defined: ``NUMBA_CACHE_DIR``, the ``__pycache__`` beside the source, the
    user's cache directory. With none writable (a read-only installation and
    no writable home) it raises ``RuntimeError`` and ``import lcnumba`` would
    fail. Then the kernels are cached in a new temporary directory, removed at
    exit, with a warning: everything works, compiled once per process.

    Returns the temporary directory, or None when Numba's own choice stands.
    """
    import numba
    from numba.core.caching import FunctionCache

    here = os.path.dirname(os.path.abspath(__file__))
    for package in ("", "cpu", "capi"):  # the directories holding cached kernels
        source = os.path.join(here, package, "__init__.py")
        probe = type(_cache_probe)(_cache_probe.__code__.replace(co_filename=source), {}, "_cache_probe")
        try:
            FunctionCache(probe)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            break
    else:
        return None
    directory = tempfile.mkdtemp(prefix="lcnumba-kernel-cache-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    numba.config.CACHE_DIR = directory
    warnings.warn(f"lcnumba: no writable Numba cache directory (NUMBA_CACHE_DIR, {here}, the user cache); "
                  f"kernels are compiled in every process and cached in {directory} until it exits",
                  RuntimeWarning, stacklevel=2)
    return directory


ensure_kernel_cache()
