"""C entry points of the CPU kernels: plain function pointers for C, C++, Fortran, Julia or Rust hosts.

Every CPU forward and backward function of the Python API has an entry point
``lcn_<family>_<function>_<f32|f64>`` (``names()``), a Numba ``@cfunc`` that
takes pointers to C-contiguous buffers, then ``int64_t`` dimensions and
geometry, then ``int32_t`` flags, checks everything in compiled code and
returns an ``int32_t`` status (``Status``; 0 is success). The prototypes,
status codes and array layouts are in ``lcnumba.h`` (``include_dir()``).
An entry point's arguments never change: options added later come as a new
entry point with the suffix ``_ex`` (``lcn_netvlad_forward_ex`` adds
NetVLAD's mask and normalisation switches, ``lcn_conv2d_forward_ex`` and the
other convolutions' ``_ex`` forms a ``padding_mode``).

A host that embeds Python gets an address with ``address(name)``, casts it
to the function type of the header, and calls it from C; a Python caller
uses ``ctypes_function(name)``. Entry points compile on first use and are
kept for the life of the process. The compiled cores they call (one per
operation and dtype, see ``lcnumba.capi.cores``) are also cached on disk,
so a later process loads them in milliseconds; the entry points themselves
hold the cores' addresses, which Numba cannot cache, and compile in tens of
milliseconds each.

BLAS: the convolution and NetVLAD kernels call BLAS (through ``np.dot``,
SciPy's BLAS) from every worker thread. The Python API keeps BLAS
single-threaded around each call (``lcnumba.cpu.blas.serial_blas``); a C
caller cannot, so ``address`` and ``ctypes_function`` set every loaded BLAS
library to one thread for the rest of the process (``serialize_blas``)
unless called with ``serial_blas=False``.
"""

import os
import threading

from ..cpu import blas as _blas
from . import entry as _entry
from .status import MEANINGS, Status, header_name

__all__ = ["Status", "address", "compile_all", "ctypes_function", "header", "include_dir", "names", "prototype",
           "serialize_blas", "status_message"]

_functions = {}
_lock = threading.RLock()


def names():
    """Names of every entry point, in the order of ``lcnumba.h``.

    Returns
    -------
    tuple of str
        ``lcn_<family>_<function>_<f32|f64>``, e.g. ``"lcn_local_conv2d_forward_f32"``.
    """
    return _entry.names()


def _cfunc(name):
    with _lock:
        function = _functions.get(name)
        if function is None:
            _entry.entry(name)  # a ValueError for an unknown name, before compiling anything
            function = _entry.build(name)
            _functions[name] = function
    return function


def address(name, *, serial_blas=True):
    """Address of the entry point ``name``, compiled on first use, as an int.

    Cast it to the function type ``<name>_fn`` of ``lcnumba.h``. The address
    is valid for the life of the process; the entry point is compiled once
    per process (its core is loaded from Numba's on-disk cache when
    possible).

    Parameters
    ----------
    name : str
        One of ``names()``.
    serial_blas : bool
        Set every loaded BLAS library to one thread for the rest of the
        process (``serialize_blas``), as the Python API does around each call.
        The kernels call BLAS from each of their worker threads; a threaded
        BLAS then starts threads inside threads and oversubscribes the cores
        (3x slower on two cores). Pass False to leave BLAS as it is.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        ``name`` is not an entry point.
    """
    function = _cfunc(name)
    if serial_blas:
        serialize_blas()
    return function.address


def ctypes_function(name, *, serial_blas=True):
    """The entry point ``name`` as a ctypes function with ``argtypes`` and ``restype`` set.

    Buffer arguments accept NumPy arrays (checked for dtype, C-contiguity
    and, for outputs, writeability), ``None`` for NULL, ctypes pointers or
    int addresses; the call returns the ``int32`` status (``Status``). The
    call releases the GIL.

    Parameters
    ----------
    name : str
        One of ``names()``.
    serial_blas : bool
        As for ``address``.

    Returns
    -------
    ctypes function pointer
    """
    return _entry.ctypes_prototype(name)(address(name, serial_blas=serial_blas))


def prototype(name):
    """The C prototype of ``name``, as ``lcnumba.h`` declares its function type ``<name>_fn``."""
    return _entry.prototype(name)


def header():
    """The text of ``lcnumba.h``, generated from the table of entry points."""
    return _entry.header()


def include_dir():
    """The directory that holds ``lcnumba.h`` (for ``-I``)."""
    return os.path.dirname(os.path.abspath(__file__))


def status_message(status):
    """``"LCN_ERR_SIZE: ..."``: the name and meaning of a status code."""
    status = Status(status)
    return f"{header_name(status)}: {MEANINGS[status]}"


def compile_all(dtypes=("f32", "f64")):
    """Compile every entry point of ``dtypes`` now (e.g. at a host's start-up); return their names."""
    done = []
    for name in names():
        if _entry.entry(name).dtype in dtypes:
            _cfunc(name)
            done.append(name)
    return tuple(done)


def serialize_blas():
    """Set every loaded BLAS library to one thread, for the rest of the process.

    The libraries are those ``lcnumba.cpu.blas.serial_blas`` controls (SciPy's
    BLAS, which the kernels call, is loaded first). A ``serial_blas`` context
    active in another thread will not restore its saved thread counts when
    it exits. Calling this again costs a few microseconds.

    Returns
    -------
    dict
        ``{library path: threads it had}`` for the libraries that were changed.
    """
    changed = {}
    with _blas._lock:
        for lib in _blas._blas_libraries():
            threads = lib.num_threads
            if threads != 1:
                changed[lib.filepath] = threads
                lib.set_num_threads(1)
        # an active serial_blas() context would restore its saved counts on exit
        _blas._saved = []
    return changed
