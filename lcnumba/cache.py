"""The on-disk cache of the compiled kernels, keyed on every source a kernel compiles in.

Numba keys a cached function on its own file only. A kernel that compiles
in a function of another file (the convolution drivers call the segment
table of ``cpu/segments.py`` and the local kernels of ``cpu/local.py``,
which copy runs with ``cpu/runs.py``) stays cached after that file
changes: it then runs the old code, and its copy of the function clashes
with the new compilation of it when both are linked in one process
(``RuntimeError: In 'NRT_adapt_ndarray_to_python', 'descr' is NULL``).

So every module of compiled code declares the package sources it compiles
in, as ``COMPILES_IN``: its own file, then the ``COMPILES_IN`` of each
module whose compiled functions it calls (``sources`` joins them), so the
declaration follows calls across modules by construction. ``key_kernels``
gives every cached kernel of a module a cache keyed also on the SHA-256 of
those sources (``SourceKeyedCache``); the C entry points' cores
(``lcnumba.capi.cores``) get the same cache with the declarations of the
kernel modules they call. An edit of any such source compiles the kernel
again instead of loading it.

Importing this module (every module of compiled code does, before its
first kernel is defined) makes sure Numba has somewhere to cache kernels:
see ``ensure_kernel_cache``.
"""

import atexit
import functools
import hashlib
import os
import shutil
import tempfile
import types
import warnings

from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher

#: The package directory: source names are relative to it ("cpu/conv.py").
PACKAGE = os.path.dirname(os.path.abspath(__file__))


def sources(*parts):
    """One ``COMPILES_IN`` declaration from source names and other declarations, sorted, without repeats.

    Parameters
    ----------
    *parts : str or tuple of str
        Paths relative to the package (``"cpu/conv.py"``), or the
        ``COMPILES_IN`` of another module.

    Returns
    -------
    tuple of str
    """
    names = set()
    for part in parts:
        names.update((part,) if isinstance(part, str) else part)
    return tuple(sorted(names))


@functools.lru_cache(maxsize=None)
def digest(names):
    """SHA-256 of the sources ``names`` (a ``COMPILES_IN`` tuple): names and contents, in order.

    Read once per process, when the first cache keyed on them is made (at the import of the module that
    declares them, when Python has just read the code it compiles): a later edit of a source, while the
    process runs, then cannot label the old code with the new contents.
    """
    hasher = hashlib.sha256()
    for name in names:
        hasher.update(name.encode())
        with open(os.path.join(PACKAGE, name), "rb") as f:
            hasher.update(f.read())
    return hasher.hexdigest()


class SourceKeyedCache(FunctionCache):
    """Numba's on-disk cache of one function, its index keyed also on the digest of ``names``."""

    def __init__(self, py_func, names):
        super().__init__(py_func)
        self._digest = digest(names)

    def _index_key(self, sig, codegen):
        return super()._index_key(sig, codegen) + (self._digest,)


def source_keyed(py_func, names):
    """A ``SourceKeyedCache`` of ``py_func``, or None where Numba has no cache location for it."""
    try:
        return SourceKeyedCache(py_func, names)
    except RuntimeError:  # "cannot cache function ...: no locator available": Numba's own cache said so too
        return None


def key_kernels(namespace):
    """Key the cache of every cached kernel of a module on the module's ``COMPILES_IN``.

    Parameters
    ----------
    namespace : dict
        The module's ``globals()``, after its last kernel: kernels defined
        in it (not those imported from other modules, keyed by their own)
        that cache on disk get a ``SourceKeyedCache``.
    """
    names = namespace["COMPILES_IN"]
    for value in list(namespace.values()):
        if (isinstance(value, Dispatcher) and value.py_func.__module__ == namespace["__name__"]
                and type(value._cache) is FunctionCache):
            keyed = source_keyed(value.py_func, names)
            if keyed is not None:
                value._cache = keyed


def twin(function, qualname, **names):
    """``function``'s code in a copy of its module's namespace with ``names`` rebound, named ``qualname``.

    Compiled, the twin calls what ``names`` binds where ``function`` calls
    its module's objects of those names: a compiled driver for the C entry
    points calls compiled kernels where Python's plain driver calls plain
    ones, and a global flag rebound to a constant prunes a branch. The copy
    is taken now: make twins after the last definition they use. Numba's
    on-disk cache names a function's entries by its file, qualified name and
    line, so a twin that compiles other code than ``function`` needs a
    ``qualname`` of its own.

    Parameters
    ----------
    function : function
        A plain Python function (a kernel's ``py_func``).
    qualname : str
        The twin's qualified name.
    **names
        The globals rebound in the twin's namespace.

    Returns
    -------
    function
    """
    namespace = dict(function.__globals__, **names)
    copy = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                              function.__closure__)
    copy.__qualname__, copy.__module__, copy.__doc__ = qualname, function.__module__, function.__doc__
    return copy


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

    Returns
    -------
    str or None
        The temporary directory, or None when Numba's own choice stands.
    """
    import numba

    for package in ("cpu", "capi"):  # the directories holding cached kernels
        source = os.path.join(PACKAGE, package, "__init__.py")
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
    warnings.warn(f"lcnumba: no writable Numba cache directory (NUMBA_CACHE_DIR, {PACKAGE}, the user cache); "
                  f"kernels are compiled in every process and cached in {directory} until it exits",
                  RuntimeWarning, stacklevel=2)
    return directory


ensure_kernel_cache()
