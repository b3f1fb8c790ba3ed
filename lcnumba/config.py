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


def cache_depends_on(dispatcher, *sources):
    """Key the on-disk cache of ``dispatcher`` also on the contents of ``sources`` (paths in the package).

    Numba keys a cached kernel on its own file only. A kernel that compiles in
    a function of another file (the convolution drivers call
    ``geometry.segment_table``) stays cached after that file changes: it then
    runs the old code, and its copy of the function clashes with the new
    compilation of it when both are linked in one process (``RuntimeError:
    In 'NRT_adapt_ndarray_to_python', 'descr' is NULL``). With the sources'
    SHA-256 in the key, a change to them recompiles the kernel instead.
    """
    import hashlib

    from numba.core.caching import FunctionCache

    class SourceAwareCache(FunctionCache):
        def _index_key(self, sig, codegen):
            return super()._index_key(sig, codegen) + (digest,)

    here = os.path.dirname(os.path.abspath(__file__))
    hasher = hashlib.sha256()
    for name in sources:
        hasher.update(name.encode())
        with open(os.path.join(here, name), "rb") as f:
            hasher.update(f.read())
    digest = hasher.hexdigest()
    if getattr(dispatcher, "_cache", None) is not None and type(dispatcher._cache) is FunctionCache:
        try:
            dispatcher._cache = SourceAwareCache(dispatcher.py_func)
        except RuntimeError:  # no cache location: Numba's own cache object already said so
            pass
    return dispatcher


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
